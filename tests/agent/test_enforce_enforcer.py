"""Enforcer semantics (snapshot/upsert/withdraw, TTL, shadow, state file) on dry-run backends.

The kernel and broker paths are in test_enforce_nft.py and test_enforce_dynsec.py; here the
backends record what they would do, which is exactly what these semantics are about.
"""
from __future__ import annotations

import json

import pytest

from atlas.link.rules import Rule
from atlas.agent.enforce.backend import Element
from atlas.agent.enforce.dryrun import DryRunBackend
from atlas.agent.enforce.enforcer import Enforcer
from atlas.agent.enforce.nft import NftBackend
from atlas.link.rules import Allowlist
from atlas.link.wire import RuleAck, RuleChange, SignedRule


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rule(rid: str, target: str = "10.77.0.66", ttl: float = 60, action: str = "quarantine", clock: Clock | None = None, **kw) -> Rule:
    now = clock.t if clock else 1_000_000.0
    return Rule(id=rid, action=action, target=target, expires_at=now + ttl, reason="test", decision_id="d-" + rid, **kw)


def change(kind: str, *rules: Rule, withdrawn: tuple[str, ...] = ()) -> RuleChange:
    return RuleChange(kind=kind, rules=[SignedRule(r, b"sig") for r in rules], withdrawn=list(withdrawn))


@pytest.fixture
def setup(tmp_path):
    clock = Clock()
    net = DryRunBackend(name="net", actions=("quarantine", "filter", "rate_limit"))
    mqtt = DryRunBackend(name="mqtt", actions=("revoke_mqtt",))
    enf = Enforcer([net, mqtt], tmp_path / "enforce.json", Allowlist.build(["10.77.0.1"], ["atlas-admin"]), clock=clock)
    return enf, net, mqtt, clock


def test_upsert_withdraw_and_acks(setup):
    enf, net, mqtt, clock = setup
    acks = enf.apply(change("upsert", rule("q1"), rule("r1", action="revoke_mqtt", target="att"), rule("bad", target="10.77.0.1")))
    assert acks[0] == RuleAck("q1", True, "") and acks[1] == RuleAck("r1", True, "")
    assert not acks[2].applied and acks[2].error.startswith("target:") and "allowlisted" in acks[2].error
    assert net.view == {Element("quarantine", "10.77.0.66"): clock.t + 60}
    assert set(mqtt.view) == {Element("revoke_mqtt", "att")}
    acks = enf.apply(change("withdraw", withdrawn=("q1", "never-existed")))
    assert acks == [RuleAck("q1", False, ""), RuleAck("never-existed", False, "")]
    assert net.view == {} and set(mqtt.view) == {Element("revoke_mqtt", "att")}


def test_same_rule_twice_changes_nothing(setup):
    enf, net, _, _ = setup
    enf.apply(change("upsert", rule("q1")))
    ops = list(net.log)
    assert [o.op for o in ops] == ["add"]
    assert enf.apply(change("upsert", rule("q1"))) == [RuleAck("q1", True, "")]
    enf.apply(change("snapshot", rule("q1")))
    assert list(net.log) == ops


def test_snapshot_replaces_the_desired_set(setup):
    enf, net, _, _ = setup
    enf.apply(change("upsert", rule("q1", "10.77.0.66"), rule("q2", "10.77.0.67")))
    enf.apply(change("snapshot", rule("q2", "10.77.0.67"), rule("q3", "10.77.0.68")))
    assert {e.target for e in net.view} == {"10.77.0.67", "10.77.0.68"}
    assert sorted(r.id for r in enf.rules()) == ["q2", "q3"]
    enf.apply(change("snapshot"))  # an empty snapshot: the hub wants nothing enforced
    assert net.view == {} and enf.rules() == []


def test_upsert_refreshes_ttl_and_a_bad_upsert_keeps_the_old_rule(setup):
    enf, net, _, clock = setup
    enf.apply(change("upsert", rule("q1", ttl=60)))
    enf.apply(change("upsert", rule("q1", ttl=600)))
    assert net.view[Element("quarantine", "10.77.0.66")] == clock.t + 600
    assert [o.op for o in net.log] == ["add", "refresh"]
    acks = enf.apply(change("upsert", rule("q1", target="not-an-ip")))
    assert not acks[0].applied and acks[0].error.startswith("target:")
    assert [r.target for r in enf.rules()] == ["10.77.0.66"]


def test_two_rules_on_one_address_share_an_element(setup):
    enf, net, _, clock = setup
    enf.apply(change("upsert", rule("q1", ttl=60), rule("q2", ttl=120)))
    element = Element("quarantine", "10.77.0.66")
    assert net.view == {element: clock.t + 120}
    enf.apply(change("withdraw", withdrawn=("q2",)))
    assert net.view == {element: clock.t + 60}  # q1 still holds it, for its own TTL
    enf.apply(change("withdraw", withdrawn=("q1",)))
    assert net.view == {}


def test_expire_removes_rules_whose_ttl_ran_out(setup):
    enf, net, mqtt, clock = setup
    enf.apply(change("upsert", rule("short", "10.77.0.66", ttl=5), rule("long", "10.77.0.67", ttl=50), rule("rv", action="revoke_mqtt", target="att", ttl=5)))
    clock.t += 4.9
    assert enf.expire() == []
    clock.t += 0.2
    assert sorted(enf.expire()) == ["rv", "short"]
    assert {e.target for e in net.view} == {"10.77.0.67"} and mqtt.view == {}
    assert [r.id for r in enf.rules()] == ["long"]


def test_shadow_rules_are_recorded_not_enforced(setup):
    enf, net, _, _ = setup
    acks = enf.apply(change("upsert", rule("s1", shadow=True)))
    assert acks == [RuleAck("s1", True, "")]  # the wire: true when recorded, for a shadow rule
    assert net.view == {} and set(enf.shadow.view) == {Element("quarantine", "10.77.0.66")}
    (entry,) = enf.status()["rules"]
    assert entry["state"] == "shadow" and entry["backend"] == "shadow"


def test_action_without_backend_and_unknown_kind_are_refused(tmp_path):
    enf = Enforcer([DryRunBackend(actions=("quarantine",))], tmp_path / "s.json", clock=Clock())
    (ack,) = enf.apply(change("upsert", rule("r1", action="revoke_mqtt", target="att")))
    assert not ack.applied and ack.error.startswith("action:") and "not available" in ack.error
    (ack,) = enf.apply(change("upsert", rule("r2", action="revoke_mqtt", target="att", shadow=True)))
    assert ack.applied  # a shadow rule needs no backend
    acks = enf.apply(change("replace", rule("q1")))
    assert not acks[0].applied and acks[0].error.startswith("kind:")


def test_state_survives_a_restart_and_expired_rules_are_dropped(setup, tmp_path):
    enf, _, _, clock = setup
    enf.apply(change("upsert", rule("q1", ttl=60), rule("q2", "10.77.0.67", ttl=5), rule("r1", action="revoke_mqtt", target="att")))
    doc = json.loads((tmp_path / "enforce.json").read_text())
    assert sorted(r["id"] for r in doc["rules"]) == ["q1", "q2", "r1"]
    assert [p.name for p in tmp_path.iterdir()] == ["enforce.json"]  # no temp file left behind
    clock.t += 10  # "down" for 10 s: q2 expired meanwhile
    net2 = DryRunBackend(name="net", actions=("quarantine", "filter", "rate_limit"))
    mqtt2 = DryRunBackend(name="mqtt", actions=("revoke_mqtt",))
    enf2 = Enforcer([net2, mqtt2], tmp_path / "enforce.json", Allowlist.build(["10.77.0.1"], ["atlas-admin"]), clock=clock)
    report = enf2.reconcile()
    assert list(report.dropped) == ["q2"] and "expired" in report.dropped["q2"]
    assert sorted(report.missing) == [Element("quarantine", "10.77.0.66"), Element("revoke_mqtt", "att")]
    assert net2.view == {Element("quarantine", "10.77.0.66"): clock.t + 50}


def test_a_rule_that_became_allowlisted_is_dropped_at_start(setup, tmp_path):
    enf, _, _, clock = setup
    enf.apply(change("upsert", rule("q1", "10.77.0.66")))
    enf2 = Enforcer([DryRunBackend()], tmp_path / "enforce.json", Allowlist.build(["10.77.0.0/24"]), clock=clock)
    report = enf2.reconcile()
    assert "allowlisted" in report.dropped["q1"] and enf2.rules() == []


def test_corrupt_state_file_is_moved_aside(tmp_path):
    path = tmp_path / "enforce.json"
    path.write_text('{"version": 1, "rules": [{"id": ')
    enf = Enforcer([DryRunBackend()], path, clock=Clock())
    report = enf.reconcile()
    assert str(path) in report.state_error and "cannot read" in report.state_error
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name]
    assert enf.apply(change("upsert", rule("q1")))[0].applied


def test_a_state_path_that_is_a_folder_is_reported_not_moved(tmp_path):
    folder = tmp_path / "state"
    (folder / "kept").mkdir(parents=True)
    report = Enforcer([DryRunBackend()], folder, clock=Clock()).reconcile()
    assert str(folder) in report.state_error
    assert (folder / "kept").is_dir() and not [p for p in tmp_path.iterdir() if "corrupt" in p.name]


def test_backend_failure_is_acked_and_kept_for_retry(tmp_path):
    broken = NftBackend(nft="/nonexistent/nft")
    enf = Enforcer([broken], tmp_path / "s.json", clock=Clock())
    report = enf.reconcile()
    assert "cannot run '/nonexistent/nft'" in report.backend_errors["nftables"]
    (ack,) = enf.apply(change("upsert", rule("q1")))
    assert not ack.applied and "not reconciled" in ack.error and "retried" in ack.error
    assert [r.id for r in enf.rules()] == ["q1"]  # kept, so it is enforced once nft works
    (entry,) = enf.status()["rules"]
    assert entry["state"] == "failed"
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["applied"]["nftables"] == [Element("quarantine", "10.77.0.66").to_dict()]


def test_status_reports_remaining_ttl(setup):
    enf, _, _, clock = setup
    enf.apply(change("upsert", rule("q1", ttl=30), rule("f1", "10.77.0.67", action="filter", ttl=90, params={"port": 1883, "proto": "tcp"})))
    clock.t += 10
    status = enf.status()
    assert [(r["id"], r["remaining_s"], r["state"]) for r in status["rules"]] == [("q1", 20.0, "recorded"), ("f1", 80.0, "recorded")]
    assert status["backends"]["net"]["elements"] == 2
    json.dumps(status)  # JSON-ready for the CLI


def test_an_unwritable_state_file_does_not_stop_enforcement(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    net = DryRunBackend()
    enf = Enforcer([net], blocker / "enforce.json", clock=Clock())
    assert enf.apply(change("upsert", rule("q1")))[0].applied
    assert set(net.view) == {Element("quarantine", "10.77.0.66")}
    assert "cannot write enforcement state" in enf.status()["state_error"] and str(blocker) in enf.status()["state_error"]


def test_status_has_a_human_form(setup):
    from atlas.agent.enforce.status import format_status

    enf, _, _, _ = setup
    assert "no active rules" in format_status(enf.status())
    enf.apply(change("upsert", rule("q1", ttl=30), rule("rl", "10.77.0.70", action="rate_limit", params={"pps": 20})))
    text = format_status(enf.status())
    assert "q1" in text and "10.77.0.66" in text and "30.0" in text and "pps=20" in text and "recorded" in text
