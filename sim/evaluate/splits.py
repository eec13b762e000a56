"""The protocol that keeps the test set clean: seeds and campaign templates split three ways.

- `training`: cities that models are trained on, and every city looked at while building ATLAS
  (the demo and headline cities, seeds 1, 2, 3, 7, all tuned something), seeds [0, 1,000,000).
- `validation`: model and threshold selection only, seeds [1,000,000, 2,000,000).
- `report`: looked at only to report, seeds [9,000,000, 10,000,000), and campaign templates
  held out (atlas.sim.city.schedule.HELD_OUT_TEMPLATES): no correlator was written or tuned on
  their shapes, so a report city's campaigns test generalisation, not memory.

Each template is declared in exactly one split (TEMPLATE_SPLIT); a city of a split draws its
campaigns from that split's templates only.
"""
from __future__ import annotations

from atlas.sim.city.schedule import ALL_TEMPLATES

SPLITS = ("training", "validation", "report")
SEED_RANGES: dict[str, tuple[int, int]] = {
    "training": (0, 1_000_000),
    "validation": (1_000_000, 2_000_000),
    "report": (9_000_000, 10_000_000),
}
TEMPLATE_SPLIT: dict[str, str] = {
    "three_domains": "training",
    "credential_exfiltration": "training",
    "credential_tamper": "training",
    "four_stages": "training",
    "domain_then_jump": "validation",
    "scan_then_tamper": "report",
    "two_credentials_exfiltration": "report",
    "domain_pair_then_tamper": "report",
}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def seeds_of(split: str, n: int, first: int = 0) -> list[int]:
    """The split's n seeds from its `first`-th on (the same call, the same cities)."""
    lo, hi = SEED_RANGES[check_split(split)]
    if n < 1:
        raise ValueError(f"seeds: must be >= 1, got {n}")
    if first < 0 or lo + first + n > hi:
        raise ValueError(f"seeds: {split} has {hi - lo} seeds, asked for {first}..{first + n - 1}")
    return list(range(lo + first, lo + first + n))


def split_of_seed(seed: int) -> str | None:
    """The split a seed belongs to (None: outside every split's range)."""
    return next((name for name, (lo, hi) in SEED_RANGES.items() if lo <= seed < hi), None)


def templates_of(split: str) -> tuple[str, ...]:
    """The campaign templates a city of this split draws from, in ALL_TEMPLATES' order."""
    check_split(split)
    return tuple(t for t in ALL_TEMPLATES if TEMPLATE_SPLIT[t] == split)


__all__ = ["SEED_RANGES", "SPLITS", "TEMPLATE_SPLIT", "check_split", "seeds_of", "split_of_seed", "templates_of"]
