"""The hub's half of the closed loop over the real wire: `atlas-central serve` (a subprocess,
mutual TLS on loopback) and an agent's Uplink. An incident goes up, a signed rule comes down;
an operator's approve/revoke reaches the gateway; a hub killed with SIGKILL comes back with
every rule and seq, and the gateway converges on its snapshot."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atlas.link.incidents import Incident
from atlas.link.wire import GatewayInfo, RuleAck, RuleChange, TelemetryBatch
from atlas.agent.uplink.client import Uplink
from atlas.central.pki import PkiDir, init_pki, issue_gateway

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("atlas-central")
GATEWAY = "gw-north"
ATTACKER = "198.51.100.7"  # an outside host (not in the inventory); never contacted
CALLBOX = "10.0.1.5"


class Gateway:
    """An agent's rule side: applies every change to a dict (what its enforcer would hold)."""

    def __init__(self):
        self.rules: dict[str, object] = {}
        self.changes: list[tuple[float, RuleChange]] = []
        self.cond = threading.Condition()

    def on_rules(self, change: RuleChange) -> list[RuleAck]:
        with self.cond:
            if change.kind == "snapshot":
                self.rules = {s.rule.id: s.rule for s in change.rules}
            else:
                self.rules.update({s.rule.id: s.rule for s in change.rules})
            for rule_id in change.withdrawn:
                self.rules.pop(rule_id, None)
            self.changes.append((time.monotonic(), change))
            self.cond.notify_all()
        return [RuleAck(s.rule.id, applied=True) for s in change.rules]

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; gateway holds {self.rules}")
                self.cond.wait(left)

    def targets(self):
        return sorted((r.action, r.target) for r in self.rules.values())


def cli(config, *args):
    proc = subprocess.run([str(CLI), *map(str, args), "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def start_hub(config: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([str(CLI), "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hub exited: {proc.stdout.read()}")
        status = cli(config, "status", "--json")
        if status.returncode == 0:
            data = json.loads(status.stdout)
            if data["running"] and data["hub"]["pid"] == proc.pid:
                return proc, int(data["hub"]["listen"].rpartition(":")[2])
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("hub did not start")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def deployment(tmp_path):
    pki = init_pki(tmp_path / "pki")
    issue_gateway(pki.root, GATEWAY)
    (tmp_path / "inventory.toml").write_text(f"""
[[device]]
address = "{CALLBOX}"
client_id = "ecb-0001"
profile = "emergency_call_box"
""")
    config = tmp_path / "central.toml"
    # a fixed port, so the agent finds the restarted hub where it was (as in a deployment)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(f"""
[hub]
listen = "127.0.0.1:{port}"
database = "central.db"
pki = "pki"
inventory = "inventory.toml"
operator_poll = 0.1
""")
    return tmp_path, PkiDir(pki.root), config


def incident(src, t, kind="mqtt_flood"):
    return Incident(id=f"{GATEWAY}/{src}/{kind}/{int(t * 1000)}", kind=kind, src_ip=src,
                    dst_ip="10.0.0.2", device=src, gateway=GATEWAY, time=t, last_seen=t,
                    score=0.95, model_version="m1", packets=500)


def test_incident_to_rule_operator_commands_and_a_killed_hub(deployment):
    root, pki, config = deployment
    hub, port = start_hub(config)
    second = subprocess.run([str(CLI), "serve", "--config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 1 and "another atlas-central is serving" in second.stderr
    gateway = Gateway()
    uplink = None
    try:
        uplink = Uplink(f"127.0.0.1:{port}", GATEWAY, pki.gateway_tls(GATEWAY), root / "spool",
                        gateway.on_rules, signing_pub=pki.signing_pub, backoff_initial=0.1,
                        backoff_max=0.5, info=GatewayInfo(GATEWAY, "0.1.0", board="pi5"))
        uplink.start()
        assert uplink.wait_connected(10)
        gateway.wait_for(lambda g: g.changes)  # the (empty) snapshot comes first
        assert gateway.changes[0][1].kind == "snapshot"

        # an outside host floods: the hub quarantines it on this gateway
        sent = time.monotonic()
        uplink.submit(TelemetryBatch(seq=0, time=time.time(),
                                     incidents=[incident(ATTACKER, time.time())]))
        gateway.wait_for(lambda g: ("quarantine", ATTACKER) in g.targets())
        incident_to_rule = gateway.changes[-1][0] - sent
        rules = json.loads(cli(config, "rules", "--json").stdout)
        [quarantine] = [r for r in rules if r["rule"]["target"] == ATTACKER]
        deadline = time.monotonic() + 5  # the agent's ack comes back
        while quarantine["ack_applied"] is not True and time.monotonic() < deadline:
            time.sleep(0.05)
            rules = json.loads(cli(config, "rules", "--json").stdout)
            [quarantine] = [r for r in rules if r["rule"]["target"] == ATTACKER]
        assert quarantine["ack_applied"] is True and quarantine["gateway"] == GATEWAY

        # a life-safety device misbehaves: throttled at once, quarantine only on approval
        uplink.submit(TelemetryBatch(seq=0, time=time.time(),
                                     incidents=[incident(CALLBOX, time.time())]))
        gateway.wait_for(lambda g: ("rate_limit", CALLBOX) in g.targets())
        assert ("quarantine", CALLBOX) not in gateway.targets()
        [pending] = json.loads(cli(config, "decisions", "--pending", "--json").stdout)
        asked = time.monotonic()
        approved = cli(config, "approve", pending["id"], "--operator", "alice")
        assert approved.returncode == 0, approved.stderr
        gateway.wait_for(lambda g: ("quarantine", CALLBOX) in g.targets())
        approve_to_rule = gateway.changes[-1][0] - asked

        # the operator revokes the outside host's quarantine: the gateway drops it
        revoked = cli(config, "revoke", quarantine["rule"]["id"])
        assert revoked.returncode == 0, revoked.stderr
        gateway.wait_for(lambda g: ("quarantine", ATTACKER) not in g.targets())
        held = dict(gateway.rules)
        assert sorted((r.action, r.target) for r in held.values()) == \
            [("quarantine", CALLBOX), ("rate_limit", CALLBOX)]

        # kill -9 the hub mid-stream; a new one on the same files gives back the same rules
        stop(hub, signal.SIGKILL)
        assert cli(config, "status").stdout.startswith("hub: NOT running")
        snapshots_before = sum(1 for _, c in gateway.changes if c.kind == "snapshot")
        hub, port2 = start_hub(config)
        assert port2 == port
        # the same uplink reconnects by itself and gets the whole desired set again
        gateway.wait_for(lambda g: sum(1 for _, c in g.changes if c.kind == "snapshot")
                         > snapshots_before)
        assert {k: (r.action, r.target, r.expires_at) for k, r in gateway.rules.items()} == \
            {k: (r.action, r.target, r.expires_at) for k, r in held.items()}
        # seqs survived: a new batch is stored after the old ones, nothing is decided twice
        last = uplink.submit(TelemetryBatch(seq=0, time=time.time(), incidents=[
            incident(ATTACKER, time.time(), "port_scan")]))
        gateway.wait_for(lambda g: ("quarantine", ATTACKER) in g.targets())
        [gw] = json.loads(cli(config, "gateways", "--json").stdout)
        assert gw["last_seq"] == last and gw["board"] == "pi5" and gw["connections"] == 1
        incidents = json.loads(cli(config, "incidents", "--json").stdout)
        assert len(incidents) == 3
        verify = cli(config, "audit", "verify")
        assert verify.returncode == 0, verify.stderr
        print(f"\nincident -> rule at gateway: {incident_to_rule * 1000:.0f} ms; "
              f"CLI approve -> rule at gateway: {approve_to_rule * 1000:.0f} ms")
    finally:
        if uplink is not None:
            uplink.stop()
        stop(hub)
    assert hub.returncode in (0, -signal.SIGTERM)
    assert os.path.exists(root / "central.db")


def test_a_rule_edited_in_the_hubs_database_is_refused_and_the_verified_copy_kept(deployment):
    """Fail closed over the real wire: someone edits a rule's target in central.db; on the next
    connect the gateway refuses the copy (its signature no longer fits), keeps enforcing the
    copy the hub signed, and the hub shows the rule as refused with the gateway's error."""
    import sqlite3

    from atlas.agent.enforce.dryrun import DryRunBackend
    from atlas.agent.enforce.enforcer import Enforcer

    root, pki, config = deployment
    hub, port = start_hub(config)
    enforcer = Enforcer([DryRunBackend(name="net")], root / "enforce.json")
    uplink = Uplink(f"127.0.0.1:{port}", GATEWAY, pki.gateway_tls(GATEWAY), root / "spool",
                    enforcer.apply, signing_pub=pki.signing_pub, backoff_initial=0.1,
                    backoff_max=0.5)
    try:
        uplink.start()
        assert uplink.wait_connected(10)
        uplink.submit(TelemetryBatch(seq=0, time=time.time(), incidents=[incident(ATTACKER, time.time())]))
        deadline = time.monotonic() + 10
        while not enforcer.rules() and time.monotonic() < deadline:
            time.sleep(0.05)
        [signed] = enforcer.rules()
        assert signed.target == ATTACKER

        stop(hub)  # the edit, while the hub is down (as an intruder with the file would)
        db = sqlite3.connect(root / "central.db")
        db.execute("UPDATE rules SET target = ? WHERE id = ?", (CALLBOX, signed.id))
        db.commit()
        db.close()
        hub, _ = start_hub(config)

        deadline = time.monotonic() + 15
        while signed.id not in uplink.kept and time.monotonic() < deadline:
            time.sleep(0.05)
        assert signed.id in uplink.kept and uplink.kept[signed.id].startswith("signature:")
        [held] = enforcer.rules()  # still the verified copy, not the call box
        assert (held.id, held.target, held.expires_at) == (signed.id, ATTACKER, signed.expires_at)
        assert uplink.counters["rules_kept_last_verified"] >= 1

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            [record] = json.loads(cli(config, "rules", "--json").stdout)
            if record["state"] == "refused":
                break
            time.sleep(0.1)
        assert record["state"] == "refused" and record["ack_error"].startswith("signature: does not match")
        assert "keeps enforcing its last verified copy" in record["ack_error"]
        assert "1 refused by their gateway" in cli(config, "status").stdout
    finally:
        uplink.stop()
        stop(hub)
