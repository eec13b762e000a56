"""Issue 4, first "Done means" bullet, at the enforcement level, in namespaces the test makes.

Benign devices publish numbered messages to a real mosquitto in the gateway's namespace; an
attacker in its own namespace connects. A quarantine rule, as the hub would send it, goes
through the Enforcer into the gateway's nftables: the attacker's next connection fails, the
benign devices keep publishing without a gap, and after the TTL the attacker connects again.
(Detection and the hub join this path in the full end-to-end test; the lab is tests/lab.py.)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402

from atlas.link.rules import Rule  # noqa: E402
from atlas.agent.enforce.backend import Element  # noqa: E402
from atlas.agent.enforce.enforcer import Enforcer  # noqa: E402
from atlas.agent.enforce.nft import NftBackend  # noqa: E402
from atlas.link.rules import Allowlist  # noqa: E402
from atlas.link.wire import RuleChange, SignedRule  # noqa: E402

REASON = lab.netns_unavailable_reason() or lab.mosquitto_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.skipif(bool(REASON), reason=REASON or "ok")]

BENIGN = ("dev1", "dev2")
COUNT, INTERVAL = 300, 0.02  # 6 s of publishing per device, 50 messages/s
TTL = 3.0


@pytest.fixture
def gateway(tmp_path):
    with lab.Lab() as L:
        devices = {name: L.add_device(name) for name in (*BENIGN, "att")}
        broker = L.start_mosquitto(bind="0.0.0.0")
        passwords = {name: f"pw-{name}" for name in (*devices, "monitor")}
        for name, pw in passwords.items():
            broker.add_client(name, pw)
        allow = Allowlist.build([L.gw_ip], [broker.admin])
        enforcer = Enforcer([NftBackend(allow, netns=L.gw)], tmp_path / "enforce.json", allow)
        enforcer.reconcile()
        enforcer.start_timer(interval=0.1)
        try:
            yield L, devices, broker, passwords, enforcer
        finally:
            enforcer.shutdown()


def test_quarantine_stops_the_attacker_and_no_benign_message_is_lost(gateway):
    L, devices, broker, passwords, enforcer = gateway
    att = devices["att"]
    collector = lab.Collector(L.gw, "127.0.0.1", broker.port, "monitor", passwords["monitor"], topic="lab/#")
    try:
        assert lab.mqtt_connect_rc(att.netns, L.gw_ip, broker.port, "att", passwords["att"]) == 0
        publishers = {name: L.start_publisher(devices[name], L.gw_ip, broker.port, passwords[name], count=COUNT, interval=INTERVAL) for name in BENIGN}
        time.sleep(1.5)  # benign traffic flowing before the rule arrives

        rule = Rule(id="q-att-1", action="quarantine", target=att.ip, expires_at=time.time() + TTL, reason="flood + brute force on 1883", decision_id="dec-1")
        applied_at = time.monotonic()
        (ack,) = enforcer.apply(RuleChange("upsert", [SignedRule(rule, b"")]))
        assert ack.applied, ack.error
        assert lab.mqtt_connect_rc(att.netns, L.gw_ip, broker.port, "att", passwords["att"], timeout=1.0) == "timeout"

        # After the TTL (the enforcer's timer removes it) the attacker connects again.
        while time.monotonic() - applied_at < TTL + 3:
            if lab.mqtt_connect_rc(att.netns, L.gw_ip, broker.port, "att", passwords["att"], timeout=0.3) == 0:
                break
        lifted_after = time.monotonic() - applied_at
        assert TTL - 0.2 <= lifted_after < TTL + 2, lifted_after
        assert Element("quarantine", att.ip) not in NftBackend(netns=L.gw).observe()
        assert enforcer.rules() == []

        for name, proc in publishers.items():
            out, err = proc.communicate(timeout=30)
            events = [json.loads(line) for line in out.splitlines()]
            done = events[-1]
            assert done["event"] == "done" and done["sent"] == COUNT, err
            assert done["disconnects"] == 0, f"{name} was disconnected: {events}"
        time.sleep(0.3)
        received = collector.by_topic()
        for name in BENIGN:
            seqs = [seq for seq, _ in received[f"lab/{name}"]]
            assert seqs == list(range(COUNT)), f"{name}: missing {sorted(set(range(COUNT)) - set(seqs))[:10]}"
            times = [t for _, t in received[f"lab/{name}"]]
            # No stall either: the rule change never held a benign message back for long.
            assert max(b - a for a, b in zip(times, times[1:])) < 1.0
    finally:
        collector.close()
