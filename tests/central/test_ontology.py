"""The city graph and its query interface, on a small simulated city (real profiles, real
service declarations, the simulator's layout): what the rules infer, what a response costs,
how two assets are related, and an incident explained."""
from __future__ import annotations

import json

import pytest

rdflib = pytest.importorskip("rdflib", reason="the ontology extra (make test installs it)")

from atlas.central.ontology.facts import load_facts  # noqa: E402
from atlas.central.ontology.graph import build_graph, device_iri, gateway_iri  # noqa: E402
from atlas.central.ontology.query import CityQuery, UnknownAsset, explanation_text, query_for  # noqa: E402
from atlas.central.ontology.vocab import ATLAS  # noqa: E402
from atlas.firmware_profiles import load_device_profiles  # noqa: E402
from atlas.sim.city.layout import describe_city, plan_layout  # noqa: E402


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    profiles = load_device_profiles()
    data = describe_city(plan_layout(profiles, 400, 6), profiles)
    # Two smart meters that log in with one user name: the shared-credential rule's case.
    meters = [d for d in data["devices"] if d["class"] == "smart_meter"]
    meters[1]["username"] = meters[0]["username"]
    path = tmp_path_factory.mktemp("city") / "city.json"
    path.write_text(json.dumps(data))
    facts = load_facts(city=path)
    graph = build_graph(facts)
    return data, facts, graph, CityQuery(graph, facts.version)


def first(data, cls, district="d01"):
    return [d for d in data["devices"] if d["class"] == cls and d["district"] == district]


def test_devices_in_saref_and_sosa_terms_with_their_source(city):
    from rdflib.namespace import PROV, SOSA

    from atlas.central.ontology.vocab import SAREF

    data, facts, g, _ = city
    assert len(set(g.subjects(rdflib.RDF.type, SAREF.Device))) == len(data["devices"])
    tsc, aq = first(data, "traffic_signal_controller")[0], data["devices"][0]
    assert (device_iri(tsc["client_id"]), rdflib.RDF.type, SOSA.Actuator) in g  # it takes timing-plan commands
    source = g.value(device_iri(aq["client_id"]), PROV.wasDerivedFrom)
    assert str(facts.sources["city"]) in str(g.value(source, rdflib.RDFS.label))


def test_rules_infer_broker_credential_links_and_transitive_dependencies(city):
    data, facts, g, q = city
    gw = data["gateways"][0]
    dev = next(d for d in data["devices"] if d["gateway"] == gw["id"])
    assert {str(o) for o in g.objects(device_iri(dev["client_id"]), ATLAS.usesBroker)} == {
        str(g.value(gateway_iri(gw["id"]), ATLAS.hasBroker))}
    a, b = (device_iri(m["client_id"]) for m in [d for d in data["devices"] if d["class"] == "smart_meter"][:2])
    assert (a, ATLAS.sharesCredentialWith, b) in g and (b, ATLAS.sharesCredentialWith, a) in g
    others = [d for d in data["devices"] if d["class"] == "smart_meter"][2]
    assert not list(g.objects(device_iri(others["client_id"]), ATLAS.sharesCredentialWith))
    # emergency response needs traffic control, so it depends on every signal of its district
    tsc = first(data, "traffic_signal_controller")[0]
    er = [s for s in g.subjects(ATLAS.dependsOn, device_iri(tsc["client_id"])) if "emergency_response" in str(s)]
    assert [str(s).rsplit("/", 2)[-2:] for s in er] == [["emergency_response", "d01"]]
    assert q.devices[tsc["client_id"]].feeds == {"traffic_control/d01", "emergency_response/d01"}


def test_quarantining_a_signal_fails_traffic_control_and_emergency_response_of_its_district_only(city):
    data, _, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    r = q.blast_radius("quarantine", tsc["ip"], gateway=tsc["gateway"])
    assert r.devices_down == (tsc["client_id"],)
    assert {s.service: s.status for s in r.services} == {"traffic_control/d01": "failed",
                                                        "emergency_response/d01": "failed"}
    assert r.services[0].criticality == "life_safety" and r.cost == 200.0


def test_losing_one_detector_of_many_degrades_without_failing(city):
    data, _, _, q = city
    detectors = first(data, "vehicle_detector")
    assert len(detectors) >= 3
    r = q.blast_radius("quarantine", detectors[0]["client_id"])
    # emergency response needs traffic control: degraded with it, through the dependency
    assert {s.service: s.status for s in r.services} == {"traffic_control/d01": "degraded",
                                                        "emergency_response/d01": "degraded"}
    impact = next(s for s in r.services if s.service == "traffic_control/d01")
    assert impact.lost == 1
    assert f"vehicle_detector: {len(detectors) - 1} of {len(detectors)} up" in impact.because[0]
    assert 0 < r.cost < 100


def test_filter_and_rate_limit_keep_reports_flowing(city):
    data, _, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    for action in ("filter", "rate_limit"):
        r = q.blast_radius(action, tsc["client_id"])
        assert r.devices_touched == (tsc["client_id"],) and r.devices_down == () and r.services == () and r.cost == 0


def test_revoking_a_shared_credential_cuts_off_every_device_that_uses_it(city):
    data, _, _, q = city
    m0, m1 = [d for d in data["devices"] if d["class"] == "smart_meter"][:2]
    r = q.blast_radius("revoke_mqtt", m1["client_id"])
    assert set(r.devices_down) == {m0["client_id"], m1["client_id"]}
    assert [s.service for s in r.services] == ["metering/city"] and r.services[0].status == "degraded"


def test_quarantining_a_broker_takes_every_device_behind_it(city):
    data, _, _, q = city
    gw = data["gateways"][0]
    r = q.blast_radius("quarantine", gw["broker"])
    assert len(r.devices_down) == gw["devices"]
    assert {"traffic_control/d01", "emergency_response/d01"} <= {s.service for s in r.failed}


def test_blast_radius_is_cached_per_inventory_version_and_rejects_unknowns(city):
    data, facts, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    assert q.blast_radius("quarantine", tsc["client_id"]) is q.blast_radius("quarantine", tsc["client_id"])
    with pytest.raises(UnknownAsset, match="'192.0.2.1' is not a device"):
        q.blast_radius("quarantine", "192.0.2.1")
    with pytest.raises(ValueError, match="action: 'reboot'"):
        q.blast_radius("reboot", tsc["client_id"])
    q1 = query_for(facts)
    assert query_for(facts) is q1
    facts.devices.pop()  # another inventory: another version, another graph
    assert query_for(facts) is not q1 and query_for(facts).version != q1.version


def test_relations_between_assets(city):
    data, _, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    det = first(data, "vehicle_detector")[0]
    ecb = first(data, "emergency_call_box")[0]
    kinds = {r.kind for r in q.relations(tsc["client_id"], det["client_id"])}
    assert kinds == {"same_gateway", "same_broker", "same_service"}
    assert [(r.kind, r.detail) for r in q.relations(tsc["client_id"], ecb["client_id"])] == [
        ("upstream", f"{tsc['client_id']} feeds traffic_control/d01, which emergency_response/d01 needs")]
    assert [r.kind for r in q.relations(ecb["ip"], tsc["ip"], ecb["gateway"], tsc["gateway"])] == ["downstream"]
    m0, m1 = [d for d in data["devices"] if d["class"] == "smart_meter"][:2]
    assert "same_credential" in {r.kind for r in q.relations(m0["client_id"], m1["client_id"])}
    far = first(data, "traffic_signal_controller", "d02")[0]
    assert q.relations(tsc["client_id"], far["client_id"]) == []


def test_explain_names_assets_services_technique_and_countermeasures(city):
    data, _, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    incident = {"id": "h-1", "kind": "false_data", "src_ip": tsc["ip"], "dst_ip": "", "device": tsc["client_id"],
                "gateways": [tsc["gateway"]]}
    e = q.explain(incident, actions=[("quarantine", tsc["client_id"])])
    assert [t["attack_id"] for t in e["techniques"]] == ["T0856", "T0832"]
    assert e["assets"][0]["device"] == tsc["client_id"]
    assert [s["service"] for s in e["services_at_risk"]] == ["emergency_response/d01", "traffic_control/d01"]
    assert [c["d3fend_id"] for c in e["responses"][0]["countermeasures"]] == ["D3-NI"]
    text = explanation_text(e)
    assert "T0856 Spoof Reporting Message" in text and "Network Isolation (D3-NI)" in text
    assert "traffic_control/d01 failed" in text


def test_described_city_names_devices_as_the_generated_city_does(tmp_path):
    """The graph's fixture and bench city (describe_city: no traffic) has the same devices,
    addresses and MQTT ids as `atlas-sim city` for the same size, and so builds the same graph."""
    from atlas.sim.city.build import build_city
    from atlas.sim.city.schedule import ScheduleOptions

    build_city(tmp_path / "c", devices=60, gateways=3, duration=5, seed=3, workers=1,
               schedule=ScheduleOptions(attacks_per_gateway=0, campaigns=0, lookalike_share=0))
    made = json.loads((tmp_path / "c" / "city.json").read_text())
    profiles = load_device_profiles()
    described = describe_city(plan_layout(profiles, 60, 3), profiles)
    fields = ("id", "ip", "class", "gateway", "client_id", "username")
    assert sorted(tuple(d[k] for k in fields) for d in described["devices"]) == sorted(
        tuple(d[k] for k in fields) for d in made["devices"])
    assert [{k: g[k] for k in ("id", "district", "domain", "subnet", "broker")} for g in described["gateways"]] == [
        {k: g[k] for k in ("id", "district", "domain", "subnet", "broker")} for g in made["gateways"]]


def test_incident_relations_link_two_incidents_through_their_assets(city):
    data, _, _, q = city
    tsc = first(data, "traffic_signal_controller")[0]
    det = first(data, "vehicle_detector")[0]
    ecb = first(data, "emergency_call_box")[0]
    scan = {"kind": "port_scan", "src_ip": "203.0.113.9", "dst_ip": det["ip"], "device": "", "gateway": det["gateway"]}
    spoof = {"kind": "false_data", "src_ip": tsc["ip"], "dst_ip": "", "device": tsc["client_id"], "gateway": tsc["gateway"]}
    rels = q.incident_relations(scan, spoof)
    assert ("same_gateway", "target/attacker") in {(r.kind, r.between) for r in rels}
    assert ("same_service", "traffic_control/d01") in {(r.kind, r.detail) for r in rels}
    call = {"kind": "mqtt_flood", "src_ip": "198.51.100.4", "dst_ip": ecb["ip"], "device": "", "gateways": [ecb["gateway"]]}
    assert [(r.kind, r.between) for r in q.incident_relations(spoof, call)] == [("upstream", "attacker/target")]
    outside = {"kind": "port_scan", "src_ip": "198.51.100.7", "dst_ip": "", "device": ""}
    assert q.incident_relations(scan, outside) == []
