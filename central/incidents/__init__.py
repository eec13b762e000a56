"""Incidents: a gateway's report merged into the hub's incident (same attacker and kind within
the merge window, across gateways), stored with its audit row in the caller's transaction."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from atlas.link.incidents import Incident
from atlas.central.audit import AuditLog
from atlas.central.outbox import Outbox, new_id
from atlas.central.store import HubIncident, IncidentReport, Store


@dataclass
class Merged:
    """What one report did to the hub's incident."""

    incident: HubIncident
    report: Incident  # as stored: the certificate's gateway, finite times and score
    created: bool  # a new hub incident
    new_gateway: bool  # an existing incident now also seen behind this gateway
    new_evidence: bool  # later evidence than this report had given before


class IncidentMerger:
    def __init__(self, store: Store, audit: AuditLog, merge_window: float,
                 counters: dict[str, int]):
        self.store = store
        self.audit = audit
        self.merge_window = float(merge_window)
        self.counters = counters

    def merge(self, gateway_id: str, incident: Incident, now: float, outbox: Outbox) -> Merged:
        """Call inside the store transaction of the batch that carried the report."""
        self.counters["incident_reports"] += 1
        incident = sanitized(incident, gateway_id, now)
        previous = self.store.get_report(gateway_id, str(incident.id))
        if previous is not None:
            hub_incident = self.store.get_incident(previous.incident)
            new_evidence = incident.last_seen > previous.last_seen
            added_packets = max(int(incident.packets) - previous.packets, 0)
        else:
            new_evidence = True
            added_packets = int(incident.packets)
            hub_incident = self.store.find_incident(
                str(incident.src_ip), str(incident.kind),
                since=incident.time - self.merge_window)
        created = hub_incident is None
        if created:
            hub_incident = HubIncident(
                id=new_id("i"), kind=str(incident.kind), src_ip=str(incident.src_ip),
                device=str(incident.device), dst_ip=str(incident.dst_ip),
                first_seen=incident.time, last_seen=incident.last_seen,
                score=incident.score, packets=0, state="open", created_at=now)
        known_gateways = list(hub_incident.gateways)
        self.store.put_incident(hub_incident)  # the report references it
        self.store.put_report(_report_record(gateway_id, incident, hub_incident.id, now))
        was_state = hub_incident.state
        hub_incident.first_seen = min(hub_incident.first_seen, incident.time)
        hub_incident.last_seen = max(hub_incident.last_seen, incident.last_seen)
        hub_incident.score = max(hub_incident.score, incident.score)
        hub_incident.packets += added_packets
        hub_incident.state = "open" if self.store.count_open_reports(hub_incident.id) else "closed"
        self.store.put_incident(hub_incident)
        hub_incident.gateways = self.store.incident_gateways(hub_incident.id)
        closed = was_state == "open" and hub_incident.state == "closed"
        self._audit(hub_incident, incident, created, previous is None, closed, now)
        self._announce(outbox, hub_incident, gateway_id, created, previous is None, closed, now)
        return Merged(hub_incident, incident, created,
                      not created and gateway_id not in known_gateways, new_evidence)

    def _audit(self, hub_incident: HubIncident, report: Incident, created: bool,
               first_report: bool, closed: bool, now: float) -> None:
        if created:
            self.audit.append("incident", {"incident": hub_incident.to_dict(),
                                           "report": _report_payload(report)}, now)
        elif first_report:
            self.audit.append("incident_report", {"incident": hub_incident.id,
                                                  "report": _report_payload(report)}, now)
        if closed:
            self.audit.append("incident_closed", {"incident": hub_incident.id,
                                                  "last_seen": hub_incident.last_seen}, now)

    @staticmethod
    def _announce(outbox: Outbox, hub_incident: HubIncident, gateway_id: str, created: bool,
                  first_report: bool, closed: bool, now: float) -> None:
        facts = dict(incident=hub_incident.id, gateway=gateway_id, kind=hub_incident.kind,
                     src_ip=hub_incident.src_ip, gateways=list(hub_incident.gateways),
                     first_seen=hub_incident.first_seen, last_seen=hub_incident.last_seen,
                     state=hub_incident.state)
        if created:
            outbox.event("incident_opened", now, **facts, new_report=True)
        else:
            outbox.event("incident_updated", now, **facts, new_report=first_report)
        if closed:
            outbox.event("incident_closed", now, **facts)


def sanitized(incident: Incident, gateway_id: str, now: float) -> Incident:
    """The certificate decides the gateway; times and scores must be finite numbers (an odd
    value from a gateway is replaced, never allowed to poison merges or sorting)."""
    first = finite(incident.time, now)
    return dataclasses.replace(
        incident, gateway=gateway_id, time=first,
        last_seen=max(finite(incident.last_seen, first), first),
        score=finite(incident.score, 0.0))


def finite(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _report_record(gateway_id: str, incident: Incident, hub_incident: str,
                   now: float) -> IncidentReport:
    return IncidentReport(
        gateway=gateway_id, agent_id=str(incident.id), incident=hub_incident,
        kind=str(incident.kind), src_ip=str(incident.src_ip), dst_ip=str(incident.dst_ip),
        device=str(incident.device), time=incident.time, last_seen=incident.last_seen,
        score=incident.score, packets=int(incident.packets), state=str(incident.state),
        model_version=str(incident.model_version), evidence=dict(incident.evidence or {}),
        received_at=now)


def _report_payload(incident: Incident) -> dict[str, Any]:
    out = incident.to_dict()
    out.pop("evidence", None)  # bulky; it stays in incident_reports
    return out
