"""The one query interface to the city graph, for the policy, the correlator and the operator.

    q = CityQuery(graph, version)
    q.blast_radius("quarantine", "10.1.1.7", gateway="gw-d01-tra")   # what a response costs
    q.relations("tsc-d01-0001", "ecb-d01-0003")                       # how two assets relate
    q.incident_relations(incident_a, incident_b)                      # the correlator's link evidence
    q.explain(incident)                                              # in plain words

Nobody else writes SPARQL against the graph: this module reads it once into plain indexes
(devices, their gateway, broker, credential and services; each service's requirements and
dependencies) and answers from those, so `blast_radius` costs microseconds once cached.
A CityQuery belongs to one version of the inputs (CityFacts.version); build a new one when the
inventory changes (`query_for` keeps the latest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import unquote

from rdflib import Graph
from rdflib.namespace import RDF, RDFS

from atlas.central.ontology import threats
from atlas.central.ontology.vocab import ATLAS, CITY
from atlas.link.inventory import normal_address
from atlas.link.rules import ACTIONS

# Weight of a service's criticality in the cost of an action: one failed life-safety service
# outweighs any number of degraded ordinary ones in practice.
CRITICALITY_WEIGHT = {"life_safety": 100.0, "essential": 10.0, "ordinary": 1.0}
# Which actions take the targeted devices off the service: quarantine drops all their traffic,
# revoke_mqtt their MQTT session; filter and rate_limit leave their reports flowing.
CUTS_OFF = {"quarantine": True, "revoke_mqtt": True, "filter": False, "rate_limit": False}
assert set(CUTS_OFF) == set(ACTIONS)
RELATIONS = ("same_device", "same_gateway", "same_broker", "same_credential", "same_service", "upstream", "downstream")


class UnknownAsset(ValueError):
    """A target or asset the graph does not know; the message names it."""


@dataclass(frozen=True)
class ServiceImpact:
    service: str  # "traffic_control/d01"
    label: str
    criticality: str
    deadline_s: float
    status: str  # "failed": below what it needs | "degraded": lost some, still enough
    lost: int  # devices it depends on that the action takes down
    depends_on: int  # devices it depends on
    because: tuple[str, ...]  # "traffic_signal_controller: 11 of 12 up, 12 needed", "needs traffic_control/d01"

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__ | {"because": list(self.because)}


@dataclass(frozen=True)
class BlastRadius:
    action: str
    target: str
    devices_down: tuple[str, ...]  # device keys the action takes off their services
    devices_touched: tuple[str, ...]  # device keys it applies to at all
    services: tuple[ServiceImpact, ...]  # worst first
    cost: float  # sum over services of weight(criticality) x (1 if failed else share lost)

    @property
    def failed(self) -> tuple[ServiceImpact, ...]:
        return tuple(s for s in self.services if s.status == "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "devices_down": list(self.devices_down),
                "devices_touched": list(self.devices_touched), "cost": self.cost,
                "services": [s.to_dict() for s in self.services]}


@dataclass(frozen=True)
class Relation:
    kind: str  # one of RELATIONS
    detail: str
    between: str = ""  # for incidents: whose assets, "attacker/target" (the first's, the second's)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail, "between": self.between}


@dataclass
class _Device:
    key: str
    cls: str = ""
    criticality: str = ""
    gateway: str = ""
    broker: str = ""
    address: str = ""
    credential: str = ""
    feeds: set[str] = field(default_factory=set)  # service keys, directly or transitively
    feeds_directly: set[str] = field(default_factory=set)  # as a member or a named dependency


@dataclass
class _Service:
    key: str
    label: str
    criticality: str
    deadline_s: float
    requirements: list[tuple[str, float, frozenset[str]]] = field(default_factory=list)  # class, min_up, members
    devices: set[str] = field(default_factory=set)  # explicit device dependencies
    gateways: set[str] = field(default_factory=set)
    brokers: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)  # direct service dependencies


def key_of(node: Any) -> str:
    """An asset's key from its IRI (city:device/<key>, city:service/<name>/<scope>, ...)."""
    text = str(node)
    base = str(CITY)
    if not text.startswith(base):
        return text
    return "/".join(unquote(p) for p in text[len(base):].split("/")[1:])


def _tail(node: Any) -> str:
    return str(node).rsplit("#", 1)[-1]


class CityQuery:
    def __init__(self, graph: Graph, version: str = ""):
        self.version = version
        self.graph = graph
        self.devices: dict[str, _Device] = {}
        self.services: dict[str, _Service] = {}
        self._by_client: dict[str, str] = {}
        self._by_address: dict[str, list[str]] = {}
        self._by_gw_address: dict[tuple[str, str], str] = {}
        self._by_gateway: dict[str, list[str]] = {}
        self._by_broker: dict[str, list[str]] = {}
        self._by_credential: dict[str, list[str]] = {}
        self._cache: dict[tuple[str, str, str], BlastRadius] = {}
        self._index_devices()
        self._index_services()
        self._order = self._topological()

    # -- reading the graph once ------------------------------------------------------------
    def _index_devices(self) -> None:
        g = self.graph
        for node in g.subjects(RDF.type, ATLAS.Device):
            self.devices[key_of(node)] = _Device(key_of(node))
        for prop, attr in ((ATLAS.ofClass, "cls"), (ATLAS.behindGateway, "gateway"), (ATLAS.usesBroker, "broker"),
                           (ATLAS.usesCredential, "credential")):
            for s, o in g.subject_objects(prop):
                d = self.devices.get(key_of(s))
                if d is not None:
                    setattr(d, attr, key_of(o))
        for s, o in g.subject_objects(ATLAS.criticality):
            d = self.devices.get(key_of(s))
            if d is not None:
                d.criticality = _tail(o)
        for s, addr in g.subject_objects(ATLAS.hasAddress):
            d = self.devices.get(key_of(s))
            if d is not None:
                d.address = str(g.value(addr, ATLAS.ip))
        for s, o in g.subject_objects(ATLAS.feeds):
            self.devices[key_of(s)].feeds.add(key_of(o))
        for s, cid in g.subject_objects(ATLAS.clientId):
            self._by_client[str(cid)] = key_of(s)
        for d in self.devices.values():
            if d.address:
                self._by_address.setdefault(d.address, []).append(d.key)
                self._by_gw_address[(d.gateway, d.address)] = d.key
            for index, value in ((self._by_gateway, d.gateway), (self._by_broker, d.broker),
                                 (self._by_credential, d.credential)):
                if value:
                    index.setdefault(value, []).append(d.key)

    def _index_services(self) -> None:
        g = self.graph
        for node in g.subjects(RDF.type, ATLAS.CriticalService):
            s = _Service(key_of(node), str(g.value(node, RDFS.label) or key_of(node)),
                         _tail(g.value(node, ATLAS.criticality) or ""), float(g.value(node, ATLAS.deadline) or 0))
            for req in g.objects(node, ATLAS.requires):
                members = frozenset(key_of(m) for m in g.objects(req, ATLAS.hasMember))
                s.requirements.append((key_of(g.value(req, ATLAS.deviceClass)), float(g.value(req, ATLAS.minUp)), members))
            s.requirements.sort()
            for prop, into in ((ATLAS.dependsOnDevice, s.devices), (ATLAS.dependsOnGateway, s.gateways),
                               (ATLAS.dependsOnBroker, s.brokers), (ATLAS.dependsOnService, s.services)):
                into.update(key_of(o) for o in g.objects(node, prop))
            self.services[s.key] = s
            for _cls, _min_up, members in s.requirements:
                for k in members | s.devices:
                    if k in self.devices:
                        self.devices[k].feeds_directly.add(s.key)
            for k in s.devices:
                if k in self.devices:
                    self.devices[k].feeds_directly.add(s.key)

    def _topological(self) -> list[str]:
        """Services with their dependencies first (the declarations forbid cycles)."""
        order, done = [], set()

        def visit(k: str) -> None:
            if k in done:
                return
            done.add(k)
            for dep in sorted(self.services[k].services):
                if dep in self.services:
                    visit(dep)
            order.append(k)

        for k in sorted(self.services):
            visit(k)
        return order

    # -- resolving names ---------------------------------------------------------------------
    def devices_of(self, asset: str, gateway: str = "") -> list[str]:
        """The devices an asset name stands for: a device (key, client id or address), every
        device behind a gateway, using a broker or an MQTT credential. [] if unknown."""
        if asset in self.devices:
            return [asset]
        if asset in self._by_client:
            return [self._by_client[asset]]
        address = normal_address(asset)
        if address is not None:
            if address in self._by_broker:
                return list(self._by_broker[address])
            if gateway and (gateway, address) in self._by_gw_address:
                return [self._by_gw_address[(gateway, address)]]
            # Without a gateway a private address may repeat: count every device that has it
            # (a cost estimate errs on the side of more loss).
            return list(self._by_address.get(address, []))
        if asset in self._by_gateway:
            return list(self._by_gateway[asset])
        if asset in self._by_credential:
            return list(self._by_credential[asset])
        return []

    # -- the policy's question ---------------------------------------------------------------
    def blast_radius(self, action: str, target: str, gateway: str = "") -> BlastRadius:
        """What `action` on `target` (a device, address, broker, gateway, or the MQTT user
        name for revoke_mqtt) costs the critical services. Raises UnknownAsset, ValueError."""
        key = (action, target, gateway)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._blast(action, target, gateway)
        return hit

    def _blast(self, action: str, target: str, gateway: str) -> BlastRadius:
        if action not in CUTS_OFF:
            raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
        touched = self.devices_of(target, gateway)
        if action == "revoke_mqtt":
            # Revoking a user name cuts off every device that logs in with it.
            creds = {self.devices[k].credential for k in touched if self.devices[k].credential}
            touched = sorted({k for c in creds for k in self._by_credential.get(c, [])})
        if not touched and target not in self._by_gateway and normal_address(target) not in self._by_broker:
            raise UnknownAsset(f"target: {target!r} is not a device, address, gateway, broker or MQTT user of the city graph")
        down = set(touched) if CUTS_OFF[action] else set()
        down_gateways = {target} if CUTS_OFF[action] and target in self._by_gateway else set()
        down_brokers = {normal_address(target)} if action == "quarantine" and normal_address(target) in self._by_broker else set()
        impacts = self._impacts(down, down_gateways, down_brokers)
        cost = sum(CRITICALITY_WEIGHT.get(i.criticality, 1.0) * (1.0 if i.status == "failed" else i.lost / max(i.depends_on, 1))
                   for i in impacts.values())
        order = {"failed": 0, "degraded": 1}
        services = tuple(sorted(impacts.values(), key=lambda i: (order[i.status], -CRITICALITY_WEIGHT.get(i.criticality, 1), i.service)))
        return BlastRadius(action, target, tuple(sorted(down)), tuple(sorted(touched)), services, round(cost, 6))

    def _impacts(self, down: set[str], down_gateways: set[str], down_brokers: set[str]) -> dict[str, ServiceImpact]:
        out: dict[str, ServiceImpact] = {}
        if not (down or down_gateways or down_brokers):
            return out
        for k in self._order:
            s = self.services[k]
            failed, lost, total, because = False, 0, 0, []
            for cls, min_up, members in s.requirements:
                gone = len(members & down)
                total += len(members)
                lost += gone
                if gone:
                    up, needed = len(members) - gone, math.ceil(min_up * len(members) - 1e-9)
                    failed |= up < needed
                    because.append(f"{cls}: {up} of {len(members)} up, {needed} needed")
            for kind, needed_set, gone_set in (("device", s.devices, down), ("gateway", s.gateways, down_gateways),
                                               ("broker", s.brokers, down_brokers)):
                total += len(needed_set) if kind == "device" else 0
                for name in sorted(needed_set & gone_set):
                    failed = True
                    lost += kind == "device"
                    because.append(f"needs {kind} {name}")
            for dep in sorted(s.services):
                if dep in out:
                    failed |= out[dep].status == "failed"
                    because.append(f"needs {dep} ({out[dep].status})")
            if because:
                out[k] = ServiceImpact(k, s.label, s.criticality, s.deadline_s, "failed" if failed else "degraded",
                                       lost, total, tuple(because))
        return out

    # -- the correlator's question -----------------------------------------------------------
    def relations(self, asset_a: str, asset_b: str, gateway_a: str = "", gateway_b: str = "") -> list[Relation]:
        """How two assets (devices, addresses, gateways, ...) are related in the city: as link
        evidence between two incidents and as features of the correlation model."""
        a_devices, b_devices = self.devices_of(asset_a, gateway_a), self.devices_of(asset_b, gateway_b)
        out: list[Relation] = []
        for a in a_devices:
            for b in b_devices:
                out += self._pair(self.devices[a], self.devices[b])
        return sorted(set(out), key=lambda r: (RELATIONS.index(r.kind), r.detail))

    def incident_relations(self, first: Any, second: Any) -> list[Relation]:
        """How two incidents' assets (each one's attacker and target, HubIncident or agent
        Incident or their dicts) are related: the correlator's link evidence and features."""
        out: list[Relation] = []
        for role_a, name_a, gws_a in self._incident_assets(first):
            for role_b, name_b, gws_b in self._incident_assets(second):
                for gw_a in gws_a:
                    for gw_b in gws_b:
                        out += [Relation(r.kind, r.detail, f"{role_a}/{role_b}")
                                for r in self.relations(name_a, name_b, gw_a, gw_b)]
        return sorted(set(out), key=lambda r: (RELATIONS.index(r.kind), r.between, r.detail))

    def _incident_assets(self, incident: Any) -> list[tuple[str, str, list[str]]]:
        get = incident.get if isinstance(incident, dict) else (lambda k, d=None: getattr(incident, k, d))
        gateways = list(get("gateways", None) or ([get("gateway")] if get("gateway") else [])) or [""]
        out = []
        attacker = str(get("device") or get("src_ip") or "")
        if attacker and normal_address(attacker) not in self._by_broker:
            out.append(("attacker", attacker, gateways))
        target = str(get("dst_ip") or "")
        if target and normal_address(target) not in self._by_broker:  # a broker stands for its gateway's devices: too wide
            out.append(("target", target, gateways))
        return out

    def _pair(self, a: _Device, b: _Device) -> list[Relation]:
        if a.key == b.key:
            return [Relation("same_device", a.key)]
        out = []
        if a.gateway and a.gateway == b.gateway:
            out.append(Relation("same_gateway", a.gateway))
        if a.broker and a.broker == b.broker:
            out.append(Relation("same_broker", a.broker))
        if a.credential and a.credential == b.credential:
            out.append(Relation("same_credential", a.credential))
        # Direct feeds only: a device that feeds a service another one needs is upstream of
        # the other's devices, not a peer in that service.
        a_feeds, b_feeds = a.feeds_directly, b.feeds_directly
        out += [Relation("same_service", s) for s in sorted(a_feeds & b_feeds)]
        out += [Relation("upstream", f"{a.key} feeds {up}, which {down} needs")
                for up, down in self._needs(a_feeds, b_feeds)]
        out += [Relation("downstream", f"{b.key} feeds {up}, which {down} needs")
                for up, down in self._needs(b_feeds, a_feeds)]
        return out

    def _needs(self, ups: Iterable[str], downs: Iterable[str]) -> list[tuple[str, str]]:
        downs = list(downs)
        return [(u, d) for u in sorted(ups) for d in sorted(downs) if u in self._closure(d)]

    def _closure(self, service: str) -> set[str]:
        seen, todo = set(), list(self.services.get(service, _Service("", "", "", 0)).services)
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo += self.services[k].services if k in self.services else []
        return seen

    # -- the operator's question -------------------------------------------------------------
    def explain(self, incident: Any, actions: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """An incident (a HubIncident, or a mapping with kind, src_ip, dst_ip, device,
        gateways) in the city's terms: its assets, the services at risk, the ATT&CK for ICS
        techniques, and for each (action, target) taken or proposed its D3FEND countermeasures
        and blast radius. `explanation_text` turns it into plain words."""
        get = incident.get if isinstance(incident, dict) else (lambda k, d=None: getattr(incident, k, d))
        kind = str(get("kind", ""))
        gateways = list(get("gateways", None) or ([get("gateway")] if get("gateway") else []))
        assets = []
        for role, name in (("attacker", get("device") or get("src_ip")), ("attacker address", get("src_ip")),
                           ("target", get("dst_ip"))):
            for key in self._devices_on(str(name or ""), gateways):
                if all(a["device"] != key for a in assets):
                    d = self.devices[key]
                    assets.append({"role": role.split()[0], "device": key, "class": d.cls, "criticality": d.criticality,
                                   "gateway": d.gateway, "broker": d.broker, "services": sorted(d.feeds)})
        at_risk = sorted({s for a in assets for s in a["services"]})
        mapping = threats.load_mappings().kinds.get(kind)
        responses = []
        for action, target in actions:
            try:
                radius = self.blast_radius(action, target).to_dict()
            except (UnknownAsset, ValueError) as exc:
                radius = {"error": str(exc)}
            responses.append({"action": action, "target": target, "blast_radius": radius,
                              "countermeasures": [c.__dict__ | {"url": c.url} for c in threats.countermeasures_of(action)]})
        return {
            "incident": str(get("id", "")), "kind": kind, "gateways": gateways,
            "techniques": [t.__dict__ for t in (mapping.techniques if mapping else ())],
            "technique_why": mapping.why if mapping else "",
            "assets": assets,
            "services_at_risk": [{"service": s, "label": self.services[s].label, "criticality": self.services[s].criticality,
                                  "deadline_s": self.services[s].deadline_s} for s in at_risk if s in self.services],
            "responses": responses,
        }

    def _devices_on(self, name: str, gateways: list[str]) -> list[str]:
        if not name:
            return []
        for gw in gateways or [""]:
            found = self.devices_of(name, gw)
            # An address that is a broker stands for the broker, not for its devices.
            if found and not (normal_address(name) in self._by_broker):
                return found[:1] if gw else found
        return []


def explanation_text(e: dict[str, Any]) -> str:
    """`CityQuery.explain`'s answer in plain words, for `atlas-central graph explain`."""
    lines = [f"Incident {e['incident']}: {e['kind']} seen by {', '.join(e['gateways']) or 'no gateway'}."]
    if e["techniques"]:
        names = "; ".join(f"{t['attack_id']} {t['name']}" for t in e["techniques"])
        lines.append(f"ATT&CK for ICS: {names}. Why: {e['technique_why']}.")
    else:
        lines.append("ATT&CK for ICS: no technique mapped to this kind.")
    if not e["assets"]:
        lines.append("Assets: neither the attacker nor the target is in the city graph's inventory.")
    for a in e["assets"]:
        feeds = ", ".join(a["services"]) or "no critical service"
        lines.append(f"The {a['role']} is {a['device']}, a {a['class'] or 'device of unknown class'} "
                     f"({a['criticality'] or 'unknown criticality'}) behind {a['gateway'] or 'no known gateway'}"
                     f"{' on broker ' + a['broker'] if a['broker'] else ''}; it feeds {feeds}.")
    if e["services_at_risk"]:
        lines.append("Services at risk: " + "; ".join(
            f"{s['label']} [{s['service']}], {s['criticality'].replace('_', ' ')}, may be degraded for {s['deadline_s']:g} s"
            for s in e["services_at_risk"]) + ".")
    for r in e["responses"]:
        cms = ", ".join(f"{c['label']} ({c['d3fend_id']})" for c in r["countermeasures"]) or "none mapped"
        radius = r["blast_radius"]
        if "error" in radius:
            cost = radius["error"]
        elif radius["services"]:
            cost = "; ".join(f"{s['service']} {s['status']} ({', '.join(s['because'])})" for s in radius["services"])
        else:
            cost = "no critical service loses anything"
        lines.append(f"Response {r['action']} on {r['target']}: D3FEND {cms}. Cost: {cost}.")
    return "\n".join(lines)


_LATEST: dict[str, CityQuery] = {}


def query_for(facts: Any, graph: Graph | None = None) -> CityQuery:
    """The CityQuery of these facts' version, built once (the last version only is kept)."""
    version = facts.version
    q = _LATEST.get(version)
    if q is None:
        from atlas.central.ontology.graph import build_graph

        q = CityQuery(graph if graph is not None else build_graph(facts), version)
        _LATEST.clear()
        _LATEST[version] = q
    return q


__all__ = ["BlastRadius", "CityQuery", "Relation", "RELATIONS", "ServiceImpact", "UnknownAsset",
           "explanation_text", "key_of", "query_for"]
