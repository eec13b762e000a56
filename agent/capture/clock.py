"""Capture time: frame times that windows and incidents can trust.

Frame times come from the kernel or from a capture file, and both can be wrong: a file can hold
NaN, infinite or absurd times (pcapng offsets, damaged records), and a gateway's clock can step
back (NTP correcting a clock that booted wrong). Ticks, incident debouncing and incident ids
need finite times that do not jump far back, so every batch passes a `CaptureClock` first.
"""
from __future__ import annotations

import numpy as np

# 10000-01-01T00:00:00Z: later times cannot be shown as dates, and no capture holds them.
MAX_TS = 253402300800.0
# Time going back by more than this is a clock step (the timeline restarts), not a late packet.
CLOCK_STEP_S = 10.0


def carry_forward(ts: np.ndarray, missing: np.ndarray, before: float) -> np.ndarray:
    """`ts` where each `missing` row has the time of the closest row before it that is not
    missing; `before` for missing rows ahead of any such row."""
    src = np.where(missing, -1, np.arange(len(ts)))
    np.maximum.accumulate(src, out=src)
    return np.where(src >= 0, ts[np.maximum(src, 0)], before)


def bad_times(ts: np.ndarray) -> np.ndarray:
    """Mask of the times that are not times: NaN, infinite, before 1970 or after year 9999."""
    return ~((ts >= 0.0) & (ts < MAX_TS))  # (NaN compares false)


class CaptureClock:
    """The current timeline of one capture: repairs bad times and finds clock steps."""

    def __init__(self, step_s: float = CLOCK_STEP_S) -> None:
        self.step_s = step_s
        self.now: float | None = None  # the latest good time of the current timeline
        self.bad_times = 0  # frames whose time was not a time (given the good time before them)
        self.steps = 0  # times the clock went back by more than step_s

    def repair(self, ts: np.ndarray) -> np.ndarray:
        """`ts`, or a copy in which every bad time is replaced by the good time before it (the
        timeline's latest, or the batch's first good time, or 0 when there is none)."""
        bad = bad_times(ts)
        if not bad.any():
            return ts
        self.bad_times += int(np.count_nonzero(bad))
        if self.now is not None:
            before = self.now
        else:
            good = ts[~bad]
            before = float(good[0]) if len(good) else 0.0
        return carry_forward(ts, bad, before)

    def steps_in(self, ts: np.ndarray) -> list[int]:
        """Indices of `ts` (good times) where the clock steps back; moves the timeline on."""
        cuts: list[int] = []
        start, now = 0, self.now
        while start < len(ts):
            seg = ts[start:]
            latest = np.maximum.accumulate(seg)
            if now is not None:
                np.maximum(latest, now, out=latest)
            prev = np.concatenate(([seg[0] if now is None else now], latest[:-1]))
            back = np.flatnonzero(seg < prev - self.step_s)
            if not len(back):
                now = float(latest[-1])
                break
            start += int(back[0])
            cuts.append(start)
            now = None  # a new timeline starts at the step
        self.steps += len(cuts)
        self.now = now
        return cuts

    def advance(self, t: float) -> bool:
        """Time passes without frames (a live capture's idle wall clock); True at a clock step."""
        if bad_times(np.array([t]))[0]:
            return False
        stepped = self.now is not None and t < self.now - self.step_s
        self.steps += stepped
        self.now = t if stepped or self.now is None else max(self.now, t)
        return stepped
