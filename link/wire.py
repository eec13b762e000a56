"""The wire: what a gateway tells the hub, and what the hub sends back, as domain types.

These dataclasses are the only things the rest of ATLAS sees of the wire: the gRPC client
(agent) and servicer (hub) convert them to and from protobuf in one serde module, so no other
module imports generated protobuf code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from atlas.link.incidents import Incident
from atlas.link.rules import Rule


@dataclass
class GatewayInfo:
    """Sent first on every stream (hello)."""

    gateway_id: str
    software_version: str
    model_versions: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)  # e.g. ["nftables", "mqtt_dynsec"]
    board: str = ""  # gateway profile name (firmware_profiles/gateways)
    # Where the gateway stands, if its config says; the hub's own [gateways.<id>] wins.
    domain: str = ""  # e.g. "energy", "transportation"
    district: str = ""
    subnet: str = ""  # the devices' network behind it, e.g. "10.2.0.0/16"


@dataclass
class Health:
    time: float
    packets_per_s: float = 0.0
    kernel_drops: int = 0
    cpu_percent: float = 0.0  # the agent's share of the whole machine
    cpu_budget: float = 7.3
    shedding_level: int = 0
    open_incidents: int = 0
    spool_depth: int = 0
    spool_dropped: int = 0  # telemetry batches the full spool dropped, oldest first (cumulative)
    model_versions: dict[str, str] = field(default_factory=dict)  # what the agent scores with now


@dataclass
class DeviceSummary:
    """Per-device feature summary over one reporting interval (not per packet)."""

    device: str  # client id if known, else address
    address: str
    start: float
    end: float
    packets: int
    bytes: int
    features: list[float] = field(default_factory=list)  # in the agent's feature schema order
    schema_version: int = 1


@dataclass
class TelemetryBatch:
    seq: int  # per gateway, increasing; the hub acknowledges the highest seq it stored
    time: float
    incidents: list[Incident] = field(default_factory=list)
    devices: list[DeviceSummary] = field(default_factory=list)
    health: Health | None = None


@dataclass
class RuleAck:
    rule_id: str
    applied: bool
    error: str = ""


@dataclass
class SignedRule:
    rule: Rule
    signature: bytes  # Ed25519 over the rule's canonical bytes, by the hub's signing key


@dataclass
class RuleChange:
    """Hub -> agent. `snapshot` is the whole desired set (sent first on every connect)."""

    kind: str  # "snapshot" | "upsert" | "withdraw"
    rules: list[SignedRule] = field(default_factory=list)  # snapshot / upsert
    withdrawn: list[str] = field(default_factory=list)  # rule ids, for withdraw


@dataclass
class ModelUpdate:
    name: str  # "bundle" (atlas.link.bundle); single models are reserved
    version: str
    content: bytes  # the bundle's bytes
    signature: bytes


@dataclass
class ModelAck:
    """The agent's answer to a ModelUpdate (refused: the running model keeps running)."""

    name: str
    version: str
    applied: bool
    error: str = ""  # why not applied, naming the check ("signature: ...")
    model_versions: dict[str, str] = field(default_factory=dict)  # running after the update
