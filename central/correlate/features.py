"""Features of the learned correlation engine: one incident, a campaign's history, and the
relations between the campaign's incidents and a new one.

Shared by the hub (atlas.central.correlate.attention, serving) and the trainer
(atlas.train.correlate, which builds the same tensors), so the two cannot drift apart.

A candidate (campaign, new incident) pair becomes three tensors:
- `history` [T, H]: the campaign's last T incidents, oldest first, left-padded with zeros: what
  each one was (kind, domain) and the gap since the one before; the GRU reads only this, so
  the next-stage prediction never sees the new incident;
- `relations` [T, R]: how each of those incidents relates to the new one (same source,
  pivot, same identity, same target, same place, time gap); attention scores the history by
  these;
- `incident` [N]: the new incident itself, and the campaign's size and spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from atlas.link.incidents import KINDS
from atlas.central.correlate.rules import Event, Topology

T = 8  # incidents of a campaign's history the model reads (the most recent)
KIND_VOCAB = KINDS + ("other",)
DOMAINS = ("transportation", "energy", "public_safety", "other")
RELATIONS = ("same_attacker", "pivot_victim", "pivot_network", "same_identity", "same_target",
             "same_target_network", "same_gateway", "same_domain", "same_district",
             "both_outside", "new_from_inside")
# Plain words for each relation, as `campaigns show` prints them.
RELATION_WORDS = {
    "same_attacker": "the same source address",
    "pivot_victim": "its attacker was this incident's victim",
    "pivot_network": "its attacker is behind the network this incident attacked",
    "same_identity": "the same MQTT identity",
    "same_target": "the same target device",
    "same_target_network": "a target in the same gateway's network",
    "same_gateway": "the same gateway",
    "same_domain": "the same domain",
    "same_district": "the same district",
    "both_outside": "both attackers outside the city's networks",
    "new_from_inside": "the new attacker is a device inside the city",
}
H = len(KIND_VOCAB) + len(DOMAINS) + 1
R = len(RELATIONS) + 1  # + the time gap
N = len(KIND_VOCAB) + len(DOMAINS) + 3


@dataclass(frozen=True)
class Facts:
    """What the relations of an incident need, looked up once (network lookups are the cost)."""

    event: Event
    home: str  # the gateway whose network holds its source ("" = outside the city)
    target: str  # the gateway whose network holds its target
    victims: frozenset[str]
    identities: frozenset[str]
    broker_source: bool
    broker_target: bool  # a broker is every attacker's target: the same one links nothing


def facts_of(e: Event, topology: Topology) -> Facts:
    return Facts(e, topology.network_of(e.src_ip),
                 topology.network_of(e.dst_ip) if e.dst_ip else "",
                 frozenset({e.dst_ip, *e.victims} - {""}), frozenset(e.identities),
                 e.src_ip in topology.brokers, e.dst_ip in topology.brokers)


@dataclass
class CampaignState:
    """An open campaign as the engine keeps it: its incidents in time order with their facts,
    and its history tensor (it depends on the campaign only, so it is computed as it grows)."""

    facts: list[Facts]
    history: np.ndarray  # [T, H]
    last_seen: float

    @property
    def events(self) -> list[Event]:
        return [f.event for f in self.facts]


def kind_index(kind: str) -> int:
    return KIND_VOCAB.index(kind) if kind in KIND_VOCAB else len(KIND_VOCAB) - 1


def domain_index(domain: str) -> int:
    return DOMAINS.index(domain) if domain in DOMAINS else len(DOMAINS) - 1


def _gap(seconds: float) -> float:
    """Minutes on a log scale, about 0..1 for a second to a day."""
    return math.log1p(max(seconds, 0.0) / 60.0) / 7.3


def history_of(events: list[Event]) -> np.ndarray:
    out = np.zeros((T, H), dtype=np.float32)
    recent = events[-T:]
    start = T - len(recent)
    prev = None
    for i, e in enumerate(recent):
        row = out[start + i]
        row[kind_index(e.kind)] = 1.0
        row[len(KIND_VOCAB) + domain_index(e.domain)] = 1.0
        row[-1] = _gap(e.time - prev.time) if prev is not None else 0.0
        prev = e
    return out


def new_state(events: list[Event], topology: Topology) -> CampaignState:
    return CampaignState([facts_of(e, topology) for e in events], history_of(events),
                         max(e.last_seen for e in events))


def grow(state: CampaignState, event: Event, topology: Topology) -> None:
    state.facts.append(facts_of(event, topology))
    state.history = history_of(state.events[-T:])
    state.last_seen = max(state.last_seen, event.last_seen)


def relation_values(fa: Facts, fb: Facts) -> tuple[bool, ...]:
    """How the earlier incident relates to the later one, in the order of RELATIONS."""
    a, b = fa.event, fb.event
    return (
        bool(b.src_ip) and b.src_ip == a.src_ip and not fb.broker_source,
        bool(b.src_ip) and b.src_ip in fa.victims,
        bool(fb.home) and fb.home == fa.target and fa.home != fa.target and b.src_ip != a.src_ip,
        not fa.identities.isdisjoint(fb.identities),
        bool(b.dst_ip) and b.dst_ip == a.dst_ip and not fb.broker_target,
        bool(fb.target) and fb.target == fa.target,
        a.gateway == b.gateway,
        bool(a.domain) and a.domain == b.domain,
        bool(a.district) and a.district == b.district,
        bool(a.src_ip and b.src_ip) and not fa.home and not fb.home,
        bool(fb.home),
    )


def keys_as_earlier(fa: Facts) -> set[tuple[str, str]]:
    """Index keys of an incident, under which a later one finds it when some relation other
    than a shared place (domain, district) holds; `keys_as_later` are the later one's."""
    a = fa.event
    keys = {("victim", v) for v in fa.victims} | {("identity", i) for i in fa.identities}
    keys.add(("gateway", a.gateway))
    if a.src_ip and not fa.broker_source:
        keys.add(("source", a.src_ip))
    if a.dst_ip and not fa.broker_target:
        keys.add(("target", a.dst_ip))
    if fa.target:
        keys.add(("target_network", fa.target))
        if fa.home != fa.target:
            keys.add(("attacked_network", fa.target))
    return keys


def keys_as_later(fb: Facts) -> set[tuple[str, str]]:
    b = fb.event
    keys = {("identity", i) for i in fb.identities} | {("gateway", b.gateway)}
    if b.src_ip and not fb.broker_source:
        keys |= {("source", b.src_ip), ("victim", b.src_ip)}
    if b.dst_ip and not fb.broker_target:
        keys.add(("target", b.dst_ip))
    if fb.target:
        keys.add(("target_network", fb.target))
    if fb.home:
        keys.add(("attacked_network", fb.home))
    return keys


def relations(a: Event, b: Event, topology: Topology) -> dict[str, bool]:
    """How the earlier incident `a` relates to the later `b`, by the names of RELATIONS."""
    return dict(zip(RELATIONS, relation_values(facts_of(a, topology), facts_of(b, topology))))


def pair_tensors(states: list[CampaignState], b: Event, topology: Topology, pad_to: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(history [n,T,H], relations [n,T,R], mask [n,T], incident [n,N]) for n candidates,
    zero rows appended up to `pad_to` (a fixed batch the runtime keeps allocated)."""
    n = max(len(states), pad_to)
    hist = np.zeros((n, T, H), dtype=np.float32)
    rel = np.zeros((n, T, R), dtype=np.float32)
    mask = np.zeros((n, T), dtype=np.float32)
    inc = np.zeros((n, N), dtype=np.float32)
    fb = facts_of(b, topology)
    inc[:, kind_index(b.kind)] = 1.0
    inc[:, len(KIND_VOCAB) + domain_index(b.domain)] = 1.0
    inc[:, -3] = float(bool(fb.home))
    for i, s in enumerate(states):
        hist[i] = s.history
        recent = s.facts[-T:]
        start = T - len(recent)
        mask[i, start:] = 1.0
        for j, fa in enumerate(recent):
            rel[i, start + j, :-1] = relation_values(fa, fb)
            rel[i, start + j, -1] = _gap(b.time - fa.event.last_seen)
        inc[i, -2] = min(len(s.facts), 10) / 10.0
        inc[i, -1] = len({f.event.domain for f in s.facts}) / 3.0
    return hist, rel, mask, inc
