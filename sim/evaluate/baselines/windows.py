"""Sliding-window thresholds over events, vectorized (the counting core of the rule baselines).

An event has a time, a tracking key (the source address, as Suricata's `track by_src`), an
optional value counted once per window (`distinct`: e.g. destination ports of a scan) and an
optional weight (bytes, for volume rules). `crossings` marks the events at which the window
`(t - seconds, t]` of their key reaches the rule's count, which is when an IDS using
`threshold`/`detection_filter` would raise the alert.
"""
from __future__ import annotations

import numpy as np


def crossings(ts: np.ndarray, key: np.ndarray, count: float, seconds: float,
              distinct: np.ndarray | None = None, weight: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask over the events: True where the window of the event's key reaches `count`
    (events, or the sum of `weight`). `distinct`: count each (key, value) once per window."""
    n = len(ts)
    hit = np.zeros(n, dtype=bool)
    if n == 0:
        return hit
    ts = np.asarray(ts, dtype=np.float64)
    key = np.asarray(key)
    keep = np.ones(n, dtype=bool)
    if distinct is not None:
        keep = _first_in_window(ts, key, np.asarray(distinct), seconds)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((ts[idx], key[idx]))]
    k, t = key[order], ts[order]
    w = np.ones(len(order)) if weight is None else np.asarray(weight, dtype=np.float64)[order]
    # Lay every key's events on one time line, keys far apart, so one searchsorted finds each
    # window's left edge without crossing into the previous key.
    group = np.concatenate(([0], np.cumsum(k[1:] != k[:-1])))
    span = float(t.max() - t.min()) + 2.0 * seconds + 1.0
    line = (t - t.min()) + group * span
    left = np.searchsorted(line, line - seconds, side="right")  # first event inside (t-s, t]
    csum = np.concatenate(([0.0], np.cumsum(w)))
    total = csum[np.arange(len(order)) + 1] - csum[left]
    hit[order] = total >= count - 1e-9
    return hit


def _first_in_window(ts: np.ndarray, key: np.ndarray, value: np.ndarray, seconds: float) -> np.ndarray:
    """An event counts for its (key, value) unless the same pair was counted in the previous
    `seconds` (the pair's previous event, kept or not: a slight undercount for values that
    repeat just under the window, which scans do not do)."""
    order = np.lexsort((ts, value, key))
    k, v, t = key[order], value[order], ts[order]
    new = np.ones(len(order), dtype=bool)
    same = (k[1:] == k[:-1]) & (v[1:] == v[:-1])
    new[1:] = ~same | (t[1:] - t[:-1] > seconds)
    out = np.zeros(len(ts), dtype=bool)
    out[order] = new
    return out


def episodes(ts: np.ndarray, key: np.ndarray, gap: float) -> list[tuple[int, float, float, int]]:
    """Group alert times per key into episodes split by quiet gaps longer than `gap` seconds:
    (key, first, last, alerts) each, in order of first time."""
    if len(ts) == 0:
        return []
    order = np.lexsort((ts, key))
    k, t = np.asarray(key)[order], np.asarray(ts, dtype=np.float64)[order]
    cut = np.ones(len(order), dtype=bool)
    cut[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] > gap)
    starts = np.flatnonzero(cut)
    ends = np.append(starts[1:], len(order)) - 1
    out = [(int(k[s]), float(t[s]), float(t[e]), int(e - s + 1)) for s, e in zip(starts, ends)]
    return sorted(out, key=lambda x: (x[1], x[0]))
