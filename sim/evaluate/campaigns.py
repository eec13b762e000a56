"""Multi-stage campaigns scored: the hub's correlation (atlas.central.correlate) run on the
agents' incidents, city-wide and restricted to one domain, against the ground truth.

A campaign is the set of ground-truth steps sharing `campaign`. An incident *belongs* to a
step when the harness's matching rule says so (atlas.sim.evaluate.metrics.match: same gateway,
source among the step's attackers, evidence span overlapping the step). For each ground-truth
campaign, `stages_linked` is the most of its stages that one correlated campaign holds:

- *full chain linked*: one correlated campaign holds every stage (the paper's row);
- *>= 2 stages linked*: one correlated campaign holds at least two of its stages.

Correlated campaigns with incidents of several attacks but none of a ground-truth campaign's
stages are counted as `false_campaigns`.

Pairwise links (`link_scores`): every pair of incidents that matched two *different* ground-truth
steps is one pair (two incidents of one step say nothing about linking). The pair is a *true
link* when both steps belong to the same ground-truth campaign, and *predicted linked* when one
correlated campaign holds both incidents. Link precision = true predicted links / predicted
links; link recall = true predicted links / true links. An incident of a step of no campaign (a
single attack, a decoy) has no true link, so merging it into a campaign only adds false links.
Incidents that matched no step are the detectors' false positives, scored elsewhere. The recall
is also given over the true links inside one domain (`recall_within_domain`): the most that
per-domain correlation can reach, since it cannot make a cross-domain link.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from atlas.central.correlate import DEFAULT_WINDOW_S, Campaign, Event, Topology, correlate, event_of
from atlas.sim.evaluate.metrics import _div, detection_of, match, step_of

MIN_STAGES = 2
SCOPES = ("domain", "city")  # per-domain isolation, the hub city-wide


def city_events(city: Any, incidents: dict[str, Iterable[Any]], topology: Topology | None = None) -> list[Event]:
    """The agents' incidents of every gateway as correlation events (ids made unique)."""
    topology = topology or Topology.from_city(city.meta)
    out, seen = [], set()
    for gw, items in sorted(incidents.items()):
        for inc in items:
            e = event_of(inc, topology, gw)
            if e.id in seen:  # an incident reported twice (open, then closed): keep the first
                continue
            seen.add(e.id)
            out.append(e)
    return out


def _stages_of_events(events: Sequence[Event], gt_steps: Sequence[Any]) -> tuple[dict[str, set[str]], dict[str, list[int]]]:
    detections = [detection_of({"gateway": e.gateway, "src_ip": e.src_ip, "kind": e.kind, "time": e.time,
                                "detected_at": e.time, "last_seen": e.last_seen, "id": e.id}) for e in events]
    matching = match(detections, gt_steps)
    steps_of_event: dict[str, set[str]] = {e.id: set() for e in events}
    for step_id, idx in matching.by_step.items():
        for i in idx:
            steps_of_event[events[i].id].add(step_id)
    return steps_of_event, matching.by_step


def _step_of_event(steps_of_event: dict[str, set[str]], by_id: dict[str, Any]) -> dict[str, str]:
    """Each matched incident's one step: a campaign's step first (an incident of an attacker that
    ran a campaign stage and a single attack at once speaks for the campaign), then by id."""
    return {eid: min(sids, key=lambda sid: (not by_id[sid].campaign, sid)) for eid, sids in steps_of_event.items() if sids}


def link_scores(campaigns: Sequence[Campaign], events: Sequence[Event], steps_of_event: dict[str, set[str]],
                by_id: dict[str, Any]) -> dict[str, Any]:
    """Pairwise incident-to-campaign assignment against the ground truth (see the module doc)."""
    step = _step_of_event(steps_of_event, by_id)
    group = {e.id: c.id for c in campaigns for e in c.events}
    domain = {e.id: e.domain for e in events}
    ids = sorted(step)
    tp = fp = fn = within = within_tp = 0
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            sa, sb = by_id[step[a]], by_id[step[b]]
            if sa.id == sb.id:
                continue
            true = bool(sa.campaign) and sa.campaign == sb.campaign
            linked = a in group and group.get(a) == group.get(b)
            tp += true and linked
            fp += linked and not true
            fn += true and not linked
            if true and domain.get(a) and domain.get(a) == domain.get(b):
                within += 1
                within_tp += linked
    return {"pairs_true": tp + fn, "pairs_linked": tp + fp, "true_links": tp, "false_links": fp, "missed_links": fn,
            "precision": _div(tp, tp + fp), "recall": _div(tp, tp + fn),
            "pairs_true_within_domain": within, "recall_within_domain": _div(within_tp, within),
            "incidents": len(ids)}


def score_campaigns(campaigns: Sequence[Campaign], events: Sequence[Event], steps: Sequence[Any]) -> dict[str, Any]:
    """Ground-truth campaigns linked by these correlated campaigns (see the module doc)."""
    gt_steps = [step_of(s) for s in steps]
    steps_of_event, by_step = _stages_of_events(events, gt_steps)
    by_id = {s.id: s for s in gt_steps}
    truth: dict[str, dict[int, str]] = {}
    for s in gt_steps:
        if s.campaign:
            truth.setdefault(s.campaign, {})[s.stage] = s.id
    per_campaign: dict[str, dict[str, Any]] = {}
    for name, stages in sorted(truth.items()):
        best: set[int] = set()
        best_id = ""
        for c in campaigns:
            linked = {by_id[sid].stage for e in c.events for sid in steps_of_event[e.id] if by_id[sid].campaign == name}
            if len(linked) > len(best):
                best, best_id = linked, c.id
        per_campaign[name] = {"stages": len(stages), "stages_detected": sum(1 for sid in stages.values() if by_step.get(sid)),
                              "stages_linked": len(best), "linked": sorted(best),
                              "full_chain": len(best) == len(stages), "two_or_more": len(best) >= MIN_STAGES, "by": best_id}
    false_campaigns = sum(1 for c in campaigns if c.multi_stage and not any(
        by_id[sid].campaign for e in c.events for sid in steps_of_event[e.id]))
    n = len(per_campaign)
    full = sum(v["full_chain"] for v in per_campaign.values())
    two = sum(v["two_or_more"] for v in per_campaign.values())
    return {"campaigns": n, "full_chain": full, "share_full_chain": _div(full, n),
            "two_or_more": two, "share_two_or_more": _div(two, n),
            "stages_linked": sum(v["stages_linked"] for v in per_campaign.values()),
            "stages": sum(v["stages"] for v in per_campaign.values()),
            "false_campaigns": false_campaigns,
            "correlated_campaigns": sum(1 for c in campaigns if c.multi_stage),
            "links": link_scores(campaigns, events, steps_of_event, by_id),
            "by_campaign": per_campaign}


def run_correlation(city: Any, incidents: dict[str, Iterable[Any]], window_s: float = DEFAULT_WINDOW_S) -> dict[str, Any]:
    """{"domain": per-domain isolation, "city": the hub city-wide}, each scored, on the same incidents."""
    topology = Topology.from_city(city.meta)
    events = city_events(city, incidents, topology)
    out: dict[str, Any] = {"window_s": window_s}
    for scope in SCOPES:
        out[scope] = score_campaigns(correlate(events, topology, scope=scope, window_s=window_s), events, city.steps)
    return out


def describe(s: dict[str, Any]) -> str:
    """One line: full chains, >= 2 stages, stages, false campaigns."""
    return (f"full chain linked {s['full_chain']}/{s['campaigns']}, >= {MIN_STAGES} stages linked "
            f"{s['two_or_more']}/{s['campaigns']}, {s['stages_linked']}/{s['stages']} stages linked, "
            f"{s['false_campaigns']} false campaigns of {s['correlated_campaigns']} correlated"
            + (f"; {describe_links(s['links'])}" if s.get("links") else ""))


def describe_links(links: dict[str, Any]) -> str:
    """Pairwise link precision and recall, with their counts."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"
    return (f"link precision {pct(links['precision'])} ({links['true_links']}/{links['pairs_linked']} pairs), "
            f"link recall {pct(links['recall'])} ({links['true_links']}/{links['pairs_true']}), "
            f"within one domain {pct(links['recall_within_domain'])} of {links['pairs_true_within_domain']}")


__all__ = ["MIN_STAGES", "city_events", "describe", "describe_links", "link_scores", "run_correlation", "score_campaigns"]
