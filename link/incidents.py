"""Incidents: one attack by one source of one kind, as gateways report it and the hub merges it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The attack kinds the classifier knows, plus `anomaly` for what only the anomaly model flags
# (attacks never seen in training), `volumetric` for what the cheap counters flag while
# inference is shed, and the profile-conformance check's two (agent/detect/conformance.py):
# `false_data` (a reading outside the profile's physical range) and `profile_violation`
# (traffic on ports, transports or peers the device's profile does not allow).
KNOWN_KINDS = (
    "port_scan",
    "mqtt_bruteforce",
    "mqtt_flood",
    "connection_dos",
    "slowite",
    "malformed",
    "topic_scan",
)
CONFORMANCE_KINDS = ("false_data", "profile_violation")
KINDS = KNOWN_KINDS + ("anomaly", "volumetric") + CONFORMANCE_KINDS

# Evidence key: the MQTT logins the broker accepted from the attacker's address, by the client
# id they presented ({client_id: count}). The hub revokes a presented identity only on this
# evidence (atlas.central.decide.targeting): a failed guess compromises no credential.
LOGINS_ACCEPTED = "mqtt_logins_accepted"
# Evidence key of an `anomaly` incident: the classifier's most likely known kinds and their
# probabilities ({kind: p}), a hint only (the traffic was outside what the classifier knows).
NEAREST_KINDS = "nearest_kinds"


@dataclass
class Incident:
    """An attack by one source of one kind, from first to last triggering evidence."""

    id: str  # stable for the incident's life: "<gateway>/<src_ip>/<kind>/<first ms>"
    kind: str  # one of KINDS
    src_ip: str  # the attacker's address
    dst_ip: str  # the main target (most packets), "" if none
    device: str  # the attacking device's identity: MQTT client id if known, else its address
    gateway: str
    time: float  # epoch seconds of the first triggering packet
    last_seen: float  # epoch seconds of the latest triggering evidence
    score: float  # highest detector score seen, 0..1 for the classifier, >1 above threshold for anomaly
    model_version: str
    packets: int = 0  # packets from src_ip while the incident was open
    state: str = "open"  # open | closed
    evidence: dict[str, Any] = field(default_factory=dict)  # counters and a few decoded packets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
