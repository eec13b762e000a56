"""The CPU governor: keeps the agent's own CPU share of the machine under its budget.

Every `interval_s` it measures the process's CPU time against wall time and the
machine's core count. Near the budget it sheds load one level at a time, in a defined order,
and restores a level once usage has stayed low for a while:

  level 0  everything on
  level 1  deep dissection (Scapy evidence) sampled 10x less
  level 2  inference every 4th tick instead of every tick (cheap counters still checked)
  level 3  ticks 4x longer: fewer feature rows (window detail)

Cheap counters (packets and SYNs per device) are evaluated at every level, so a volumetric
attack stays visible however much is shed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import psutil

MAX_LEVEL = 3
LEVEL_NAMES = ("full", "sampled-dissection", "reduced-inference", "coarse-windows")


@dataclass(frozen=True)
class Shedding:
    """What the pipeline should do at a given level."""

    dissect_every: int  # deep-dissect 1 in N candidate packets
    infer_every: int  # run the models every N ticks
    tick_factor: int  # tick length multiplier

    @staticmethod
    def at(level: int) -> "Shedding":
        return (
            Shedding(1, 1, 1),
            Shedding(10, 1, 1),
            Shedding(10, 4, 1),
            Shedding(10, 4, 4),
        )[level]


class CpuGovernor:
    """Measures the agent's CPU share and sets the shedding level."""

    def __init__(
        self,
        budget_percent: float = 7.3,
        *,
        interval_s: float = 1.0,
        high_water: float = 0.9,  # shed when usage exceeds this fraction of the budget
        low_water: float = 0.5,  # restore when usage stays below this fraction ...
        restore_after: int = 5,  # ... for this many consecutive measurements
        cpu_seconds: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
    ) -> None:
        if not 0 < budget_percent <= 100:
            raise ValueError(f"budget.cpu_percent must be in (0, 100], got {budget_percent}")
        self.budget = float(budget_percent)
        self.interval_s = interval_s
        self.high_water, self.low_water, self.restore_after = high_water, low_water, restore_after
        # process_time (user + system of this process) reads right under qemu-user too, where
        # /proc/self/stat, and so psutil's cpu_times, reads zero.
        self._cpu_seconds = cpu_seconds or time.process_time
        self._clock = clock
        self.cores = cores or psutil.cpu_count() or 1
        self.level = 0
        self.percent = 0.0  # latest measured share of the whole machine, in percent
        self._calm = 0
        self._last_wall = clock()
        self._last_cpu = self._cpu_seconds()
        self.history: list[tuple[float, float, int]] = []  # (wall, percent, level), bounded
        self.changes = 0

    @property
    def shedding(self) -> Shedding:
        return Shedding.at(self.level)

    def poll(self) -> bool:
        """Measure if an interval has passed; returns True when the level changed."""
        wall = self._clock()
        if wall - self._last_wall < self.interval_s:
            return False
        cpu = self._cpu_seconds()
        self.percent = 100.0 * (cpu - self._last_cpu) / ((wall - self._last_wall) * self.cores)
        self._last_wall, self._last_cpu = wall, cpu
        before = self.level
        if self.percent > self.high_water * self.budget and self.level < MAX_LEVEL:
            self.level += 1
            self._calm = 0
        elif self.percent < self.low_water * self.budget and self.level > 0:
            self._calm += 1
            if self._calm >= self.restore_after:
                self.level -= 1
                self._calm = 0
        else:
            self._calm = 0
        self.history.append((wall, self.percent, self.level))
        del self.history[:-600]
        self.changes += self.level != before
        return self.level != before
