"""serde: every domain type survives to_proto -> bytes -> from_proto unchanged; bad input is refused."""
from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.link.incidents import KINDS, Incident
from atlas.link.rules import ACTIONS, Rule
from atlas.link.wire import DeviceSummary, GatewayInfo, Health, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link import serde
from atlas.v1 import rules_pb2, telemetry_pb2

text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), text, finite)
evidence = st.dictionaries(text, st.one_of(json_scalar, st.lists(json_scalar, max_size=4)), max_size=5)

incidents = st.builds(
    Incident, id=text, kind=st.sampled_from(KINDS), src_ip=text, dst_ip=text, device=text, gateway=text,
    time=finite, last_seen=finite, score=finite, model_version=text, packets=u64,
    state=st.sampled_from(["open", "closed"]), evidence=evidence,
)
devices = st.builds(
    DeviceSummary, device=text, address=text, start=finite, end=finite, packets=u64, bytes=u64,
    features=st.lists(f32, max_size=40), schema_version=u32,
)
healths = st.builds(
    Health, time=finite, packets_per_s=finite, kernel_drops=u64, cpu_percent=finite, cpu_budget=finite,
    shedding_level=u32, open_incidents=u32, spool_depth=u64, spool_dropped=u64,
)
batches = st.builds(
    TelemetryBatch, seq=u64, time=finite, incidents=st.lists(incidents, max_size=4),
    devices=st.lists(devices, max_size=6), health=st.one_of(st.none(), healths),
)


def _params(action: str):
    if action == "filter":
        return st.fixed_dictionaries({"port": st.integers(0, 65535), "proto": st.sampled_from(["tcp", "udp"])})
    if action == "rate_limit":
        return st.fixed_dictionaries({"pps": u32})
    return st.just({})


rules = st.sampled_from(ACTIONS).flatmap(
    lambda action: st.builds(
        Rule, id=text, action=st.just(action), target=text, expires_at=finite, reason=text,
        decision_id=text, shadow=st.booleans(), params=_params(action),
    )
)
signed_rules = st.builds(SignedRule, rule=rules, signature=st.binary(max_size=64))


def _wire(msg):
    """Through real bytes, as on the wire."""
    return type(msg).FromString(msg.SerializeToString())


@settings(max_examples=60, deadline=None)
@given(batches)
def test_telemetry_batch_round_trip(batch):
    assert serde.telemetry_batch_from_proto(_wire(serde.telemetry_batch_to_proto(batch))) == batch


@settings(max_examples=40, deadline=None)
@given(batches, st.booleans())
def test_envelope_round_trip(batch, compress):
    env = _wire(serde.telemetry_to_envelope(batch, compress=compress))
    assert env.seq == batch.seq
    assert env.codec == (telemetry_pb2.CODEC_ZSTD if compress else telemetry_pb2.CODEC_NONE)
    assert serde.telemetry_from_envelope(env) == batch


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["snapshot", "upsert", "withdraw"]), st.lists(signed_rules, max_size=4), st.lists(text, max_size=4))
def test_rule_change_round_trip(kind, rules_, withdrawn):
    change = RuleChange(kind=kind, rules=rules_, withdrawn=withdrawn)
    assert serde.rule_change_from_proto(_wire(serde.rule_change_to_proto(change))) == change


@given(st.builds(GatewayInfo, gateway_id=text, software_version=text, model_versions=st.dictionaries(text, text, max_size=3),
                 capabilities=st.lists(text, max_size=3), board=text))
def test_gateway_info_round_trip(info):
    hello = _wire(serde.gateway_info_to_proto(info))
    assert hello.protocol_version == serde.PROTOCOL_VERSION
    assert serde.gateway_info_from_proto(hello) == info


@given(st.builds(RuleAck, rule_id=text, applied=st.booleans(), error=text))
def test_rule_ack_round_trip(ack):
    assert serde.rule_ack_from_proto(_wire(serde.rule_ack_to_proto(ack))) == ack


@given(st.builds(ModelUpdate, name=text, version=text, content=st.binary(max_size=200), signature=st.binary(max_size=64)))
def test_model_update_round_trip(update):
    assert serde.model_update_from_proto(_wire(serde.model_update_to_proto(update))) == update


def test_numpy_evidence_is_kept_as_values():
    np = pytest.importorskip("numpy")
    inc = Incident(id="i", kind="anomaly", src_ip="10.0.0.1", dst_ip="", device="d", gateway="g", time=1.0,
                   last_seen=2.0, score=1.5, model_version="m", packets=np.int64(7),
                   evidence={"syn": np.int64(12), "rate": np.float32(0.5), "raw": b"\x01\x02"})
    back = serde.incident_from_proto(_wire(serde.incident_to_proto(inc)))
    assert back.evidence == {"syn": 12, "rate": 0.5, "raw": "0102"}
    assert back.packets == 7


def test_rule_with_unknown_param_or_action_cannot_be_sent():
    with pytest.raises(serde.WireError, match="params.shell"):
        serde.rule_to_proto(Rule("r", "quarantine", "10.0.0.1", 1.0, "", "d", params={"shell": "rm -rf /"}))
    with pytest.raises(serde.WireError, match="params.port"):
        serde.rule_to_proto(Rule("r", "filter", "10.0.0.1", 1.0, "", "d", params={"port": "80", "proto": "tcp"}))
    with pytest.raises(serde.WireError, match="action 'reboot'"):
        serde.rule_to_proto(Rule("r", "reboot", "10.0.0.1", 1.0, "", "d"))


def test_unknown_action_from_a_newer_hub_gets_a_recognisable_name():
    msg = rules_pb2.Rule(id="r", action=99, target="10.0.0.1")
    assert serde.rule_from_proto(_wire(msg)).action == "unknown(99)"
    assert serde.rule_from_proto(rules_pb2.Rule(id="r")).action == "unknown(0)"


def test_absent_params_differ_from_zero():
    r = serde.rule_from_proto(_wire(serde.rule_to_proto(Rule("r", "filter", "10.0.0.1", 1.0, "", "d", params={"port": 0, "proto": "tcp"}))))
    assert r.params == {"port": 0, "proto": "tcp"}
    assert serde.rule_from_proto(rules_pb2.Rule(id="r", action=1)).params == {}


def _batch(n_devices: int = 3) -> TelemetryBatch:
    return TelemetryBatch(seq=5, time=1.0, devices=[DeviceSummary("d", "10.0.0.2", 0.0, 1.0, 10, 1000, [0.5] * 8)] * n_devices)


def test_envelope_refuses_a_compression_bomb():
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (50 << 20))  # 50 MiB of zeros, a few kB compressed
    env = telemetry_pb2.TelemetryEnvelope(seq=1, codec=telemetry_pb2.CODEC_ZSTD, payload=bomb, raw_size=100)
    with pytest.raises(serde.WireError, match="inflates past the 1048576-byte limit"):
        serde.telemetry_from_envelope(env, max_raw_bytes=1 << 20)


def test_envelope_refuses_declared_oversize_bad_codec_garbage_and_seq_mismatch():
    good = serde.telemetry_to_envelope(_batch())
    big = telemetry_pb2.TelemetryEnvelope(seq=5, codec=telemetry_pb2.CODEC_ZSTD, payload=good.payload, raw_size=10 << 20)
    with pytest.raises(serde.WireError, match="raw_size"):
        serde.telemetry_from_envelope(big, max_raw_bytes=1 << 20)
    with pytest.raises(serde.WireError, match="unknown codec 0"):
        serde.telemetry_from_envelope(telemetry_pb2.TelemetryEnvelope(seq=5, payload=good.payload))
    with pytest.raises(serde.WireError, match="not a zstd frame"):
        serde.telemetry_from_envelope(telemetry_pb2.TelemetryEnvelope(seq=5, codec=telemetry_pb2.CODEC_ZSTD, payload=b"garbage!"))
    with pytest.raises(serde.WireError, match="not a TelemetryBatch"):
        serde.telemetry_from_envelope(telemetry_pb2.TelemetryEnvelope(seq=5, codec=telemetry_pb2.CODEC_NONE, payload=b"\xff\xff\xff"))
    shifted = telemetry_pb2.TelemetryEnvelope(seq=6, codec=good.codec, payload=good.payload, raw_size=good.raw_size)
    with pytest.raises(serde.WireError, match="envelope seq 6 differs"):
        serde.telemetry_from_envelope(shifted)


def test_bad_evidence_json_names_the_incident():
    msg = telemetry_pb2.Incident(id="gw/1.2.3.4/anomaly/1", evidence_json="{not json")
    with pytest.raises(serde.WireError, match="gw/1.2.3.4/anomaly/1.*evidence_json"):
        serde.incident_from_proto(msg)
    with pytest.raises(serde.WireError, match="JSON object"):
        serde.incident_from_proto(telemetry_pb2.Incident(id="x", evidence_json="[1]"))


def test_zstd_shrinks_a_typical_batch():
    batch = _batch(200)
    raw = serde.telemetry_to_envelope(batch, compress=False)
    packed = serde.telemetry_to_envelope(batch)
    assert len(packed.payload) * 5 < len(raw.payload)
    assert struct.unpack("<I", packed.payload[:4])[0] == 0xFD2FB528  # a zstd frame
