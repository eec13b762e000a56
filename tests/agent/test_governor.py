"""The CPU governor's control loop, driven by a synthetic CPU clock, and by real load."""
import time

import pytest

from atlas.agent.governor import MAX_LEVEL, CpuGovernor, Shedding


class Clock:
    """Wall and CPU time under the test's control (the one place nothing real can run:
    a test cannot make the machine's CPU share exactly 9 %)."""

    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0

    def run(self, seconds, share_of_machine, cores=2):
        self.wall += seconds
        self.cpu += seconds * share_of_machine * cores


def governor(clock, **kw):
    return CpuGovernor(7.3, cpu_seconds=lambda: clock.cpu, clock=lambda: clock.wall, cores=2, **kw)


def test_sheds_one_level_per_interval_above_the_high_water_mark():
    c = Clock()
    g = governor(c)
    levels = []
    for _ in range(5):
        c.run(1.0, 0.09)  # 9 % of the machine > 0.9 * 7.3
        g.poll()
        levels.append(g.level)
    assert g.percent == pytest.approx(9.0)
    assert levels == [1, 2, 3, MAX_LEVEL, MAX_LEVEL]


def test_restores_only_after_sustained_calm_and_holds_in_between():
    c = Clock()
    g = governor(c, restore_after=3)
    for _ in range(2):
        c.run(1.0, 0.20)
        g.poll()
    assert g.level == 2
    c.run(1.0, 0.05)  # between low (3.65 %) and high (6.57 %) water: hold
    g.poll()
    assert g.level == 2
    for _ in range(2):
        c.run(1.0, 0.01)
        g.poll()
    assert g.level == 2  # two calm intervals are not enough
    c.run(1.0, 0.01)
    g.poll()
    assert g.level == 1


def test_polls_faster_than_the_interval_do_not_measure():
    c = Clock()
    g = governor(c)
    c.run(0.5, 0.5)
    assert g.poll() is False and g.level == 0


def test_shedding_order_is_dissection_then_inference_then_windows():
    assert Shedding.at(0) == Shedding(1, 1, 1)
    assert Shedding.at(1).dissect_every > 1 and Shedding.at(1).infer_every == 1
    assert Shedding.at(2).infer_every > 1 and Shedding.at(2).tick_factor == 1
    assert Shedding.at(3).tick_factor > 1


def test_budget_must_be_a_share():
    with pytest.raises(ValueError, match="cpu_percent"):
        CpuGovernor(0)


def test_real_process_cpu_is_measured():
    g = CpuGovernor(7.3, interval_s=0.2)
    end = time.monotonic() + 0.4
    while time.monotonic() < end:  # busy: about one core of two
        pass
    g.poll()
    assert g.percent > 20.0
