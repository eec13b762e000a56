"""Every incident kind has an ATT&CK for ICS technique and every action a D3FEND
countermeasure; the shipped subsets hold exactly what the mappings name, with their licences."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from atlas.central.ontology import threats
from atlas.link.incidents import KINDS
from atlas.link.rules import ACTIONS

DATA = threats.DATA
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_every_incident_kind_has_an_attack_for_ics_technique():
    m = threats.load_mappings()
    missing = [k for k in KINDS if not threats.techniques_of(k)]
    assert not missing, f"incident kinds without an ATT&CK for ICS technique in mappings.toml: {missing}"
    assert set(m.kinds) == set(KINDS), f"mappings.toml names kinds that do not exist: {set(m.kinds) - set(KINDS)}"
    for k in KINDS:
        assert all(t.attack_id.startswith("T0") and t.stix_id.startswith("attack-pattern--") for t in threats.techniques_of(k))
        assert m.kinds[k].why
    assert [t.name for t in threats.techniques_of("mqtt_flood")] == ["Denial of Service"]
    assert [t.attack_id for t in threats.techniques_of("port_scan")] == ["T0846"]


def test_every_action_has_a_d3fend_countermeasure():
    m = threats.load_mappings()
    missing = [a for a in ACTIONS if not threats.countermeasures_of(a)]
    assert not missing, f"actions without a D3FEND countermeasure in mappings.toml: {missing}"
    assert set(m.actions) == set(ACTIONS)
    for a in ACTIONS:
        assert all(c.d3fend_id.startswith("D3-") and c.label and c.definition for c in threats.countermeasures_of(a))
    assert [c.d3fend_id for c in threats.countermeasures_of("quarantine")] == ["D3-NI"]


def test_subsets_ship_with_licences_and_only_what_is_named():
    bundle = threats.attack_bundle()
    patterns = [o for o in bundle["objects"] if o["type"] == "attack-pattern"]
    named = {t.attack_id for k in threats.load_mappings().kinds.values() for t in k.techniques}
    assert {next(r["external_id"] for r in o["external_references"] if r["source_name"] == "mitre-attack")
            for o in patterns} == named
    assert "The MITRE Corporation" in (DATA / "LICENSE-attack-ics.txt").read_text()
    assert "MIT License" in (DATA / "LICENSE-d3fend.md").read_text()
    assert "7ad8a86f41edc91dd37de0487b0c2f44ae3a3af7" in (DATA / "SOURCES.md").read_text()


@pytest.mark.skipif(not (SHARED / "attack-ics").is_dir(), reason="../shared/data/attack-ics is not here (a fresh clone)")
def test_the_script_regenerates_the_shipped_subsets(tmp_path, monkeypatch):
    pytest.importorskip("rdflib", reason="the ontology extra")
    sys.path.insert(0, str(DATA))
    try:
        import make_subsets
    finally:
        sys.path.remove(str(DATA))
    techniques, countermeasures = make_subsets.wanted()
    assert json.loads(json.dumps(make_subsets.attack_subset(SHARED / "attack-ics", techniques))) == threats.attack_bundle()
    turtle, table = make_subsets.d3fend_subset(SHARED / "d3fend", countermeasures)
    assert table == json.loads((DATA / "d3fend_subset.json").read_text())
    assert turtle == (DATA / "d3fend_subset.ttl").read_text()
