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

from atlas.agent.uplink import DeviceSummary

REPORT_INTERVAL = 300.0


@dataclass
class _Acc:
    features: np.ndarray  # float64 sum of the rows
    rows: int
    packets: int
    bytes: int


class DeviceSummaries:
    """Feed it every FeatureRows (atlas.agent.features.windows) in time order with `add`."""

    def __init__(self, name: Callable[[int], str], interval: float = REPORT_INTERVAL, schema_version: int = 1):
        if interval <= 0:
            raise ValueError(f"report interval {interval!r}: must be > 0 seconds")
        self.name = name  # host key -> address text (AddressBook.name)
        self.interval = float(interval)
        self.schema_version = schema_version
        self._slot: int | None = None  # index of the open interval: floor(t / interval)
        self._acc: dict[int, _Acc] = {}

    def add(self, tick_end: float, devices: np.ndarray, X: np.ndarray, packets: np.ndarray,
            bytes_by_device: Mapping[int, int] | None = None) -> list[DeviceSummary]:
        """Fold one tick's rows in; returns the summaries of an interval this tick closed."""
        slot = int(tick_end // self.interval)
        out = self._close() if self._slot is not None and slot != self._slot else []
        self._slot = slot
        for i, key in enumerate(devices.tolist()):
            acc = self._acc.get(key)
            if acc is None:
                acc = self._acc[key] = _Acc(np.zeros(X.shape[1]), 0, 0, 0)
            acc.features += X[i]
            acc.rows += 1
            acc.packets += int(packets[i])
            if bytes_by_device is not None:
                acc.bytes += int(bytes_by_device.get(key, 0))
        return out

    def flush(self) -> list[DeviceSummary]:
        """Summaries of the open interval (at shutdown)."""
        return self._close() if self._slot is not None else []

    def _close(self) -> list[DeviceSummary]:
        start = self._slot * self.interval
        out = []
        for key, acc in self._acc.items():
            address = self.name(key)
            out.append(DeviceSummary(
                device=address, address=address, start=start, end=start + self.interval, packets=acc.packets,
                bytes=acc.bytes, features=(acc.features / acc.rows).astype(np.float32).tolist(),
                schema_version=self.schema_version,
            ))
        self._acc.clear()
        return out
