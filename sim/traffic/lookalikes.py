"""Benign look-alikes: normal events that resemble attacks and must NOT be flagged.

- `firmware_update`: an OTA server pushes a firmware image in 4 kB QoS 1 chunks to a group of
  devices of one class (looks like a publish flood), then each device reboots and reconnects.
- `rush_hour`: event-driven topics (vehicle presence, bus doors, camera events, ...) rise to
  their profile's `peak_factor` times the normal rate (looks like a rate anomaly).
- `power_cut`: a district loses power; every device drops off without a goodbye and they all
  reconnect within seconds when power returns (looks like connection DoS). The broker, on the
  gateway's UPS, closes the dead sessions after 1.5 x keepalive; the rebooted devices answer
  its FIN with RST.

They are planned here and woven into the benign traffic by `benign.py`; each one is recorded
as a `BenignEvent` so an evaluation can count false positives on them specifically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LOOKALIKE_KINDS = ("firmware_update", "rush_hour", "power_cut")

# Defaults per kind: duration (s) and parameters; CLI and API values override them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "firmware_update": {"duration": 60.0, "cls": "", "devices": 10, "image_kb": 1536, "chunk_bytes": 4096, "rate": 50.0, "stagger": 2.0},
    "rush_hour": {"duration": 1800.0, "ramp": 300.0, "factor": 1.0},
    "power_cut": {"duration": 20.0, "fraction": 1.0, "boot_min": 3.0, "boot_max": 12.0},
}


@dataclass
class LookalikeSpec:
    kind: str
    start: float | None = None  # seconds after the capture starts; None: chosen by the seed
    duration: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in LOOKALIKE_KINDS:
            raise ValueError(f"look-alike kind {self.kind!r}: must be one of {', '.join(LOOKALIKE_KINDS)}")
        unknown = sorted(set(self.params) - set(DEFAULTS[self.kind]) - {"duration"})
        if unknown:
            raise ValueError(f"look-alike {self.kind}: unknown parameter {unknown[0]!r} (allowed: {', '.join(k for k in DEFAULTS[self.kind] if k != 'duration')})")

    def param(self, name: str) -> Any:
        return self.params.get(name, DEFAULTS[self.kind][name])


@dataclass
class BenignEvent:
    """Ground truth for a look-alike: what happened, to whom, when (first/last packet)."""

    id: str
    kind: str
    gateway: str
    hosts: list[str]  # the addresses whose traffic the event shaped
    start: float  # epoch seconds of its first packet (or of the period, for rush_hour)
    end: float
    packets: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["benign"] = True
        return d
