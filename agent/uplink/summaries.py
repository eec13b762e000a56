"""Device summaries: the agent's per-tick feature rows folded into one DeviceSummary per active
device per reporting interval, the bulk of what a gateway sends the hub besides incidents.

Each summary carries the mean of the device's feature rows over the interval (schema order),
its packets and bytes, and the interval. Intervals are aligned to multiples of `interval` in
epoch time, so every gateway's summaries line up at the hub. A device with no packets in an
interval sends nothing. The default of 300 s is what keeps telemetry under 5 % of shipping raw
flow records (bench/test_bench_wire.py measures it); incidents do not wait for it.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from atlas.agent.uplink import DeviceSummary

REPORT_INTERVAL = 300.0


class DeviceSummaries:
    """Feed it every FeatureRows (atlas.agent.features.windows) in time order with `add`."""

    def __init__(self, name: Callable[[int], str], interval: float = REPORT_INTERVAL, schema_version: int = 1):
        if interval <= 0:
            raise ValueError(f"report interval {interval!r}: must be > 0 seconds")
        self.name = name  # host key -> address text (AddressBook.name)
        self.interval = float(interval)
        self.schema_version = schema_version
        self._slot: int | None = None  # index of the open interval: floor(t / interval)
        # Accumulators of the open interval, one row per device (vectorized: a gateway may
        # have tens of thousands of devices and this runs every tick).
        self._row: dict[int, int] = {}  # host key -> row
        self._keys = np.zeros(0, dtype=np.uint64)
        self._sums = np.zeros((0, 0))
        self._counts = np.zeros((0, 3), dtype=np.int64)  # rows, packets, bytes

    def add(self, tick_end: float, devices: np.ndarray, X: np.ndarray, packets: np.ndarray,
            bytes_by_device: Mapping[int, int] | None = None) -> list[DeviceSummary]:
        """Fold one tick's rows in; returns the summaries of an interval this tick closed."""
        slot = int(tick_end // self.interval)
        out = self._close() if self._slot is not None and slot != self._slot else []
        self._slot = slot
        keys = devices.tolist()
        rows = np.fromiter((self._row.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        new = np.flatnonzero(rows < 0)
        if len(new):
            rows[new] = self._grow([keys[i] for i in new], X.shape[1])
        self._sums[rows] += X  # a device appears once per tick: no repeated rows
        self._counts[rows, 0] += 1
        self._counts[rows, 1] += packets.astype(np.int64)
        if bytes_by_device is not None:
            self._counts[rows, 2] += np.fromiter((bytes_by_device.get(k, 0) for k in keys), dtype=np.int64, count=len(keys))
        return out

    def _grow(self, keys: list[int], width: int) -> np.ndarray:
        start = len(self._row)
        need = start + len(keys)
        if need > len(self._keys) or self._sums.shape[1] != width:
            cap = max(need, 2 * len(self._keys), 64)
            sums = np.zeros((cap, width))
            sums[:start] = self._sums[:start] if self._sums.shape[1] == width else 0.0
            counts = np.zeros((cap, 3), dtype=np.int64)
            counts[:start] = self._counts[:start]
            kk = np.zeros(cap, dtype=np.uint64)
            kk[:start] = self._keys[:start]
            self._sums, self._counts, self._keys = sums, counts, kk
        rows = np.arange(start, need)
        self._keys[start:need] = keys
        self._row.update(zip(keys, rows.tolist()))
        return rows

    def flush(self) -> list[DeviceSummary]:
        """Summaries of the open interval (at shutdown)."""
        return self._close() if self._slot is not None else []

    def _close(self) -> list[DeviceSummary]:
        start = self._slot * self.interval
        n = len(self._row)
        means = (self._sums[:n] / np.maximum(self._counts[:n, 0], 1)[:, None]).astype(np.float32)
        out = []
        for i, key in enumerate(self._keys[:n].tolist()):
            address = self.name(key)
            out.append(DeviceSummary(
                device=address, address=address, start=start, end=start + self.interval,
                packets=int(self._counts[i, 1]), bytes=int(self._counts[i, 2]), features=means[i].tolist(),
                schema_version=self.schema_version,
            ))
        self._row.clear()
        self._sums[:n] = 0.0
        self._counts[:n] = 0
        return out
