"""Store: everything the hub must not forget, behind one interface.

`Store` is the interface the hub uses; `SQLiteStore` (one file, the default) implements it.
The schema is defined by numbered migrations (atlas.central.store.migrations), applied at
open and recorded in `schema_version`, so a PostgreSQL store can follow with the same
numbering and the same records.

The records below are what the store returns; they are plain dataclasses so the CLI can print
them and `--json` can dump them without knowing SQL.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from atlas.link.rules import Rule
from atlas.link.wire import DeviceSummary, GatewayInfo, Health


class StoreError(RuntimeError):
    """The store cannot be used as asked (wrong schema version, read-only, missing file)."""


@dataclass
class GatewayRecord:
    id: str
    first_seen: float
    last_seen: float
    software_version: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    board: str = ""
    health: dict[str, Any] | None = None  # the latest Health, as a dict
    connections: int = 0  # 1 while the gateway's stream is up, else 0
    last_seq: int = 0  # highest telemetry seq stored
    # where the hub places it: its [gateways.<id>] config, else what its hello said
    domain: str = ""
    district: str = ""
    subnet: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HubIncident:
    """One attack as the hub sees it: the same attacker and kind, merged across gateways."""

    id: str
    kind: str
    src_ip: str
    device: str
    dst_ip: str
    first_seen: float
    last_seen: float
    score: float
    packets: int
    state: str  # open | closed
    created_at: float  # hub clock
    gateways: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IncidentReport:
    """One agent incident as its gateway last reported it, and the hub incident it joined."""

    gateway: str
    agent_id: str
    incident: str  # HubIncident.id
    kind: str
    src_ip: str
    dst_ip: str
    device: str
    time: float
    last_seen: float
    score: float
    packets: int
    state: str
    model_version: str
    evidence: dict[str, Any]
    received_at: float


@dataclass
class DecisionRecord:
    id: str
    incident: str
    policy: str
    action: str  # one of ACTIONS, or "none"
    target: str
    params: dict[str, Any]
    ttl: float
    reason: str
    gateways: list[str]
    requires_approval: bool
    shadow: bool
    # none | suppressed | pending_approval | active | shadow | expired | revoked
    state: str
    created_at: float
    expires_at: float | None = None  # set when rules are issued
    approved_by: str = ""
    approved_at: float | None = None
    campaign: str = ""  # the campaign its incident was part of when decided, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CampaignLink:
    """Why two incidents of a campaign belong together (atlas.central.correlate)."""

    earlier: str  # HubIncident ids
    later: str
    reason: str  # same_attacker | pivot | same_identity
    scope: str  # gateway | domain | city
    detail: str = ""
    gateways: tuple[str, str] = ("", "")  # the reporting gateways of earlier, later
    # what the city graph says relates the two incidents' assets (atlas.central.ontology.query
    # Relation.to_dict: kind, detail, between): evidence shown beside the reason, never a
    # reason to link by itself (every device behind a gateway shares its broker)
    relations: list[dict[str, str]] = field(default_factory=list)


@dataclass
class CampaignRecord:
    """Incidents the correlator linked into one attack campaign."""

    id: str
    engine: str
    scope: str  # the widest scope of its links
    first_seen: float
    last_seen: float
    created_at: float
    updated_at: float
    state: str = "open"  # open | merged (into merged_into)
    merged_into: str = ""
    incidents: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    attackers: list[str] = field(default_factory=list)
    links: list[CampaignLink] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A rule's life at the hub, per gateway (one row per rule and gateway):
#   active   sent to its gateway, which applied it or has not answered yet
#   refused  its gateway answered that it did not apply it (ack_error says why); it stays
#            desired until its expiry, re-sent on every reconnect (a gateway that refused a
#            bad signature keeps its last verified copy only while the hub still lists it;
#            one that refused for lack of a backend may take it later: its ack makes it
#            active again)
#   shadow   recorded, never sent; expired / revoked: ended
RULE_STATES = ("active", "refused", "shadow", "expired", "revoked")
RULE_SENT = ("active", "refused")  # states in which the gateway is sent the rule
RULE_UNENDED = RULE_SENT + ("shadow",)  # states that end at expiry or revocation


@dataclass
class RuleRecord:
    rule: Rule
    gateway: str
    state: str  # see RULE_STATES
    signature: bytes
    created_at: float
    ended_at: float | None = None
    ack_applied: bool | None = None  # None: not acknowledged yet
    ack_error: str = ""
    ack_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["signature"] = self.signature.hex()
        return out


@dataclass
class AuditRow:
    seq: int
    time: float
    kind: str
    payload: str  # canonical JSON text, exactly as hashed
    prev_hash: str
    hash: str


@dataclass
class OperatorCommand:
    id: int
    kind: str  # approve | revoke
    argument: str
    operator: str
    created_at: float
    state: str  # queued | done | failed
    result: str = ""
    finished_at: float | None = None


@dataclass
class ModelBundleRecord:
    """A model bundle an operator uploaded (atlas.link.bundle), and its signature."""

    version: str
    sha256: str
    size: int
    meta: dict[str, Any]  # meta.json, without the bulky mean/std
    uploaded_at: float
    uploaded_by: str
    signature: bytes | None = None  # set by the hub when it takes the push
    content: bytes | None = None  # only when asked for

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("content")
        out["signature"] = self.signature.hex() if self.signature else None
        return out


@dataclass
class ModelStatus:
    """What one gateway did with one bundle: sent | applied | refused."""

    gateway: str
    version: str
    state: str
    error: str = ""
    sent_at: float | None = None
    acked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HubState:
    pid: int
    host: str
    started_at: float
    heartbeat: float
    listen: str
    version: str
    stopped_at: float | None = None  # set by a clean shutdown


class Store(abc.ABC):
    """What the hub persists. Implementations must be safe to call from many threads."""

    # -- lifecycle and schema -------------------------------------------------------------
    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """All writes inside commit together or not at all. A nested transaction is a
        savepoint: an exception inside it undoes only its own writes (and propagates)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- gateways and telemetry -----------------------------------------------------------
    @abc.abstractmethod
    def record_hello(self, gateway_id: str, info: GatewayInfo, now: float) -> None: ...

    @abc.abstractmethod
    def record_disconnect(self, gateway_id: str, now: float) -> None: ...

    @abc.abstractmethod
    def reset_connections(self) -> None:
        """At hub start: no stream survives a restart."""

    @abc.abstractmethod
    def get_seq(self, gateway_id: str) -> int: ...

    @abc.abstractmethod
    def record_batch(self, gateway_id: str, seq: int, now: float, health: Health | None) -> None:
        """Store the new highest seq, last-seen time and latest health of a gateway."""

    @abc.abstractmethod
    def store_devices(self, gateway_id: str, seq: int, time: float, received_at: float,
                      devices: Sequence[DeviceSummary]) -> None:
        """Keep one batch's device summaries (one row per batch). `devices` may be the wire's
        PackedDevices (atlas.link.serde), kept as received without decoding."""

    @abc.abstractmethod
    def device_summaries(self, gateway_id: str | None = None, since: float = 0.0
                         ) -> Iterator[tuple[str, int, DeviceSummary]]:
        """(gateway, seq, summary) of batches received at or after `since`, oldest first."""

    @abc.abstractmethod
    def prune_telemetry(self, before: float, limit: int = 10_000) -> int:
        """Delete up to `limit` stored batches received before `before`; returns how many."""

    @abc.abstractmethod
    def get_gateway(self, gateway_id: str) -> GatewayRecord | None: ...

    @abc.abstractmethod
    def list_gateways(self) -> list[GatewayRecord]: ...

    def list_devices(self, gateway_id: str | None = None, since: float = 0.0
                     ) -> list[dict[str, Any]]:
        """Per (gateway, device): the latest summary, with packets and bytes summed over the
        batches kept since `since`."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for gateway, seq, d in self.device_summaries(gateway_id, since):
            key = (gateway, d.device)
            row = latest.get(key)
            if row is None:
                row = latest[key] = {"gateway": gateway, "device": d.device, "packets": 0,
                                     "bytes": 0, "first_seen": d.start, "batches": 0}
            row.update(address=d.address, last_seen=d.end, features=d.features,
                       schema_version=d.schema_version, seq=seq)
            row["packets"] += d.packets
            row["bytes"] += d.bytes
            row["batches"] += 1
            row["first_seen"] = min(row["first_seen"], d.start)
        return [latest[k] for k in sorted(latest)]

    # -- incidents ------------------------------------------------------------------------
    @abc.abstractmethod
    def get_report(self, gateway_id: str, agent_id: str) -> IncidentReport | None: ...

    @abc.abstractmethod
    def put_report(self, report: IncidentReport) -> None:
        """Insert or replace the report keyed by (gateway, agent_id)."""

    @abc.abstractmethod
    def find_incident(self, src_ip: str, kind: str, since: float) -> HubIncident | None:
        """The latest hub incident of this attacker and kind with last_seen >= since."""

    @abc.abstractmethod
    def put_incident(self, incident: HubIncident) -> None: ...

    @abc.abstractmethod
    def get_incident(self, incident_id: str) -> HubIncident | None: ...

    @abc.abstractmethod
    def incident_gateways(self, incident_id: str) -> list[str]: ...

    @abc.abstractmethod
    def count_open_reports(self, incident_id: str) -> int: ...

    @abc.abstractmethod
    def list_incidents(self, limit: int = 100, state: str | None = None) -> list[HubIncident]: ...

    @abc.abstractmethod
    def reports_since(self, since: float, limit: int = 50_000) -> list[IncidentReport]:
        """Reports whose last evidence is at or after `since`, oldest first (the correlator's
        window)."""

    # -- campaigns ------------------------------------------------------------------------
    @abc.abstractmethod
    def put_campaign(self, campaign: CampaignRecord) -> None:
        """Insert or replace by id, with its incidents and links (an incident is in one
        open campaign at most: putting it here takes it out of any other)."""

    @abc.abstractmethod
    def get_campaign(self, campaign_id: str) -> CampaignRecord | None: ...

    @abc.abstractmethod
    def campaign_of(self, incident_id: str) -> CampaignRecord | None:
        """The open campaign this incident is part of, if any."""

    @abc.abstractmethod
    def list_campaigns(self, limit: int = 100, state: str | None = "open"
                       ) -> list[CampaignRecord]: ...

    # -- decisions and approvals ----------------------------------------------------------
    @abc.abstractmethod
    def put_decision(self, decision: DecisionRecord) -> None:
        """Insert or replace by id."""

    @abc.abstractmethod
    def get_decision(self, decision_id: str) -> DecisionRecord | None: ...

    @abc.abstractmethod
    def decisions_for_incident(self, incident_id: str) -> list[DecisionRecord]: ...

    @abc.abstractmethod
    def list_decisions(self, states: tuple[str, ...] | None = None,
                       limit: int = 100) -> list[DecisionRecord]: ...

    @abc.abstractmethod
    def add_approval(self, decision_id: str, operator: str, verdict: str, now: float) -> None: ...

    # -- rules ----------------------------------------------------------------------------
    @abc.abstractmethod
    def put_rule(self, record: RuleRecord) -> None:
        """Insert or replace by rule id."""

    @abc.abstractmethod
    def get_rule(self, rule_id: str) -> RuleRecord | None: ...

    @abc.abstractmethod
    def rules_for_gateway(self, gateway_id: str, states: tuple[str, ...]) -> list[RuleRecord]: ...

    @abc.abstractmethod
    def rules_for_decision(self, decision_id: str) -> list[RuleRecord]: ...

    @abc.abstractmethod
    def rules_due(self, now: float) -> list[RuleRecord]:
        """Unended rules (RULE_UNENDED) with expires_at <= now."""

    @abc.abstractmethod
    def list_rules(self, states: tuple[str, ...] | None = None,
                   limit: int = 1000) -> list[RuleRecord]: ...

    @abc.abstractmethod
    def set_rule_ack(self, rule_id: str, applied: bool, error: str, now: float) -> None:
        """Record the gateway's answer; a sent rule becomes active if it applied it, refused
        if it answered with an error (an ended rule keeps its state)."""

    # -- audit ----------------------------------------------------------------------------
    @abc.abstractmethod
    def audit_append(self, row: AuditRow) -> None: ...

    @abc.abstractmethod
    def audit_head(self) -> AuditRow | None: ...

    @abc.abstractmethod
    def audit_rows(self, after_seq: int = 0) -> Iterator[AuditRow]: ...

    # -- operator channel -----------------------------------------------------------------
    @abc.abstractmethod
    def enqueue_command(self, kind: str, argument: str, operator: str, now: float) -> int: ...

    @abc.abstractmethod
    def queued_commands(self) -> list[OperatorCommand]: ...

    @abc.abstractmethod
    def finish_command(self, command_id: int, ok: bool, result: str, now: float) -> None: ...

    @abc.abstractmethod
    def get_command(self, command_id: int) -> OperatorCommand | None: ...

    @abc.abstractmethod
    def set_hub_state(self, state: HubState) -> None: ...

    @abc.abstractmethod
    def get_hub_state(self) -> HubState | None: ...

    # -- model bundles --------------------------------------------------------------------
    @abc.abstractmethod
    def put_model_bundle(self, record: ModelBundleRecord) -> bool:
        """Insert a bundle (record.content set); False if that version is already stored with
        the same sha256; StoreError if with another."""

    @abc.abstractmethod
    def get_model_bundle(self, version: str, content: bool = False) -> ModelBundleRecord | None: ...

    @abc.abstractmethod
    def list_model_bundles(self) -> list[ModelBundleRecord]:
        """Newest upload first, without content."""

    @abc.abstractmethod
    def set_model_signature(self, version: str, signature: bytes) -> None: ...

    @abc.abstractmethod
    def set_model_target(self, gateway: str, version: str, now: float, operator: str) -> None:
        """gateway "*" targets every gateway and clears the per-gateway targets."""

    @abc.abstractmethod
    def model_targets(self) -> dict[str, str]:
        """gateway (or "*") -> desired bundle version."""

    def model_target(self, gateway: str) -> str | None:
        targets = self.model_targets()
        return targets.get(gateway) or targets.get("*")

    @abc.abstractmethod
    def put_model_status(self, status: ModelStatus) -> None:
        """Insert or replace by (gateway, version)."""

    @abc.abstractmethod
    def model_status(self, gateway: str | None = None) -> list[ModelStatus]: ...

    @abc.abstractmethod
    def set_gateway_models(self, gateway_id: str, model_versions: dict[str, str]) -> None:
        """What the gateway says it runs now (from a model ack or its health)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Cheap totals for `status`."""


def open_store(location: str | Path, readonly: bool = False, migrate: bool = True,
               sync: str = "full") -> Store:
    """The store at `location`: a SQLite file path (the only backend so far).

    readonly: reporting only. migrate=False: refuse a database at another schema version
    instead of migrating it (for tools that run beside the hub). sync: "full" | "normal",
    see SQLiteStore."""
    text = str(location)
    if text.startswith(("postgres://", "postgresql://")):
        raise StoreError(f"{text.split('@')[-1]}: PostgreSQL is not implemented yet; use a "
                         "SQLite file path")
    from atlas.central.store.sqlite import SQLiteStore

    return SQLiteStore(Path(text), readonly=readonly, migrate=migrate, sync=sync)
