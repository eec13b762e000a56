"""The live mode's plan, before anything runs (no namespaces needed): the city's layout and
credentials, each device's messages from its profile, and each attack step's tool plan."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.attacks import AttackSpec
from atlas.sim.live.plan import accounts, fleet_plan, gateway_layout, plan_steps
from atlas.sim.live.worker import MALFORMED, _malformed_bytes, _scapy_connect


@pytest.fixture(scope="module")
def profiles():
    return load_device_profiles()


def test_layout_follows_the_city_contract(profiles):
    gws = gateway_layout(31, 3, 7, profiles)
    assert [g.id for g in gws] == ["gw-d01-tra", "gw-d01-ene", "gw-d01-pub"]
    assert [(g.subnet, g.broker) for g in gws] == [(f"10.{k}.0.0/16", f"10.{k}.0.1") for k in (1, 2, 3)]
    assert sum(len(g.inventory.devices) for g in gws) == 31
    for g in gws:
        assert {profiles[d.cls].domain for d in g.inventory.devices} == {g.domain}
    one = gateway_layout(12, 1, 7, profiles)
    assert one[0].id == "gw-d01-tra" and len(one[0].inventory.devices) == 12
    # the same seed gives the same devices and credentials as `atlas-sim city`'s gateway of that id
    assert [d.password for d in gateway_layout(31, 3, 7, profiles)[1].inventory.devices] == [d.password for d in gws[1].inventory.devices]
    acc = accounts(gws[0], 7)
    assert {d.username for d in gws[0].inventory.devices} < set(acc) and "tmc-backend-01" in acc


def test_fleet_messages_follow_the_profiles(profiles):
    gw = gateway_layout(20, 1, 3, profiles)[0]
    t0, duration = 1_800_000_000.0, 120.0
    plan = fleet_plan(gw, t0=t0, warmup=2.0, duration=duration, seed=3)
    devs = gw.inventory.devices
    assert len(plan["clients"]) == len(devs) + len(gw.inventory.backends)
    assert all(0 <= c["connect_at"] < 2.0 for c in plan["clients"])
    offsets = np.array([m[0] for m in plan["messages"]])
    assert np.all(np.diff(offsets) >= 0) and offsets.min() >= 0 and offsets.max() < duration
    # each device's message count is its profile's publish rate times the run (within jitter)
    for k, d in enumerate(devs):
        prof = profiles[d.cls]
        expected = sum(duration / t.interval for t in prof.mqtt.topics if t.direction == "publish" and t.timing == "periodic")
        periodic_topics = {t.topic.format(district=gw.district, id=d.client_id) for t in prof.mqtt.topics if t.timing == "periodic" and t.direction == "publish"}
        got = sum(1 for m in plan["messages"] if m[1] == k and m[2] in periodic_topics)
        assert abs(got - expected) <= len(periodic_topics) + 1, (d.cls, got, expected)
    # JSON payloads carry the profile's fields, values inside the physical limits, timestamps at the send time
    checked = 0
    for off, k, topic, payload, qos, retain in plan["messages"]:
        prof = profiles[devs[k].cls]
        spec = next(t for t in prof.mqtt.topics if t.topic.format(district=gw.district, id=devs[k].client_id) == topic)
        assert qos == spec.qos
        if spec.format != "json":
            continue
        body = json.loads(base64.b64decode(payload))
        for f in spec.fields:
            assert f.name in body
            if f.type in ("int", "float"):
                assert f.min <= body[f.name] <= f.max
            if f.type == "timestamp":
                scale = 1000 if f.unit == "ms" else 1
                assert abs(body[f.name] - (t0 + off) * scale) <= scale
        checked += 1
    assert checked > 100


def test_attack_steps_resolve_time_attacker_and_tool(profiles):
    gws = gateway_layout(30, 2, 3, profiles)
    device = gws[1].inventory.devices[2]
    specs = [(AttackSpec("port_scan", start=5, params={"hosts": 3, "ports": 100}), "gw-d01-tra"),
             (AttackSpec("mqtt_flood", start=10, duration=500, params={"rate": 200.0}, attacker=device.ip), "1"),
             (AttackSpec("mqtt_bruteforce", start=20), None),
             (AttackSpec("slowite", start=30, params={"connections": 50}), "gw-d01-tra")]
    steps = plan_steps(specs, gws, duration=60, seed=3)
    scan, flood, brute, slow = steps
    assert scan.tool == "nmap" and scan.victims[0] == "10.1.0.1" and len(scan.victims) == 3 and len(scan.plan["ports"]) == 100
    assert not scan.from_device and scan.attacker.startswith("10.1.255.")
    # a device's address: the compromised device attacks with its own credentials, another client id
    assert flood.from_device and flood.gateway.id == "gw-d01-ene"
    assert flood.plan["user"] == device.username and flood.plan["password"] == device.password and flood.plan["cid"] != device.client_id
    assert flood.duration == 60 - 1 - 10 and flood.plan["count"] == int(200 * flood.duration)  # clipped to the run, bounded
    assert brute.tool == "paho-mqtt" and len(brute.plan["guesses"]) == brute.plan["count"] > 0
    assert slow.plan["count"] == 50 and slow.attacker != scan.attacker  # each rogue step its own address
    again = plan_steps(specs, gws, duration=60, seed=3)
    assert [s.plan for s in again] == [s.plan for s in steps]  # the seed decides


def test_crafted_mqtt_is_what_it_claims():
    """The Scapy-built CONNECT is valid MQTT 3.1.1 (Scapy dissects it back); each malformed
    variant breaks the specification where it says."""
    import random

    from scapy.contrib.mqtt import MQTT

    good = MQTT(_scapy_connect(b"abc", "u", "p", keepalive=65535))
    assert good.type == 1 and good.protoname == b"MQTT" and good.protolevel == 4 and good.klive == 65535
    assert good.username == b"u" and good.password == b"p"
    rng = random.Random(1)
    seen = {}
    for kind in MALFORMED:
        first, after = _malformed_bytes(kind, rng, "u", "p")
        seen[kind] = (first, after)
    assert seen["bad_protocol_name"][0][4:8] in (b"MQTX", b"HTTP")
    assert seen["reserved_connect_flag"][0][9] & 0x01
    assert seen["bad_remaining_length"][1][:6] == b"\x30\xff\xff\xff\xff\x7f"
    assert seen["qos3"][1][0] & 0x06 == 0x06
    assert b"\x00/x" in seen["null_in_topic"][1] and b"\xc3\x28\xff" in seen["invalid_utf8_topic"][1]
    assert seen["reserved_type"][1][0] >> 4 == 0


def test_every_attack_kind_runs_live():
    from atlas.sim.attacks import ATTACKS
    from atlas.sim.live.plan import LIVE_TOOLS

    assert set(LIVE_TOOLS) == set(ATTACKS)


def test_unsupported_kind_and_unknown_gateway_are_named(profiles, monkeypatch):
    import atlas.sim.live.plan as plan

    gws = gateway_layout(5, 1, 3, profiles)
    monkeypatch.delitem(plan.LIVE_TOOLS, "connection_dos")  # a kind added to the library but not to the live mode
    with pytest.raises(ValueError, match="live mode runs .* \\(not connection_dos yet\\)"):
        plan_steps([(AttackSpec("connection_dos"), None)], gws, duration=30, seed=1)
    monkeypatch.undo()
    dos = plan_steps([(AttackSpec("connection_dos", params={"hosts": 3}), None)], gws, duration=30, seed=1)[0]
    assert len(set(dos.attackers)) == 3 and dos.plan["binds"] == dos.attackers
    with pytest.raises(ValueError, match="gw-d09-tra"):
        plan_steps([(AttackSpec("mqtt_flood"), "gw-d09-tra")], gws, duration=30, seed=1)
