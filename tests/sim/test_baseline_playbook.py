"""Static playbook vs ATLAS's decision step: the responses each gives (the real central.decide
code), and their effect on hand-made traffic (availability of critical devices, attacks stopped)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from atlas.link.incidents import Incident
from atlas.agent.decode import PUBLISH, TCP_ACK, TCP_SYN
from atlas.agent.decode.mqtt import topic_hash
from atlas.agent.decode.packets import AddressBook
from atlas.central.decide import Allowlist
from atlas.sim.evaluate.baselines.decoded import MQTT, PACKETS, DecodedCapture
from atlas.sim.evaluate.baselines.playbook import (
    Response,
    atlas_responses,
    city_inventory,
    evaluate_gateway,
    raised_at,
    static_responses,
)
from atlas.sim.capture import AttackStep

T0 = 1_767_254_400.0
GW = "gw-d01-tra"
CITY = SimpleNamespace(devices=[
    {"ip": "10.1.1.1", "client_id": "tsc-d01-0001", "class": "traffic_signal_controller", "criticality": "life_safety", "gateway": GW},
    {"ip": "10.1.1.2", "client_id": "pk-d01-0002", "class": "parking_sensor", "criticality": "ordinary", "gateway": GW},
    {"ip": "10.1.1.3", "client_id": "bus-d01-0003", "class": "bus_tracker", "criticality": "essential", "gateway": GW},
])


def incident(src, kind="port_scan", device="", t=100.0, detected=None):
    ev = {"detected_at": T0 + detected} if detected is not None else {}
    return Incident(id=f"{GW}/{src}/{kind}/{t}", kind=kind, src_ip=src, dst_ip="10.1.0.1", device=device or src,
                    gateway=GW, time=T0 + t, last_seen=T0 + t + 20, score=0.99, model_version="m", evidence=ev)


def test_static_quarantines_every_source_for_its_ttl():
    incs = {GW: [incident("10.1.1.1", detected=103.0), incident("203.0.113.9")]}
    rs = static_responses(incs, ttl=900, dispatch_s=1.0)
    assert [(r.action, r.target, r.start, r.end) for r in rs] == [
        ("quarantine", "10.1.1.1", T0 + 104, T0 + 1004), ("quarantine", "203.0.113.9", T0 + 101, T0 + 1001)]
    assert raised_at(incs[GW][0]) == T0 + 103 and raised_at(incs[GW][1].to_dict()) == T0 + 100


def test_atlas_uses_the_hub_decision_step_with_the_profiles():
    inv = city_inventory(CITY)
    incs = {GW: [incident("10.1.1.1"), incident("203.0.113.9"),
                 incident("10.1.1.2", "mqtt_bruteforce", device="pk-d01-0002"), incident("10.1.1.3")]}
    rs = {r.source: r for r in atlas_responses(incs, inv)}
    # a life-safety signal controller is only slowed down (its quarantine waits for a human)
    assert (rs["10.1.1.1"].action, rs["10.1.1.1"].params) == ("rate_limit", {"pps": 20})
    assert rs["203.0.113.9"].action == "quarantine" and rs["203.0.113.9"].end - rs["203.0.113.9"].start == 900
    assert (rs["10.1.1.2"].action, rs["10.1.1.2"].target) == ("revoke_mqtt", "pk-d01-0002")
    assert rs["10.1.1.3"].action == "rate_limit"
    # an allowlisted address gets nothing
    assert atlas_responses({GW: [incident("203.0.113.9")]}, inv, allowlist=Allowlist.parse(["203.0.113.0/24"])) == []


def test_a_pivot_device_is_known_on_other_gateways_unless_the_inventory_is_per_gateway():
    elsewhere = {"gw-d01-ene": [Incident(id="x", kind="mqtt_bruteforce", src_ip="10.1.1.1", dst_ip="10.2.0.1",
                                         device="10.1.1.1", gateway="gw-d01-ene", time=T0, last_seen=T0, score=1.0,
                                         model_version="m")]}
    assert [r.action for r in atlas_responses(elsewhere, city_inventory(CITY))] == ["rate_limit"]
    assert [r.action for r in atlas_responses(elsewhere, city_inventory(CITY, per_gateway=True))] == ["quarantine"]


# ---- the responses applied to traffic ----------------------------------------------------------

SIGNAL, METER, ATTACKER, BROKER = 0x0A010101, 0x0A010102, 0x0A01FFFE, 0x0A010001


def _cap() -> DecodedCapture:
    """100 s: the signal publishes once a second (2 packets each), the meter too; the attacker
    sends 10 SYNs a second from t=40 to t=80."""
    pk, mq = [], []
    for s in range(100):
        for dev, port in ((SIGNAL, 50001), (METER, 50002)):
            pk += [(T0 + s, dev, BROKER, port, 1883, TCP_ACK), (T0 + s + 0.001, dev, BROKER, port, 1883, TCP_ACK)]
            mq.append((T0 + s + 0.001, dev, port, PUBLISH, topic_hash(b"tsc-d01-0001") if dev == SIGNAL else 0))
        if 40 <= s < 80:
            pk += [(T0 + s + 0.01 * i, ATTACKER, SIGNAL, 40000, 1000 + i, TCP_SYN) for i in range(10)]
    p = np.zeros(len(pk), dtype=PACKETS)
    for i, (ts, src, dst, sport, dport, flags) in enumerate(sorted(pk)):
        p[i] = (ts, 4, src, dst, 6, sport, dport, flags, 60)
    m = np.zeros(len(mq), dtype=MQTT)
    for i, (ts, client, port, mtype, h) in enumerate(mq):
        m[i]["ts"], m[i]["client"], m[i]["broker"], m[i]["client_port"] = ts, client, BROKER, port
        m[i]["to_broker"], m[i]["mtype"], m[i]["client_hash"] = 1, mtype, h
    return DecodedCapture(GW, p, m, AddressBook())


STEP = AttackStep("s1", "port_scan", "", 1, "10.1.255.254", ["10.1.1.1"], GW, T0 + 40, T0 + 79.1, attackers=["10.1.255.254"])
CRITICAL = ["10.1.1.1"]
CLIENTS = {"tsc-d01-0001": "10.1.1.1"}


def R(action, target, start, end, source="10.1.255.254", **params):
    return Response("p", GW, "i", action, target, T0 + start, T0 + end, params, source)


def test_quarantining_the_attacker_keeps_the_critical_service():
    res = evaluate_gateway(_cap(), {"p": [R("quarantine", "10.1.255.254", 50, 90)]}, CRITICAL, [STEP], CLIENTS)["p"]
    assert (res["expected"], res["delivered"]) == (40, 40)
    # attacker packets after the rule (t >= 50): 30 s x 10, every one lost
    assert (res["attacker_packets"], res["attacker_lost"], res["steps_stopped"]) == (300, 300, 1)


def test_quarantining_a_critical_device_loses_its_messages():
    res = evaluate_gateway(_cap(), {"p": [R("quarantine", "10.1.1.1", 50, 90, source="10.1.1.1")]}, CRITICAL, [STEP], CLIENTS)["p"]
    assert (res["expected"], res["delivered"]) == (40, 0)
    assert res["attacker_packets"] == 0 and res["steps_stopped"] == 0  # no rule against the step's attacker


def test_rate_limit_keeps_a_normal_rate_and_cuts_a_flood():
    ok = evaluate_gateway(_cap(), {"p": [R("rate_limit", "10.1.1.1", 0, 100, source="10.1.1.1", pps=20)]},
                          CRITICAL, [], CLIENTS)["p"]
    assert ok["delivered"] == ok["expected"] == 100  # 2 packets a second, under 20
    tight = evaluate_gateway(_cap(), {"p": [R("rate_limit", "10.1.1.1", 0, 100, source="10.1.1.1", pps=1)]},
                             CRITICAL, [], CLIENTS)["p"]
    assert tight["delivered"] == pytest.approx(50)  # each second: 1 packet of 2 passes
    scan = evaluate_gateway(_cap(), {"p": [R("rate_limit", "10.1.255.254", 40, 100, pps=2)]}, CRITICAL, [STEP], CLIENTS)["p"]
    assert scan["attacker_lost"] == pytest.approx(400 * 0.8) and scan["steps_stopped"] == 0


def test_revoke_and_filter_hit_the_mqtt_session():
    rev = evaluate_gateway(_cap(), {"p": [R("revoke_mqtt", "tsc-d01-0001", 10, 30, source="10.1.1.1")]}, CRITICAL, [], CLIENTS)["p"]
    assert (rev["expected"], rev["delivered"]) == (20, 0)
    other = evaluate_gateway(_cap(), {"p": [R("revoke_mqtt", "tsc-d01-0001-evil", 10, 30, source="10.1.1.1")]},
                             CRITICAL, [], {})["p"]
    assert other["delivered"] == other["expected"] == 20
    filt = evaluate_gateway(_cap(), {"p": [R("filter", "10.1.1.1", 10, 30, source="10.1.1.1", port=1883, proto="tcp"),
                                           R("filter", "10.1.1.1", 30, 50, source="10.1.1.1", port=161, proto="udp")]},
                            CRITICAL, [], CLIENTS)["p"]
    assert (filt["expected"], filt["delivered"]) == (40, 20)


def test_a_compromised_devices_messages_during_its_attack_are_not_expected():
    own = AttackStep("s2", "false_data", "", 1, "10.1.1.1", ["10.1.1.1"], GW, T0 + 60, T0 + 69.5, attackers=["10.1.1.1"])
    res = evaluate_gateway(_cap(), {"p": [R("quarantine", "10.1.1.1", 50, 90, source="10.1.1.1")]}, CRITICAL, [own], CLIENTS)["p"]
    assert (res["expected"], res["delivered"]) == (30, 0)
    assert res["attacker_packets"] == 20 and res["attacker_lost"] == 20  # its own packets during the step


def test_both_policies_are_measured_on_the_union_of_their_windows():
    res = evaluate_gateway(_cap(), {"a": [R("quarantine", "10.1.255.254", 50, 60)],
                                    "b": [R("quarantine", "10.1.1.1", 70, 80, source="10.1.1.1")]}, CRITICAL, [], CLIENTS)
    assert res["a"]["expected"] == res["b"]["expected"] == 20
    assert (res["a"]["delivered"], res["b"]["delivered"]) == (20, 10)


def test_a_bad_static_ttl_is_refused():
    with pytest.raises(ValueError, match="static playbook ttl"):
        static_responses({GW: [incident("10.1.1.1")]}, ttl=0)
