"""Build the city graph (rdflib) from the facts: device classes, devices, gateways, brokers,
districts, critical services and their requirements, incident kinds with their ATT&CK for ICS
techniques, actions with their D3FEND countermeasures; then apply the rules (reason.py).

Terms: ATLAS's own in data/atlas.ttl (loaded into the graph, so an exported graph explains
itself), SAREF for devices, SOSA for sensors/actuators and the gateway platform, PROV for the
file each asset was read from.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import PROV, RDF, RDFS, SOSA, XSD

from atlas.central.ontology import reason, threats
from atlas.central.ontology.facts import CityFacts, DeviceFacts
from atlas.central.ontology.vocab import ATLAS, CITY, D3F, S4CITY, SAREF

DATA = Path(__file__).resolve().parent / "data"
CITY_SCOPE = "city"  # the instance name of a city-wide service


def _iri(kind: str, *parts: str) -> URIRef:
    return CITY[kind + "/" + "/".join(quote(p, safe="") for p in parts)]


def device_iri(key: str) -> URIRef:
    return _iri("device", key)


def gateway_iri(gateway_id: str) -> URIRef:
    return _iri("gateway", gateway_id)


def broker_iri(address: str) -> URIRef:
    return _iri("broker", address)


def address_iri(gateway_id: str, address: str) -> URIRef:
    return _iri("address", gateway_id or "-", address)


def credential_iri(login: str) -> URIRef:
    return _iri("credential", login)


def class_iri(name: str) -> URIRef:
    return _iri("class", name)


def service_iri(name: str, scope: str) -> URIRef:
    return _iri("service", name, scope)


def declaration_iri(name: str) -> URIRef:
    return _iri("declaration", name)


def kind_iri(kind: str) -> URIRef:
    return _iri("kind", kind)


def action_iri(action: str) -> URIRef:
    return _iri("action", action)


def technique_iri(attack_id: str) -> URIRef:
    return URIRef(f"https://attack.mitre.org/techniques/{attack_id}/")


def bind_prefixes(g: Graph) -> None:
    for prefix, ns in (("atlas", ATLAS), ("city", CITY), ("saref", SAREF), ("s4city", S4CITY), ("sosa", SOSA),
                       ("prov", PROV), ("d3f", D3F)):
        g.bind(prefix, ns)


def build_graph(facts: CityFacts, *, with_rules: bool = True) -> Graph:
    """One graph of the city; `with_rules` also adds what the rules infer (reason.RULES)."""
    g = Graph()
    bind_prefixes(g)
    g.parse(DATA / "atlas.ttl", format="turtle")
    _sources(g, facts)
    _classes(g, facts)
    _gateways(g, facts)
    keys = _devices(g, facts)
    _services(g, facts, keys)
    _threats(g)
    if with_rules:
        reason.apply(g)
    return g


def device_keys(facts: CityFacts) -> list[str]:
    """Each device's graph key: its key, with `~N` added when the same key repeats (so that a
    repeated entry stays visible to the shapes instead of merging into one node)."""
    seen: dict[str, int] = {}
    out = []
    for d in facts.devices:
        n = seen.get(d.key, 0) + 1
        seen[d.key] = n
        out.append(d.key if n == 1 else f"{d.key}~{n}")
    return out


def _sources(g: Graph, facts: CityFacts) -> None:
    for role, path in facts.sources.items():
        node = _iri("source", role)
        g.add((node, RDF.type, ATLAS.Source))
        g.add((node, RDFS.label, Literal(f"{role}: {path}")))


def _classes(g: Graph, facts: CityFacts) -> None:
    source = _iri("source", "profiles")
    for name, p in facts.profiles.items():
        node = class_iri(name)
        g.add((node, RDF.type, ATLAS.DeviceClass))
        g.add((node, RDFS.label, Literal(name)))
        g.add((node, ATLAS.key, Literal(name)))
        if p.description:
            g.add((node, RDFS.comment, Literal(p.description)))
        g.add((node, ATLAS.inDomain, ATLAS[p.domain]))
        g.add((node, ATLAS.criticality, ATLAS[p.criticality]))
        for a in p.responses.acceptable:
            g.add((node, ATLAS.acceptsAction, action_iri(a)))
        for a in p.responses.needs_fallback:
            g.add((node, ATLAS.actionNeedsFallback, action_iri(a)))
        if p.responses.fallback:
            g.add((node, ATLAS.fallback, Literal(p.responses.fallback)))
        g.add((node, ATLAS.quarantinable, Literal("quarantine" in p.responses.acceptable)))
        g.add((node, PROV.wasDerivedFrom, source))


def _gateways(g: Graph, facts: CityFacts) -> None:
    for gw in facts.gateways:
        node = gateway_iri(gw.id)
        g.add((node, RDF.type, ATLAS.Gateway))
        g.add((node, ATLAS.key, Literal(gw.id)))
        if gw.district:
            district = _iri("district", gw.district)
            g.add((node, ATLAS.inDistrict, district))
            g.add((district, RDF.type, ATLAS.District))
            g.add((district, ATLAS.key, Literal(gw.district)))
        if gw.domain:
            g.add((node, ATLAS.inDomain, ATLAS[gw.domain]))
        if gw.subnet:
            g.add((node, ATLAS.subnet, Literal(gw.subnet)))
        if gw.broker:
            broker = broker_iri(gw.broker)
            g.add((node, ATLAS.hasBroker, broker))
            g.add((broker, RDF.type, ATLAS.Broker))
            g.add((broker, ATLAS.key, Literal(gw.broker)))


def _devices(g: Graph, facts: CityFacts) -> list[str]:
    keys = device_keys(facts)
    source = _iri("source", "inventory" if "inventory" in facts.sources else "city")
    triples = []
    # About ten triples a device: the 5,000-device city must build in seconds. What follows
    # from the class (domain, responses) is read through atlas:ofClass; keys are in the IRIs.
    for key, d in zip(keys, facts.devices):
        node = device_iri(key)
        profile = facts.profiles.get(d.profile)
        criticality = d.criticality or (profile.criticality if profile else "")
        # saref:Device stated, not inferred: a query in SAREF's terms finds devices without a reasoner
        triples += [(node, RDF.type, ATLAS.Device), (node, RDF.type, SAREF.Device),
                    (node, ATLAS.ofClass, class_iri(d.profile)), (node, PROV.wasDerivedFrom, source)]
        if profile is not None:
            triples.append((node, RDF.type, _sosa_type(profile)))
        if criticality:
            triples.append((node, ATLAS.criticality, ATLAS[criticality]))
        if d.gateway:
            triples.append((node, ATLAS.behindGateway, gateway_iri(d.gateway)))
        if d.address:
            addr = address_iri(d.gateway, d.address)
            triples += [(node, ATLAS.hasAddress, addr), (addr, ATLAS.ip, Literal(d.address))]
        if d.client_id:
            triples.append((node, ATLAS.clientId, Literal(d.client_id)))
        if d.login:
            triples.append((node, ATLAS.usesCredential, credential_iri(d.login)))
    g.addN((s, p, o, g) for s, p, o in triples)
    return keys


def _sosa_type(profile) -> URIRef:
    """A device that takes commands (subscribes) acts; one that only publishes senses."""
    return SOSA.Actuator if any(t.direction == "subscribe" for t in profile.mqtt.topics) else SOSA.Sensor


def service_scopes(facts: CityFacts, service: str) -> list[str]:
    """The instances of a service: for scope "district", one per district that has a device of
    a class it depends on; for scope "city" (or when no district is known), one city-wide if
    any such device exists. A city without traffic signals has no traffic control to lose."""
    spec = facts.services[service]
    classes = {d.name for d in spec.of_kind("class")}
    if not classes:  # only explicit dependencies: the declaration itself says it exists
        districts = sorted({gw.district for gw in facts.gateways if gw.district})
        return districts if spec.scope == "district" and districts else [CITY_SCOPE]
    district_of = {gw.id: gw.district for gw in facts.gateways}
    fed = [district_of.get(d.gateway, "") for d in facts.devices if d.profile in classes]
    if not fed:
        return []
    districts = sorted(set(fed) - {""})
    return districts if spec.scope == "district" and districts else [CITY_SCOPE]


def _services(g: Graph, facts: CityFacts, keys: list[str]) -> None:
    district_of = {gw.id: gw.district for gw in facts.gateways}
    by_class: dict[tuple[str, str], list[str]] = {}  # (class, district) -> device keys
    for key, d in zip(keys, facts.devices):
        by_class.setdefault((d.profile, district_of.get(d.gateway, "")), []).append(key)
        by_class.setdefault((d.profile, CITY_SCOPE), []).append(key)
    source = _iri("source", "services")
    triples = []
    for name, s in facts.services.items():
        decl = declaration_iri(name)
        triples += [(decl, RDF.type, ATLAS.ServiceDeclaration), (decl, RDFS.label, Literal(s.label)),
                    (decl, ATLAS.key, Literal(name)), (decl, ATLAS.scope, Literal(s.scope)),
                    (decl, PROV.wasDerivedFrom, source)]
        for scope in service_scopes(facts, name):
            node = service_iri(name, scope)
            triples += [(node, RDF.type, ATLAS.CriticalService), (node, ATLAS.instanceOf, decl),
                        (node, ATLAS.key, Literal(f"{name}/{scope}")),
                        (node, RDFS.label, Literal(s.label if scope == CITY_SCOPE else f"{s.label} ({scope})")),
                        (node, ATLAS.inDomain, ATLAS[s.domain]), (node, ATLAS.criticality, ATLAS[s.criticality]),
                        (node, ATLAS.deadline, _decimal(s.deadline_s))]
            if scope != CITY_SCOPE:
                triples.append((node, ATLAS.inDistrict, _iri("district", scope)))
            for dep in s.depends_on:
                triples += _dependency(node, dep, scope, facts, by_class)
    g.addN((s, p, o, g) for s, p, o in triples)


def _dependency(node: URIRef, dep, scope: str, facts: CityFacts, by_class) -> list[tuple]:
    if dep.kind == "class":
        members = by_class.get((dep.name, scope), [])
        req = BNode()
        out = [(node, ATLAS.requires, req), (req, RDF.type, ATLAS.ClassRequirement),
               (req, ATLAS.deviceClass, class_iri(dep.name)),
               (req, ATLAS.minUp, _decimal(dep.min_up)),
               (req, ATLAS.members, Literal(len(members)))]
        out += [(req, ATLAS.hasMember, device_iri(k)) for k in members]
        return out
    if dep.kind == "service":
        scopes = service_scopes(facts, dep.name)
        # A district's instance depends on the same district's instance, else on the city's.
        target = scope if scope in scopes else scopes[0] if len(scopes) == 1 else None
        targets = [target] if target is not None else scopes  # [] when the city has no such service
        return [(node, ATLAS.dependsOnService, service_iri(dep.name, t)) for t in targets]
    if dep.kind == "device":
        # The device is named as the inventory names it (client id or address); the shapes
        # report a name that matches no device.
        return [(node, ATLAS.dependsOnDevice, _device_by_name(facts, dep.name))]
    if dep.kind == "gateway":
        return [(node, ATLAS.dependsOnGateway, gateway_iri(dep.name))]
    return [(node, ATLAS.dependsOnBroker, broker_iri(dep.name))]


def _decimal(x: float) -> Literal:
    return Literal(Decimal(repr(x)), datatype=XSD.decimal)


def _device_by_name(facts: CityFacts, name: str) -> URIRef:
    for key, d in zip(device_keys(facts), facts.devices):
        if name in (d.client_id, d.address, key):
            return device_iri(key)
    return device_iri(name)


def _threats(g: Graph) -> None:
    mapping = threats.load_mappings()
    for kind, m in mapping.kinds.items():
        node = kind_iri(kind)
        g.add((node, RDF.type, ATLAS.IncidentKind))
        g.add((node, ATLAS.key, Literal(kind)))
        g.add((node, RDFS.comment, Literal(m.why)))
        for t in m.techniques:
            tech = technique_iri(t.attack_id)
            g.add((node, ATLAS.technique, tech))
            g.add((tech, ATLAS.attackId, Literal(t.attack_id)))
            g.add((tech, RDFS.label, Literal(t.name)))
    for action, m in mapping.actions.items():
        node = action_iri(action)
        g.add((node, RDF.type, ATLAS.ResponseAction))
        g.add((node, ATLAS.key, Literal(action)))
        g.add((node, RDFS.comment, Literal(m.why)))
        for c in m.countermeasures:
            g.add((node, ATLAS.countermeasure, D3F[c.name]))
            g.add((D3F[c.name], RDFS.label, Literal(c.label)))
            g.add((D3F[c.name], ATLAS.d3fendId, Literal(c.d3fend_id)))


def device_facts_by_key(facts: CityFacts) -> dict[str, DeviceFacts]:
    return dict(zip(device_keys(facts), facts.devices))
