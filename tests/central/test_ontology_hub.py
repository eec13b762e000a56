"""The hub uses the city graph: built off the ingest lock at start, its cost of each response in
the policy's context and the decision's reason (the actions unchanged), the relations between a
campaign link's assets as evidence `campaigns show` prints, the graph's state in `status`,
a rebuild when the inventory file changes; and the hub without the ontology extra still decides.
In-process, on a real SQLite store, with the packaged profiles and service declarations."""
from __future__ import annotations

import logging
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.link.incidents import Incident
from atlas.link.signing import RuleSigner
from atlas.link.wire import TelemetryBatch
from atlas.central import cli
from atlas.central.correlate import GatewayPlace
from atlas.central.correlate.registry import RulesEngine
from atlas.central.decide.inventory import load_inventory
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub
from atlas.central.ontology.knowledge import CityKnowledge
from atlas.central.store import open_store

T0 = 1_800_000_000.0
OUTSIDE = "198.51.100.7"
PLACES = {"gw-tra": GatewayPlace("gw-tra", "transportation", "d01", "10.1.0.0/16", "10.1.0.1"),
          "gw-ene": GatewayPlace("gw-ene", "energy", "d01", "10.2.0.0/16", "10.2.0.1")}
# One signal, one detector: traffic control of d01 fails if either goes; one meter: metering too.
DEVICES = [("10.1.0.10", "tsc-d01-0001", "gw-tra", "traffic_signal_controller"),
           ("10.1.0.11", "vd-d01-0001", "gw-tra", "vehicle_detector"),
           ("10.2.0.10", "sm-d01-0001", "gw-ene", "smart_meter"),
           ("10.2.0.11", "inv-d01-0001", "gw-ene", "solar_inverter")]


def inventory_text(devices) -> str:
    return "\n".join(f'[[device]]\naddress = "{a}"\nclient_id = "{c}"\ngateway = "{g}"\nprofile = "{p}"\n'
                     for a, c, g, p in devices)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    path = tmp_path_factory.mktemp("city") / "inventory.toml"
    path.write_text(inventory_text(DEVICES))
    return path


@pytest.fixture(scope="module")
def knowledge(inventory):
    """Built once for the module; each hub below starts it again (a no-op once ready)."""
    pytest.importorskip("rdflib", reason="the ontology extra (make test installs it)")
    k = CityKnowledge(inventory, PLACES)
    assert k.start() and k.wait(60), k.why
    return k


class Recording(Playbook):
    def __init__(self):
        super().__init__()
        self.contexts = []

    def decide(self, incident, context):
        self.contexts.append(context)
        return super().decide(incident, context)


def make_hub(path, inventory, knowledge):
    """A hub on a real store; its maintenance loop (and so the graph's build) starts with
    start(). The module's graph is built already: its hubs share it."""
    store = open_store(path)
    return Hub(store, Recording(), RuleSigner(Ed25519PrivateKey.generate()), clock=lambda: T0,
               inventory=load_inventory(inventory), places=PLACES, correlator=RulesEngine(3600.0),
               knowledge=knowledge)


@pytest.fixture
def hub(tmp_path, inventory, knowledge):
    hub = make_hub(tmp_path / "hub.db", inventory, knowledge)
    yield hub
    hub.close()
    hub.store.close()


def report(gateway, kind, t, src, dst=""):
    return Incident(id=f"{gateway}/{src}/{kind}/{int(t)}", kind=kind, src_ip=src, dst_ip=dst, device=src,
                    gateway=gateway, time=t, last_seen=t, score=0.9, model_version="m1", packets=100,
                    state="open", evidence={})


def send(hub, gateway, seq, *incidents):
    hub.telemetry(gateway, TelemetryBatch(seq=seq, time=T0, incidents=list(incidents)))
    assert hub.bus.wait_idle(5)


def test_a_decision_names_the_services_its_action_puts_at_risk(hub):
    # a meter scanning where its profile forbids: ordinary, so quarantined at once; the city's
    # only meter gone, metering fails
    send(hub, "gw-ene", 1, report("gw-ene", "profile_violation", T0, "10.2.0.10", "10.2.0.99"))
    [decision] = hub.store.list_decisions()
    assert (decision.action, decision.target, decision.state) == ("quarantine", "10.2.0.10", "active")
    assert "graph: services at risk: metering/city failed (ordinary)" in decision.reason
    # the policy may weigh the same cost itself (the learned responder's cost of an action)
    context = hub.policy.contexts[-1]
    radius = context.blast_radius("quarantine", "10.2.0.10")
    assert [(s.service, s.status) for s in radius.failed] == [("metering/city", "failed")]
    assert context.blast_radius("rate_limit", "10.2.0.10").services == ()
    assert context.blast_radius("quarantine", OUTSIDE) is None  # not in the city: unknown cost


def test_the_graph_records_costs_without_changing_any_decision(hub, tmp_path, inventory):
    plain = make_hub(tmp_path / "plain.db", inventory, None)
    try:
        for h in (hub, plain):
            send(h, "gw-tra", 1, report("gw-tra", "mqtt_bruteforce", T0, "10.1.0.11", "10.1.0.1"),
                 report("gw-tra", "port_scan", T0 + 1, OUTSIDE, "10.1.0.10"))
            send(h, "gw-ene", 1, report("gw-ene", "profile_violation", T0 + 2, "10.2.0.11", "10.2.0.99"))
        shape = [lambda d: (d.action, d.target, d.state, d.requires_approval, d.ttl)]
        with_graph, without = ([shape[0](d) for d in sorted(h.store.list_decisions(), key=lambda d: d.created_at)]
                               for h in (hub, plain))
        assert sorted(with_graph) == sorted(without) and len(with_graph) >= 3
        reasons = [d.reason for d in plain.store.list_decisions()]
        assert not any("graph:" in r for r in reasons)
        assert plain.status()["graph"]["state"] == "off"
    finally:
        plain.close()
        plain.store.close()
    graph_reasons = {d.target: d.reason for d in hub.store.list_decisions()}
    assert "graph: services at risk" not in graph_reasons[OUTSIDE]  # outside the city: no cost
    assert "graph:" in graph_reasons["10.2.0.11"]


def test_campaign_links_carry_the_graphs_relations_and_campaigns_show_prints_them(hub, tmp_path, capsys):
    # one outside host scans the signal, then floods the detector: the rules link the two by
    # their attacker; the graph adds that both targets share a broker and feed one service
    send(hub, "gw-tra", 1, report("gw-tra", "port_scan", T0, OUTSIDE, "10.1.0.10"))
    send(hub, "gw-tra", 2, report("gw-tra", "connection_dos", T0 + 60, OUTSIDE, "10.1.0.11"))
    [campaign] = hub.store.list_campaigns()
    [link] = campaign.links
    assert link.reason == "same_attacker"
    kinds = {(r["kind"], r["detail"], r["between"]) for r in link.relations}
    assert ("same_broker", "10.1.0.1", "target/target") in kinds
    assert ("same_service", "traffic_control/d01", "target/target") in kinds
    assert cli.main(["campaigns", "show", campaign.id, "--db", str(tmp_path / "hub.db")]) == 0
    out = capsys.readouterr().out
    assert "also: behind the same gateway gw-tra, same broker 10.1.0.1, feeds the same service traffic_control/d01" in out


def test_relations_never_create_a_link(hub):
    # two outside hosts hitting two devices behind one broker: related targets, no campaign
    send(hub, "gw-tra", 1, report("gw-tra", "port_scan", T0, OUTSIDE, "10.1.0.10"),
         report("gw-tra", "connection_dos", T0 + 60, "203.0.113.50", "10.1.0.11"))
    assert hub.store.list_campaigns() == []


def test_status_reports_the_graph(hub, knowledge, capsys):
    graph = hub.status()["graph"]
    assert graph["state"] == "ready" and graph["devices"] == len(DEVICES)
    assert graph["triples"] == len(knowledge.query.graph) > 100
    assert graph["inventory_version"] == knowledge.facts().version
    assert cli.graph_words(graph) == (f"ready, {graph['triples']} triples, 4 devices, "
                                      f"inventory version {graph['inventory_version']}")


def test_a_changed_inventory_file_rebuilds_the_graph(tmp_path):
    pytest.importorskip("rdflib")
    path = tmp_path / "inventory.toml"
    path.write_text(inventory_text(DEVICES[:2]))
    k = CityKnowledge(path, PLACES)
    assert k.start() and k.wait(60)
    first = k.status()
    assert first["devices"] == 2 and not k.refresh()  # unchanged: nothing to do
    path.write_text(inventory_text(DEVICES))
    assert k.refresh() and k.wait(60)
    assert k.status()["devices"] == 4 and k.status()["inventory_version"] != first["inventory_version"]
    path.write_text("[[device]]\nprofile = 7\n")  # a broken edit keeps the last good graph
    assert k.refresh() and k.wait(60)
    assert k.status()["devices"] == 4 and "profile" in k.why


def test_decisions_go_on_while_the_graph_builds(tmp_path, inventory):
    pytest.importorskip("rdflib")
    k = CityKnowledge(inventory, PLACES)
    k._lock.acquire()  # hold the builder at its start: the graph stays "building"
    try:
        hub = make_hub(tmp_path / "hub.db", inventory, k)
        hub.start()
        assert hub.status()["graph"]["state"] == "building"
        send(hub, "gw-ene", 1, report("gw-ene", "profile_violation", T0, "10.2.0.10", "10.2.0.99"))
        [decision] = hub.store.list_decisions()
        assert decision.action == "quarantine" and "graph:" not in decision.reason
    finally:
        k._lock.release()
    assert k.wait(60)
    hub.close()
    hub.store.close()


def test_without_the_extra_the_hub_says_what_is_missing_and_still_decides(tmp_path, inventory, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "rdflib", None)  # as if the ontology extra were not installed
    k = CityKnowledge(inventory, PLACES)
    hub = make_hub(tmp_path / "hub.db", inventory, k)
    with caplog.at_level(logging.WARNING, logger="atlas.central.ontology"):
        hub.start()
    try:
        [line] = [r.getMessage() for r in caplog.records if r.name == "atlas.central.ontology"]
        assert "city graph off" in line and "missing: rdflib" in line and "atlas-iot[ontology]" in line
        assert hub.status()["graph"]["state"] == "off"
        send(hub, "gw-ene", 1, report("gw-ene", "profile_violation", T0, "10.2.0.10", "10.2.0.99"))
        [decision] = hub.store.list_decisions()
        assert decision.action == "quarantine" and decision.state == "active"
        assert hub.policy.contexts[-1].blast_radius("quarantine", "10.2.0.10") is None
        start = time.monotonic()
        hub.tick()  # maintenance does not try to build it either
        assert k.state == "off" and time.monotonic() - start < 5
    finally:
        hub.close()
        hub.store.close()


def test_the_daemon_builds_the_graph_from_its_config_and_graph_explain_reads_the_live_store(tmp_path, capsys):
    pytest.importorskip("rdflib")
    from atlas.central.config import load_config
    from atlas.central.daemon import build_hub
    from atlas.central.pki import init_pki

    (tmp_path / "inventory.toml").write_text(inventory_text(DEVICES))
    config = tmp_path / "central.toml"
    config.write_text(f"""
[hub]
listen = "127.0.0.1:0"
database = "central.db"
pki = "{init_pki(tmp_path / 'pki').root}"
inventory = "inventory.toml"

[gateways.gw-tra]
domain = "transportation"
district = "d01"
subnet = "10.1.0.0/16"
""")
    hub = build_hub(load_config(config))
    try:
        assert hub.knowledge.state == "off"  # built from the hub's start, not its construction
        hub.start()
        assert hub.knowledge.wait(60), hub.knowledge.why
        # placed by the config: the signal feeds its district's traffic control
        radius = hub.knowledge.blast_radius("quarantine", "10.1.0.10", "gw-tra")
        assert [s.service for s in radius.failed][:1] == ["traffic_control/d01"]
        hub.telemetry("gw-tra", TelemetryBatch(seq=1, time=T0, incidents=[
            report("gw-tra", "port_scan", T0, OUTSIDE, "10.1.0.10")]))
        [incident] = hub.store.list_incidents()
    finally:
        hub.close()
        hub.store.close()
    assert cli.main(["graph", "explain", incident.id, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "The target is tsc-d01-0001" in out and "Traffic signal control (d01) [traffic_control/d01]" in out
