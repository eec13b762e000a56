"""MQTT credential revocation against a real mosquitto with the dynamic-security plugin.

The broker runs on 127.0.0.1 on a free port, with its files in a temp folder; devices are
real MQTT clients (paho, and a raw CONNECT for the CONNACK code).
"""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402

from atlas.link.rules import Rule  # noqa: E402
from atlas.agent.enforce.backend import Element  # noqa: E402
from atlas.agent.enforce.dynsec import DynsecBackend, DynsecClient  # noqa: E402
from atlas.agent.enforce.enforcer import Enforcer  # noqa: E402
from atlas.link.rules import Allowlist  # noqa: E402
from atlas.link.wire import RuleChange, SignedRule  # noqa: E402

REASON = lab.mosquitto_unavailable_reason()
pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "ok")
HOST = "127.0.0.1"
PASSWORDS = {"dev1": "pw-dev1", "att": "pw-att", "dev2": "pw-dev2"}


@pytest.fixture
def broker():
    b = lab.Broker(bind=HOST)
    b.start()
    try:
        for user, pw in PASSWORDS.items():
            b.add_client(user, pw)
        yield b
    finally:
        b.stop()


def make_enforcer(broker, state: Path, clock=time.time) -> Enforcer:
    client = DynsecClient(HOST, broker.port, broker.admin, broker.admin_password, timeout=5)
    return Enforcer([DynsecBackend(client)], state, Allowlist.build([], [broker.admin]), clock=clock)


def revoke(rid: str, user: str, ttl: float, now: float | None = None) -> RuleChange:
    r = Rule(id=rid, action="revoke_mqtt", target=user, expires_at=(now or time.time()) + ttl, reason="brute force", decision_id="d1")
    return RuleChange("upsert", [SignedRule(r, b"")])


class Device:
    """A connected paho client that notes when the broker drops it."""

    def __init__(self, port: int, user: str) -> None:
        self.connected, self.dropped = threading.Event(), threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}")
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        self.client.reconnect_delay_set(60, 60)  # no reconnect during the test: we probe by hand
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(5), f"{user} could not connect"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_revocation_drops_the_client_refuses_it_and_lifts_after_ttl(broker, tmp_path):
    enf = make_enforcer(broker, tmp_path / "enforce.json")
    att, dev1 = Device(broker.port, "att"), Device(broker.port, "dev1")
    try:
        start = time.monotonic()
        (ack,) = enf.apply(revoke("rv-att", "att", ttl=2.0))
        assert ack.applied, ack.error
        assert att.dropped.wait(2), "the revoked client's connection was not dropped"
        assert lab.mqtt_connect_rc(None, HOST, broker.port, "att", PASSWORDS["att"]) == 5  # not authorized
        assert not dev1.dropped.is_set()
        assert lab.mqtt_connect_rc(None, HOST, broker.port, "dev1", PASSWORDS["dev1"]) == 0
        assert broker.client_disabled("att")
        enf.start_timer(interval=0.1)
        while lab.mqtt_connect_rc(None, HOST, broker.port, "att", PASSWORDS["att"]) != 0 and time.monotonic() - start < 8:
            time.sleep(0.1)
        lifted_after = time.monotonic() - start
        assert 1.9 <= lifted_after < 4.0, lifted_after
        assert not broker.client_disabled("att") and enf.rules() == []
    finally:
        enf.shutdown()
        att.close()
        dev1.close()


def test_reconcile_reenables_what_expired_while_down_and_redisables_what_was_lost(broker, tmp_path):
    state = tmp_path / "enforce.json"
    clock = [time.time()]
    enf = make_enforcer(broker, state, clock=lambda: clock[0])
    assert enf.apply(revoke("rv-att", "att", ttl=30, now=clock[0]))[0].applied
    assert enf.apply(revoke("rv-dev2", "dev2", ttl=300, now=clock[0]))[0].applied
    enf.shutdown()  # the agent dies; its state file says what it had disabled
    doc = json.loads(state.read_text())
    assert doc["applied"]["mqtt-dynsec"] == [Element("revoke_mqtt", "att").to_dict(), Element("revoke_mqtt", "dev2").to_dict()]
    # While it was down: rv-att's TTL ran out, an operator re-enabled dev2 by mistake, and an
    # operator disabled dev1 for reasons of their own.
    broker.dynsec([{"command": "enableClient", "username": "dev2"}, {"command": "disableClient", "username": "dev1"}])
    clock[0] += 60
    enf2 = make_enforcer(broker, state, clock=lambda: clock[0])
    try:
        report = enf2.reconcile()
        assert "expired" in report.dropped["rv-att"]
        assert report.orphans == [Element("revoke_mqtt", "att")]
        assert report.missing == [Element("revoke_mqtt", "dev2")]
        assert not broker.client_disabled("att")
        assert broker.client_disabled("dev2")
        assert broker.client_disabled("dev1")  # not ATLAS's: left alone
        assert lab.mqtt_connect_rc(None, HOST, broker.port, "att", PASSWORDS["att"]) == 0
        assert lab.mqtt_connect_rc(None, HOST, broker.port, "dev2", PASSWORDS["dev2"]) == 5
    finally:
        enf2.shutdown()


def test_refusals_name_the_problem(broker, tmp_path):
    enf = make_enforcer(broker, tmp_path / "enforce.json")
    try:
        (ack,) = enf.apply(revoke("rv-admin", broker.admin, ttl=60))
        assert not ack.applied and "allowlisted" in ack.error  # the enforcer never locks itself out
        (ack,) = enf.apply(revoke("rv-ghost", "ghost", ttl=60))
        assert not ack.applied and "disableClient ghost: Client not found" in ack.error and "retried" in ack.error
        assert enf.status()["rules"][0]["state"] == "failed"
    finally:
        enf.shutdown()


def test_unreachable_broker_is_reported_not_fatal(tmp_path):
    port = lab.free_port()
    enf = Enforcer([DynsecBackend(DynsecClient(HOST, port, "admin", "x", timeout=1))], tmp_path / "s.json")
    report = enf.reconcile()
    assert f"MQTT broker 127.0.0.1:{port}: cannot connect" in report.backend_errors["mqtt-dynsec"]
    (ack,) = enf.apply(revoke("rv", "att", ttl=60))
    assert not ack.applied and "not reconciled" in ack.error
    enf.shutdown()


def test_wrong_admin_password_is_a_clear_error(broker, tmp_path):
    client = DynsecClient(HOST, broker.port, broker.admin, "wrong", timeout=3)
    enf = Enforcer([DynsecBackend(client)], tmp_path / "s.json")
    report = enf.reconcile()
    assert "refused" in report.backend_errors["mqtt-dynsec"] and "authori" in report.backend_errors["mqtt-dynsec"].lower()
    enf.shutdown()
