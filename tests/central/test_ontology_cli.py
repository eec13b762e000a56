"""`atlas-central graph query|export|explain|check` and `atlas-central export stix` on a real
hub database and a small simulated city; and the hub's commands without the ontology extra."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rdflib", reason="the ontology extra (make test installs it)")
stix2 = pytest.importorskip("stix2", reason="the ontology extra (make test installs it)")

import rdflib  # noqa: E402
from stix2validator import ValidationOptions, validate_string  # noqa: E402

from atlas.central.cli import main  # noqa: E402
from atlas.central.store import DecisionRecord, HubIncident, IncidentReport, open_store  # noqa: E402
from atlas.firmware_profiles import load_device_profiles  # noqa: E402
from atlas.sim.city.layout import describe_city, plan_layout  # noqa: E402

T0 = 1767254400.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A city.json and a hub database with three incidents (two of one attacker, one by a
    city device) and two decisions, as the hub stores them."""
    root = tmp_path_factory.mktemp("hub")
    profiles = load_device_profiles()
    city = describe_city(plan_layout(profiles, 150, 3), profiles)
    (root / "city.json").write_text(json.dumps(city))
    tsc = next(d for d in city["devices"] if d["class"] == "traffic_signal_controller")
    gw = city["gateways"][0]
    store = open_store(root / "central.db")
    rows = [("h1", "port_scan", "203.0.113.9", "", tsc["ip"], 0, 5, 400),
            ("h2", "mqtt_bruteforce", "203.0.113.9", "", gw["broker"], 60, 90, 300),
            ("h3", "false_data", tsc["ip"], tsc["client_id"], "", 100, 190, 30)]
    for iid, kind, src, dev, dst, t, last, packets in rows:
        store.put_incident(HubIncident(iid, kind, src, dev, dst, T0 + t, T0 + last, 0.9, packets, "open", T0 + t))
        store.put_report(IncidentReport(gw["id"], f"a-{iid}", iid, kind, src, dst, dev, T0 + t, T0 + last, 0.9,
                                        packets, "open", "m1", {}, T0 + t))
    store.put_decision(DecisionRecord("d1", "h2", "playbook", "filter", "203.0.113.9", {}, 900, "filter the guesser",
                                      [gw["id"]], False, False, "active", T0 + 61))
    store.put_decision(DecisionRecord("d2", "h3", "playbook", "revoke_mqtt", tsc["client_id"], {}, 600, "revoke",
                                      [gw["id"]], True, False, "pending_approval", T0 + 101))
    store.close()
    return root, city, tsc


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_graph_query_answers_sparql_and_refuses_bad_sparql_in_one_line(hub, capsys):
    root, city, tsc = hub
    q = ("SELECT ?service WHERE { ?d atlas:clientId \"%s\" ; atlas:feeds ?s . ?s atlas:key ?service } ORDER BY ?service"
         % tsc["client_id"])
    code, out, _ = run(capsys, "graph", "query", q, "--city", root / "city.json", "--json")
    assert code == 0 and json.loads(out) == [{"service": "emergency_response/d01"}, {"service": "traffic_control/d01"}]
    code, out, err = run(capsys, "graph", "query", "SELEC ?x", "--city", root / "city.json")
    assert code == 2 and out == "" and err.startswith("atlas-central: SPARQL: ") and err.count("\n") == 1


def test_graph_export_turtle_and_jsonld_read_back_as_the_same_graph(hub, capsys, tmp_path):
    root, city, _ = hub
    for fmt, parser in (("ttl", "turtle"), ("jsonld", "json-ld")):
        out_file = tmp_path / f"city.{fmt}"
        code, _, _ = run(capsys, "graph", "export", "--format", fmt, "--out", out_file, "--city", root / "city.json")
        assert code == 0
        g = rdflib.Graph().parse(out_file, format=parser)
        devices = set(g.subjects(rdflib.RDF.type, rdflib.URIRef("https://w3id.org/atlas-iot/ns#Device")))
        assert len(devices) == len(city["devices"])


def test_graph_explain_in_plain_words(hub, capsys):
    root, _, tsc = hub
    code, out, _ = run(capsys, "graph", "explain", "h3", "--db", root / "central.db", "--city", root / "city.json")
    assert code == 0
    assert f"The attacker is {tsc['client_id']}, a traffic_signal_controller (life_safety) behind gw-d01-tra" in out
    assert "T0856 Spoof Reporting Message" in out and "Account Locking (D3-AL)" in out
    assert "traffic_control/d01 failed" in out
    code, _, err = run(capsys, "graph", "explain", "nope", "--db", root / "central.db", "--city", root / "city.json")
    assert code == 2 and "no incident 'nope'" in err


def test_graph_check_exits_1_on_errors_naming_device_and_field(hub, capsys, tmp_path):
    root, city, _ = hub
    code, out, _ = run(capsys, "graph", "check", "--city", root / "city.json")
    assert code == 0 and out.strip().endswith("0 errors, 0 warnings")
    inv = tmp_path / "inventory.toml"
    inv.write_text('[[device]]\naddress = "10.1.1.1"\nclient_id = "aq-9"\ngateway = "gw-d01-tra"\n'
                   'profile = "air_quality_sensor"\ncriticality = "life_safety"\n')
    code, out, _ = run(capsys, "graph", "check", "--inventory", inv, "--city", root / "city.json")
    assert code == 1
    assert f"error: device aq-9 ({inv}: device[0]): criticality: a life-safety device needs a fallback" in out


def test_export_stix_validates_and_round_trips(hub, capsys, tmp_path):
    root, _, tsc = hub
    out_file = tmp_path / "bundle.json"
    code, out, _ = run(capsys, "export", "stix", "--db", root / "central.db", "--city", root / "city.json",
                       "--out", out_file)
    assert code == 0 and "3 incidents, 2 decisions, 1 campaigns" in out
    text = out_file.read_text()
    result = validate_string(text, ValidationOptions(version="2.1"))
    assert result.is_valid and not result.errors
    raw = json.loads(text)["objects"]
    parsed = stix2.parse(text, allow_custom=True)
    assert sorted(o.id for o in parsed.objects) == sorted(o["id"] for o in raw)
    by_type: dict[str, list] = {}
    for o in raw:
        by_type.setdefault(o["type"], []).append(o)
    assert len(by_type["indicator"]) == 3 and len(by_type["sighting"]) == 3 and len(by_type["campaign"]) == 1
    assert {r["external_references"][0]["external_id"] for r in by_type["course-of-action"]} == {"D3-ITF", "D3-AL"}
    patterns = {r["external_id"] for o in by_type["attack-pattern"] for r in o["external_references"]
                if r["source_name"] == "mitre-attack"}
    assert patterns == {"T0846", "T0812", "T0859", "T0856", "T0832"}
    assert any(o["name"] == tsc["client_id"] for o in by_type["infrastructure"])
    # the same store exports the same ids; --since leaves the earlier incidents out
    code, again, _ = run(capsys, "export", "stix", "--db", root / "central.db", "--city", root / "city.json")
    assert sorted(o["id"] for o in json.loads(again)["objects"]) == sorted(o["id"] for o in raw)
    code, later, _ = run(capsys, "export", "stix", "--db", root / "central.db", "--since", T0 + 100)
    assert [o["name"] for o in json.loads(later)["objects"] if o["type"] == "indicator"] == [f"false_data from {tsc['ip']}"]
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "export", "stix", "--db", root / "central.db", "--since", "yesterday")
    assert exit_.value.code == 2 and "neither epoch seconds nor an ISO 8601 time" in capsys.readouterr().err


def test_without_the_extra_the_hub_runs_and_graph_commands_say_what_to_install(hub):
    root, _, _ = hub
    block = ("import sys\nfor m in ('rdflib', 'pyshacl', 'stix2', 'stix2validator'):\n    sys.modules[m] = None\n"
             "from atlas.central.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    ok = subprocess.run([sys.executable, "-c", block, "incidents", "--db", str(root / "central.db")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "h3" in ok.stdout
    for argv in (["graph", "check", "--city", str(root / "city.json")], ["export", "stix", "--db", str(root / "central.db")]):
        r = subprocess.run([sys.executable, "-c", block, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.startswith("atlas-central: the city graph needs the ontology extra (missing: ")
        assert "pip install 'atlas-iot[ontology]'" in r.stderr and r.stderr.count("\n") == 1


def test_hub_check_runs_the_graph_check_and_fails_on_an_error(tmp_path, capsys):
    from atlas.central.pki import init_pki

    init_pki(tmp_path / "pki")
    (tmp_path / "central.toml").write_text('[hub]\ndatabase = "central.db"\npki = "pki"\ninventory = "inventory.toml"\n')
    inv = tmp_path / "inventory.toml"
    inv.write_text('[[device]]\naddress = "10.0.0.5"\nclient_id = "ecb-1"\nprofile = "emergency_call_box"\n')
    code, out, _ = run(capsys, "check", "--config", tmp_path / "central.toml")
    assert code == 0 and "graph check: 2 warnings" in out
    assert "service emergency_response/city needs acoustic_gunshot_sensor: depends_on.class" in out
    inv.write_text('[[device]]\naddress = "10.0.0.5"\nclient_id = "aq-1"\nprofile = "air_quality_sensor"\n'
                   'criticality = "life_safety"\n')
    code, out, err = run(capsys, "check", "--config", tmp_path / "central.toml")
    assert code == 2 and out == ""
    assert err == (f"atlas-central: {tmp_path / 'central.toml'}: hub.inventory: graph check: error: device aq-1 "
                   f"({inv}: device[0]): criticality: a life-safety device needs a fallback before it may be cut off, "
                   "and its profile gives none ([responses] fallback)\n")
