"""FedAvg (McMahan et al., AISTATS 2017): the row-weighted mean of the updates. Not robust: one
update of any size moves the mean as far as it likes."""
from __future__ import annotations

import numpy as np
from atlas.central.federated.strategy import Aggregate, Strategy


class FedAvg(Strategy):
    name = "fedavg"

    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:
        w = rows / rows.sum() if rows.sum() > 0 else np.full(len(rows), 1.0 / len(rows))
        return Aggregate(w @ X)
