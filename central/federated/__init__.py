"""Federated learning at the hub: robust aggregation of the gateways' model updates.

A round: the hub's `Strategy.configure_round` says what every gateway trains; each gateway
trains locally and sends an `Update` (a flat weight delta, never rows); `Strategy.aggregate`
combines the deltas, robustly for the Byzantine-resilient rules; `Strategy.evaluate` scores the
result on the hub's held-out rows. One rule per module, written from the papers in numpy.
"""
from atlas.central.federated.dp import GaussianDP
from atlas.central.federated.fedavg import FedAvg
from atlas.central.federated.krum import Krum
from atlas.central.federated.median import CoordinateMedian
from atlas.central.federated.strategy import (
    Aggregate,
    RoundConfig,
    Strategy,
    Update,
    clip_norm,
)
from atlas.central.federated.trimmed_mean import TrimmedMean

STRATEGIES = {"fedavg": FedAvg, "median": CoordinateMedian, "trimmed_mean": TrimmedMean, "krum": Krum}


def make_strategy(name: str, **options: float) -> Strategy:
    """The strategy named in central.toml ([federated] strategy), with its options."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"federated strategy: {name!r} is not one of {', '.join(sorted(STRATEGIES))}") from None
    return cls(**options)


__all__ = [
    "STRATEGIES",
    "Aggregate",
    "CoordinateMedian",
    "FedAvg",
    "GaussianDP",
    "Krum",
    "RoundConfig",
    "Strategy",
    "TrimmedMean",
    "Update",
    "clip_norm",
    "make_strategy",
]
