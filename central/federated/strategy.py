"""The strategy interface (after Flower's): configure a round, aggregate its updates, evaluate."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from atlas.link.federated import RoundConfig, clip_norm


@dataclass(frozen=True)
class Update:
    """One gateway's contribution to a round: a flat float32 weight delta and its row count."""

    gateway: str
    delta: np.ndarray
    rows: int


@dataclass
class Aggregate:
    """The combined delta, and which gateways' updates it left out (outliers), for the audit."""

    delta: np.ndarray
    excluded: list[int] = field(default_factory=list)  # indexes into the round's updates
    info: dict[str, float] = field(default_factory=dict)
    excluded_gateways: list[str] = field(default_factory=list)


def stack(updates: list[Update]) -> np.ndarray:
    """The updates' deltas as one [n, d] float64 matrix (same length, finite), or a ValueError."""
    if not updates:
        raise ValueError("aggregate: no updates in this round")
    d = updates[0].delta.size
    for u in updates:
        if u.delta.ndim != 1 or u.delta.size != d:
            raise ValueError(f"update from {u.gateway}: delta has shape {list(u.delta.shape)}, expected [{d}]")
        if not np.all(np.isfinite(u.delta)):
            raise ValueError(f"update from {u.gateway}: delta holds NaN or infinity")
    return np.stack([u.delta.astype(np.float64) for u in updates])


class Strategy(ABC):
    """Aggregation rule. `clip` (optional) bounds each update's L2 norm at the hub, too: a
    gateway that skips its own clipping gains nothing."""

    name = "strategy"

    def __init__(self, clip: float | None = None, epochs: int = 5, batch_size: int = 64, learning_rate: float = 1e-3) -> None:
        if clip is not None and not clip > 0:
            raise ValueError(f"federated clip: must be > 0, got {clip}")
        self.clip = clip
        self._train = {"epochs": int(epochs), "batch_size": int(batch_size), "learning_rate": float(learning_rate)}

    def configure_round(self, round_no: int) -> RoundConfig:
        return RoundConfig(round=round_no, clip=self.clip, **self._train)

    def aggregate(self, updates: list[Update]) -> Aggregate:
        X = stack(updates)
        if self.clip is not None:
            X = np.stack([clip_norm(x, self.clip) for x in X])
        agg = self._combine(X, np.array([u.rows for u in updates], dtype=np.float64))
        agg.delta = agg.delta.astype(np.float32)
        agg.excluded_gateways = [updates[i].gateway for i in agg.excluded]
        return agg

    @abstractmethod
    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:
        """Deltas [n, d] (float64) and each update's row count -> the aggregate."""

    def evaluate(self, weights: np.ndarray, score: Callable[[np.ndarray], dict]) -> dict:
        """Metrics of the aggregated weights on the hub's held-out rows (`score` knows the model)."""
        return score(weights)
