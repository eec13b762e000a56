"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

Each update's score is the sum of squared distances to its n - f - 2 nearest other updates;
Krum picks the update of least score, Multi-Krum averages the m of least score. With
2f + 2 < n the chosen update is close to the honest ones whatever the f others send.
"""
from __future__ import annotations

import numpy as np
from atlas.central.federated.strategy import Aggregate, Strategy


def krum_scores(X: np.ndarray, f: int) -> np.ndarray:
    n = len(X)
    sq = np.sum(X * X, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)
    k = max(n - f - 2, 1)
    np.fill_diagonal(d2, np.inf)
    return np.sort(d2, axis=1)[:, :k].sum(axis=1)


class Krum(Strategy):
    name = "krum"

    def __init__(self, f: int = 1, m: int = 1, **kw: float) -> None:
        super().__init__(**kw)
        if f < 0 or m < 1:
            raise ValueError(f"federated krum: need f >= 0 and m >= 1, got f={f}, m={m}")
        self.f, self.m = int(f), int(m)

    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:
        n = len(X)
        if n < 2 * self.f + 3:
            raise ValueError(f"krum: {n} updates cannot outvote f={self.f} attackers (needs n >= 2f + 3)")
        chosen = np.argsort(krum_scores(X, self.f), kind="stable")[: min(self.m, n)]
        left_out = sorted(set(range(n)) - set(chosen.tolist()))
        return Aggregate(X[chosen].mean(axis=0), excluded=left_out)
