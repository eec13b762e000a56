"""What follows from the city's facts: explicit rules applied once after a build.

Each rule reads triples and adds triples, written as `conclusion <- premises`. They are plain
Python over rdflib's indexes, not SPARQL updates and not a full OWL-RL closure: on the
5,000-device city rdflib's SPARQL took 9 s for these five rules and OWL-RL adds every rdfs/owl
entailment the hub never reads; these take well under a second. They run in order (later rules
read what earlier ones added).
"""
from __future__ import annotations

from collections.abc import Callable

from rdflib import Graph
from rdflib.namespace import RDF

from atlas.central.ontology.vocab import ATLAS

DEPENDENCY_KINDS = (ATLAS.dependsOnService, ATLAS.dependsOnDevice, ATLAS.dependsOnGateway, ATLAS.dependsOnBroker)


def device_uses_gateway_broker(g: Graph) -> list[tuple]:
    """?d usesBroker ?b <- ?d behindGateway ?gw, ?gw hasBroker ?b.
    A device publishes to its gateway's broker: cutting the broker cuts the device."""
    broker = dict(g.subject_objects(ATLAS.hasBroker))
    return [(d, ATLAS.usesBroker, broker[gw]) for d, gw in g.subject_objects(ATLAS.behindGateway) if gw in broker]


def shared_credential_links_devices(g: Graph) -> list[tuple]:
    """?a sharesCredentialWith ?b <- ?a usesCredential ?c, ?b usesCredential ?c, ?a != ?b.
    One compromise or one revocation of the credential touches both."""
    users: dict = {}
    for d, c in g.subject_objects(ATLAS.usesCredential):
        users.setdefault(c, []).append(d)
    return [(a, ATLAS.sharesCredentialWith, b) for devs in users.values() if len(devs) > 1
            for a in devs for b in devs if a != b]


def dependency_kinds_are_dependencies(g: Graph) -> list[tuple]:
    """?s dependsOn ?x <- ?s dependsOnService|dependsOnDevice|dependsOnGateway|dependsOnBroker ?x
    (their rdfs:subPropertyOf, without the rest of RDFS);
    ?s dependsOn ?d <- ?s requires ?r, ?r hasMember ?d (a class requirement's devices)."""
    out = [(s, ATLAS.dependsOn, x) for p in DEPENDENCY_KINDS for s, x in g.subject_objects(p)]
    for s, r in g.subject_objects(ATLAS.requires):
        out += [(s, ATLAS.dependsOn, d) for d in g.objects(r, ATLAS.hasMember)]
    return out


def dependencies_are_transitive(g: Graph) -> list[tuple]:
    """?s dependsOn ?x <- ?s dependsOnService+ ?t, ?t dependsOn ?x.
    A service that needs another service needs everything that one needs."""
    direct: dict = {}
    for s, t in g.subject_objects(ATLAS.dependsOnService):
        direct.setdefault(s, set()).add(t)
    out = []
    for s in direct:
        seen, todo = set(), list(direct[s])
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            todo += direct.get(t, ())
        for t in seen:
            out += [(s, ATLAS.dependsOn, x) for x in g.objects(t, ATLAS.dependsOn) if x != s]
    return out


def devices_feed_services(g: Graph) -> list[tuple]:
    """?d feeds ?s <- ?s dependsOn ?d, ?d a Device (the same fact read from the device's side)."""
    devices = set(g.subjects(RDF.type, ATLAS.Device))
    return [(d, ATLAS.feeds, s) for s, d in g.subject_objects(ATLAS.dependsOn) if d in devices]


RULES: tuple[Callable[[Graph], list[tuple]], ...] = (
    device_uses_gateway_broker,
    shared_credential_links_devices,
    dependency_kinds_are_dependencies,
    dependencies_are_transitive,
    devices_feed_services,
)


def apply(g: Graph) -> None:
    for rule in RULES:
        g.addN((s, p, o, g) for s, p, o in rule(g))
