"""`atlas-central` as the operator runs it: a subprocess against a real database, next to a
running hub (in this process) that carries out approve/revoke from the command queue."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atlas.link.incidents import Incident
from atlas.link.wire import GatewayInfo, Health, RuleAck, TelemetryBatch
from atlas.central.config import load_config
from atlas.central.daemon import build_hub
from atlas.central.pki import init_pki

CLI = Path(sys.executable).with_name("atlas-central")
ATTACKER = "10.0.0.66"
CALLBOX = "10.0.1.5"


def run(*args, timeout=30):
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    return init_pki(tmp_path_factory.mktemp("pki") / "pki").root


@pytest.fixture
def config_path(tmp_path, pki_dir):
    (tmp_path / "inventory.toml").write_text(f"""
[[device]]
address = "{CALLBOX}"
client_id = "ecb-0001"
profile = "emergency_call_box"
""")
    path = tmp_path / "central.toml"
    path.write_text(f"""
[hub]
listen = "127.0.0.1:0"
database = "central.db"
pki = "{pki_dir}"
inventory = "inventory.toml"
operator_poll = 0.1

[decide]
allowlist = ["10.0.0.1"]
""")
    return path


def incident(gateway, src, t, kind="mqtt_flood"):
    return Incident(id=f"{gateway}/{src}/{kind}/{int(t * 1000)}", kind=kind, src_ip=src,
                    dst_ip="10.0.0.2", device=src, gateway=gateway, time=t, last_seen=t,
                    score=0.93, model_version="m1", packets=120)


@pytest.fixture
def hub(config_path):
    """A hub on the config's database with one outside attacker and one life-safety device
    seen, not yet running its maintenance loop (tests start it when they need it)."""
    hub = build_hub(load_config(config_path))
    now = time.time()
    hub.hello("gw-north", GatewayInfo("gw-north", "0.1.0", board="pi5"))
    hub.telemetry("gw-north", TelemetryBatch(seq=3, time=now, health=Health(
        time=now, packets_per_s=1234.0, cpu_percent=4.5), incidents=[
        incident("gw-north", ATTACKER, now), incident("gw-north", CALLBOX, now)]))
    yield hub
    hub.close()
    hub.store.close()


def drain(feed, timeout=0.05):
    out = []
    while (change := feed.get(timeout)) is not None:
        out.append(change)
    return out


# ---- reports -------------------------------------------------------------------------------

def test_reports_as_text_and_json(config_path, hub):
    c = ("--config", config_path)
    gws = run("gateways", *c, "--json")
    assert gws.returncode == 0
    [gw] = json.loads(gws.stdout)
    assert (gw["id"], gw["board"], gw["last_seq"], gw["connections"]) == ("gw-north", "pi5", 3, 1)
    text = run("gateways", *c).stdout
    assert "gw-north" in text and "up" in text and "1234" in text

    incidents = json.loads(run("incidents", *c, "--json").stdout)
    assert {i["src_ip"] for i in incidents} == {ATTACKER, CALLBOX}
    assert all(i["gateways"] == ["gw-north"] for i in incidents)
    assert ATTACKER in run("incidents", *c, "--open").stdout

    rules = json.loads(run("rules", *c, "--json").stdout)
    assert sorted((r["rule"]["action"], r["rule"]["target"]) for r in rules) == \
        [("quarantine", ATTACKER), ("rate_limit", CALLBOX)]
    assert all(len(bytes.fromhex(r["signature"])) == 64 for r in rules)

    pending = json.loads(run("decisions", *c, "--pending", "--json").stdout)
    assert [(d["action"], d["target"]) for d in pending] == [("quarantine", CALLBOX)]
    assert "pending_approval" in run("decisions", *c).stdout

    status = json.loads(run("status", *c, "--json").stdout)
    assert status["counts"]["rules_active"] == 2 and status["running"] is False
    assert run("status", *c).stdout.startswith("hub: has never run")
    # --db works without a config
    assert json.loads(run("rules", "--db", config_path.parent / "central.db", "--json").stdout)


def test_rules_a_gateway_refused_show_as_refused_with_its_error(config_path, hub):
    c = ("--config", config_path)
    [quarantine] = [r for r in hub.store.list_rules() if r.rule.target == ATTACKER]
    hub.rule_ack("gw-north", RuleAck(quarantine.rule.id, applied=False,
                                     error="signature: does not match the rule"))
    rules = {r["rule"]["id"]: r for r in json.loads(run("rules", *c, "--json").stdout)}
    refused = rules[quarantine.rule.id]
    assert (refused["state"], refused["ack_applied"], refused["ack_error"]) == \
        ("refused", False, "signature: does not match the rule")
    text = run("rules", *c).stdout
    [line] = [ln for ln in text.splitlines() if quarantine.rule.id in ln]
    assert "refused" in line and "active" not in line
    assert "REFUSED: signature: does not match the rule" in line
    status = run("status", *c).stdout
    assert "rules: 1 in force, 1 refused by their gateway, 0 shadow" in status


def test_empty_database_reports(config_path):
    build_hub(load_config(config_path)).store.close()
    assert run("gateways", "--config", config_path).stdout.strip() == \
        "no gateway has connected yet"
    assert json.loads(run("rules", "--config", config_path, "--json").stdout) == []


# ---- operator commands reach the running hub ------------------------------------------------

def test_approve_and_revoke_take_effect_in_the_running_hub_within_a_second(config_path, hub):
    hub.start()
    feed = hub.watch("gw-north")
    drain(feed)
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    approved = run("approve", pending.id, "--config", config_path, "--operator", "alice")
    got = time.time()
    assert approved.returncode == 0, approved.stderr
    assert f"approved {pending.id}: quarantine {CALLBOX}" in approved.stdout
    [change] = drain(feed)
    assert change.kind == "upsert" and change.rules[0].rule.action == "quarantine"
    command = hub.store.get_command(1)
    assert command.operator == "alice" and command.finished_at - command.created_at < 1.0
    assert got - command.created_at < 2.0  # including the CLI's own polling
    assert hub.store.get_decision(pending.id).approved_by == "alice"

    quarantine = change.rules[0].rule.id
    revoked = run("revoke", quarantine, "--config", config_path, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "done"
    [change] = drain(feed)
    assert (change.kind, change.withdrawn) == ("withdraw", [quarantine])
    command = hub.store.get_command(2)
    assert command.finished_at - command.created_at < 1.0


def test_operator_mistakes_are_clear_and_exit_2(config_path, hub):
    hub.start()
    c = ("--config", config_path)
    for args, message in ((("approve", "d-0000000000"), "no decision 'd-0000000000'"),
                          (("revoke", "r-0000000000"), "no rule 'r-0000000000'")):
        proc = run(*args, *c)
        assert proc.returncode == 2 and message in proc.stderr
    [rule] = [r for r in hub.store.list_rules() if r.rule.target == ATTACKER]
    assert run("revoke", rule.rule.id, *c).returncode == 0
    again = run("revoke", rule.rule.id, *c)
    assert again.returncode == 2 and "already revoked" in again.stderr
    [active] = hub.store.list_decisions(states=("active",))
    proc = run("approve", active.id, *c)
    assert proc.returncode == 2 and "is active, not waiting for approval" in proc.stderr


def test_a_command_given_while_the_hub_is_down_runs_when_it_starts(config_path, hub):
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    proc = run("approve", pending.id, "--config", config_path)
    assert proc.returncode == 3
    assert "no hub is running" in proc.stderr and "queued" in proc.stderr
    assert hub.store.get_decision(pending.id).state == "pending_approval"
    hub.tick()  # what the hub's loop does at start
    assert hub.store.get_decision(pending.id).state == "active"


# ---- audit -----------------------------------------------------------------------------------

def test_audit_verify_and_head(config_path, hub):
    c = ("--config", config_path)
    ok = run("audit", "verify", *c)
    assert ok.returncode == 0 and "audit chain intact" in ok.stdout
    head = run("audit", "head", *c).stdout.strip()
    seq, digest = head.split(":")
    assert json.loads(run("audit", "verify", *c, "--json").stdout) == {
        "ok": True, "first_bad_seq": None, "rows": int(seq), "head": digest}
    assert run("audit", "verify", *c, "--anchor", head).returncode == 0
    hub.close()
    hub.store.close()

    db = sqlite3.connect(config_path.parent / "central.db")
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET payload = replace(payload, ?, '10.0.0.99') WHERE seq = 2",
               (ATTACKER,))
    db.commit()
    db.close()
    broken = run("audit", "verify", *c)
    assert broken.returncode == 1 and "audit chain BROKEN at seq 2" in broken.stderr
    assert json.loads(run("audit", "verify", *c, "--json").stdout)["first_bad_seq"] == 2
    bad_anchor = run("audit", "verify", *c, "--anchor", "12:nothex")
    assert bad_anchor.returncode == 2 and "SEQ:HASH" in bad_anchor.stderr


# ---- configuration errors --------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ('[hub]\ndatabase = "c.db"\nlisten = "127.0.0.1:7443"\nlisen = 1\n',
     "hub.lisen: unknown key (did you mean 'listen'?)"),
    ('[hub]\ndatabase = "c.db"\nlisten = "nohost"\n', "hub.listen: expected HOST:PORT"),
    ('[hub]\ndatabase = "c.db"\noperator_poll = 5\n', "hub.operator_poll: must be > 0 and <= 1"),
    ('[hub]\ndatabase = 3\n', "hub.database: expected a string, got int"),
    ('[hub]\nlisten = "127.0.0.1:1"\n', "hub.database: missing"),
    ('[hub]\ndatabase = "c.db"\n[incidents]\nmerge_window = true\n',
     "incidents.merge_window: expected a number, got a boolean"),
    ('[hub]\ndatabase = "c.db"\n[decide]\nallowlist = ["10.0.0.0/33"]\n',
     "decide.allowlist[0]: bad network"),
    ('[hub]\ndatabase = "c.db"\n[decide.playbook.default]\noutside = { action = "nuke" }\n',
     "decide.playbook.default.outside.action: expected one of"),
    ('[hub]\ndatabase = "c.db"\n[colour]\n', "colour: unknown key"),
    ('[hub\n', "cannot parse as TOML"),
])
def test_bad_config_is_named_and_exits_2(tmp_path, text, message):
    path = tmp_path / "central.toml"
    path.write_text(text)
    # every command loads the config the same way; `serve` and a report are checked once below
    commands = [("check",)] + ([("serve",), ("rules",)] if "lisen" in text else [])
    for args in commands:
        proc = run(*args, "--config", path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and str(path) in proc.stderr


def test_missing_files_are_named(tmp_path, config_path, pki_dir):
    proc = run("check", "--config", tmp_path / "nope.toml")
    assert proc.returncode == 2 and "no such configuration file" in proc.stderr
    text = config_path.read_text().replace(f'pki = "{pki_dir}"', 'pki = "missing-pki"')
    config_path.write_text(text)
    proc = run("serve", "--config", config_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert "missing-pki" in proc.stderr
    proc = run("rules", "--config", config_path)  # reading needs only the database
    assert proc.returncode == 2 and "no such database" in proc.stderr


def test_check_prints_the_effective_playbook(config_path):
    proc = run("check", "--config", config_path)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "1 inventory devices" in proc.stdout
    assert "life_safety  rate_limit pps=20 for 5m; quarantine after approval" in proc.stdout
    report = json.loads(run("check", "--config", config_path, "--json").stdout)
    assert report["playbook"]["mqtt_bruteforce"]["ordinary"]["action"] == "revoke_mqtt"
    proc = run("serve", "--config", config_path, "--check")
    assert proc.returncode == 0 and "OK" in proc.stdout


def test_usage_errors(tmp_path):
    assert run().returncode == 2
    assert run("approve").returncode == 2
    assert run("incidents", "--limit", "0", "--db", tmp_path / "x.db").returncode == 2
    proc = run("serve", "--db", tmp_path / "x.db")
    assert proc.returncode == 2 and "serve needs --config" in proc.stderr
    assert "atlas-central" in run("--version").stdout


def test_pki_commands_are_wired(tmp_path):
    proc = run("pki", "init", "--dir", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "rule-signing.key").is_file()
    proc = run("pki", "issue", "gw-1", "--dir", tmp_path / "p")
    assert proc.returncode == 0 and (tmp_path / "p" / "gateways" / "gw-1.crt").is_file()
