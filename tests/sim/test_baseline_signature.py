"""Signature/threshold baseline: the sliding windows, each rule on hand-made records, the decoder
path with a crafted telnet login, and every known attack kind on a small generated capture."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from atlas.agent.capture import LINKTYPE_ETHERNET, FrameBatch
from atlas.agent.decode import (
    CONNACK,
    CONNECT,
    MQTT_PROTOCOL,
    MQTT_STREAM_GAP,
    PUBLISH,
    SUBSCRIBE,
    TCP_ACK,
    TCP_SYN,
)
from atlas.agent.decode.packets import AddressBook
from atlas.sim.attacks import AttackSpec
from atlas.sim.evaluate.baselines.decoded import (
    MQTT,
    PACKETS,
    DecodedCapture,
    decode_batches,
    decode_capture,
)
from atlas.sim.evaluate.baselines.signature import (
    RULES,
    Rule,
    check_rules,
    mirai_credential,
    rules_table,
    run_rules,
)
from atlas.sim.evaluate.baselines.windows import crossings, episodes
from atlas.sim.traffic import LookalikeSpec
from atlas.sim.capture import generate_capture

HOME = ["10.20.0.0/16"]
T0 = 1_767_254_400.0
A, B, BROKER = 0x0A14FFFE, 0x0A140105, 0x0A140001  # 10.20.255.254, 10.20.1.5, 10.20.0.1


# ---- windows ---------------------------------------------------------------------------------

def test_crossing_is_the_event_that_fills_the_window():
    ts = np.array([0.0, 1.0, 2.0, 3.0, 20.0, 21.0])
    key = np.zeros(6, dtype=np.uint64)
    assert crossings(ts, key, 3, 2.5).tolist() == [False, False, True, True, False, False]
    # the window is (t - s, t]: an event exactly `s` earlier is out
    assert crossings(np.array([0.0, 2.0, 4.0]), np.zeros(3), 2, 2.0).tolist() == [False, False, False]


def test_keys_never_share_a_window():
    ts = np.array([0.0, 0.1, 0.2, 0.3])
    key = np.array([1, 2, 1, 2], dtype=np.uint64)
    assert not crossings(ts, key, 3, 10).any()
    assert crossings(ts, key, 2, 10).tolist() == [False, False, True, True]


def test_distinct_values_count_once_per_window():
    ts = np.arange(10, dtype=float)
    key = np.zeros(10, dtype=np.uint64)
    same_port = np.full(10, 80)
    assert not crossings(ts, key, 3, 100, distinct=same_port).any()
    ports = np.array([80, 80, 81, 81, 82, 82, 83, 83, 84, 84])
    assert np.flatnonzero(crossings(ts, key, 3, 100, distinct=ports)).tolist() == [4, 6, 8]
    # the same value again after the window counts again
    assert crossings(np.array([0.0, 50.0]), np.zeros(2), 2, 10, distinct=np.array([7, 7])).tolist() == [False, False]


def test_weights_sum_bytes():
    ts = np.array([0.0, 1.0, 2.0, 70.0])
    hit = crossings(ts, np.zeros(4), 3000, 60, weight=np.array([1000, 1000, 999, 5000]))
    assert hit.tolist() == [False, False, False, True]


def test_episodes_split_on_quiet_gaps():
    ts = np.array([0.0, 10.0, 100.0, 5.0])
    key = np.array([1, 1, 1, 2])
    assert episodes(ts, key, 60) == [(1, 0.0, 10.0, 2), (2, 5.0, 5.0, 1), (1, 100.0, 100.0, 1)]


# ---- rules on hand-made records --------------------------------------------------------------

def _cap(packets=(), mqtt=(), payloads=None) -> DecodedCapture:
    p = np.zeros(len(packets), dtype=PACKETS)
    for i, row in enumerate(packets):
        p[i]["ipver"], p[i]["proto"], p[i]["wirelen"] = 4, 6, 60
        for k, v in row.items():
            p[i][k] = v
    m = np.zeros(len(mqtt), dtype=MQTT)
    for i, row in enumerate(mqtt):
        for k, v in row.items():
            m[i][k] = v
    return DecodedCapture("gw-t", p, m, AddressBook(), payloads or {})


def _syn(i, dst, dport, src=A):
    return {"ts": T0 + i * 0.1, "src": src, "dst": dst, "dport": dport, "sport": 40000, "tcp_flags": TCP_SYN}


def _by_rule(dets):
    return {d["rule"]: d for d in dets}


def test_syn_scan_fires_at_the_25th_distinct_port():
    dets = _by_rule(run_rules(_cap([_syn(i, B, 1000 + i) for i in range(30)]), HOME))
    d = dets["syn_scan"]
    assert d["src_ip"] == "10.20.255.254" and d["kind"] == "port_scan"
    assert d["time"] == pytest.approx(T0) and d["detected_at"] == pytest.approx(T0 + 2.4)
    assert d["alerts"] == 6
    # 24 ports, each probed twice: no alert; SYN-ACKs (answers) never count
    twice = [_syn(i, B, 1000 + i % 24) for i in range(48)]
    answers = [dict(_syn(i, A, 1000 + i, src=B), tcp_flags=TCP_SYN | TCP_ACK) for i in range(40)]
    assert "syn_scan" not in _by_rule(run_rules(_cap(twice + answers), HOME))


def test_telnet_scan_needs_five_hosts():
    four = [_syn(i, B + i, 23) for i in range(4)] * 3
    assert "telnet_scan" not in _by_rule(run_rules(_cap(four), HOME))
    five = [_syn(i, B + i, 2323 if i % 2 else 23) for i in range(5)]
    d = _by_rule(run_rules(_cap(five), HOME))["telnet_scan"]
    assert d["kind"] == "mirai_scan" and d["detected_at"] == pytest.approx(T0 + 0.4)


def _m(i, mtype, client=A, to_broker=1, **kw):
    return {"ts": T0 + i * 0.01, "client": client, "broker": BROKER, "to_broker": to_broker, "mtype": mtype, **kw}


def test_connect_failures_are_tracked_by_the_client():
    refused = [_m(i * 100, CONNACK, to_broker=0, return_code=5) for i in range(5)]
    d = _by_rule(run_rules(_cap(mqtt=refused), HOME))["mqtt_connect_failures"]
    assert d["src_ip"] == "10.20.255.254" and d["kind"] == "mqtt_bruteforce"
    accepted = [_m(i * 100, CONNACK, to_broker=0, return_code=0) for i in range(50)]
    assert run_rules(_cap(mqtt=accepted), HOME) == []


def test_publish_rate_and_connect_rate_and_keepalive():
    pubs = [_m(i, PUBLISH) for i in range(500)]  # 500 in 4.99 s
    assert _by_rule(run_rules(_cap(mqtt=pubs), HOME))["mqtt_publish_rate"]["kind"] == "mqtt_flood"
    slow = [dict(_m(i * 10, PUBLISH), ts=T0 + i * 0.0101) for i in range(499)]
    assert run_rules(_cap(mqtt=slow), HOME) == []
    connects = [_m(i * 20, CONNECT, keepalive=65535) for i in range(30)]
    rules = _by_rule(run_rules(_cap(mqtt=connects), HOME))
    assert rules["mqtt_connect_rate"]["kind"] == "connection_dos" and rules["mqtt_long_keepalive"]["kind"] == "slowite"
    short = [_m(i * 20, CONNECT, keepalive=60) for i in range(29)]
    assert run_rules(_cap(mqtt=short), HOME) == []


def test_malformed_and_wildcards_alert_at_once_but_not_capture_gaps():
    msgs = [_m(0, 0, error=MQTT_STREAM_GAP), _m(1, 0, error=MQTT_STREAM_GAP, to_broker=0)]
    assert run_rules(_cap(mqtt=msgs), HOME) == []
    msgs.append(_m(5, CONNECT, error=MQTT_PROTOCOL))
    msgs.append(_m(9, SUBSCRIBE, client=B, wildcard=1))
    dets = _by_rule(run_rules(_cap(mqtt=msgs), HOME))
    assert dets["mqtt_malformed"]["detected_at"] == pytest.approx(T0 + 0.05)
    assert dets["mqtt_wildcard_subscribe"]["src_ip"] == "10.20.1.5"
    plain = [_m(i, SUBSCRIBE) for i in range(5)]
    assert run_rules(_cap(mqtt=plain), HOME) == []


def test_outbound_volume_counts_bytes_to_outside_home_net():
    out = [{"ts": T0 + i, "src": B, "dst": 0xCB007107, "dport": 443, "tcp_flags": TCP_ACK,
            "wirelen": 1500} for i in range(50)]  # 203.0.113.7
    assert run_rules(_cap(out), HOME) == []  # 75 kB
    big = [dict(r, wirelen=30_000) for r in out]  # 30 kB/s (offloaded segments)
    d = _by_rule(run_rules(_cap(big), HOME))["outbound_volume"]
    assert d["kind"] == "exfiltration" and d["detected_at"] == pytest.approx(T0 + 33)
    inside = [dict(r, dst=BROKER) for r in big]
    assert run_rules(_cap(inside), HOME) == []


def test_mirai_credentials_are_whole_lines():
    assert mirai_credential(b"root\r\n") and mirai_credential(b"xc3511\r\n") and mirai_credential(b"\xff\xfb\x01\nvizxv\n")
    assert not mirai_credential(b"rooted\r\n") and not mirai_credential(b"GET / HTTP/1.1\r\n")


def test_telnet_login_through_the_decoder():
    frames, ts = [], []
    for i, (payload, port) in enumerate([(b"root\r\n", 23), (b"xc3511\r\n", 23), (b"root\r\n", 22)]):
        pkt = Ether() / IP(src="10.20.3.3", dst="10.20.1.9") / TCP(sport=50000, dport=port, flags="PA") / Raw(payload)
        frames.append(bytes(pkt))
        ts.append(T0 + i)
    cap = decode_batches([FrameBatch.from_frames(frames, ts, LINKTYPE_ETHERNET)], "gw-t")
    assert sorted(cap.payloads) == [0, 1]  # port 22 is not inspected
    d = _by_rule(run_rules(cap, HOME))["telnet_default_login"]
    assert d["src_ip"] == "10.20.3.3" and d["detected_at"] == pytest.approx(T0) and d["alerts"] == 2


def test_a_bad_rule_table_is_refused_by_name():
    with pytest.raises(ValueError, match="'x'.*unknown selector 'nope'"):
        check_rules((Rule("x", "port_scan", "packets", "nope", 1, 0),))
    with pytest.raises(ValueError, match="by_client needs MQTT"):
        check_rules((dataclasses.replace(RULES[0], track="by_client"),))
    with pytest.raises(ValueError, match="bytes only on packets"):
        check_rules((Rule("y", "slowite", "mqtt", "connect_in", 1, 0, measure="bytes"),))
    check_rules(RULES)
    assert rules_table().count("\n") == len(RULES) + 1


# ---- a generated capture ---------------------------------------------------------------------

ATTACKS = [
    AttackSpec("port_scan", start=20, duration=10, params={"ports": 120, "hosts": 3}),
    AttackSpec("mqtt_bruteforce", start=40, duration=20, params={"rate": 4}),
    AttackSpec("mqtt_flood", start=70, duration=8, params={"rate": 600}),
    AttackSpec("connection_dos", start=90, duration=15, params={"rate": 15, "hosts": 2}),
    AttackSpec("slowite", start=110, duration=30, params={"connections": 150, "rate": 50}),
    AttackSpec("malformed", start=150, duration=20, params={"count": 20, "rate": 2}),
    AttackSpec("topic_scan", start=175, duration=20, params={"filters": 15, "rate": 2}),
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sig")
    gt = generate_capture(out / "c.pcap", devices=40, duration=220, attacks=ATTACKS, seed=5,
                          subnet="10.20.0.0/16", broker="10.20.0.1",
                          lookalikes=[LookalikeSpec("power_cut", start=200, duration=5)])
    return gt, decode_capture(out / "c.pcap", "gw-d01")


def test_every_known_attack_is_detected_during_its_step(generated):
    gt, cap = generated
    dets = run_rules(cap, HOME)
    for step in gt.steps:
        mine = [d for d in dets if d["src_ip"] in step.attackers and step.start <= d["detected_at"] <= step.end + 1]
        assert mine, f"{step.kind} from {step.attackers} not detected"
        assert min(d["detected_at"] for d in mine) - step.start < 10, step.kind
        assert all(d["time"] <= d["detected_at"] <= d["last_seen"] for d in mine)


def test_devices_are_not_flagged_on_benign_traffic(generated):
    gt, cap = generated
    devices = {d.ip for d in gt.inventory.devices}
    flagged = {d["src_ip"] for d in run_rules(cap, HOME)}
    assert not (flagged & devices), "a benign device (power-cut reconnect storm included) was flagged"


def test_the_broker_relaying_to_back_ends_is_no_exfiltration():
    relay = [{"ts": T0 + i, "src": BROKER, "dst": 0xAC10280A, "dport": 1883, "tcp_flags": TCP_ACK,
              "wirelen": 60_000} for i in range(30)]  # 10.20.0.1 -> 172.16.40.10
    assert _by_rule(run_rules(_cap(relay), HOME))["outbound_volume"]["src_ip"] == "10.20.0.1"
    assert run_rules(_cap(relay), HOME, servers=["10.20.0.1"]) == []
