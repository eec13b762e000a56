"""Decode only what is there, name a kind only in the classifier's domain (agent/detect/domain.py).

Fixtures are TCP conversations built byte by byte (tests/agent/mqtt_segments.py) and run through
the agent's real pipeline: decoder, streams, features, the packaged models.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.detect.domain import ANOMALY, MQTT_KINDS, SLOWITE_MIN_CONNECTIONS, judge, nearest_kinds
from atlas.agent.features.schema import FEATURE_NAMES
from atlas.agent.pipeline import AgentPipeline
from atlas.link.incidents import KNOWN_KINDS

from mqtt_segments import PINGREQ, PINGRESP, Conn, batch_of, connack, connect, ip4, publish

MALFORMED_COLS = [j for j, n in enumerate(FEATURE_NAMES) if n.startswith("mqtt_malformed")]


def tls_record(ctype: int, body: bytes) -> bytes:
    return bytes([ctype, 3, 3]) + struct.pack(">H", len(body)) + body


def client_hello() -> bytes:
    hs = b"\x01" + struct.pack(">I", 60)[1:] + b"\x03\x03" + bytes(range(32)) + b"\x00\x00\x02\x13\x01\x01\x00"
    return tls_record(0x16, hs)


def tls_session(port: int = 8883, records: int = 40, start_mid_stream: bool = False) -> Conn:
    """A device's TLS session to a broker's TLS port: handshake, then application data both ways."""
    c = Conn(client="10.0.0.7", bport=port)
    if start_mid_stream:
        # The capture starts inside a record whose last bytes happen to read as whole MQTT
        # messages (two PINGREQs): framing looks found, then the next record header arrives.
        c.send(True, b"\xc0\x00\xc0\x00")
    else:
        c.handshake().send(True, client_hello())
        c.send(False, tls_record(0x16, b"\x02" + bytes(80)))
    for i in range(records):
        # Application data whose first bytes would read as MQTT (a PUBLISH header) if decoded.
        c.send(True, tls_record(0x17, b"\x30\x05\x00\x01a" + bytes([i]) * 40))
        c.send(False, tls_record(0x17, b"\x10\x20" + bytes(30)))
        c.t += 0.5
    return c


def run(segs, cfg: AgentConfig | None = None, detector: Detector | None = None, per_batch: int = 16):
    """The segments through the agent's pipeline; returns it, its feature rows and incidents."""
    rows = []
    pipe = AgentPipeline(cfg or AgentConfig(), detector, on_rows=rows.append)
    for i in range(0, len(segs), per_batch):
        batch, _ = batch_of(segs[i : i + per_batch])
        pipe.process(batch)
    incidents = pipe.finish()
    return pipe, rows, incidents


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.mark.parametrize("port", [8883, 443, 8884])
@pytest.mark.parametrize("mid_stream", [False, True])
def test_tls_on_any_port_is_never_parsed_as_mqtt(port, mid_stream, detector):
    cfg = AgentConfig()
    cfg.agent.mqtt_ports = [1883, 8883, 8884, 443]  # even on ports configured as MQTT
    c = tls_session(port, start_mid_stream=mid_stream)
    pipe, rows, incidents = run(c.segs, cfg, detector)
    s = pipe.streams.stats()
    assert s["tls_flows"] == 1
    # Mid-stream, only the ambiguous tail before the first record header was read as MQTT.
    assert s["messages"] == (2 if mid_stream else 0) and sum(s["malformed"].values()) == 0
    assert all(r.X[:, MALFORMED_COLS].max() == 0 for r in rows if len(r))
    assert not pipe.speakers.speaks_mqtt(ip4("10.0.0.7"), c.t)
    assert not [i for i in incidents if i.kind in MQTT_KINDS]


def test_a_header_truncated_mqtt_capture_is_not_malformed():
    # snaplen about 60 bytes: only the first bytes of each message's payload are captured.
    c = Conn(client="10.0.0.9")
    c.handshake().send(True, connect("lock-hub", keepalive=60), wire_extra=0)
    c.send(False, connack())
    for i in range(60):
        m = publish(f"lock/{i % 3}/state", b"locked" * 20, qos=0)
        c.send(True, m[:6], wire_extra=len(m) - 6)
        c.send(True, PINGREQ[:1], wire_extra=1)
        c.send(False, PINGRESP)
        c.t += 0.5
    pipe, rows, _ = run(c.segs)
    s = pipe.streams.stats()
    assert s["snapped_segments"] == 120 and s["bytes_snapped"] > 0
    assert sum(s["malformed"].values()) == 0 and s["gaps"] == 0
    assert max(r.X[:, MALFORMED_COLS].max() for r in rows if len(r)) == 0


def test_mqtt_is_recognised_by_its_handshake_on_any_port():
    c = Conn(client="10.0.0.5", bport=17501)
    c.handshake().send(True, connect("plant", keepalive=30))
    c.send(False, connack())
    for i in range(20):
        c.send(True, publish("plant/shadow", b"{}", qos=1, pid=i + 1))
    pipe, _, _ = run(c.segs)
    assert 17501 in pipe.streams.ports.tolist() and pipe.streams.stats()["learned_ports"] == 1
    assert pipe.streams.stats()["messages"] >= 22
    assert pipe.speakers.speaks_mqtt(ip4("10.0.0.5"), c.t)
    assert pipe.speakers.speaks_mqtt(ip4("10.0.0.1"), c.t)  # the broker too


def test_traffic_on_an_mqtt_port_without_a_handshake_is_not_mqtt():
    # Bytes on 1883 that decode as MQTT messages, but no CONNECT/CONNACK ever: not an MQTT speaker.
    c = Conn(client="10.0.0.6")
    c.handshake()
    for i in range(20):
        c.send(True, publish("x", b"y"))
    pipe, _, _ = run(c.segs)
    assert pipe.streams.stats()["messages"] == 20
    assert not pipe.speakers.speaks_mqtt(ip4("10.0.0.6"), c.t)


@pytest.mark.parametrize("kind", sorted(MQTT_KINDS))
def test_an_mqtt_kind_for_a_source_that_does_not_speak_mqtt_is_anomaly(kind):
    assert judge(kind, 0.999, anomalous=False, speaks_mqtt=False, opened=50, min_confidence=0.9) == ANOMALY
    assert judge(kind, 0.999, anomalous=False, speaks_mqtt=True, opened=50, min_confidence=0.9) == kind


@pytest.mark.parametrize("kind", sorted(set(KNOWN_KINDS) - MQTT_KINDS))
def test_other_kinds_need_no_mqtt_but_a_confident_classifier(kind):
    assert judge(kind, 0.95, anomalous=False, speaks_mqtt=False, opened=0, min_confidence=0.9) == kind
    assert judge(kind, 0.85, anomalous=False, speaks_mqtt=False, opened=0, min_confidence=0.9) == ANOMALY


def test_slowite_needs_many_connections_not_one_long_session():
    c = Conn(client="10.0.0.3")
    c.handshake().send(True, connect("nest", keepalive=1200))
    c.send(False, connack())
    for _ in range(50):  # hours of keepalives on one connection
        c.send(True, PINGREQ)
        c.send(False, PINGRESP)
        c.t += 60.0
    pipe, _, _ = run(c.segs)
    key = ip4("10.0.0.3")
    assert pipe.speakers.speaks_mqtt(key, c.t)
    assert pipe.speakers.connections_opened(key, c.t) == 0  # its only CONNECT is hours old
    assert judge("slowite", 0.99, anomalous=False, speaks_mqtt=True, opened=0, min_confidence=0.9) == ""
    assert judge("slowite", 0.99, anomalous=True, speaks_mqtt=True, opened=0, min_confidence=0.9) == ANOMALY

    segs = []
    for i in range(2 * SLOWITE_MIN_CONNECTIONS):  # many connections, huge keepalives, held idle
        k = Conn(client="10.0.0.4", cport=41000 + i, t=1000.0 + i)
        k.handshake().send(True, connect(f"slow-{i}", keepalive=65535))
        k.send(False, connack())
        segs += k.segs
    pipe, _, _ = run(sorted(segs, key=lambda s: s.ts))
    assert pipe.speakers.connections_opened(ip4("10.0.0.4"), 1010.0) == 2 * SLOWITE_MIN_CONNECTIONS
    assert pipe.speakers.connections_opened(ip4("10.0.0.4"), 1010.0 + 2 * 120.0) == 0  # all past the horizon


def test_the_packaged_models_carry_a_kind_threshold_chosen_on_validation(detector):
    cal = detector.meta["classifier"]["calibration"]
    assert 0.5 <= detector.min_confidence < 1.0
    assert set(cal["validation_seeds"]).isdisjoint(range(1, 9)) and set(cal["validation_seeds"]).isdisjoint(range(101, 105))
    assert 0.0 <= cal["ece_named_kind"] < 0.1


def test_nearest_kinds_are_the_most_likely_attack_kinds():
    classes = ["benign", "malformed", "port_scan", "slowite"]
    hints = nearest_kinds(np.array([0.5, 0.1, 0.3, 0.1], dtype=np.float32), classes)
    assert list(hints) == ["port_scan", "malformed"] or list(hints) == ["port_scan", "slowite"]
    assert "benign" not in hints and hints["port_scan"] == pytest.approx(0.3)


def test_speakers_memory_is_bounded():
    from atlas.agent.decode import CONNECT, MQTT_DTYPE
    from atlas.agent.detect.domain import MqttSpeakers

    sp = MqttSpeakers(max_entries=100)
    for batch in range(20):
        mq = np.zeros(1000, dtype=MQTT_DTYPE)
        mq["mtype"], mq["to_broker"], mq["broker"] = CONNECT, 1, ip4("10.0.0.1")
        mq["client"] = np.arange(1000) % 300 + ip4("10.1.0.0")  # 300 clients cycling through ports
        mq["client_port"] = (np.arange(1000) + 1000 * batch) % 60000 + 1024
        mq["ts"] = 1000.0 + batch + np.arange(1000) / 1000
        sp.observe(mq)
    assert len(sp._conns) <= 100 and len(sp._last) <= 100 and len(sp._opened) <= 100
    assert max(len(t) for t in sp._opened.values()) <= 4 * SLOWITE_MIN_CONNECTIONS
    last = ip4("10.1.0.0") + 999 % 300
    assert sp.speaks_mqtt(last, 1020.0) and sp.connections_opened(last, 1020.0) >= SLOWITE_MIN_CONNECTIONS


@pytest.fixture(scope="module")
def scan_capture(tmp_path_factory):
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.capture import generate_capture

    pcap = tmp_path_factory.mktemp("domain") / "scan.pcap"
    truth = generate_capture(pcap, devices=15, duration=90, seed=21, attacks=[AttackSpec("port_scan", start=30, duration=30)])
    return pcap, truth.steps[0].attacker


def test_a_kind_below_the_confidence_threshold_is_anomaly_with_the_kind_as_a_hint(scan_capture):
    from atlas.agent.pipeline import replay
    from atlas.link.incidents import NEAREST_KINDS

    pcap, scanner = scan_capture
    det = Detector()
    named = [i for i in replay([pcap], AgentConfig(), det) if i.src_ip == scanner]
    assert "port_scan" in {i.kind for i in named}  # the classifier is sure of this scan
    det.min_confidence = 1.01  # no probability reaches it: every kind is outside the domain
    refused = [i for i in replay([pcap], AgentConfig(), det) if i.src_ip == scanner]
    assert refused and {i.kind for i in refused} == {ANOMALY}
    assert any("port_scan" in i.evidence.get(NEAREST_KINDS, {}) for i in refused)
