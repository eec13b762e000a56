"""The closed loop, all real: benign devices publish to mosquitto in the gateway's namespace,
`atlas-agent run` sniffs the gateway's bridge, `atlas-central serve` decides over mutual TLS,
the agent enforces with nftables. An attacker brute-forces the broker: its next connection
fails while the benign devices keep publishing without a gap; after the rule's TTL the
attacker can connect again. An attacker that presents a real device's MQTT id (an ordinary
meter's, a life-safety call box's) is cut off by its address, and the device it names loses
nothing."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402
from lab import wait_for  # noqa: E402

from atlas.central.pki import PkiDir, init_pki, issue_gateway  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GATEWAY = "lab-gw"
TTL = 8  # seconds: the playbook's quarantine for hosts outside the inventory
HUB_PORT = 7443  # inside the gateway's namespace, on its own loopback
COUNT = 80  # messages per benign device
# the devices behind the gateway, by MQTT id (= username), with their profiles
PROFILES = {"meter1": "smart_meter", "meter2": "smart_meter", "callbox1": "emergency_call_box"}


def cli(tool: str, *args: str, netns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    argv = lab.netns_cmd(netns, [sys.executable, "-m", f"atlas.{tool}.cli", *args])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def quarantined(the_lab: lab.Lab) -> set[str]:
    r = the_lab.run(the_lab.gw, ["nft", "-j", "list", "set", "inet", "atlas", "quarantine4"])
    if r.returncode != 0:
        return set()
    elems = json.loads(r.stdout)["nftables"][1]["set"].get("elem", [])
    return {e["elem"]["val"] if isinstance(e, dict) else e for e in elems}


@pytest.fixture
def city(tmp_path):
    for reason in (lab.netns_unavailable_reason(), lab.mosquitto_unavailable_reason()):
        if reason:
            pytest.skip(reason)
    with lab.Lab(subnet="10.81.0.0/24", subnet6="fd81::/64") as the_lab:
        devices = [the_lab.add_device(n) for n in PROFILES]
        attacker = the_lab.add_device("attacker")
        broker = the_lab.start_mosquitto(bind="0.0.0.0", port=1883)
        for d in devices:
            broker.add_client(d.name, "pw-" + d.name)
        broker.add_client("collector", "pw-collector")
        pki = init_pki(tmp_path / "pki")
        tls = issue_gateway(pki.root, GATEWAY)
        (tmp_path / "inventory.toml").write_text(
            "".join(f'[[device]]\naddress = "{d.ip}"\nclient_id = "{d.name}"\nprofile = "{PROFILES[d.name]}"\ngateway = "{GATEWAY}"\n\n' for d in devices)
        )
        (tmp_path / "central.toml").write_text(
            f"""
[hub]
listen = "127.0.0.1:{HUB_PORT}"
database = "central.db"
pki = "pki"
inventory = "inventory.toml"
operator_poll = 0.1
[decide.playbook.default]
outside = {{ action = "quarantine", ttl = {TTL} }}
"""
        )
        admin_pw = tmp_path / "dynsec-admin.pw"  # the agent revokes MQTT accounts through the broker
        admin_pw.write_text(broker.admin_password)
        lab.write_agent_toml(tmp_path / "agent.toml", gateway=GATEWAY, interface=the_lab.bridge, hub_port=HUB_PORT, tls=tls,
                             signing_pub=PkiDir(pki.root).signing_pub,
                             extra=f'[enforce]\nnftables = "on"\nallowlist = ["{the_lab.gw_ip}"]\nallow_usernames = ["collector"]\n'
                                   f'mqtt_host = "127.0.0.1"\nmqtt_username = "{broker.admin}"\nmqtt_password_file = "{admin_pw}"\n')
        hub = the_lab.popen(the_lab.gw, [sys.executable, "-m", "atlas.central.cli", "serve", "--config", str(tmp_path / "central.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        agent = the_lab.popen(the_lab.gw, [sys.executable, "-m", "atlas.agent.cli", "run", "--config", str(tmp_path / "agent.toml")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def connected():
            r = cli("agent", "status", "--json", "--socket", str(tmp_path / "agent.sock"))
            if hub.poll() is not None or agent.poll() is not None:
                raise AssertionError(f"hub or agent exited:\n{hub.stdout.read() if hub.poll() is not None else ''}\n{agent.stdout.read() if agent.poll() is not None else ''}")
            return r.returncode == 0 and json.loads(r.stdout)["hub"]["state"] == "connected"

        assert wait_for(connected, 60), "the agent did not connect to the hub"
        collector = lab.Collector(the_lab.gw, "127.0.0.1", 1883, "collector", "pw-collector", topic="lab/#")
        the_lab.broker = broker
        yield the_lab, devices, attacker, collector, tmp_path
        collector.close()


def test_attack_is_cut_off_benign_devices_keep_publishing_rule_expires(city):
    the_lab, devices, attacker, collector, tmp = city
    gw = the_lab.gw_ip
    assert lab.tcp_connects(attacker.netns, gw, 1883)
    # meters reporting twice a second for 40 s: across the attack, the cut-off and the TTL
    publishers = [the_lab.start_publisher(d, gw, 1883, "pw-" + d.name, count=COUNT, interval=0.5) for d in devices]

    bf = the_lab.popen(attacker.netns, [sys.executable, "-c", lab.BRUTEFORCE, gw, "1883", "40"], stdout=subprocess.PIPE, text=True)
    cut = wait_for(lambda: attacker.ip in quarantined(the_lab), 45)
    assert cut, "no quarantine for the attacker"
    t_cut = time.monotonic()
    assert not lab.tcp_connects(attacker.netns, gw, 1883, timeout=1.0)  # the next connection fails
    bf.wait(timeout=60)

    agent_status = json.loads(cli("agent", "status", "--json", "--socket", str(tmp / "agent.sock")).stdout)
    kinds = {i["kind"] for i in agent_status["incidents"] if i["src_ip"] == attacker.ip}
    assert kinds, "the agent holds no incident for the attacker"
    rules = json.loads(cli("central", "rules", "--all", "--json", "--config", str(tmp / "central.toml"), netns=the_lab.gw).stdout)
    mine = [r for r in rules if r["rule"]["target"] == attacker.ip]
    assert mine and mine[0]["rule"]["action"] == "quarantine" and mine[0]["gateway"] == GATEWAY
    assert mine[0]["ack_applied"] is True  # the gateway acknowledged it

    # after the TTL the rule is gone and the attacker can connect again
    assert wait_for(lambda: attacker.ip not in quarantined(the_lab), TTL + 10)
    assert time.monotonic() - t_cut >= TTL - 3
    assert wait_for(lambda: lab.tcp_connects(attacker.netns, gw, 1883, timeout=1.0), 10)

    for p in publishers:
        p.wait(timeout=60)
    agent_status = json.loads(cli("agent", "status", "--json", "--socket", str(tmp / "agent.sock")).stdout)
    rules = json.loads(cli("central", "rules", "--all", "--json", "--config", str(tmp / "central.toml"), netns=the_lab.gw).stdout)
    assert {r["rule"]["target"] for r in rules} == {attacker.ip}, f"a benign device was targeted: {rules} {agent_status['incidents']}"
    received = collector.by_topic()
    for d in devices:
        seqs = [s for s, _ in received.get(f"lab/{d.name}", [])]
        assert sorted(seqs) == list(range(COUNT)), f"{d.name} lost messages"
        times = [t for _, t in sorted(received[f"lab/{d.name}"])]
        assert max(b - a for a, b in zip(times, times[1:])) < 1.0, f"{d.name} had a gap"


@pytest.mark.parametrize("victim", ["meter1", "callbox1"])  # an ordinary device, a life-safety one
def test_an_attacker_presenting_a_real_devices_id_is_cut_off_and_the_device_loses_nothing(city, victim):
    the_lab, devices, attacker, collector, tmp = city
    gw, count = the_lab.gw_ip, 40
    publishers = {d.name: the_lab.start_publisher(d, gw, 1883, "pw-" + d.name, count=count, interval=0.25) for d in devices}
    time.sleep(1.0)  # the devices are connected and publishing before the attack
    bf = the_lab.popen(attacker.netns, [sys.executable, "-c", lab.BRUTEFORCE, gw, "1883", "20", victim],
                       stdout=subprocess.PIPE, text=True)
    out, _ = bf.communicate(timeout=60)
    attack = json.loads(out)
    assert attack["last_answered"] is not None, "the broker never answered the attacker"
    cut_after = attack["last_answered"] - attack["start"]
    print(f"\n{victim}: the attacker's CONNECTs went unanswered {cut_after:.2f} s after its first "
          f"({attack['tried']} tried)")
    assert cut_after <= 2.0, f"the attacker was answered for {cut_after:.2f} s"
    assert attacker.ip in quarantined(the_lab)

    central = ("--config", str(tmp / "central.toml"))
    rules = json.loads(cli("central", "rules", "--all", "--json", *central, netns=the_lab.gw).stdout)
    assert {(r["rule"]["action"], r["rule"]["target"]) for r in rules} == {("quarantine", attacker.ip)}
    decisions = json.loads(cli("central", "decisions", "--json", *central, netns=the_lab.gw).stdout)
    assert all(d["target"] == attacker.ip for d in decisions), decisions
    assert any(f"{victim!r} of {PROFILES[victim]}" in d["reason"] and "spoofed" in d["reason"] for d in decisions)
    assert not the_lab.broker.client_disabled(victim)

    for name, p in publishers.items():
        out, _ = p.communicate(timeout=60)
        done = json.loads(out.strip().splitlines()[-1])
        assert done["event"] == "done" and done["disconnects"] == 0, f"{name}: {out}"
    received = collector.by_topic()
    for d in devices:
        assert sorted(s for s, _ in received.get(f"lab/{d.name}", [])) == list(range(count)), f"{d.name} lost messages"


def test_a_stolen_credential_is_revoked_with_the_attackers_address(city):
    """The attacker logs in once with meter2's real password, then guesses on: the gateway saw
    the broker accept that login, so the credential is compromised and is revoked too."""
    the_lab, devices, attacker, collector, tmp = city
    gw = the_lab.gw_ip
    bf = the_lab.popen(attacker.netns, [sys.executable, "-c", lab.BRUTEFORCE, gw, "1883", "20", "meter2", "pw-meter2"],
                       stdout=subprocess.PIPE, text=True)
    bf.communicate(timeout=60)
    assert wait_for(lambda: the_lab.broker.client_disabled("meter2"), 10), "the stolen credential was not revoked"
    assert attacker.ip in quarantined(the_lab)
    rules = json.loads(cli("central", "rules", "--all", "--json", "--config", str(tmp / "central.toml"), netns=the_lab.gw).stdout)
    assert {(r["rule"]["action"], r["rule"]["target"]) for r in rules} == {("quarantine", attacker.ip), ("revoke_mqtt", "meter2")}
    [revoke] = [r for r in rules if r["rule"]["action"] == "revoke_mqtt"]
    assert "credential compromised" in revoke["rule"]["reason"]
    assert not the_lab.broker.client_disabled("meter1") and not the_lab.broker.client_disabled("callbox1")
