"""Gaussian differential privacy on clipped updates (DP-FedAvg, McMahan et al., ICLR 2018), as
a wrapper around any strategy (Flower's server-side fixed clipping).

Every update is clipped to L2 norm `clip`, the inner strategy aggregates, and Gaussian noise of
standard deviation noise_multiplier * clip / n is added. For the mean of n clipped updates that
is the Gaussian mechanism at sensitivity clip / n (one gateway added or removed: gateway-level
privacy); epsilon over the rounds comes from its Renyi-DP curve, alpha / (2 z^2) per round
(Mironov, CSF 2017), converted at `delta`. The accounting holds for mean-like rules (FedAvg,
trimmed mean); for median and Krum it is reported the same way but is not a proof.
"""
from __future__ import annotations

import math

import numpy as np
from atlas.central.federated.strategy import (
    Aggregate,
    RoundConfig,
    Strategy,
    Update,
    clip_norm,
)

ALPHAS = tuple([1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 257)))


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon of `rounds` Gaussian releases at noise multiplier z, every gateway in every round."""
    if rounds <= 0:
        return 0.0
    z = noise_multiplier
    return min(rounds * a / (2.0 * z * z) + math.log(1.0 / delta) / (a - 1.0) for a in ALPHAS)


class GaussianDP(Strategy):
    def __init__(self, inner: Strategy, *, clip: float, noise_multiplier: float, delta: float = 1e-5, seed: int = 0) -> None:
        super().__init__(clip=clip)
        if not noise_multiplier > 0:
            raise ValueError(f"federated dp noise_multiplier: must be > 0, got {noise_multiplier}")
        if not 0 < delta < 1:
            raise ValueError(f"federated dp delta: must be in (0, 1), got {delta}")
        self.inner, self.z, self.delta = inner, float(noise_multiplier), float(delta)
        self.name = f"dp-{inner.name}"
        self.rounds = 0
        self._rng = np.random.default_rng(seed)

    def configure_round(self, round_no: int) -> RoundConfig:
        cfg = self.inner.configure_round(round_no)
        return RoundConfig(cfg.round, cfg.epochs, cfg.batch_size, cfg.learning_rate, clip=self.clip)

    def aggregate(self, updates: list[Update]) -> Aggregate:
        assert self.clip is not None
        clipped = [Update(u.gateway, clip_norm(u.delta, self.clip), u.rows) for u in updates]
        agg = self.inner.aggregate(clipped)
        sigma = self.z * self.clip / len(updates)
        agg.delta = (agg.delta + self._rng.normal(0.0, sigma, agg.delta.shape)).astype(np.float32)
        self.rounds += 1
        agg.info.update(noise_std=sigma, epsilon=self.epsilon(), delta=self.delta)
        return agg

    def epsilon(self) -> float:
        return epsilon(self.z, self.rounds, self.delta)

    def _combine(self, X: np.ndarray, rows: np.ndarray) -> Aggregate:  # aggregate() delegates
        raise NotImplementedError
