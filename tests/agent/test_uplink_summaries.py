"""DeviceSummaries: per-tick feature rows -> one summary per active device per aligned interval."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.agent.uplink.summaries import DeviceSummaries


def name(key: int) -> str:
    return f"10.0.0.{key}"


def tick(acc, t, keys, values, packets, nbytes=None):
    X = np.array([[v, 2 * v] for v in values], np.float32)
    return acc.add(t, np.array(keys, np.uint64), X, np.array(packets), nbytes)


def test_one_summary_per_active_device_per_aligned_interval():
    acc = DeviceSummaries(name, interval=10.0)
    assert tick(acc, 1001.0, [1, 2], [1.0, 5.0], [3, 4], {1: 100, 2: 50}) == []
    assert tick(acc, 1002.0, [1], [3.0], [2], {1: 10}) == []
    out = tick(acc, 1010.0, [2], [7.0], [1])  # 1010 opens the next interval [1010, 1020)
    assert [(s.address, s.start, s.end, s.packets, s.bytes, s.features) for s in out] == [
        ("10.0.0.1", 1000.0, 1010.0, 5, 110, [2.0, 4.0]),  # the mean of its rows
        ("10.0.0.2", 1000.0, 1010.0, 4, 50, [5.0, 10.0]),
    ]
    (last,) = acc.flush()
    assert (last.address, last.start, last.packets, last.features) == ("10.0.0.2", 1010.0, 1, [7.0, 14.0])
    assert acc.flush() == []


def test_a_quiet_device_sends_nothing_and_gaps_are_skipped():
    acc = DeviceSummaries(name, interval=60.0)
    tick(acc, 30.0, [1], [1.0], [1])
    out = tick(acc, 400.0, [2], [1.0], [1])  # nothing happened in between
    assert [(s.address, s.start) for s in out] == [("10.0.0.1", 0.0)]
    assert [(s.address, s.start) for s in acc.flush()] == [("10.0.0.2", 360.0)]


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="report interval 0"):
        DeviceSummaries(name, interval=0)
