"""A campaign told in plain words, for `atlas-central campaigns show` (the operator's view of
what the correlator linked, and why)."""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

from atlas.central.store import CampaignLink, CampaignRecord, DecisionRecord, HubIncident

SCOPE_WORDS = {"gateway": "on one gateway", "domain": "within one domain",
               "city": "across domains"}


def reason_words(link: CampaignLink) -> str:
    if link.reason == "same_attacker":
        return f"the same attacker, {link.detail}"
    if link.reason == "pivot":
        return f"a pivot: {link.detail}"
    if link.reason == "same_identity":
        return f"the same MQTT identity, {link.detail}"
    return f"{link.reason}: {link.detail}"


RELATION_WORDS = {"same_device": "the same device {}", "same_gateway": "behind the same gateway {}",
                  "same_broker": "same broker {}", "same_credential": "same MQTT credential {}",
                  "same_service": "feeds the same service {}", "upstream": "upstream: {}",
                  "downstream": "downstream: {}"}


def relation_words(relations: Sequence[Mapping[str, str]]) -> str:
    """The city graph's evidence for a link, once per relation (whichever assets it joins)."""
    seen: list[str] = []
    for r in relations:
        words = RELATION_WORDS.get(r.get("kind", ""), r.get("kind", "") + " {}").format(r.get("detail", ""))
        if words not in seen:
            seen.append(words)
    return ", ".join(seen)


def describe(campaign: CampaignRecord, incidents: Sequence[HubIncident],
             decisions: Sequence[DecisionRecord], domains: Mapping[str, str]) -> str:
    """Several lines: what the campaign is, its incidents, each link and why, the decisions."""
    def where(gateway: str) -> str:
        return f"{gateway} ({domains[gateway]})" if domains.get(gateway) else gateway

    n_dom = len(campaign.domains)
    lines = [f"campaign {campaign.id}: {len(campaign.incidents)} incidents on "
             f"{len(campaign.gateways)} gateway(s)"
             + (f" in {n_dom} domain(s) ({', '.join(campaign.domains)})" if n_dom else "")
             + f", linked {SCOPE_WORDS.get(campaign.scope, campaign.scope)} "
             f"(engine {campaign.engine})"]
    if campaign.merged_into:
        lines.append(f"merged into {campaign.merged_into}")
    lines.append(f"attackers: {', '.join(campaign.attackers)}")
    lines.append(f"from {_stamp(campaign.first_seen)} to {_stamp(campaign.last_seen)}")
    lines.append("incidents:")
    for i in incidents:
        target = f" -> {i.dst_ip}" if i.dst_ip else ""
        lines.append(f"  {i.id}  {i.kind} by {i.src_ip}{target}, seen by "
                     f"{', '.join(where(g) for g in i.gateways)}; {i.state}")
    lines.append("links (why they belong together):" if campaign.links else "links: none")
    for lk in campaign.links:
        lines.append(f"  {lk.earlier} on {where(lk.gateways[0])} -> {lk.later} on "
                     f"{where(lk.gateways[1])}: {reason_words(lk)} "
                     f"({SCOPE_WORDS.get(lk.scope, lk.scope)})")
        if lk.relations:
            lines.append(f"    also: {relation_words(lk.relations)}")
    lines.append("decisions:" if decisions else "decisions: none")
    for d in decisions:
        lines.append(f"  {d.id}  {d.action} {d.target}: {d.state} (incident {d.incident}, "
                     f"policy {d.policy})")
    return "\n".join(lines)


def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
