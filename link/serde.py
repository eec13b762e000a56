"""Serde: the one place where ATLAS domain types meet the generated protobuf code (atlas.v1).

Pairs of `x_to_proto` / `x_from_proto`, tested as round trips. Everything else in ATLAS deals
in the dataclasses of atlas.link.wire, atlas.link.incidents and atlas.link.rules.
`x_from_proto` raises WireError, naming the field, for data that cannot be a valid `x`.
Telemetry travels inside an envelope whose payload is the serialized batch, zstd-compressed.
"""
from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from typing import Any, Iterator

import zstandard

from atlas.link.incidents import Incident
from atlas.link.rules import ACTIONS, Rule
from atlas.link.wire import DeviceSummary, GatewayInfo, Health, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.v1 import rules_pb2, telemetry_pb2

PROTOCOL_VERSION = 1
ZSTD_LEVEL = 3  # measured in bench/test_bench_wire.py: higher levels gain little on batches this small
DEFAULT_MAX_RAW_BYTES = 8 << 20


class WireError(ValueError):
    """A message that cannot be turned into a valid domain object."""


# --- hello -------------------------------------------------------------------------------

def gateway_info_to_proto(info: GatewayInfo) -> telemetry_pb2.Hello:
    return telemetry_pb2.Hello(
        gateway_id=info.gateway_id,
        software_version=info.software_version,
        model_versions=dict(info.model_versions),
        capabilities=list(info.capabilities),
        board=info.board,
        protocol_version=PROTOCOL_VERSION,
        domain=info.domain,
        district=info.district,
        subnet=info.subnet,
    )


def gateway_info_from_proto(msg: telemetry_pb2.Hello) -> GatewayInfo:
    return GatewayInfo(
        gateway_id=msg.gateway_id,
        software_version=msg.software_version,
        model_versions=dict(msg.model_versions),
        capabilities=list(msg.capabilities),
        board=msg.board,
        domain=msg.domain,
        district=msg.district,
        subnet=msg.subnet,
    )


# --- telemetry ---------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    # Evidence is built from numpy counters and decoded packets: keep their values, not reprs.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def incident_to_proto(inc: Incident) -> telemetry_pb2.Incident:
    return telemetry_pb2.Incident(
        id=inc.id,
        kind=inc.kind,
        src_ip=inc.src_ip,
        dst_ip=inc.dst_ip,
        device=inc.device,
        gateway=inc.gateway,
        time=inc.time,
        last_seen=inc.last_seen,
        score=inc.score,
        model_version=inc.model_version,
        packets=inc.packets,
        state=inc.state,
        evidence_json=json.dumps(inc.evidence, separators=(",", ":"), default=_json_default) if inc.evidence else "",
    )


def incident_from_proto(msg: telemetry_pb2.Incident) -> Incident:
    evidence: Any = {}
    if msg.evidence_json:
        try:
            evidence = json.loads(msg.evidence_json)
        except ValueError as err:
            raise WireError(f"incident {msg.id!r}: evidence_json is not JSON: {err}") from None
        if not isinstance(evidence, dict):
            raise WireError(f"incident {msg.id!r}: evidence_json must be a JSON object")
    return Incident(
        id=msg.id,
        kind=msg.kind,
        src_ip=msg.src_ip,
        dst_ip=msg.dst_ip,
        device=msg.device,
        gateway=msg.gateway,
        time=msg.time,
        last_seen=msg.last_seen,
        score=msg.score,
        model_version=msg.model_version,
        packets=msg.packets,
        state=msg.state,
        evidence=evidence,
    )


def device_summary_to_proto(d: DeviceSummary) -> telemetry_pb2.DeviceSummary:
    return telemetry_pb2.DeviceSummary(
        device=d.device,
        address=d.address,
        start=d.start,
        end=d.end,
        packets=d.packets,
        bytes=d.bytes,
        features=d.features,
        schema_version=d.schema_version,
    )


def device_summary_from_proto(msg: telemetry_pb2.DeviceSummary) -> DeviceSummary:
    return DeviceSummary(
        device=msg.device,
        address=msg.address,
        start=msg.start,
        end=msg.end,
        packets=msg.packets,
        bytes=msg.bytes,
        features=list(msg.features),  # float32 on the wire: the models' precision
        schema_version=msg.schema_version,
    )


def health_to_proto(h: Health) -> telemetry_pb2.Health:
    return telemetry_pb2.Health(
        time=h.time,
        packets_per_s=h.packets_per_s,
        kernel_drops=h.kernel_drops,
        cpu_percent=h.cpu_percent,
        cpu_budget=h.cpu_budget,
        shedding_level=h.shedding_level,
        open_incidents=h.open_incidents,
        spool_depth=h.spool_depth,
        spool_dropped=h.spool_dropped,
        model_versions=dict(h.model_versions),
    )


def health_from_proto(msg: telemetry_pb2.Health) -> Health:
    return Health(
        time=msg.time,
        packets_per_s=msg.packets_per_s,
        kernel_drops=msg.kernel_drops,
        cpu_percent=msg.cpu_percent,
        cpu_budget=msg.cpu_budget,
        shedding_level=msg.shedding_level,
        open_incidents=msg.open_incidents,
        spool_depth=msg.spool_depth,
        spool_dropped=msg.spool_dropped,
        model_versions=dict(msg.model_versions),
    )


def telemetry_batch_to_proto(batch: TelemetryBatch) -> telemetry_pb2.TelemetryBatch:
    msg = telemetry_pb2.TelemetryBatch(
        seq=batch.seq,
        time=batch.time,
        incidents=[incident_to_proto(i) for i in batch.incidents],
        devices=[device_summary_to_proto(d) for d in batch.devices],
    )
    if batch.health is not None:
        msg.health.CopyFrom(health_to_proto(batch.health))
    return msg


def telemetry_batch_from_proto(msg: telemetry_pb2.TelemetryBatch) -> TelemetryBatch:
    return TelemetryBatch(
        seq=msg.seq,
        time=msg.time,
        incidents=[incident_from_proto(i) for i in msg.incidents],
        devices=[device_summary_from_proto(d) for d in msg.devices],
        health=health_from_proto(msg.health) if msg.HasField("health") else None,
    )


_zstd = threading.local()  # zstd contexts are not thread-safe; one per thread, reused


def _compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_zstd, "c"):
        _zstd.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return _zstd.c


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_zstd, "d"):
        _zstd.d = zstandard.ZstdDecompressor()
    return _zstd.d


def telemetry_to_envelope(batch: TelemetryBatch, compress: bool = True) -> telemetry_pb2.TelemetryEnvelope:
    raw = telemetry_batch_to_proto(batch).SerializeToString()
    if compress:
        return telemetry_pb2.TelemetryEnvelope(
            seq=batch.seq, codec=telemetry_pb2.CODEC_ZSTD, payload=_compressor().compress(raw), raw_size=len(raw)
        )
    return telemetry_pb2.TelemetryEnvelope(seq=batch.seq, codec=telemetry_pb2.CODEC_NONE, payload=raw, raw_size=len(raw))


def _inflate(payload: bytes, limit: int) -> bytes:
    # Read at most limit+1 bytes whatever the frame header claims: a bomb is refused, not inflated.
    out = io.BytesIO()
    try:
        with _decompressor().stream_reader(io.BytesIO(payload)) as reader:
            while out.tell() <= limit:
                chunk = reader.read(min(1 << 20, limit + 1 - out.tell()))
                if not chunk:
                    break
                out.write(chunk)
    except zstandard.ZstdError as err:
        raise WireError(f"telemetry payload: not a zstd frame: {err}") from None
    if out.tell() > limit:
        raise WireError(f"telemetry payload: inflates past the {limit}-byte limit")
    return out.getvalue()


def _payload_bytes(seq: int, codec: int, payload: bytes, raw_size: int, max_raw_bytes: int) -> bytes:
    if raw_size > max_raw_bytes:
        raise WireError(f"telemetry seq {seq}: raw_size {raw_size} is over the {max_raw_bytes}-byte limit")
    if codec == telemetry_pb2.CODEC_ZSTD:
        return _inflate(payload, max_raw_bytes)
    if codec == telemetry_pb2.CODEC_NONE:
        if len(payload) > max_raw_bytes:
            raise WireError(f"telemetry seq {seq}: payload is over the {max_raw_bytes}-byte limit")
        return payload
    raise WireError(f"telemetry seq {seq}: unknown codec {codec}")


def _parse_batch(seq: int, raw: bytes) -> telemetry_pb2.TelemetryBatch:
    msg = telemetry_pb2.TelemetryBatch()
    try:
        msg.ParseFromString(raw)
    except Exception as err:  # protobuf's DecodeError
        raise WireError(f"telemetry seq {seq}: payload is not a TelemetryBatch: {err}") from None
    return msg


class PackedDevices(Sequence):
    """A batch's device summaries still in wire form: the envelope's payload as received.

    len() is free; the summaries are turned into DeviceSummary objects only when read (once).
    Converting them costs about 6 us per summary in Python, two thirds of the hub's ingest
    work, and the hub only stores them: it keeps `payload` as it came (atlas.central.store.codec)
    and decodes when someone asks for the summaries."""

    __slots__ = ("payload", "codec", "raw_size", "_msg", "_count", "_items")

    def __init__(self, payload: bytes, codec: int, raw_size: int, msg: telemetry_pb2.TelemetryBatch):
        self.payload, self.codec, self.raw_size = payload, codec, raw_size
        self._msg: telemetry_pb2.TelemetryBatch | None = msg
        self._count = len(msg.devices)
        self._items: list[DeviceSummary] | None = None

    def decoded(self) -> list[DeviceSummary]:
        if self._items is None:
            self._items = [device_summary_from_proto(d) for d in self._msg.devices]
            self._msg = None  # the parsed message is no longer needed
        return self._items

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        return self.decoded()[index]

    def __iter__(self) -> Iterator[DeviceSummary]:
        return iter(self.decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, PackedDevices)):
            return self.decoded() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackedDevices({self._count} summaries, {len(self.payload)} bytes)"


def devices_from_payload(payload: bytes, codec: int, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES) -> list[DeviceSummary]:
    """The device summaries of a stored wire payload (see PackedDevices)."""
    msg = _parse_batch(0, _payload_bytes(0, codec, payload, 0, max_raw_bytes))
    return [device_summary_from_proto(d) for d in msg.devices]


def telemetry_from_envelope(env: telemetry_pb2.TelemetryEnvelope, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES,
                            packed_devices: bool = False) -> TelemetryBatch:
    """Decode an envelope, refusing anything that would inflate past `max_raw_bytes`.

    packed_devices: leave the device summaries in wire form (batch.devices is PackedDevices);
    incidents and health are decoded as always (the hub decides on them)."""
    raw = _payload_bytes(env.seq, env.codec, env.payload, env.raw_size, max_raw_bytes)
    msg = _parse_batch(env.seq, raw)
    if msg.seq != env.seq:
        raise WireError(f"telemetry: envelope seq {env.seq} differs from the batch's seq {msg.seq}")
    if not packed_devices:
        return telemetry_batch_from_proto(msg)
    return TelemetryBatch(
        seq=msg.seq,
        time=msg.time,
        incidents=[incident_from_proto(i) for i in msg.incidents],
        devices=PackedDevices(bytes(env.payload), env.codec, env.raw_size, msg),  # type: ignore[arg-type]
        health=health_from_proto(msg.health) if msg.HasField("health") else None,
    )


# --- rules -------------------------------------------------------------------------------

_ACTION_TO_ENUM = {a: rules_pb2.Action.Value(f"ACTION_{a.upper()}") for a in ACTIONS}
_ENUM_TO_ACTION = {v: k for k, v in _ACTION_TO_ENUM.items()}
_INT_PARAMS = ("port", "pps")
_STR_PARAMS = ("proto",)


def rule_to_proto(rule: Rule) -> rules_pb2.Rule:
    if rule.action not in _ACTION_TO_ENUM:
        raise WireError(f"rule {rule.id!r}: action {rule.action!r} is not one of {', '.join(ACTIONS)}")
    params = rules_pb2.RuleParams()
    for key, value in rule.params.items():
        if key in _INT_PARAMS and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
            setattr(params, key, value)
        elif key in _STR_PARAMS and isinstance(value, str):
            setattr(params, key, value)
        else:
            raise WireError(f"rule {rule.id!r}: params.{key}={value!r} has no place in atlas.v1.RuleParams")
    return rules_pb2.Rule(
        id=rule.id,
        action=_ACTION_TO_ENUM[rule.action],
        target=rule.target,
        expires_at=rule.expires_at,
        reason=rule.reason,
        decision_id=rule.decision_id,
        shadow=rule.shadow,
        params=params,
    )


def rule_from_proto(msg: rules_pb2.Rule) -> Rule:
    # An action this agent does not know keeps a recognisable name so the vocabulary check
    # refuses it with a clear error instead of failing here.
    action = _ENUM_TO_ACTION.get(msg.action, f"unknown({msg.action})")
    params: dict[str, Any] = {}
    for key in _INT_PARAMS + _STR_PARAMS:
        if msg.params.HasField(key):
            params[key] = getattr(msg.params, key)
    return Rule(
        id=msg.id,
        action=action,
        target=msg.target,
        expires_at=msg.expires_at,
        reason=msg.reason,
        decision_id=msg.decision_id,
        shadow=msg.shadow,
        params=params,
    )


def signed_rule_to_proto(sr: SignedRule) -> rules_pb2.SignedRule:
    return rules_pb2.SignedRule(rule=rule_to_proto(sr.rule), signature=sr.signature)


def signed_rule_from_proto(msg: rules_pb2.SignedRule) -> SignedRule:
    return SignedRule(rule=rule_from_proto(msg.rule), signature=bytes(msg.signature))


_KIND_TO_ENUM = {
    "snapshot": rules_pb2.RuleChange.KIND_SNAPSHOT,
    "upsert": rules_pb2.RuleChange.KIND_UPSERT,
    "withdraw": rules_pb2.RuleChange.KIND_WITHDRAW,
}
_ENUM_TO_KIND = {v: k for k, v in _KIND_TO_ENUM.items()}


def rule_change_to_proto(change: RuleChange) -> rules_pb2.RuleChange:
    if change.kind not in _KIND_TO_ENUM:
        raise WireError(f"rule change kind {change.kind!r} is not one of {', '.join(_KIND_TO_ENUM)}")
    return rules_pb2.RuleChange(
        kind=_KIND_TO_ENUM[change.kind],
        rules=[signed_rule_to_proto(r) for r in change.rules],
        withdrawn=list(change.withdrawn),
    )


def rule_change_from_proto(msg: rules_pb2.RuleChange) -> RuleChange:
    if msg.kind not in _ENUM_TO_KIND:
        raise WireError(f"rule change: unknown kind {msg.kind}")
    return RuleChange(
        kind=_ENUM_TO_KIND[msg.kind],
        rules=[signed_rule_from_proto(r) for r in msg.rules],
        withdrawn=list(msg.withdrawn),
    )


def rule_ack_to_proto(ack: RuleAck) -> rules_pb2.RuleAck:
    return rules_pb2.RuleAck(rule_id=ack.rule_id, applied=ack.applied, error=ack.error)


def rule_ack_from_proto(msg: rules_pb2.RuleAck) -> RuleAck:
    return RuleAck(rule_id=msg.rule_id, applied=msg.applied, error=msg.error)


def model_update_to_proto(m: ModelUpdate) -> rules_pb2.ModelUpdate:
    return rules_pb2.ModelUpdate(name=m.name, version=m.version, content=m.content, signature=m.signature)


def model_update_from_proto(msg: rules_pb2.ModelUpdate) -> ModelUpdate:
    return ModelUpdate(name=msg.name, version=msg.version, content=bytes(msg.content), signature=bytes(msg.signature))


def model_ack_to_proto(a: ModelAck) -> rules_pb2.ModelAck:
    return rules_pb2.ModelAck(name=a.name, version=a.version, applied=a.applied, error=a.error,
                              model_versions=dict(a.model_versions))


def model_ack_from_proto(msg: rules_pb2.ModelAck) -> ModelAck:
    return ModelAck(name=msg.name, version=msg.version, applied=msg.applied, error=msg.error,
                    model_versions=dict(msg.model_versions))
