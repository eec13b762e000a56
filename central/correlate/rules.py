"""The rule-based correlation engine: link incidents from many gateways into campaigns.

A pure module (no I/O, no clock): the live hub runs it on the incident reports of the last
window (atlas.central.correlate.live); the simulator's evaluation runs it on the agents'
incidents of a city.

Two incidents are *linked* when, in time order (the later one starts after the earlier one
started, and at most `window_s` after the earlier one's last evidence), one of these holds:

- `same_attacker`: the same source address (not a gateway's own broker);
- `pivot`: the later incident's attacker was a victim of the earlier one: its main target
  (`dst_ip`), an address in its evidence's `victims`, or, when the earlier attacker came from
  outside the target's network, any device of the network it targeted (the recon of a
  gateway's network exposes every device behind it; a device that turns attacker afterwards
  is the classic pivot);
- `same_identity`: the same MQTT identity (client id or user name) where the incidents carry
  one (`device` when it is not just the address; evidence `client_id`, `username`).

Links are hierarchical by scope: `gateway` (both incidents on one gateway), `domain` (gateways
of the same domain), `city` (across domains). `correlate(..., scope=...)` uses the links up
to that scope; campaigns are the connected groups of linked incidents, each listing its links
so an operator sees why. Per-domain isolation, the baseline the hub is compared with, is
`scope="domain"`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCOPES = ("gateway", "domain", "city")
LINK_REASONS = ("same_attacker", "pivot", "same_identity")
DEFAULT_WINDOW_S = 3600.0


@dataclass(frozen=True)
class GatewayPlace:
    """Where a gateway stands in the city (not the wire's GatewayInfo, which is its hello)."""

    id: str
    domain: str
    district: str = ""
    subnet: str = ""  # the devices' network behind the gateway
    broker: str = ""  # the gateway's own broker address


@dataclass(frozen=True)
class Event:
    """An incident as the correlator sees it."""

    id: str
    gateway: str
    domain: str
    kind: str
    src_ip: str
    time: float  # first evidence
    last_seen: float
    dst_ip: str = ""
    victims: tuple[str, ...] = ()  # addresses it attacked besides dst_ip (from evidence)
    identities: tuple[str, ...] = ()  # MQTT client ids / user names it used
    district: str = ""


@dataclass(frozen=True)
class Link:
    earlier: str  # event ids
    later: str
    reason: str  # one of LINK_REASONS
    scope: str  # one of SCOPES
    detail: str = ""


@dataclass
class Campaign:
    id: str
    events: list[Event]  # in time order
    links: list[Link]

    @property
    def gateways(self) -> list[str]:
        return sorted({e.gateway for e in self.events})

    @property
    def domains(self) -> list[str]:
        return sorted({e.domain for e in self.events})

    @property
    def attackers(self) -> list[str]:
        return sorted({e.src_ip for e in self.events})

    @property
    def start(self) -> float:
        return min(e.time for e in self.events)

    @property
    def end(self) -> float:
        return max(e.last_seen for e in self.events)

    @property
    def scope(self) -> str:
        """The widest scope of its links."""
        return max((lk.scope for lk in self.links), key=SCOPES.index, default="gateway")

    @property
    def multi_stage(self) -> bool:
        """More than one attack: not just the same attacker's incidents on one gateway."""
        return len({(e.gateway, e.src_ip) for e in self.events}) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "events": [e.id for e in self.events], "gateways": self.gateways,
                "domains": self.domains, "attackers": self.attackers, "start": self.start,
                "end": self.end, "scope": self.scope,
                "links": [{"earlier": lk.earlier, "later": lk.later, "reason": lk.reason,
                           "scope": lk.scope, "detail": lk.detail} for lk in self.links]}


class Topology:
    """Which gateway is in which domain and district, and which network is behind it."""

    def __init__(self, gateways: Iterable[GatewayPlace]):
        self.gateways = {g.id: g for g in gateways}
        self._nets = []
        for g in self.gateways.values():
            if g.subnet:
                try:
                    self._nets.append((ipaddress.ip_network(g.subnet, strict=False), g.id))
                except ValueError:
                    raise ValueError(f"gateway {g.id}: subnet {g.subnet!r} is not a network") from None
        self.brokers = {g.broker for g in self.gateways.values() if g.broker}

    @classmethod
    def from_city(cls, city: Mapping[str, Any]) -> Topology:
        """From a city.json object (atlas-sim city): its `gateways` list."""
        return cls(GatewayPlace(str(g["id"]), str(g.get("domain", "")), str(g.get("district", "")),
                               str(g.get("subnet", "")), str(g.get("broker", "")))
                   for g in city.get("gateways", []))

    def domain(self, gateway: str) -> str:
        g = self.gateways.get(gateway)
        return g.domain if g else ""

    def network_of(self, address: str) -> str:
        """The gateway whose network holds this address, "" if none (an outside host)."""
        try:
            a = ipaddress.ip_address(address)
        except ValueError:
            return ""
        for net, gw in self._nets:
            if a.version == net.version and a in net:
                return gw
        return ""


def event_of(incident: Any, topology: Topology, gateway: str = "") -> Event:
    """An agent Incident (or its dict, or a HubIncident-like object) as an Event."""
    get = incident.get if isinstance(incident, Mapping) else (lambda k, d=None: getattr(incident, k, d))
    gw = str(get("gateway") or gateway)
    evidence = get("evidence") or {}
    src = str(get("src_ip") or "")
    device = str(get("device") or "")
    ids = [device] if device and device != src else []
    for key in ("client_id", "username"):
        v = evidence.get(key) if isinstance(evidence, Mapping) else None
        if isinstance(v, str) and v:
            ids.append(v)
    victims = evidence.get("victims", []) if isinstance(evidence, Mapping) else []
    t = float(get("time") if get("time") is not None else get("first_seen") or 0.0)
    info = topology.gateways.get(gw)
    return Event(id=str(get("id") or f"{gw}/{src}/{get('kind')}/{t}"), gateway=gw,
                 domain=info.domain if info else "", kind=str(get("kind") or ""), src_ip=src,
                 time=t, last_seen=max(t, float(get("last_seen") or t)),
                 dst_ip=str(get("dst_ip") or ""), victims=tuple(str(v) for v in victims if v),
                 identities=tuple(sorted(set(ids))), district=info.district if info else "")


def scope_of(a: Event, b: Event) -> str:
    if a.gateway == b.gateway:
        return "gateway"
    if a.domain and a.domain == b.domain:
        return "domain"
    return "city"


def find_links(events: list[Event], topology: Topology, window_s: float = DEFAULT_WINDOW_S) -> list[Link]:
    """Every link between the events (each pair and reason once, earlier -> later)."""
    order = sorted(events, key=lambda e: (e.time, e.id))
    by_src: dict[str, list[Event]] = {}
    by_identity: dict[str, list[Event]] = {}
    # Victim address -> earlier events that attacked it; network (gateway id) -> earlier events
    # from outside it that targeted it.
    by_victim: dict[str, list[Event]] = {}
    by_network: dict[str, list[Event]] = {}
    links: dict[tuple[str, str, str], Link] = {}

    def add(a: Event, b: Event, reason: str, detail: str) -> None:
        if a.id == b.id or b.time < a.time or b.time - a.last_seen > window_s:
            return
        links.setdefault((a.id, b.id, reason), Link(a.id, b.id, reason, scope_of(a, b), detail))

    for b in order:
        if b.src_ip and b.src_ip not in topology.brokers:
            for a in by_src.get(b.src_ip, ()):
                add(a, b, "same_attacker", b.src_ip)
            for a in by_victim.get(b.src_ip, ()):
                add(a, b, "pivot", f"{b.src_ip} was attacked by {a.src_ip}")
            home = topology.network_of(b.src_ip)
            for a in by_network.get(home, ()) if home else ():
                if a.src_ip != b.src_ip:
                    add(a, b, "pivot", f"{b.src_ip} is behind {home}, whose network {a.src_ip} attacked")
        for ident in b.identities:
            for a in by_identity.get(ident, ()):
                add(a, b, "same_identity", ident)
        # index b for the events after it
        if b.src_ip:
            by_src.setdefault(b.src_ip, []).append(b)
        for v in {b.dst_ip, *b.victims} - {"", b.src_ip}:
            by_victim.setdefault(v, []).append(b)
        target = topology.network_of(b.dst_ip) if b.dst_ip else ""
        if target and topology.network_of(b.src_ip) != target:
            by_network.setdefault(target, []).append(b)
        for ident in b.identities:
            by_identity.setdefault(ident, []).append(b)
    return sorted(links.values(), key=lambda lk: (lk.earlier, lk.later, lk.reason))


def correlate(events: Iterable[Event], topology: Topology, *, scope: str = "city",
              window_s: float = DEFAULT_WINDOW_S) -> list[Campaign]:
    """Campaigns: groups of events joined by links of at most `scope` (gateway < domain < city).
    Every event is in exactly one campaign (alone if nothing links it)."""
    if scope not in SCOPES:
        raise ValueError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
    if not window_s > 0:
        raise ValueError(f"window_s: must be > 0 seconds, got {window_s!r}")
    events = list(events)
    ids = [e.id for e in events]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"event id {dup!r} is not unique")
    allowed = SCOPES[: SCOPES.index(scope) + 1]
    links = [lk for lk in find_links(events, topology, window_s) if lk.scope in allowed]
    parent = {e.id: e.id for e in events}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for lk in links:
        ra, rb = root(lk.earlier), root(lk.later)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[Event]] = {}
    for e in events:
        groups.setdefault(root(e.id), []).append(e)
    group_links: dict[str, list[Link]] = {}
    for lk in links:
        group_links.setdefault(root(lk.earlier), []).append(lk)
    out = []
    for r, members in groups.items():
        members.sort(key=lambda e: (e.time, e.id))
        out.append(Campaign("", members, group_links.get(r, [])))
    out.sort(key=lambda c: (c.start, c.events[0].id))
    for i, c in enumerate(out, 1):
        c.id = f"campaign-{i}"
    return out


@dataclass
class Hierarchy:
    """Campaigns seen at each level: per gateway, per domain, city-wide."""

    gateway: dict[str, list[Campaign]] = field(default_factory=dict)
    domain: dict[str, list[Campaign]] = field(default_factory=dict)
    city: list[Campaign] = field(default_factory=list)


def hierarchy(events: Iterable[Event], topology: Topology, window_s: float = DEFAULT_WINDOW_S) -> Hierarchy:
    """Correlate per gateway, then per domain, then over the city (what each level of the hub
    would see with the incidents of its level only)."""
    events = list(events)
    out = Hierarchy()
    for gw in sorted({e.gateway for e in events}):
        out.gateway[gw] = correlate([e for e in events if e.gateway == gw], topology, scope="gateway", window_s=window_s)
    for dom in sorted({e.domain for e in events}):
        out.domain[dom] = correlate([e for e in events if e.domain == dom], topology, scope="domain", window_s=window_s)
    out.city = correlate(events, topology, scope="city", window_s=window_s)
    return out
