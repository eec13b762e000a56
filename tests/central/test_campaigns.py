"""Campaigns at the live hub, in-process on a real SQLite store: the correlator (an event
subscriber) links incidents from gateways of different domains into one stored campaign, the
policy's context then carries it, outcomes reach the policy's observe(), and the operator's
`atlas-central campaigns` / `campaigns show` tell it in plain words."""
from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.link.incidents import Incident
from atlas.link.signing import RuleSigner
from atlas.link.wire import GatewayInfo, RuleAck, TelemetryBatch
from atlas.central import cli
from atlas.central.correlate import GatewayPlace
from atlas.central.correlate.registry import RulesEngine
from atlas.central.decide.inventory import DeviceEntry, Inventory
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub
from atlas.central.store import open_store

T0 = 1_800_000_000.0
ATTACKER = "198.51.100.7"  # outside every gateway's network
PLACES = {"gw-ene": GatewayPlace("gw-ene", "energy", "d01", "10.2.0.0/16"),
          "gw-tra": GatewayPlace("gw-tra", "transportation", "d01", "10.1.0.0/16")}


class Recording(Playbook):
    """The playbook, remembering every context it was given and every outcome it observed."""

    def __init__(self):
        super().__init__()
        self.contexts = []
        self.observed = []

    def decide(self, incident, context):
        self.contexts.append((incident.id, context))
        return super().decide(incident, context)

    def observe(self, event):
        self.observed.append(event)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def hub(tmp_path):
    store = open_store(tmp_path / "hub.db")
    hub = Hub(store, Recording(), RuleSigner(Ed25519PrivateKey.generate()), clock=Clock(),
              places=PLACES, correlator=RulesEngine(3600.0))
    yield hub
    hub.close()
    store.close()


def report(gateway, kind, t, src=ATTACKER, dst="", device="", last=None, state="open",
           **evidence):
    return Incident(id=f"{gateway}/{src}/{kind}/{int(t * 1000)}", kind=kind, src_ip=src,
                    dst_ip=dst, device=device or src, gateway=gateway, time=t,
                    last_seen=t if last is None else last, score=0.9, model_version="m1",
                    packets=100, state=state, evidence=dict(evidence))


def send(hub, gateway, seq, *incidents):
    hub.telemetry(gateway, TelemetryBatch(seq=seq, time=T0, incidents=list(incidents)))
    assert hub.bus.wait_idle(5)


def test_incidents_of_two_domains_become_one_campaign_the_policy_sees(hub):
    send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0, dst="10.2.0.5"))
    assert hub.store.list_campaigns() == []  # one incident alone is not a campaign
    send(hub, "gw-tra", 1, report("gw-tra", "mqtt_bruteforce", T0 + 60, dst="10.1.0.9"))

    [campaign] = hub.store.list_campaigns()
    scan, brute = (i.id for i in sorted(hub.store.list_incidents(), key=lambda i: i.first_seen))
    assert campaign.incidents == [scan, brute]
    assert campaign.gateways == ["gw-ene", "gw-tra"]
    assert campaign.domains == ["energy", "transportation"]
    assert campaign.scope == "city" and campaign.engine == "rules"
    [link] = campaign.links
    assert (link.earlier, link.later, link.reason, link.scope, link.gateways) == \
        (scan, brute, "same_attacker", "city", ("gw-ene", "gw-tra"))
    assert hub.store.campaign_of(scan).id == hub.store.campaign_of(brute).id == campaign.id

    # the brute force was first decided at ingest, before the correlator ran; the campaign
    # event then had it decided again, with the campaign in its context
    contexts = [c for i, c in hub.policy.contexts if i == brute]
    assert contexts[0].campaign is None
    assert contexts[-1].campaign is not None and contexts[-1].campaign.id == campaign.id
    assert contexts[-1].campaign.domains == ["energy", "transportation"]
    # the same response is not decided twice; once it has expired, the attack going on is
    # decided again, and that decision records the campaign it was made in
    before = {d.id for d in hub.store.list_decisions()}
    send(hub, "gw-tra", 2, report("gw-tra", "mqtt_bruteforce", T0 + 60, dst="10.1.0.9",
                                  last=T0 + 90))
    assert {d.id for d in hub.store.list_decisions()} == before
    assert [d.campaign for d in hub.store.decisions_for_incident(brute)] == [""]
    hub._clock.now += 7200
    assert hub.expire() > 0
    send(hub, "gw-tra", 3, report("gw-tra", "mqtt_bruteforce", T0 + 60, dst="10.1.0.9",
                                  last=T0 + 7200))
    assert [d.campaign for d in hub.store.decisions_for_incident(brute)] == ["", campaign.id]
    send(hub, "gw-ene", 2, report("gw-ene", "connection_dos", T0 + 120, dst="10.2.0.5"))
    dos = next(i.id for i in hub.store.list_incidents() if i.kind == "connection_dos")
    assert hub.store.campaign_of(dos).id == campaign.id
    again = [c for i, c in hub.policy.contexts if i == dos]
    assert again[-1].campaign.id == campaign.id


def test_a_pivot_is_linked_and_shown_in_plain_words(hub, tmp_path, capsys):
    hub.hello("gw-wat", GatewayInfo("gw-wat", "0.1", domain="water", district="d02",
                                    subnet="10.3.0.0/16"))
    # the hub's config wins over a hello, and the store keeps where the hub places each one
    hub.hello("gw-ene", GatewayInfo("gw-ene", "0.1", domain="gas"))
    assert (hub.store.get_gateway("gw-ene").domain, hub.store.get_gateway("gw-wat").domain) \
        == ("energy", "water")
    # an outside host attacks a pump behind the water gateway; the pump then attacks the
    # energy network: a pivot across domains (the water gateway is placed by its hello)
    send(hub, "gw-wat", 1, report("gw-wat", "mqtt_bruteforce", T0, dst="10.3.0.5"))
    send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0 + 300, src="10.3.0.5",
                                  dst="10.2.0.9"))
    [campaign] = hub.store.list_campaigns()
    assert campaign.domains == ["energy", "water"]
    assert [lk.reason for lk in campaign.links] == ["pivot"]

    db = ["--db", str(tmp_path / "hub.db")]
    assert cli.main(["campaigns", *db, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == campaign.id and len(listed["incidents"]) == 2
    assert cli.main(["campaigns", "show", campaign.id, *db]) == 0
    text = capsys.readouterr().out
    first, second = campaign.incidents
    assert text.splitlines()[0] == (f"campaign {campaign.id}: 2 incidents on 2 gateway(s) in 2 "
                                    "domain(s) (energy, water), linked across domains "
                                    "(engine rules)")
    assert (f"  {first} on gw-wat (water) -> {second} on gw-ene (energy): a pivot: 10.3.0.5 was "
            f"attacked by {ATTACKER} (across domains)") in text
    assert f"mqtt_bruteforce by {ATTACKER} -> 10.3.0.5, seen by gw-wat (water); open" in text
    assert "decisions:\n  d-" in text
    assert cli.main(["campaigns", "show", "c-nope", *db]) == 2
    assert "no campaign 'c-nope'" in capsys.readouterr().err


def test_a_report_joining_two_campaigns_merges_them_into_the_first_begun(hub):
    send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0))
    send(hub, "gw-tra", 1, report("gw-tra", "mqtt_flood", T0 + 10))
    send(hub, "gw-ene", 2, report("gw-ene", "port_scan", T0 + 20, src="10.9.9.9",
                                  device="mallory"))
    send(hub, "gw-tra", 2, report("gw-tra", "mqtt_flood", T0 + 30, src="10.9.9.9",
                                  device="mallory"))
    older, newer = sorted(hub.store.list_campaigns(), key=lambda c: c.first_seen)
    # the attacker now logs in as mallory: the same attacker as one, the same identity as
    # the other
    send(hub, "gw-tra", 3, report("gw-tra", "mqtt_bruteforce", T0 + 40, device="mallory"))
    [merged] = hub.store.list_campaigns()
    assert merged.id == older.id and len(merged.incidents) == 5
    gone = hub.store.get_campaign(newer.id)
    assert (gone.state, gone.merged_into, gone.incidents) == ("merged", older.id, [])
    assert {lk.reason for lk in merged.links} == {"same_attacker", "same_identity"}


def test_outcomes_reach_the_policy_through_the_event_stream(tmp_path):
    callbox = "10.2.0.5"
    store = open_store(tmp_path / "hub.db")
    clock = Clock()
    inventory = Inventory([DeviceEntry(
        address=callbox, client_id="ecb-1", gateway="", profile="emergency_call_box",
        criticality="life_safety", acceptable=("rate_limit", "filter"),
        needs_fallback=("quarantine", "revoke_mqtt"), fallback="cellular line")])
    hub = Hub(store, Recording(), RuleSigner(Ed25519PrivateKey.generate()), clock=clock,
              inventory=inventory, places=PLACES)
    try:
        send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0))
        [rule] = hub.store.list_rules()
        hub.rule_ack("gw-ene", RuleAck(rule.rule.id, applied=False, error="no nft"))
        hub.revoke(rule.rule.id, "alice")
        # a life-safety device: throttled at once, quarantine waits for a human
        send(hub, "gw-ene", 2, report("gw-ene", "mqtt_flood", T0, src=callbox, device="ecb-1"))
        [pending] = hub.store.list_decisions(states=("pending_approval",))
        hub.reject(pending.id, "bob")
        clock.now += 7 * 86400
        assert hub.expire() == 1  # the rate limit
        send(hub, "gw-ene", 3, report("gw-ene", "mqtt_flood", T0, src=callbox, device="ecb-1",
                                      last=T0 + 5, state="closed"))
        seen = [(e.kind, e.payload.get("rule") or e.payload.get("decision")
                 or e.payload.get("incident")) for e in hub.policy.observed]
        flood = next(i.id for i in hub.store.list_incidents() if i.kind == "mqtt_flood")
        limit = next(r.rule.id for r in hub.store.list_rules(states=("expired",)))
        assert seen == [("rule_refused", rule.rule.id), ("rule_revoked", rule.rule.id),
                        ("decision_rejected", pending.id), ("rule_expired", limit),
                        ("incident_closed", flood)]
        assert hub.policy.observed[0].payload["error"] == "no nft"
        assert hub.policy.observed[1].payload["operator"] == "alice"
    finally:
        hub.close()
        store.close()


def test_events_are_published_only_after_their_change_commits(hub):
    seen = []
    hub.bus.subscribe(["gateway_lost", "incident_opened"], seen.append, "test")

    def failing(outbox, now):
        hub.store.record_disconnect("gw-ene", now)
        outbox.event("gateway_lost", now, gateway="gw-ene")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        hub.committed(failing)
    # a batch that fails in its savepoint publishes nothing; a good one publishes its events
    bad = report("gw-tra", "port_scan", T0)
    bad.packets = "many"  # not a number: this report's savepoint fails
    hub.telemetry("gw-ene", TelemetryBatch(seq=1, time=T0, incidents=[report("gw-ene",
                                                                             "port_scan", T0)]))
    with pytest.raises(ValueError):
        hub.telemetry("gw-tra", TelemetryBatch(seq=1, time=T0, incidents=[bad]))
    assert hub.bus.wait_idle(5)
    assert [(e.kind, e.payload["gateway"]) for e in seen] == [("incident_opened", "gw-ene")]
    assert hub.store.list_incidents()[0].gateways == ["gw-ene"]


def test_odd_evidence_from_a_gateway_does_not_stop_correlation(hub):
    send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0, victims=7, client_id=["x"]))
    send(hub, "gw-tra", 1, report("gw-tra", "mqtt_flood", T0 + 5, victims=["10.1.0.3", 4]))
    [campaign] = hub.store.list_campaigns()
    assert len(campaign.incidents) == 2 and hub.bus.stats()["handler_errors"] == 0


class SlowEngine(RulesEngine):
    """The rules engine taking its time, as a learned engine might."""

    def __init__(self, window_s, started):
        super().__init__(window_s)
        self.started = started

    def campaigns(self, events, topology):
        self.started.set()
        time.sleep(1.0)
        return super().campaigns(events, topology)


def test_a_slow_correlation_engine_never_holds_up_ingest(tmp_path):
    import threading

    started = threading.Event()
    store = open_store(tmp_path / "hub.db")
    hub = Hub(store, Playbook(), RuleSigner(Ed25519PrivateKey.generate()), clock=Clock(),
              places=PLACES, correlator=SlowEngine(3600.0, started))
    try:
        hub.telemetry("gw-ene", TelemetryBatch(seq=1, time=T0, incidents=[
            report("gw-ene", "port_scan", T0)]))
        assert started.wait(5)  # the engine is busy now, in the bus's thread
        t0 = time.monotonic()
        hub.telemetry("gw-tra", TelemetryBatch(seq=1, time=T0, incidents=[
            report("gw-tra", "mqtt_flood", T0 + 5)]))
        assert time.monotonic() - t0 < 0.5  # decided and committed meanwhile
        assert len(hub.store.list_rules()) == 2
        assert hub.bus.wait_idle(10)
        assert len(hub.store.list_campaigns()) == 1
    finally:
        hub.close()
        store.close()
