"""Device summaries: the agent's per-tick feature rows folded into one DeviceSummary per active
device per reporting interval, the bulk of what a gateway sends the hub besides incidents.

Each summary carries the mean of the device's feature rows over the interval (schema order),
its packets and bytes, and the interval. Intervals are aligned to multiples of `interval` in
epoch time, so every gateway's summaries line up at the hub. A device with no packets in an
interval sends nothing. The default of 300 s is what keeps telemetry under 5 % of shipping raw
flow records (bench/test_bench_wire.py measures it); incidents do not wait for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from atlas.link.wire import DeviceSummary

REPORT_INTERVAL = 300.0


@dataclass
class SummaryBlock:
    """One closed interval's summaries as arrays (one row per device, in first-seen order).

    DeviceSummary objects cost about 1.5 KB each (41 Python floats); a gateway with 18,000
    devices would build some 27 MB of them every interval, so they are made only when sent.
    """

    start: float
    end: float
    keys: np.ndarray  # uint64 host keys
    packets: np.ndarray  # int64
    bytes: np.ndarray  # int64
    features: np.ndarray  # float32 [n, width]: the mean of each device's feature rows
    schema_version: int = 1

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def summaries(self, name: Callable[[int], str]) -> list[DeviceSummary]:
        """The DeviceSummary objects (`name`: host key -> address text)."""
        out = []
        for i, key in enumerate(self.keys.tolist()):
            address = name(key)
            out.append(DeviceSummary(
                device=address, address=address, start=self.start, end=self.end,
                packets=int(self.packets[i]), bytes=int(self.bytes[i]), features=self.features[i].tolist(),
                schema_version=self.schema_version,
            ))
        return out


class DeviceSummaries:
    """Feed it every FeatureRows (atlas.agent.features.windows) in time order with `add` (or
    `fold`, which hands closed intervals back as arrays)."""

    def __init__(self, name: Callable[[int], str], interval: float = REPORT_INTERVAL, schema_version: int = 1):
        if interval <= 0:
            raise ValueError(f"report interval {interval!r}: must be > 0 seconds")
        self.name = name  # host key -> address text (AddressBook.name)
        self.interval = float(interval)
        self.schema_version = schema_version
        self._slot: int | None = None  # index of the open interval: floor(t / interval)
        # Accumulators of the open interval, one row per device (vectorized: a gateway may
        # have tens of thousands of devices and this runs every tick). Devices are found by
        # sorted host keys searched once per tick, not a dict of Python ints.
        self._n = 0  # rows in use
        self._sorted = np.zeros(0, dtype=np.uint64)  # host keys of the rows, sorted
        self._sorted_row = np.zeros(0, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.uint64)  # host key of each row
        self._sums = np.zeros((0, 0), dtype=np.float32)
        self._counts = np.zeros((0, 3), dtype=np.int64)  # rows, packets, bytes

    def add(self, tick_end: float, devices: np.ndarray, X: np.ndarray, packets: np.ndarray,
            bytes_by_device: Mapping[int, int] | None = None) -> list[DeviceSummary]:
        """Fold one tick's rows in; returns the summaries of an interval this tick closed."""
        block = self.fold(tick_end, devices, X, packets, bytes_by_device)
        return block.summaries(self.name) if block is not None else []

    def fold(self, tick_end: float, devices: np.ndarray, X: np.ndarray, packets: np.ndarray,
             bytes_by_device: Mapping[int, int] | None = None) -> SummaryBlock | None:
        """Fold one tick's rows in; returns the interval this tick closed, if any (non-empty)."""
        slot = int(tick_end // self.interval)
        out = self._close() if self._slot is not None and slot != self._slot else None
        self._slot = slot
        keys = np.asarray(devices, dtype=np.uint64)
        rows = self._rows_of(keys, X.shape[1])
        self._sums[rows] += X  # a device appears once per tick: no repeated rows
        self._counts[rows, 0] += 1
        self._counts[rows, 1] += packets.astype(np.int64)
        if bytes_by_device is not None:
            self._counts[rows, 2] += np.fromiter((bytes_by_device.get(k, 0) for k in keys.tolist()), dtype=np.int64,
                                                 count=len(keys))
        return out

    def _rows_of(self, keys: np.ndarray, width: int) -> np.ndarray:
        """Accumulator rows of these devices; new ones get the next rows, in their order."""
        n = len(self._sorted)
        if n:
            i = np.minimum(np.searchsorted(self._sorted, keys), n - 1)
            rows = np.where(self._sorted[i] == keys, self._sorted_row[i], -1)
        else:
            rows = np.full(len(keys), -1, dtype=np.int64)
        new = np.flatnonzero(rows < 0)
        if len(new):
            rows[new] = self._grow(keys[new], width)
        return rows

    def _grow(self, keys: np.ndarray, width: int) -> np.ndarray:
        start = self._n
        need = start + len(keys)
        if need > len(self._keys) or self._sums.shape[1] != width:
            cap = max(need, 2 * len(self._keys), 64)
            # float32, as the rows and the wire are: at most a few hundred rows an interval
            # (relative error ~1e-5 at worst), half the memory (18,000 devices: 2.9 MB less).
            sums = np.zeros((cap, width), dtype=np.float32)
            sums[:start] = self._sums[:start] if self._sums.shape[1] == width else 0.0
            counts = np.zeros((cap, 3), dtype=np.int64)
            counts[:start] = self._counts[:start]
            kk = np.zeros(cap, dtype=np.uint64)
            kk[:start] = self._keys[:start]
            self._sums, self._counts, self._keys = sums, counts, kk
        rows = np.arange(start, need)
        self._keys[start:need] = keys
        self._n = need
        order = np.argsort(keys, kind="stable")
        pos = np.searchsorted(self._sorted, keys[order])
        self._sorted = np.insert(self._sorted, pos, keys[order])
        self._sorted_row = np.insert(self._sorted_row, pos, rows[order])
        return rows

    def flush(self) -> list[DeviceSummary]:
        """Summaries of the open interval (at shutdown)."""
        block = self.flush_block()
        return block.summaries(self.name) if block is not None else []

    def flush_block(self) -> SummaryBlock | None:
        """The open interval as arrays, if it has any device (at shutdown)."""
        return self._close() if self._slot is not None else None

    def _close(self) -> SummaryBlock | None:
        start = self._slot * self.interval
        n = self._n
        if not n:
            return None
        means = (self._sums[:n] / np.maximum(self._counts[:n, 0], 1)[:, None]).astype(np.float32)
        block = SummaryBlock(start, start + self.interval, self._keys[:n].copy(), self._counts[:n, 1].copy(),
                             self._counts[:n, 2].copy(), means, self.schema_version)
        self._n = 0
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._sorted_row = np.zeros(0, dtype=np.int64)
        self._sums[:n] = 0.0
        self._counts[:n] = 0
        return block
