"""The attack library: one module per kind, each parameterized and randomized by a seed.

An attack is a function `(ctx: AttackContext, spec: AttackSpec, rng) -> PlannedStep` registered
with `@attack(kind, defaults)`. It adds its packets to `ctx.wire` (the capture generator tags
them with the step's owner) and says who attacked whom; the generator then measures the
step's first/last attacker packet from what was actually written.

Kinds are the agent's KNOWN_KINDS (atlas.agent.alerts), which the classifier is trained on,
plus NOVEL_KINDS (mirai_scan, exfiltration, false_data), which it never sees: the evaluation's
zero-day kinds. A new kind is a new module with `@attack("new_kind", {...})`, imported at the
bottom of this file; a campaign is a list of AttackSpec sharing `campaign` with increasing
`stage`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from atlas.link.incidents import KNOWN_KINDS
from atlas.sim.attacks.base import AttackContext, PlannedStep


@dataclass
class AttackSpec:
    """What to attack, when and how. Times are seconds after the capture starts; None lets
    the seed choose. `params` override the kind's defaults (see `ATTACKS[kind].defaults`)."""

    kind: str
    start: float | None = None
    duration: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    attacker: str | None = None  # an address; a device's address makes it a compromised device
    victims: list[str] | None = None
    campaign: str = ""
    stage: int = 1
    id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"attack kind {self.kind!r}: must be one of {', '.join(sorted(ATTACKS))}")
        attack = ATTACKS[self.kind]
        unknown = sorted(set(self.params) - set(attack.defaults))
        if unknown:
            raise ValueError(f"attack {self.kind}: unknown parameter {unknown[0]!r} (allowed: {', '.join(sorted(attack.defaults)) or 'none'})")
        for k, v in self.params.items():
            d = attack.defaults[k]
            if isinstance(d, bool) and not isinstance(v, bool):
                raise ValueError(f"attack {self.kind}: parameter {k!r} must be true or false, got {v!r}")
            if isinstance(d, (int, float)) and not isinstance(d, bool) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"attack {self.kind}: parameter {k!r} must be a number, got {v!r}")
            if isinstance(d, (int, float)) and not isinstance(d, bool) and v < 0:
                raise ValueError(f"attack {self.kind}: parameter {k!r} must be >= 0, got {v!r}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"attack {self.kind}: duration must be > 0")
        if self.start is not None and self.start < 0:
            raise ValueError(f"attack {self.kind}: start must be >= 0 (seconds after the capture starts)")


@dataclass
class Attack:
    kind: str
    fn: Callable[[AttackContext, AttackSpec, np.random.Generator], PlannedStep]
    defaults: dict[str, Any]
    duration: float  # default duration in seconds
    doc: str = ""


ATTACKS: dict[str, Attack] = {}


def attack(kind: str, defaults: dict[str, Any], *, duration: float = 60.0):
    """Register an attack generator for `kind`."""

    def deco(fn):
        ATTACKS[kind] = Attack(kind, fn, dict(defaults), duration, (fn.__doc__ or "").strip())
        return fn

    return deco


def run_attack(ctx: AttackContext, spec: AttackSpec, rng: np.random.Generator, *, index: int = 0) -> PlannedStep:
    """Resolve the spec's times and run its generator."""
    a = ATTACKS[spec.kind]
    span = (ctx.t1 - ctx.t0) / 1e9
    dur = spec.duration if spec.duration is not None else a.duration
    start = spec.start if spec.start is not None else float(rng.uniform(0.05, 0.6)) * span
    if start >= span:
        raise ValueError(f"attack {spec.kind}: starts at {start:g} s, after the capture ends ({span:g} s)")
    ctx.begin(int(round(start * 1e9)), int(round(dur * 1e9)), spec, {**a.defaults, **spec.params})
    step = a.fn(ctx, spec, rng)
    step.id = spec.id or f"{ctx.gateway}/{spec.kind}/{index + 1}"
    step.kind, step.campaign, step.stage = spec.kind, spec.campaign, spec.stage
    step.params = {"start_offset": round(start, 6), "duration": dur, **a.defaults, **spec.params, **step.params}
    return step


def one_of_each(rng: np.random.Generator, duration: float, kinds=KNOWN_KINDS, *, warmup: float = 60.0) -> list[AttackSpec]:
    """One attack of each kind with default parameters, in random order, each in its own time
    slot after a benign warm-up (so that steps do not overlap)."""
    kinds = list(kinds)
    rng.shuffle(kinds)
    warmup = min(warmup, duration * 0.2)
    slot = (duration - warmup) / max(len(kinds), 1)
    out = []
    for i, kind in enumerate(kinds):
        length = float(rng.uniform(0.4, 0.7)) * slot
        start = warmup + i * slot + float(rng.uniform(0, slot - length))
        out.append(AttackSpec(kind, start=round(start, 3), duration=round(length, 3)))
    return out


# Importing the modules registers the kinds.
from atlas.sim.attacks import bruteforce, dos, flood, malformed, scan, slowite, topic_scan  # noqa: E402,F401
# Kinds left out of the classifier's training (the evaluation's novel attacks).
from atlas.sim.attacks import exfiltration, false_data, mirai  # noqa: E402,F401
NOVEL_KINDS = ("mirai_scan", "exfiltration", "false_data")

missing = set(KNOWN_KINDS) - set(ATTACKS)
assert not missing, f"attack kinds without a generator: {sorted(missing)}"

__all__ = ["ATTACKS", "NOVEL_KINDS", "Attack", "AttackContext", "AttackSpec", "PlannedStep", "attack", "one_of_each", "run_attack"]
