"""Capture time (atlas.agent.capture.clock): bad times repaired, clock steps found."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.agent.capture.clock import MAX_TS, CaptureClock, bad_times, carry_forward

NAN, INF = float("nan"), float("inf")


def test_bad_times_are_nan_infinite_negative_or_past_year_9999():
    ts = np.array([0.0, 1.7e9, MAX_TS - 1, NAN, INF, -INF, -0.5, MAX_TS, 1e300])
    assert bad_times(ts).tolist() == [False] * 3 + [True] * 6


def test_carry_forward():
    ts = np.array([NAN, 2.0, NAN, NAN, 5.0, NAN])
    out = carry_forward(ts, np.isnan(ts), 1.5)
    assert out.tolist() == [1.5, 2.0, 2.0, 2.0, 5.0, 5.0]


def test_repair_gives_bad_times_the_good_time_before_them():
    c = CaptureClock()
    ts = np.array([1.0, 2.0, 3.0])
    assert c.repair(ts) is ts and c.bad_times == 0  # nothing to repair: no copy
    out = c.repair(np.array([NAN, INF, 7.0, -1.0, 8.0, 1e300]))
    assert out.tolist() == [7.0, 7.0, 7.0, 7.0, 8.0, 8.0]  # before any good time: the first good one
    assert c.bad_times == 4
    c.steps_in(out)
    assert c.repair(np.array([NAN, 9.0])).tolist() == [8.0, 9.0]  # the timeline's latest time
    assert CaptureClock().repair(np.array([NAN, -INF])).tolist() == [0.0, 0.0]  # none at all: 0


def test_small_jitter_is_not_a_step_but_a_big_jump_back_is():
    c = CaptureClock(step_s=10.0)
    assert c.steps_in(np.array([100.0, 101.0, 95.0, 102.0, 92.5])) == []  # late, not a step
    assert c.now == 102.0
    # Measured against the latest time seen (103): 91.9 is a step, and the new timeline starts there.
    assert c.steps_in(np.array([103.0, 91.9, 92.0, 50.0, 51.0, 42.0])) == [1, 3]
    assert c.now == 51.0 and c.steps == 2
    assert c.steps_in(np.array([20.0])) == [0]  # across batches too
    assert c.steps == 3


def test_many_steps_in_one_batch():
    c = CaptureClock(step_s=1.0)
    ts = np.array([100.0, 50.0, 25.0, 12.0, 6.0, 3.0])
    assert c.steps_in(ts) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("t", [NAN, INF, -INF, -5.0])
def test_advance_ignores_bad_times(t):
    c = CaptureClock()
    c.steps_in(np.array([100.0]))
    assert c.advance(t) is False and c.now == 100.0


def test_advance_moves_on_and_finds_steps():
    c = CaptureClock(step_s=10.0)
    assert c.advance(100.0) is False and c.now == 100.0
    assert c.advance(95.0) is False and c.now == 100.0  # behind, but not a step
    assert c.advance(200.0) is False and c.now == 200.0
    assert c.advance(150.0) is True and c.now == 150.0 and c.steps == 1
