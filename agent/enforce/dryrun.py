"""Dry-run backend: records what it would install, blocks nothing.

Used for shadow rules, for a whole agent in shadow mode, and on hosts without nftables or
without an MQTT broker to talk to. Its log is what `status` shows as "would do".
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping

from atlas.link.rules import ACTIONS
from atlas.agent.enforce.backend import Backend, Element, diff


@dataclass(frozen=True)
class Operation:
    time: float
    op: str  # "add" | "refresh" | "remove"
    element: Element
    expires_at: float = 0.0


class DryRunBackend(Backend):
    enforces = False

    def __init__(self, name: str = "dry-run", actions: Iterable[str] = ACTIONS, max_log: int = 10000) -> None:
        super().__init__()
        self.name = name
        self.actions = frozenset(actions)
        self.log: deque[Operation] = deque(maxlen=max_log)  # bounded: oldest first out

    def observe(self, candidates: Iterable[Element] = ()) -> dict[Element, float | None]:
        return dict(self.view)

    def apply(self, desired: Mapping[Element, float], now: float) -> dict[Element, str]:
        upserts, removals = diff(self.view, desired)
        for element in removals:
            self.log.append(Operation(now, "remove", element))
            del self.view[element]
        for element, expires_at in sorted(upserts.items()):
            self.log.append(Operation(now, "refresh" if element in self.view else "add", element, expires_at))
            self.view[element] = expires_at
        return {}
