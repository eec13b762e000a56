"""Coordinate-wise median (Yin et al., ICML 2018): each weight's median over the updates.
Any fewer than half the updates can be arbitrary and the result stays between honest values."""
from __future__ import annotations

import numpy as np
from atlas.central.federated.strategy import Aggregate, Strategy


class CoordinateMedian(Strategy):
    name = "median"

    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:
        return Aggregate(np.median(X, axis=0))
