"""The hub's core against a real SQLite file: registry, idempotent telemetry, incident merge,
decisions and rules through watch(), approval, revocation, TTL expiry, shadow mode, restart."""
from __future__ import annotations

import math
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.link.incidents import LOGINS_ACCEPTED, Incident
from atlas.link.wire import DeviceSummary, GatewayInfo, Health, RuleAck, TelemetryBatch
from atlas.link.signing import RuleSigner, RuleVerifier
from atlas.central.decide.inventory import DeviceEntry, Inventory
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub, OperatorError
from atlas.central.store import open_store

T0 = 1_800_000_000.0
ATTACKER = "10.0.0.66"
CALLBOX = "10.0.1.5"


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def inventory():
    return Inventory([
        DeviceEntry(address=CALLBOX, client_id="ecb-0001", gateway="", profile="emergency_call_box",
                    criticality="life_safety", acceptable=("rate_limit", "filter"),
                    needs_fallback=("quarantine", "revoke_mqtt"), fallback="cellular line"),
        DeviceEntry(address="10.0.2.7", client_id="meter-7", gateway="", profile="smart_meter",
                    criticality="ordinary"),
    ])


@pytest.fixture
def make_hub(tmp_path, key, clock, inventory):
    hubs = []

    def make(playbook=None, allowlist=(), merge_window=300.0, real_clock=False, poll=0.05):
        store = open_store(tmp_path / "hub.db")
        hub = Hub(store, playbook or Playbook(), RuleSigner(key), inventory=inventory,
                  allowlist=allowlist, merge_window=merge_window, operator_poll=poll,
                  clock=time.time if real_clock else clock)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()
        hub.store.close()


def incident(gateway="gw1", src=ATTACKER, kind="mqtt_flood", t=T0, last=None, n=0,
             state="open", device=None, packets=100, score=0.9) -> Incident:
    return Incident(id=f"{gateway}/{src}/{kind}/{int(t * 1000)}{n or ''}", kind=kind, src_ip=src,
                    dst_ip="10.0.0.2", device=device or src, gateway=gateway, time=t,
                    last_seen=t if last is None else last, score=score, model_version="m1",
                    packets=packets, state=state)


def batch(seq, *incidents, devices=(), health=None):
    return TelemetryBatch(seq=seq, time=T0, incidents=list(incidents), devices=list(devices),
                          health=health)


def drain(feed, timeout=0.05):
    out = []
    while (change := feed.get(timeout)) is not None:
        out.append(change)
    return out


def audit_kinds(hub):
    return [r.kind for r in hub.store.audit_rows()]


# ---- registry and telemetry ----------------------------------------------------------------

def test_hello_and_health_fill_the_registry(make_hub, clock):
    hub = make_hub()
    hub.hello("gw1", GatewayInfo("gw1", "0.1.0", {"anomaly": "a7"}, ["nftables"], "pi5"))
    clock.now += 5
    hub.telemetry("gw1", batch(1, health=Health(time=T0, packets_per_s=1500, cpu_percent=3.2)))
    gw = hub.store.get_gateway("gw1")
    assert (gw.software_version, gw.board, gw.model_versions, gw.capabilities) == \
        ("0.1.0", "pi5", {"anomaly": "a7"}, ["nftables"])
    assert (gw.first_seen, gw.last_seen, gw.connections, gw.last_seq) == (T0, T0 + 5, 1, 1)
    assert gw.health["packets_per_s"] == 1500
    hub.disconnected("gw1")
    assert hub.store.get_gateway("gw1").connections == 0


def test_bad_gateway_ids_are_refused(make_hub):
    hub = make_hub()
    for bad in ("", "../etc", "gw 1", "x" * 80):
        with pytest.raises(ValueError, match="gateway id"):
            hub.telemetry(bad, batch(1))


def test_telemetry_is_idempotent_by_seq(make_hub):
    hub = make_hub()
    dev = DeviceSummary("meter-7", "10.0.2.7", T0, T0 + 10, 50, 5000, [0.1, 0.2])
    first = batch(1, incident(), devices=[dev])
    assert hub.telemetry("gw1", first) == 1
    before = (hub.store.counts(), hub.store.list_devices(), hub.store.audit_head())
    assert hub.telemetry("gw1", first) == 1  # re-sent after a lost ack
    assert hub.telemetry("gw1", batch(0, incident(src="10.9.9.9"))) == 1  # older: ignored
    assert (hub.store.counts(), hub.store.list_devices(), hub.store.audit_head()) == before
    assert hub.counters["duplicate_batches"] == 2
    # a gap (the agent's spool dropped its oldest) is accepted
    assert hub.telemetry("gw1", batch(7)) == 7
    assert hub.telemetry("gw1", batch(5)) == 7
    assert hub.telemetry("gw2", batch(1)) == 1  # seqs are per gateway


def test_a_gateway_cannot_report_an_incident_as_another(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident(gateway="gw9")))
    [inc] = hub.store.list_incidents()
    assert inc.gateways == ["gw1"]


def test_malformed_values_do_not_break_ingest(make_hub):
    hub = make_hub()
    odd = incident(score=math.nan)
    odd.evidence = {"raw": b"\x00\x01", "nested": {"x": float("inf")}}
    odd.last_seen = math.inf
    assert hub.telemetry("gw1", batch(1, odd)) == 1
    [inc] = hub.store.list_incidents()
    assert inc.score == 0.0 and inc.last_seen == T0  # non-finite numbers are not kept
    assert hub.audit.verify() == (True, None)


# ---- incidents and decisions ---------------------------------------------------------------

def test_outside_attacker_is_quarantined_and_the_rule_flows_to_the_gateway(make_hub, key):
    hub = make_hub()
    feed = hub.watch("gw1")
    assert feed.get(0.1).kind == "snapshot"
    hub.telemetry("gw1", batch(1, incident()))
    [change] = drain(feed)
    assert change.kind == "upsert"
    [signed] = change.rules
    assert (signed.rule.action, signed.rule.target, signed.rule.expires_at) == \
        ("quarantine", ATTACKER, T0 + 900)
    RuleVerifier(key.public_key()).verify_rule(signed)  # signed by the hub's key
    assert [s.rule.id for s in hub.desired_rules("gw1")] == [signed.rule.id]
    assert hub.desired_rules("gw2") == []
    [decision] = hub.store.list_decisions()
    assert (decision.state, decision.gateways) == ("active", ["gw1"])
    assert audit_kinds(hub) == ["incident", "decision", "rule"]


def test_updates_of_the_same_incident_do_not_decide_again(make_hub, clock):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident()))
    for seq in range(2, 6):
        clock.now += 1
        hub.telemetry("gw1", batch(seq, incident(last=T0 + seq, packets=100 * seq)))
    assert len(hub.store.list_decisions()) == 1
    assert len(hub.store.list_rules()) == 1
    [inc] = hub.store.list_incidents()
    assert (inc.packets, inc.last_seen) == (500, T0 + 5)  # counted once, not summed per update


def test_incidents_merge_across_gateways_and_rules_follow_the_attacker(make_hub, clock):
    hub = make_hub()
    feeds = {gw: hub.watch(gw) for gw in ("gw1", "gw2", "gw3")}
    for f in feeds.values():
        drain(f)
    hub.telemetry("gw1", batch(1, incident("gw1", packets=10)))
    clock.now += 30
    hub.telemetry("gw2", batch(1, incident("gw2", t=T0 + 30, packets=5)))
    [inc] = hub.store.list_incidents()
    assert inc.gateways == ["gw1", "gw2"] and inc.packets == 15
    assert [c.rules[0].rule.target for c in drain(feeds["gw2"])] == [ATTACKER]
    [decision] = hub.store.list_decisions()
    assert decision.gateways == ["gw1", "gw2"]
    rules = {r.gateway: r for r in hub.store.list_rules()}
    # one decision, one rule per gateway, all ending together
    assert set(rules) == {"gw1", "gw2"}
    assert rules["gw1"].rule.expires_at == rules["gw2"].rule.expires_at
    assert drain(feeds["gw3"]) == []
    # another kind from the same attacker is another incident
    hub.telemetry("gw3", batch(1, incident("gw3", kind="port_scan", t=T0 + 30)))
    assert len(hub.store.list_incidents()) == 2
    assert "incident_report" in audit_kinds(hub)


def test_reports_outside_the_merge_window_are_a_new_incident(make_hub, clock):
    hub = make_hub(merge_window=60)
    hub.telemetry("gw1", batch(1, incident("gw1", t=T0, last=T0 + 10)))
    hub.telemetry("gw2", batch(1, incident("gw2", t=T0 + 65)))  # within 60 s of last_seen
    hub.telemetry("gw3", batch(1, incident("gw3", t=T0 + 500)))
    incidents = hub.store.list_incidents()
    assert sorted(len(i.gateways) for i in incidents) == [1, 2]


def test_incident_closes_when_every_report_closes(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident("gw1")))
    hub.telemetry("gw2", batch(1, incident("gw2")))
    hub.telemetry("gw1", batch(2, incident("gw1", state="closed", last=T0 + 1)))
    assert hub.store.list_incidents()[0].state == "open"
    hub.telemetry("gw2", batch(2, incident("gw2", state="closed", last=T0 + 1)))
    assert hub.store.list_incidents()[0].state == "closed"
    assert audit_kinds(hub).count("incident_closed") == 1


def test_life_safety_device_is_throttled_and_quarantine_waits_for_approval(make_hub, clock, key):
    hub = make_hub()
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident(src=CALLBOX)))
    [change] = drain(feed)
    assert [(s.rule.action, s.rule.params) for s in change.rules] == [("rate_limit", {"pps": 20})]
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    assert (pending.action, pending.target) == ("quarantine", CALLBOX)
    assert "cellular line" in pending.reason
    # more evidence does not ask again
    hub.telemetry("gw1", batch(2, incident(src=CALLBOX, last=T0 + 5)))
    assert len(hub.store.list_decisions(states=("pending_approval",))) == 1
    clock.now += 20
    approved = hub.approve(pending.id, "alice")
    assert (approved.state, approved.approved_by, approved.expires_at) == \
        ("active", "alice", clock.now + pending.ttl)
    [change] = drain(feed)
    [signed] = change.rules
    assert (change.kind, signed.rule.action, signed.rule.decision_id) == \
        ("upsert", "quarantine", pending.id)
    RuleVerifier(key.public_key()).verify_rule(signed)
    assert "approval" in audit_kinds(hub)
    with pytest.raises(OperatorError, match="is active, not waiting for approval"):
        hub.approve(pending.id, "bob")
    with pytest.raises(OperatorError, match="no decision"):
        hub.approve("d-nope", "bob")


def test_reject_closes_a_pending_decision(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident(src=CALLBOX)))
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    assert hub.reject(pending.id, "carol").state == "rejected"
    # new evidence does not ask the same question again
    hub.telemetry("gw1", batch(2, incident(src=CALLBOX, last=T0 + 9)))
    assert hub.store.list_decisions(states=("pending_approval",)) == []


def test_allowlisted_attacker_is_recorded_never_targeted(make_hub):
    hub = make_hub(allowlist=["10.0.0.0/24"])
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident()))
    assert drain(feed) == [] and hub.desired_rules("gw1") == []
    [decision] = hub.store.list_decisions()
    assert decision.state == "suppressed" and "allowlisted" in decision.reason


def test_revoke_withdraws_at_once_and_the_hub_does_not_fight_the_operator(make_hub, clock):
    hub = make_hub()
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident()))
    [rule_id] = [c.rules[0].rule.id for c in drain(feed)]
    record = hub.revoke(rule_id, "alice")
    assert record.state == "revoked"
    [change] = drain(feed)
    assert (change.kind, change.withdrawn) == ("withdraw", [rule_id])
    assert hub.desired_rules("gw1") == []
    assert hub.store.list_decisions()[0].state == "revoked"
    clock.now += 10
    hub.telemetry("gw1", batch(2, incident(last=T0 + 10)))  # the attack goes on
    assert drain(feed) == [] and len(hub.store.list_rules()) == 1
    with pytest.raises(OperatorError, match="already revoked"):
        hub.revoke(rule_id, "alice")
    with pytest.raises(OperatorError, match="no rule"):
        hub.revoke("r-nope", "alice")
    assert audit_kinds(hub)[-1] == "revocation"


def test_rule_past_its_ttl_is_withdrawn_and_a_renewed_attack_is_decided_again(make_hub, clock):
    hub = make_hub(Playbook({"default": {"outside": {"action": "quarantine", "ttl": 60}}}))
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident()))
    [first] = [c.rules[0].rule for c in drain(feed)]
    clock.now += 59
    assert hub.expire() == 0 and len(hub.desired_rules("gw1")) == 1
    clock.now += 2
    # even before the sweep runs, an expired rule is not desired any more
    assert hub.desired_rules("gw1") == []
    assert hub.expire() == 1
    [change] = drain(feed)
    assert (change.kind, change.withdrawn) == ("withdraw", [first.id])
    assert hub.store.get_rule(first.id).state == "expired"
    assert hub.store.list_decisions()[0].state == "expired"
    assert "expiry" in audit_kinds(hub)
    # a stale re-report (no new evidence) changes nothing; new evidence gets a new rule
    hub.telemetry("gw1", batch(2, incident()))
    assert drain(feed) == []
    hub.telemetry("gw1", batch(3, incident(last=T0 + 61)))
    [change] = drain(feed)
    assert change.kind == "upsert" and change.rules[0].rule.id != first.id


def test_shadow_mode_records_and_reports_but_dispatches_nothing(make_hub, clock):
    hub = make_hub(Playbook(shadow=True))
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident()))
    assert drain(feed) == [] and hub.desired_rules("gw1") == []
    [decision] = hub.store.list_decisions()
    [rule] = hub.store.list_rules(states=("shadow",))
    assert (decision.state, decision.shadow, rule.rule.shadow) == ("shadow", True, True)
    assert hub.store.counts()["rules_shadow"] == 1
    clock.now += 901
    assert hub.expire() == 1 and drain(feed) == []  # shadow rules expire silently too
    assert hub.store.get_rule(rule.rule.id).state == "expired"


def test_rule_acks_are_kept_for_the_owning_gateway_only(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident()))
    [rule] = hub.store.list_rules()
    hub.rule_ack("gw2", RuleAck(rule.rule.id, applied=True))  # not gw2's rule
    assert hub.store.get_rule(rule.rule.id).ack_applied is None
    hub.rule_ack("gw1", RuleAck(rule.rule.id, applied=False, error="nft: busy"))
    got = hub.store.get_rule(rule.rule.id)
    assert (got.ack_applied, got.ack_error) == (False, "nft: busy")
    hub.rule_ack("gw1", RuleAck("r-unknown", applied=True))  # ignored, no crash
    assert audit_kinds(hub)[-1] == "rule_ack"


def test_a_refused_rule_stays_desired_until_its_expiry_then_is_withdrawn(make_hub, clock):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident()))
    [rule] = hub.store.list_rules()
    feed = hub.watch("gw1")
    hub.rule_ack("gw1", RuleAck(rule.rule.id, applied=False, error="signature: does not match"))
    assert hub.store.get_rule(rule.rule.id).state == "refused"
    # re-sent on every reconnect: a gateway keeps its last verified copy only while listed
    [snapshot] = drain(feed)
    assert [s.rule.id for s in snapshot.rules] == [rule.rule.id]
    clock.now = rule.rule.expires_at
    assert hub.expire() == 1
    [withdraw] = drain(feed)
    assert withdraw.kind == "withdraw" and withdraw.withdrawn == [rule.rule.id]
    assert hub.store.get_rule(rule.rule.id).state == "expired"
    assert hub.store.list_decisions()[0].state == "expired"


def test_an_operator_can_revoke_a_refused_rule(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident()))
    [rule] = hub.store.list_rules()
    hub.rule_ack("gw1", RuleAck(rule.rule.id, applied=False, error="action: no backend"))
    feed = hub.watch("gw1")
    drain(feed)
    hub.revoke(rule.rule.id, "alice")
    [withdraw] = drain(feed)
    assert withdraw.withdrawn == [rule.rule.id]


def test_an_outside_host_presenting_a_devices_id_is_quarantined_the_device_untouched(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident(kind="mqtt_bruteforce", device="meter-7"),
                               incident(src="10.0.0.67", device="ecb-0001")))
    assert sorted((r.rule.action, r.rule.target) for r in hub.store.list_rules()) == \
        [("quarantine", ATTACKER), ("quarantine", "10.0.0.67")]
    reasons = " ".join(d.reason for d in hub.store.list_decisions())
    assert "'meter-7' of smart_meter at 10.0.2.7 (spoofed)" in reasons
    assert "'ecb-0001' of emergency_call_box at 10.0.1.5 (spoofed)" in reasons


def test_a_login_accepted_later_revokes_the_stolen_credential_too(make_hub, clock):
    hub = make_hub()
    guess = incident(kind="mqtt_bruteforce", device="meter-7")
    hub.telemetry("gw1", batch(1, guess))
    assert [(r.rule.action, r.rule.target) for r in hub.store.list_rules()] == \
        [("quarantine", ATTACKER)]
    # the same incident, updated: one guess got in (the agent's evidence, as on the wire)
    got_in = incident(kind="mqtt_bruteforce", device="meter-7", last=T0 + 5)
    got_in.evidence = {LOGINS_ACCEPTED: {"meter-7": 1}}
    hub.telemetry("gw1", batch(2, got_in))
    assert sorted((r.rule.action, r.rule.target) for r in hub.store.list_rules()) == \
        [("quarantine", ATTACKER), ("revoke_mqtt", "meter-7")]
    [revoke] = [d for d in hub.store.list_decisions() if d.action == "revoke_mqtt"]
    assert "credential compromised" in revoke.reason


def test_unknown_kinds_and_unblockable_targets_issue_no_rules(make_hub):
    hub = make_hub(allowlist=["10.0.0.1"])
    hub.telemetry("gw1", batch(1, incident(kind="ransomware"), incident(src="127.0.0.1"),
                               incident(src="10.0.0.1"), incident(src="ff02::1")))
    assert hub.store.list_rules() == []
    states = sorted((d.target, d.state) for d in hub.store.list_decisions())
    assert states == [("10.0.0.1", "suppressed"), (ATTACKER, "none"), ("127.0.0.1", "suppressed"),
                      ("ff02::1", "suppressed")]
    [none] = [d for d in hub.store.list_decisions() if d.state == "none"]
    assert "unknown incident kind 'ransomware'" in none.reason


def test_a_failing_policy_does_not_lose_the_batch(make_hub):
    class Broken(Playbook):
        def decide(self, incident, context):
            raise RuntimeError("bug")

    hub = make_hub(Broken())
    assert hub.telemetry("gw1", batch(1, incident())) == 1
    assert len(hub.store.list_incidents()) == 1


# ---- feeds ---------------------------------------------------------------------------------

def test_snapshot_first_then_changes_and_no_gap_between(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident()))
    feed = hub.watch("gw1")
    hub.telemetry("gw1", batch(2, incident(src="10.0.0.67")))  # between watch and first get
    snapshot = feed.get(0.1)
    assert snapshot.kind == "snapshot"
    assert sorted(s.rule.target for s in snapshot.rules) == [ATTACKER, "10.0.0.67"]
    assert feed.get(0.05) is None  # already in the snapshot, not sent twice
    feed.close()
    assert feed.get(0.01) is None and feed.closed


def test_a_feed_that_falls_behind_gets_one_fresh_snapshot(make_hub):
    from atlas.central.hub import FEED_MAX_PENDING

    hub = make_hub()
    feed = hub.watch("gw1")
    drain(feed)
    for i in range(FEED_MAX_PENDING + 5):
        hub.telemetry("gw1", batch(i + 1, incident(src=f"10.1.{i // 250}.{i % 250 + 1}")))
    changes = drain(feed)
    assert [c.kind for c in changes][-1] == "snapshot"
    assert len(changes[-1].rules) == FEED_MAX_PENDING + 5


def test_watch_get_blocks_until_a_change(make_hub):
    hub = make_hub(real_clock=True)
    feed = hub.watch("gw1")
    drain(feed)
    got = []
    t = threading.Thread(target=lambda: got.append(feed.get(5.0)))
    t.start()
    time.sleep(0.1)
    hub.telemetry("gw1", batch(1, incident(t=time.time())))
    t.join(5)
    assert got and got[0].kind == "upsert"


# ---- background maintenance, operator queue, restart, concurrency ---------------------------

def test_background_expiry_withdraws_within_a_second(make_hub):
    hub = make_hub(Playbook({"default": {"outside": {"action": "quarantine", "ttl": 0.5}}}),
                   real_clock=True)
    hub.start()
    feed = hub.watch("gw1")
    drain(feed)
    hub.telemetry("gw1", batch(1, incident(t=time.time())))
    [rule_id] = [c.rules[0].rule.id for c in drain(feed)]
    issued = time.monotonic()
    change = feed.get(3.0)
    assert change is not None and change.withdrawn == [rule_id]
    assert time.monotonic() - issued < 1.5


def test_queued_operator_commands_run_through_the_hub(make_hub):
    hub = make_hub()
    hub.telemetry("gw1", batch(1, incident(src=CALLBOX)))
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    [rate_limit] = hub.store.list_rules()
    ok = hub.store.enqueue_command("approve", pending.id, "alice", T0)
    bad = hub.store.enqueue_command("revoke", "r-missing", "alice", T0)
    rev = hub.store.enqueue_command("revoke", rate_limit.rule.id, "bob", T0)
    hub.tick()
    assert hub.store.get_command(ok).state == "done"
    assert "approved" in hub.store.get_command(ok).result
    assert (hub.store.get_command(bad).state, hub.store.get_command(bad).result) == \
        ("failed", "no rule 'r-missing'")
    assert hub.store.get_command(rev).state == "done"
    assert [r.rule.action for r in hub.store.list_rules(states=("active",))] == ["quarantine"]
    assert hub.store.get_hub_state().heartbeat == T0


def test_restart_loses_nothing(make_hub, clock, key):
    hub = make_hub()
    hub.hello("gw1", GatewayInfo("gw1", "0.1.0"))
    hub.telemetry("gw1", batch(4, incident()))
    hub.telemetry("gw1", batch(5, incident(src=CALLBOX)))
    desired = hub.desired_rules("gw1")
    [pending] = hub.store.list_decisions(states=("pending_approval",))
    head = hub.audit.head()
    hub.close()
    hub.store.close()

    clock.now += 30
    again = make_hub()  # a new process on the same file
    assert again.store.get_gateway("gw1").connections == 0  # no stream survives a restart
    assert again.desired_rules("gw1") == desired
    for signed in again.desired_rules("gw1"):
        RuleVerifier(key.public_key()).verify_rule(signed)
    assert again.telemetry("gw1", batch(5, incident(src="10.7.7.7"))) == 5  # seq kept
    assert len(again.store.list_incidents()) == 2
    # merge state survives: gw2 joins the incident from before the restart
    feed = again.watch("gw2")
    drain(feed)
    again.telemetry("gw2", batch(1, incident("gw2", t=T0 + 30)))
    assert [c.rules[0].rule.target for c in drain(feed)] == [ATTACKER]
    assert len(again.store.list_incidents()) == 2
    again.approve(pending.id, "alice")  # a pending approval survives too
    assert again.audit.verify() == (True, None)
    assert again.audit.head().seq > head.seq


def test_many_gateways_at_once(make_hub):
    hub = make_hub(real_clock=True)
    gateways = [f"gw{i}" for i in range(8)]
    errors = []
    now = time.time()

    def run(gw):
        try:
            hub.hello(gw, GatewayInfo(gw, "0.1"))
            feed = hub.watch(gw)
            for seq in range(1, 26):
                # every gateway sees the same 5 attackers, each kind once per attacker
                inc = incident(gw, src=f"10.0.9.{seq % 5 + 1}", t=now, last=now + seq,
                               kind="mqtt_flood" if seq % 2 else "port_scan")
                assert hub.telemetry(gw, batch(seq, inc)) == seq
                hub.telemetry(gw, batch(seq, inc))  # duplicates interleaved
            feed.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(gw,)) for gw in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    incidents = hub.store.list_incidents()
    assert len(incidents) == 10  # 5 attackers x 2 kinds, merged across the 8 gateways
    assert all(sorted(i.gateways) == sorted(gateways) for i in incidents)
    for gw in gateways:
        assert hub.store.get_seq(gw) == 25
        assert len(hub.desired_rules(gw)) == 10  # one quarantine per incident per gateway
    assert len(hub.store.list_decisions()) == 10
    assert hub.audit.verify() == (True, None)


def test_a_bad_batch_fails_alone_while_other_gateways_commit(make_hub):
    hub = make_hub(real_clock=True)
    poisoned = incident("gw0", t=time.time())
    poisoned.packets = None  # int(None): fails inside the hub, after part of the batch is written
    errors, results = [], {}
    start = threading.Barrier(6)

    def send(gw, b):
        start.wait(5)
        try:
            results[gw] = hub.telemetry(gw, b)
        except Exception as exc:  # noqa: BLE001
            errors.append((gw, exc))

    threads = [threading.Thread(target=send, args=("gw0", batch(1, poisoned)))]
    threads += [threading.Thread(target=send, args=(f"gw{i}", batch(
        1, incident(f"gw{i}", src=f"10.0.5.{i}", t=time.time()))))
        for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [gw for gw, _ in errors] == ["gw0"] and isinstance(errors[0][1], TypeError)
    assert results == {f"gw{i}": 1 for i in range(1, 6)}
    assert hub.store.get_seq("gw0") == 0  # not acknowledged, so the agent sends it again
    assert {i.src_ip for i in hub.store.list_incidents()} == {f"10.0.5.{i}" for i in range(1, 6)}
    assert hub.audit.verify() == (True, None)


def test_device_summaries_are_kept_for_the_retention_only(tmp_path, key, clock):
    hub = Hub(open_store(tmp_path / "hub.db"), Playbook(), RuleSigner(key), clock=clock,
              telemetry_retention=3600)
    dev = DeviceSummary("meter-7", "10.0.2.7", T0, T0 + 60, 50, 5000, [0.1, 0.2])
    hub.telemetry("gw1", batch(1, devices=[dev]))
    clock.now += 1800
    hub.telemetry("gw1", batch(2, devices=[dev]))
    assert hub.store.list_devices("gw1")[0]["batches"] == 2
    clock.now += 1801
    hub.tick()
    [row] = hub.store.list_devices("gw1")
    assert (row["batches"], row["seq"]) == (1, 2)
    hub.close()
    hub.store.close()
