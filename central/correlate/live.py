"""The correlator at the live hub: an event-stream subscriber, never under the ingest lock.

On each new gateway report (incident opened, or another gateway reporting a known incident)
it reads the reports of the engine's window from the store, runs the engine, and stores the
campaign the new report's incident belongs to (two hub incidents or more; one alone is just
an incident). Campaign ids are stable: a campaign keeps its id as it grows, and when a report
joins two stored campaigns the one that began first absorbs the other (marked merged).
Campaigns are written in their own transaction, then published as campaign_opened /
campaign_updated. With the city graph ready, each link also carries what the graph relates
between the two incidents' assets (same broker, credential, service, upstream/downstream):
evidence for the operator and a learned engine, never a link by itself.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from atlas.central.correlate.registry import CorrelationEngine
from atlas.central.correlate.rules import SCOPES, Campaign, GatewayPlace, Topology, event_of
from atlas.central.outbox import Outbox, new_id
from atlas.central.events import Event
from atlas.central.store import CampaignLink, CampaignRecord, IncidentReport, Store

if TYPE_CHECKING:
    from atlas.central.ontology.knowledge import CityKnowledge

log = logging.getLogger("atlas.central.correlate")

TRIGGERS = ("incident_opened", "incident_updated")
# A committed change: the hub runs it under its lock in one transaction (with the hub clock's
# time), then publishes its outbox.
Commit = Callable[[Callable[[Outbox, float], None]], None]


def topology(store: Store, configured: Mapping[str, GatewayPlace]) -> Topology:
    """Each gateway's place: the hub's [gateways.<id>] config, else what its hello said."""
    places = dict(configured)
    for g in store.list_gateways():
        if g.id in places or not (g.domain or g.district or g.subnet):
            continue
        places[g.id] = GatewayPlace(g.id, g.domain, g.district, _network_or_empty(g.id, g.subnet))
    return Topology(places.values())


def _network_or_empty(gateway: str, subnet: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(subnet, strict=False)) if subnet else ""
    except ValueError:
        log.warning("gateway %s said its subnet is %r, not a network; ignored", gateway, subnet)
        return ""


class CampaignTracker:
    def __init__(self, store: Store, engine: CorrelationEngine,
                 places: Mapping[str, GatewayPlace], commit: Commit,
                 knowledge: CityKnowledge | None = None):
        self.store = store
        self.engine = engine
        self.places = dict(places)
        self.commit = commit
        self.knowledge = knowledge

    def on_event(self, event: Event) -> None:
        if event.kind not in TRIGGERS or not event.payload.get("new_report"):
            return  # later evidence of a known report changes no link worth a rerun
        incident = str(event.payload["incident"])
        since = float(event.payload.get("first_seen", event.time)) - self.engine.window_s
        reports = self.store.reports_since(since)
        topo = topology(self.store, self.places)
        events, owner, by_key = [], {}, {}
        for r in reports:
            key = f"{r.gateway}/{r.agent_id}"
            owner[key] = r.incident
            by_key[key] = _as_mapping(key, r)
            events.append(event_of(by_key[key], topo))
        for campaign in self.engine.campaigns(events, topo):
            members = {owner[e.id] for e in campaign.events}
            if incident in members and len(members) > 1:
                # the graph is read here, off the hub's lock
                relations = self._relations(campaign, owner, by_key)
                self.commit(lambda outbox, now, c=campaign: self._store(c, owner, incident,
                                                                   outbox, now, relations))
                return

    def _relations(self, found: Campaign, owner: dict[str, str],
                   reports: dict[str, dict]) -> dict[tuple[str, str], list[dict[str, str]]]:
        """(earlier, later) incident ids -> the graph's relations between their reports' assets."""
        knowledge = self.knowledge
        if knowledge is None or knowledge.query is None:
            return {}
        out: dict[tuple[str, str], list[dict[str, str]]] = {}
        for lk in found.links:
            pair = (owner[lk.earlier], owner[lk.later])
            if pair[0] != pair[1] and pair not in out:
                out[pair] = [r.to_dict() for r in knowledge.incident_relations(
                    reports[lk.earlier], reports[lk.later])]
        return out

    def _store(self, found: Campaign, owner: dict[str, str], trigger: str, outbox: Outbox,
               now: float, relations: Mapping[tuple[str, str], list[dict[str, str]]] | None = None) -> None:
        members = {owner[e.id] for e in found.events}
        stored = {c.id: c for c in (self.store.campaign_of(i) for i in sorted(members)) if c}
        keep = min(stored.values(), key=lambda c: (c.first_seen, c.created_at, c.id), default=None)
        record = keep or CampaignRecord(id=new_id("c"), engine=self.engine.name,
                                        scope="gateway", first_seen=found.start,
                                        last_seen=found.end, created_at=now, updated_at=now)
        before = _shape(record)
        for other in stored.values():
            if other is not keep:
                record.incidents += other.incidents
                record.links += other.links
                other.state, other.merged_into, other.updated_at = "merged", record.id, now
                other.incidents, other.links = [], []
                self.store.put_campaign(other)
        _grow(record, found, owner, members)
        _add_relations(record, relations or {})
        if keep is not None and _shape(record) == before:
            return
        record.updated_at = now
        self.store.put_campaign(record)
        outbox.event("campaign_updated" if keep else "campaign_opened", now,
                     campaign=record.id, engine=record.engine, scope=record.scope,
                     incidents=list(record.incidents), gateways=list(record.gateways),
                     domains=list(record.domains), attackers=list(record.attackers),
                     merged=sorted(c for c in stored if c != record.id), trigger=trigger)


def _grow(record: CampaignRecord, found: Campaign, owner: dict[str, str],
          members: Iterable[str]) -> None:
    record.incidents = sorted(set(record.incidents) | set(members))
    record.gateways = sorted(set(record.gateways) | set(found.gateways))
    record.domains = sorted(set(record.domains) | {d for d in found.domains if d})
    record.attackers = sorted(set(record.attackers) | set(found.attackers))
    record.first_seen = min(record.first_seen, found.start)
    record.last_seen = max(record.last_seen, found.end)
    where = {e.id: e.gateway for e in found.events}
    keys = {_link_key(lk) for lk in record.links}
    for lk in found.links:
        earlier, later = owner[lk.earlier], owner[lk.later]
        if earlier == later:
            continue  # two reports of one hub incident: the merge already joined them
        link = CampaignLink(earlier, later, lk.reason, lk.scope, lk.detail,
                            (where[lk.earlier], where[lk.later]))
        if _link_key(link) not in keys:
            keys.add(_link_key(link))
            record.links.append(link)
    record.scope = max((lk.scope for lk in record.links), key=SCOPES.index, default="gateway")


def _add_relations(record: CampaignRecord,
                   relations: Mapping[tuple[str, str], list[dict[str, str]]]) -> None:
    """Each link without the graph's evidence yet gets it (a link stored before the graph
    was ready gets it at the campaign's next change)."""
    for link in record.links:
        if not link.relations:
            link.relations = list(relations.get((link.earlier, link.later), []))


def _shape(record: CampaignRecord) -> tuple:
    """What a stored campaign's change is measured by: its incidents, links and evidence."""
    return (set(record.incidents),
            {_link_key(lk) + (len(lk.relations),) for lk in record.links})


def _link_key(link: CampaignLink) -> tuple[str, str, str]:
    return (link.earlier, link.later, link.reason)


def _as_mapping(key: str, r: IncidentReport) -> dict:
    return {"id": key, "gateway": r.gateway, "kind": r.kind, "src_ip": r.src_ip,
            "dst_ip": r.dst_ip, "device": r.device, "time": r.time, "last_seen": r.last_seen,
            "evidence": _linking_evidence(r.evidence)}


def _linking_evidence(evidence: object) -> dict:
    """Only what the engine links on, in the types it expects: evidence is the gateway's, and
    one odd report must not stop correlation for the whole window."""
    if not isinstance(evidence, Mapping):
        return {}
    out: dict = {k: evidence[k] for k in ("client_id", "username")
                 if isinstance(evidence.get(k), str)}
    victims = evidence.get("victims")
    if isinstance(victims, (list, tuple)):
        out["victims"] = [v for v in victims if isinstance(v, str)]
    return out
