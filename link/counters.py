"""Counters shared by several threads (the uplink's and the ingest servicer's).

`counter[name] += 1` is a read and a write: two threads can lose an increment between them.
"""
from __future__ import annotations

import threading
from collections import Counter


class Counters(Counter):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self)
