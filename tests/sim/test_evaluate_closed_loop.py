"""The measuring stick can say no: attacks lower the availability of critical services, the
responses act on the traffic (a blocked flood stops loading the broker), and cutting off a
critical device costs its service. Tiny cities from the fixture (seconds to build)."""
from __future__ import annotations

import numpy as np
import pytest
from atlas.link.incidents import Incident
from atlas.sim.evaluate.availability import score_policies, score_rules
from atlas.sim.evaluate.baselines.decoded import decode_capture
from atlas.sim.evaluate.baselines.playbook import Delivery, Response
from atlas.sim.evaluate.city import load_city
from atlas.sim.evaluate.effects import broker_load
from atlas.sim.evaluate.fixture import build_city
from atlas.sim.evaluate.respond import PolicyError, load_policy
from atlas.sim.evaluate.services import instances, needed

GW = "gw-d01-tra"


@pytest.fixture(scope="module")
def flood_city(tmp_path_factory):
    path = build_city(tmp_path_factory.mktemp("flood") / "c", devices=30, gateways=3, duration=120.0, seed=4,
                      kinds=["mqtt_flood"], campaign=False, lookalikes=False)
    return load_city(path)


@pytest.fixture(scope="module")
def quiet_city(tmp_path_factory):
    path = build_city(tmp_path_factory.mktemp("quiet") / "c", devices=30, gateways=3, duration=120.0, seed=4,
                      kinds=[], campaign=False, lookalikes=False)
    return load_city(path)


def _flood(city):
    (step,) = [s for s in city.steps if s.kind == "mqtt_flood"]
    return step


def _block(step, after: float) -> Response:
    t = step.start + after
    return Response("block", step.gateway, step.id, "quarantine", step.attacker, t, t + 900.0, {}, step.attacker)


def test_services_are_instantiated_from_the_declarations(flood_city):
    insts = instances(flood_city)
    tc = insts["traffic_control/d01"]
    assert tc.spec.criticality == "life_safety"
    assert {c for c, _, _ in tc.members} == {"traffic_signal_controller", "vehicle_detector"}
    assert insts["emergency_response/d01"].services == ["traffic_control/d01"]
    assert "flood_warning/city" in insts and "grid_supervision/d01" not in insts  # no substation in this city
    assert needed(4, 0.5) == 2 and needed(3, 0.5) == 2 and needed(2, 1.0) == 2


def test_a_benign_city_keeps_every_service(quiet_city):
    res = score_rules(quiet_city, {"none": []})["policies"]["none"]
    assert res["availability_critical"] == 1.0 and res["failed_spans"] == {}


def test_a_flood_on_a_broker_lowers_availability_when_nothing_is_done(flood_city):
    step = _flood(flood_city)
    res = score_rules(flood_city, {"none": []})["policies"]["none"]
    assert res["availability_critical"] < 0.95
    # the failures are the flooded gateway's services, during the flood
    spans = res["failed_spans"]["traffic_control/d01"]
    assert all(a < step.end + 10 and b > step.start for a, b in spans)
    assert res["containment"] == 0.0 and res["steps"] == 1


def test_a_blocked_flooder_stops_loading_the_broker(flood_city):
    step = _flood(flood_city)
    cap = decode_capture(flood_city.pcap(GW), GW)
    by_client = {}
    t_block = step.start + 3.0
    none = Delivery(cap, [], by_client)
    blocked = Delivery(cap, [_block(step, 3.0)], by_client)
    load_none = broker_load(cap, none.mqtt, flood_city.start, flood_city.duration)
    load_blocked = broker_load(cap, blocked.mqtt, flood_city.start, flood_city.duration)
    after = slice(int(t_block - flood_city.start) + 1, int(step.end - flood_city.start))
    assert load_none.arrivals[after].min() > 1000  # the flood alone exceeds the broker's capacity
    assert load_blocked.arrivals[after].max() < 100  # its later messages no longer reach the broker
    # so the backlog drains and the service comes back; the rule contained the step
    res = score_rules(flood_city, {"none": [], "block": [_block(step, 3.0)]})["policies"]
    assert res["block"]["availability_critical"] > res["none"]["availability_critical"]
    assert res["block"]["containment"] == 1.0 and res["block"]["by_step"][0]["removed"] > 0.9
    late = score_rules(flood_city, {"late": [_block(step, 40.0)]})["policies"]["late"]
    assert res["block"]["availability_critical"] > late["availability_critical"]


def test_a_rate_limited_flooder_loses_what_exceeds_the_limit(flood_city):
    step = _flood(flood_city)
    cap = decode_capture(flood_city.pcap(GW), GW)
    t = step.start + 3.0
    limit = Response("p", GW, step.id, "rate_limit", step.attacker, t, t + 900.0, {"pps": 20}, step.attacker)
    d = Delivery(cap, [limit], {})
    load = broker_load(cap, d.mqtt, flood_city.start, flood_city.duration)
    after = slice(int(t - flood_city.start) + 1, int(step.end - flood_city.start))
    assert 0 < load.arrivals[after].max() < 1000  # some of the flood still arrives, under the broker's capacity
    res = score_rules(flood_city, {"none": [], "limit": [limit]})["policies"]
    assert res["limit"]["availability_critical"] > res["none"]["availability_critical"]
    assert res["limit"]["by_step"][0]["first_rule"] == {"action": "rate_limit", "at": t}


def test_static_loses_availability_by_cutting_off_a_critical_device(quiet_city):
    signal = next(d for d in quiet_city.devices if d["class"] == "traffic_signal_controller")
    t = quiet_city.start + 30
    flagged = Incident(id="fp-1", kind="port_scan", src_ip=signal["ip"], dst_ip="10.1.0.1", device=signal["ip"],
                       gateway=GW, time=t, last_seen=t + 5, score=0.9, model_version="m")
    res = score_policies(quiet_city, {GW: [flagged]}, ["none", "static", "playbook"])["policies"]
    assert res["none"]["availability_critical"] == 1.0
    assert res["static"]["actions"] == {"quarantine": 1}
    assert res["static"]["availability_critical"] < res["playbook"]["availability_critical"] == 1.0
    assert "traffic_control/d01" in res["static"]["failed_spans"]
    assert "emergency_response/d01" in res["static"]["failed_spans"]  # it depends on traffic control


def test_the_hub_configured_policy_is_scored_under_its_own_key(quiet_city, tmp_path):
    (tmp_path / "db").mkdir()
    cfg = tmp_path / "central.toml"
    cfg.write_text('[hub]\ndatabase = "db/hub.db"\n\n[decide.playbook.default]\nlife_safety = { action = "none", ttl = 60 }\n')
    signal = next(d for d in quiet_city.devices if d["class"] == "traffic_signal_controller")
    t = quiet_city.start + 30
    flagged = Incident(id="fp-2", kind="port_scan", src_ip=signal["ip"], dst_ip="10.1.0.1", device=signal["ip"],
                       gateway=GW, time=t, last_seen=t + 5, score=0.9, model_version="m")
    res = score_policies(quiet_city, {GW: [flagged]}, ["playbook", str(cfg)])["policies"]
    assert set(res) == {"playbook", "hub"}
    assert res["playbook"]["actions"] == {"rate_limit": 1} and res["hub"]["actions"] == {}


def test_forged_readings_fail_the_service_they_feed(tmp_path):
    path = build_city(tmp_path / "c", devices=30, gateways=3, duration=120.0, seed=4, kinds=["false_data"],
                      campaign=False, lookalikes=False)
    city = load_city(path)
    (step,) = city.steps
    insts = instances(city)
    fed = [k for k, i in insts.items() if set(step.victims) & i.addresses()]
    res = score_rules(city, {"none": [], "block": [_block(step, 1.0)]})["policies"]
    assert fed and all(k in res["none"]["failed_spans"] for k in fed if insts[k].critical)
    assert res["block"]["availability_all"] > res["none"]["availability_all"]


def test_an_unknown_policy_is_one_clear_error():
    with pytest.raises(PolicyError, match="--policy 'nope': not one of none, static, playbook"):
        load_policy("nope")


def test_a_hub_configuration_is_a_policy(tmp_path):
    (tmp_path / "db").mkdir()
    cfg = tmp_path / "central.toml"
    cfg.write_text('[hub]\ndatabase = "db/hub.db"\n\n[decide.playbook.default]\noutside = { action = "rate_limit", '
                   'ttl = 60, params = { pps = 5 } }\n')
    policy, _allow = load_policy(str(cfg))
    assert policy is not None and policy.cell("port_scan", "outside").action == "rate_limit"
    bad = tmp_path / "bad.toml"
    bad.write_text('[hub]\ndatabase = "db/hub.db"\n\n[decide.playbook.default]\noutside = { action = "explode" }\n')
    with pytest.raises(PolicyError, match=r"^--policy .*bad.toml: .*decide\.playbook"):
        load_policy(str(bad))


def test_evaluate_with_an_unknown_policy_says_so_in_one_line(tmp_path, capsys):
    from atlas.sim.cli import main

    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "r"), "--policy", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--policy 'nope'" in err[0] and "Traceback" not in err[0]


# ---- connection slots (SlowITe), on hand-made rows ---------------------------------------------

T0 = 1_767_254_400.0
DEVICE, SLOW, BROKER = 0x0A010101, 0x0A01FFFE, 0x0A010001


def _slot_capture(close_at: float = 70.0):
    """The device publishes every second for 100 s and reconnects at t=50; the attacker opens 10
    silent sessions (keepalive 65535) at t=40 and closes them at `close_at`."""
    from atlas.agent.decode import CONNECT, PUBLISH, TCP_ACK
    from atlas.agent.decode.packets import AddressBook
    from atlas.sim.evaluate.baselines.decoded import MQTT, PACKETS, DecodedCapture

    pk, mq = [], []
    for s in range(100):
        pk.append((T0 + s, DEVICE, 50001 if s < 50 else 50002, TCP_ACK))
        mq.append((T0 + s + 0.001, DEVICE, 50001 if s < 50 else 50002, PUBLISH, 60))
    mq.append((T0 + 50.0, DEVICE, 50002, CONNECT, 60))
    for i in range(10):
        pk += [(T0 + 40 + 0.01 * i, SLOW, 40000 + i, TCP_ACK), (T0 + close_at + 0.01 * i, SLOW, 40000 + i, TCP_ACK)]
        mq.append((T0 + 40 + 0.01 * i, SLOW, 40000 + i, CONNECT, 65535))
    pk.sort()
    mq.sort()
    p = np.zeros(len(pk), dtype=PACKETS)
    for i, (ts, src, sport, flags) in enumerate(pk):
        p[i] = (ts, 4, src, BROKER, 6, sport, 1883, flags, 60)
    m = np.zeros(len(mq), dtype=MQTT)
    for i, (ts, client, port, mtype, keepalive) in enumerate(mq):
        m[i]["ts"], m[i]["client"], m[i]["broker"], m[i]["client_port"] = ts, client, BROKER, port
        m[i]["to_broker"], m[i]["mtype"], m[i]["keepalive"] = 1, mtype, keepalive
    return DecodedCapture(GW, p, m, AddressBook())


def _slowite_states(rules):
    from atlas.sim.capture import AttackStep
    from atlas.sim.evaluate.effects import BrokerModel, device_states

    cap = _slot_capture()
    d = Delivery(cap, rules, {})
    step = AttackStep("s", "slowite", "", 1, "10.1.255.254", ["10.1.0.1"], GW, T0 + 40, T0 + 70.1,
                      attackers=["10.1.255.254"])
    fx = device_states(cap, d.packets, d.mqtt, ["10.1.1.1"], [step], [2.0], T0, 100.0, BrokerModel(max_connections=10))
    return fx.devices[2.0]["10.1.1.1"]


def _rule(start: float) -> Response:
    return Response("p", GW, "i", "quarantine", "10.1.255.254", T0 + start, T0 + 1000, {}, "10.1.255.254")


def test_slowite_refuses_a_reconnecting_device_while_its_sessions_hold_the_slots():
    up = _slowite_states([])
    # slots of 10 s: the device is refused from its reconnect (50 s) until the tool closes (70 s)
    assert up.tolist() == [True] * 5 + [False] * 2 + [True] * 3


def test_quarantine_before_the_sessions_open_keeps_the_slots_free():
    assert _slowite_states([_rule(30.0)]).all()


def test_quarantine_after_the_sessions_opened_holds_them_until_keepalive():
    # the rule drops the tool's FINs: the broker keeps the silent sessions for 1.5 keepalives
    up = _slowite_states([_rule(60.0)])
    assert up.tolist() == [True] * 5 + [False] * 5


def test_the_baselines_pass_feeds_the_closed_loop_without_decoding_again(flood_city, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from atlas.sim.evaluate import availability
    from atlas.sim.evaluate.baselines.passes import city_pass

    rules = {"none": [], "block": [_block(_flood(flood_city), 3.0)]}
    alone = score_rules(flood_city, rules)
    loop = availability.ClosedLoop(flood_city, rules)
    agent = SimpleNamespace(closed_loop=loop, incidents=lambda: {gw: [] for gw in flood_city.gateway_ids})
    city_pass(flood_city, agent, tmp_path)
    assert loop.done == set(flood_city.gateway_ids)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a capture twice")

    monkeypatch.setattr(availability, "decode_capture", no_decoding)
    shared = loop.finish()
    for key in rules:
        for field in ("availability_critical", "availability_all", "containment", "failed_spans"):
            assert shared["policies"][key][field] == alone["policies"][key][field], (key, field)


def test_revoking_a_device_account_ends_every_session_it_logs_in_with():
    cap = _slot_capture()
    rule = Response("p", GW, "i", "revoke_mqtt", "tsc-d01-0001", T0 + 20, T0 + 1000, {}, "10.1.1.1")
    d = Delivery(cap, [rule], {"tsc-d01-0001": "10.1.1.1"})
    m, p = cap.mqtt, cap.packets
    late = m["ts"] >= T0 + 20
    # both of the device's sessions (before and after its reconnect, under any client id) end
    assert d.mqtt[late & (m["client"] == DEVICE)].max() == 0 and d.mqtt[~late].min() == 1
    assert d.packets[(p["ts"] >= T0 + 20) & (p["src"] == DEVICE)].max() == 0
    assert d.mqtt[m["client"] == SLOW].min() == 1  # another host's sessions are not that account's


def test_metrics_say_why_a_figure_is_missing(quiet_city):
    from atlas.sim.evaluate.figures import KEYS, metrics_object

    scored = {"overall": {"steps_detected": 0, "named_right": 0, "step_recall": 0.0}, "detections": 0,
              "false_positives": {"incidents": 0, "per_device_day": 0.0}, "correlation": {"city": {}}}
    m, missing = metrics_object(quiet_city, scored, "")
    assert set(m) == set(KEYS) and {k for k, v in m.items() if v is None} == set(missing)
    assert "no incident" in missing["incident_precision"] and "no attack step" in missing["kind_accuracy"]
    assert "not scored" in missing["availability_critical"] and m["seeds"] == [4]
