"""Benign rows of a device that scanned a while ago: its ordinary traffic, with a scan's residue
in its damped windows.

A compromised device goes back to its usual traffic after a Mirai-style scan, but its 30 s
window holds the scan for minutes (7,200 probes are still ~90 SYNs three minutes later). The
corpus's compromised scans give only a few such rows, of small scans; these rows cover the
range. They are exact for the agent's features: a damped window is a linear sum, so a row of a
device whose scan of E probes (decayed sum at its end) ended dt seconds ago is its row without
the scan plus E * 2**(-dt / half_life) in each counter the probes fed, and the shape features
that are ratios of the short window's sums are recomputed from the new sums, as
agent/features/windows.py computes them. Only scans: the residue of other attacks (floods)
taught the autoencoder that big publish counts are normal and cost zero-day flood detection
(bench/RESULTS.md "Detection quality").
"""
from __future__ import annotations

import numpy as np

from atlas.agent.detect import BENIGN
from atlas.agent.features.schema import FEATURE_NAMES, HALF_LIVES
from atlas.agent.features.windows import RATIO_MIN_EVENTS
from atlas.train.dataset import Rows

ROWS = 2000  # synthetic rows added to the training rows (~3 % of the benign ones)
AFTER_S = (20.0, 300.0)  # time since the scan's last probe, uniform
RATE = (20.0, 800.0)  # probes per second, log-uniform: the short window's sum at the end
PROBES = (100.0, 20000.0)  # probes in all, log-uniform: the long window's sum (capped by the rate)
PORTS = (1.0, 1000.0)  # distinct ports probed, log-uniform
PROBE_BYTES = 60.0

_F = {n: i for i, n in enumerate(FEATURE_NAMES)}


def scan_aftermath_rows(rows: Rows, n: int = ROWS, seed: int = 0) -> Rows:
    """`n` benign rows of generated captures with a past scan's residue added."""
    rng = np.random.default_rng([seed, 2024])
    pool = np.flatnonzero((rows.y == BENIGN) & np.array([s.startswith("generated/") for s in rows.source], dtype=bool))
    if not len(pool) or n <= 0:
        return rows.take(np.zeros(len(rows), dtype=bool))
    pick = rng.choice(pool, size=n)
    dt = rng.uniform(*AFTER_S, size=n)
    rate = np.exp(rng.uniform(*np.log(RATE), size=n))
    long_end = np.minimum(np.exp(rng.uniform(*np.log(PROBES), size=n)), rate * HALF_LIVES[1] / np.log(2))
    short_end = np.minimum(rate * HALF_LIVES[0] / np.log(2), long_end)  # a scan at this rate, steady state
    ports = np.minimum(np.exp(rng.uniform(*np.log(PORTS), size=n)), long_end)
    out = rows.take(pick)
    out.X = add_scan_residue(
        rows.X[pick], dt, short_end=short_end, long_end=long_end, ports_short_end=np.minimum(ports, short_end),
        ports_long_end=ports, refused=rng.uniform(0, 1, size=n), new_hosts=rng.uniform(0, 1, size=n),
    )
    out.source = np.full(n, "synthetic/scan-aftermath", dtype=object)
    out.hard = np.zeros(n, dtype=bool)
    return out


def add_scan_residue(X: np.ndarray, dt, *, short_end, long_end, ports_short_end, ports_long_end, refused, new_hosts,
                     probe_bytes: float = PROBE_BYTES) -> np.ndarray:
    """Rows `X` of a device, as they would read had it ended a scan `dt` seconds before: the
    scan's decayed probe sums at its end were `short_end` / `long_end` (short and long window),
    its new ports' `ports_short_end` / `ports_long_end`; a share `refused` of the probes was
    answered by a RST, a share `new_hosts` went to hosts new to the device. No SYN+ACK (a
    scan's few open ports are left out). Returns float32 rows in the schema's order."""
    X = np.array(X, dtype=np.float64)
    n = len(X)
    dt, refused, new_hosts = (np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in (dt, refused, new_hosts))
    s = np.broadcast_to(np.asarray(short_end, dtype=np.float64), (n,)) * 2.0 ** (-dt / HALF_LIVES[0])
    lg = 2.0 ** (-dt / HALF_LIVES[1])
    long_end = np.broadcast_to(np.asarray(long_end, dtype=np.float64), (n,))
    sp = np.asarray(ports_short_end, dtype=np.float64) * 2.0 ** (-dt / HALF_LIVES[0])

    def add(name: str, amount: np.ndarray) -> None:
        j = _F[name]
        X[:, j] = np.log1p(np.expm1(X[:, j]) + amount)

    for name, amount in (
        ("pkts_out@2s", s), ("syn_out@2s", s), ("bytes_out@2s", s * probe_bytes), ("rst_in@2s", s * refused),
        ("pkts_in@2s", s * refused), ("bytes_in@2s", s * refused * probe_bytes), ("new_dhosts@2s", s * new_hosts),
        ("new_dports@2s", sp),
        ("pkts_out@30s", long_end * lg), ("syn_out@30s", long_end * lg), ("rst_in@30s", long_end * lg * refused),
        ("new_dports@30s", np.asarray(ports_long_end, dtype=np.float64) * lg),
    ):
        add(name, amount)
    # The short window's ratios, from the new sums (as FeatureExtractor._decay_and_emit).
    e = lambda name: np.expm1(X[:, _F[name]])  # noqa: E731
    pkts, syn, synack, byts = e("pkts_out@2s"), e("syn_out@2s"), e("synack_in@2s"), e("bytes_out@2s")
    X[:, _F["mean_pkt_size_out"]] = np.log1p(np.divide(byts, pkts, out=np.zeros(n), where=pkts > 0))
    X[:, _F["syn_ratio"]] = np.divide(syn, pkts, out=np.zeros(n), where=pkts > 0)
    X[:, _F["unanswered_syn_ratio"]] = np.where(
        syn >= RATIO_MIN_EVENTS, np.clip(1.0 - np.divide(synack, syn, out=np.ones(n), where=syn > 0), 0, 1), 0.0
    )
    return X.astype(np.float32)
