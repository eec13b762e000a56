"""When things happen: periodic and Poisson message times, rush-hour rate curves, keepalive pings.

All times are int64 nanoseconds; every function works on all devices of a class at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.sim.traffic.vec import offsets_of

NS = 1_000_000_000


@dataclass(frozen=True)
class Peak:
    """A period of higher event rates (rush hour): the factor ramps up over `ramp` seconds,
    holds, and ramps down, as a raised cosine. `factor` scales each topic's (peak_factor - 1)."""

    start: int  # ns
    end: int  # ns
    ramp: int  # ns
    factor: float = 1.0

    def shape(self, t: np.ndarray) -> np.ndarray:
        up = np.clip((t - self.start) / max(self.ramp, 1), 0, 1)
        down = np.clip((self.end - t) / max(self.ramp, 1), 0, 1)
        return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def rate_multiplier(t: np.ndarray, peaks: list[Peak], peak_factor: float) -> np.ndarray:
    m = np.ones(t.shape[0])
    for p in peaks:
        m += (peak_factor - 1.0) * p.factor * p.shape(t)
    return m


def periodic(n_dev: int, interval: float, jitter: float, t0: int, t1: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each device sends every `interval` s from a random phase, each send jittered by
    N(0, jitter * interval) (clipped to +-0.45 interval so sends keep their order)."""
    iv = int(interval * NS)
    phase = rng.integers(0, iv, n_dev)
    counts = np.maximum(0, (t1 - t0 - phase + iv - 1) // iv)
    dev = np.repeat(np.arange(n_dev), counts)
    k = np.arange(dev.shape[0]) - np.repeat(offsets_of(counts), counts)
    ts = t0 + phase[dev] + k * iv
    if jitter > 0:
        noise = np.clip(rng.normal(0.0, jitter, dev.shape[0]), -0.45, 0.45) * iv
        ts = ts + noise.astype(np.int64)
    keep = (ts >= t0) & (ts < t1)
    return dev[keep], ts[keep]


def poisson(n_dev: int, interval: float, t0: int, t1: int, rng: np.random.Generator,
            peaks: list[Peak] | None = None, peak_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events per device at rate 1/interval, raised during peaks (thinning)."""
    span = (t1 - t0) / NS
    peaks = peaks or []
    top = 1.0 + (peak_factor - 1.0) * sum(p.factor for p in peaks) if peaks else 1.0
    lam = span / interval * top
    counts = rng.poisson(lam, n_dev)
    dev = np.repeat(np.arange(n_dev), counts)
    ts = t0 + (rng.random(dev.shape[0]) * (t1 - t0)).astype(np.int64)
    if peaks and peak_factor > 1.0:
        keep = rng.random(dev.shape[0]) * top < rate_multiplier(ts, peaks, peak_factor)
        dev, ts = dev[keep], ts[keep]
    o = np.lexsort((ts, dev))
    return dev[o], ts[o]


def ping_times(conn: np.ndarray, sent: np.ndarray, last_before: np.ndarray, end: np.ndarray,
               keepalive_ns: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PINGREQ times: a client that has sent nothing for `keepalive` seconds pings.

    `conn`/`sent`: every client-sent packet time (any order); `last_before[c]`: the client's
    last send before the period; `end[c]`: when the connection stops. Returns (conn, time).
    """
    n_conn = last_before.shape[0]
    c_all = np.concatenate([np.arange(n_conn), conn, np.arange(n_conn)])
    t_all = np.concatenate([last_before, sent, end])
    o = np.lexsort((t_all, c_all))
    c_all, t_all = c_all[o], t_all[o]
    same = c_all[1:] == c_all[:-1]
    a, b, c = t_all[:-1][same], t_all[1:][same], c_all[:-1][same]
    ka = keepalive_ns[c]
    n_p = np.maximum(0, (b - a - 1) // ka)
    rep = np.repeat(np.arange(a.shape[0]), n_p)
    k = np.arange(rep.shape[0]) - np.repeat(offsets_of(n_p), n_p) + 1
    # Client loops check their timers a little late (up to 50 ms), and each ping restarts the
    # timer: the lateness accumulates along a silent gap.
    late = rng.integers(0, 50_000_000, rep.shape[0])
    cum = np.cumsum(late)
    starts = offsets_of(n_p)
    cum -= np.repeat(cum[starts[n_p > 0]] - late[starts[n_p > 0]], n_p[n_p > 0])
    t = a[rep] + k * ka[rep] + cum
    ok = t < b[rep]
    return c[rep][ok], t[ok]
