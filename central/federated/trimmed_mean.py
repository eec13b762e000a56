"""Coordinate-wise trimmed mean (Yin et al., ICML 2018): per weight, drop the `beta` share of
largest and of smallest values and average the rest. With beta * n >= the attackers' count,
every kept value lies within the honest updates' range."""
from __future__ import annotations

import math

import numpy as np
from atlas.central.federated.strategy import Aggregate, Strategy


class TrimmedMean(Strategy):
    name = "trimmed_mean"

    def __init__(self, beta: float = 0.2, **kw: float) -> None:
        super().__init__(**kw)
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"federated trimmed_mean beta: must be in [0, 0.5), got {beta}")
        self.beta = float(beta)

    def trimmed(self, n: int) -> int:
        """Values cut from each end of n (ceil: a share of 0.2 of 6 gateways trims 2, not 1)."""
        k = math.ceil(self.beta * n - 1e-9)
        return min(k, (n - 1) // 2)

    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:
        k = self.trimmed(len(X))
        S = np.sort(X, axis=0)
        return Aggregate(S[k : len(X) - k].mean(axis=0), info={"trimmed_each_side": float(k)})
