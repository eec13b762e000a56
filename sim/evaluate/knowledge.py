"""The run's knowledge for other tools, beside report.md: `city.ttl` (the hub's city graph of
the evaluated city) and `stix-bundle.json` (the agents' incidents and the correlated campaigns
as STIX 2.1, validated with stix2-validator). Needs the `ontology` extra; without it the
evaluation goes on and says what it skipped.

Responses are not in this bundle: the evaluation runs the agents on captures without a hub, so
no decision is made; `atlas-central export stix` on a hub's database carries them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from atlas.central.ontology import OntologyUnavailable, require


def write_city_knowledge(city_dir: Path, incidents: dict[str, list[Any]], out: Path,
                         say: Callable[[str], None]) -> None:
    try:
        require("rdflib", "stix2", "stix2validator")
    except OntologyUnavailable as exc:
        say(f"  city.ttl and stix-bundle.json skipped: {exc}")
        return
    import json

    from atlas.central.correlate import Topology, correlate, event_of
    from atlas.central.ontology import stix
    from atlas.central.ontology.facts import load_facts
    from atlas.central.ontology.graph import build_graph

    city_json = Path(city_dir) / "city.json"
    facts = load_facts(city=city_json)
    build_graph(facts).serialize(out / "city.ttl", format="turtle")
    flat = [(gw, inc) for gw, items in sorted(incidents.items()) for inc in items]
    hub_like = [{"id": inc.id, "kind": inc.kind, "src_ip": inc.src_ip, "dst_ip": inc.dst_ip, "device": inc.device,
                 "first_seen": inc.time, "last_seen": inc.last_seen, "packets": inc.packets, "gateways": [gw]}
                for gw, inc in flat]
    topology = Topology.from_city(json.loads(city_json.read_text()))
    campaigns = correlate([event_of(inc, topology, gw) for gw, inc in flat], topology) if flat else []
    devices = {d.client_id: {"class": d.profile, "gateway": d.gateway} for d in facts.devices if d.client_id}
    text = stix.serialize(stix.bundle(hub_like, (), campaigns, devices=devices,
                                      now=max((i["last_seen"] for i in hub_like), default=0.0)))
    errors = stix.validate(text)
    (out / "stix-bundle.json").write_text(text)
    say(f"  city.ttl ({len(facts.devices)} devices) and stix-bundle.json ({len(hub_like)} incidents, "
        f"{sum(len(c.events) > 1 for c in campaigns)} campaigns): "
        + ("valid STIX 2.1" if not errors else f"NOT valid: {errors[0]}"))
