"""Baseline 3: per-domain isolation for multi-stage campaigns, against the hub's city-wide
correlation (atlas.central.correlate), both on ATLAS's incidents of the same run.

Per-domain isolation is the same correlation engine restricted to links inside one domain
(`scope="domain"`): what a transportation, an energy and a public-safety SOC would each see.
The city-wide engine may also link across domains (`scope="city"`).

Scoring against the ground truth: a campaign is the set of steps sharing `campaign`. An
incident *belongs* to a step when the harness's matching rule says so
(atlas.sim.evaluate.metrics.match: same gateway, source among the step's attackers, active
span overlapping the step). A ground-truth campaign is *detected* when one correlated campaign
holds incidents of at least two of its stages; `stages_linked` is the most stages one
correlated campaign holds. Correlated campaigns with incidents of several attacks but none of
a ground-truth campaign's stages are counted as `false_campaigns`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from atlas.central.correlate import (
    DEFAULT_WINDOW_S,
    Campaign,
    Event,
    Topology,
    correlate,
    event_of,
)
from atlas.sim.evaluate.baselines import BaselineResult, baseline

MIN_STAGES = 2


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


def score_campaigns(campaigns: Sequence[Campaign], events: Sequence[Event], steps: Sequence[Any]) -> dict[str, Any]:
    """Ground-truth campaigns detected by these correlated campaigns (see the module doc)."""
    from atlas.sim.evaluate.metrics import detection_of, match, step_of

    gt_steps = [step_of(s) for s in steps]
    detections = [detection_of({"gateway": e.gateway, "src_ip": e.src_ip, "kind": e.kind, "time": e.time,
                                "detected_at": e.time, "last_seen": e.last_seen, "id": e.id}) for e in events]
    matching = match(detections, gt_steps)
    steps_of_event: dict[str, set[str]] = {e.id: set() for e in events}
    for step_id, idx in matching.by_step.items():
        for i in idx:
            steps_of_event[events[i].id].add(step_id)
    by_id = {s.id: s for s in gt_steps}
    truth: dict[str, dict[int, str]] = {}
    for s in gt_steps:
        if s.campaign:
            truth.setdefault(s.campaign, {})[s.stage] = s.id
    per_campaign: dict[str, dict[str, Any]] = {}
    for name, stages in sorted(truth.items()):
        seen_stages = {st for st, sid in stages.items() if matching.by_step.get(sid)}
        best: set[int] = set()
        best_id = ""
        for c in campaigns:
            linked = {by_id[sid].stage for e in c.events for sid in steps_of_event[e.id]
                      if by_id[sid].campaign == name}
            if len(linked) > len(best):
                best, best_id = linked, c.id
        per_campaign[name] = {"stages": len(stages), "stages_detected": len(seen_stages),
                              "stages_linked": len(best), "linked": sorted(best),
                              "detected": len(best) >= MIN_STAGES, "by": best_id}
    false_campaigns = 0
    for c in campaigns:
        if not c.multi_stage:
            continue
        if not any(by_id[sid].campaign for e in c.events for sid in steps_of_event[e.id]):
            false_campaigns += 1
    n = len(per_campaign)
    detected = sum(v["detected"] for v in per_campaign.values())
    return {"campaigns": n, "detected": detected, "share_detected": detected / n if n else None,
            "stages_linked": sum(v["stages_linked"] for v in per_campaign.values()),
            "stages": sum(v["stages"] for v in per_campaign.values()),
            "false_campaigns": false_campaigns,
            "correlated_campaigns": sum(1 for c in campaigns if c.multi_stage),
            "by_campaign": per_campaign}


def agent_incidents(agent: Any, report_dir: Path) -> dict[str, list[Any]]:
    """ATLAS's incidents per gateway: from the run, else from REPORT_DIR/incidents/*.jsonl."""
    if agent is not None and hasattr(agent, "incidents"):
        return agent.incidents()
    import json

    out: dict[str, list[Any]] = {}
    folder = Path(report_dir) / "incidents"
    for p in sorted(folder.glob("*.jsonl")):
        out[p.stem] = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out


def run_correlation(city: Any, incidents: dict[str, list[Any]], window_s: float = DEFAULT_WINDOW_S) -> dict[str, Any]:
    """Per-domain and city-wide correlation on the same incidents, scored."""
    topology = Topology.from_city(city.meta)
    events = city_events(city, incidents, topology)
    out = {}
    for scope in ("domain", "city"):
        campaigns = correlate(events, topology, scope=scope, window_s=window_s)
        out[scope] = score_campaigns(campaigns, events, city.steps)
    return out


def _describe(s: dict[str, Any]) -> str:
    return (f"{s['detected']}/{s['campaigns']} campaigns with >= {MIN_STAGES} stages linked, "
            f"{s['stages_linked']}/{s['stages']} stages linked, {s['false_campaigns']} false "
            f"campaigns of {s['correlated_campaigns']} correlated")


@baseline("per_domain")
def per_domain_baseline(city: Any, agent: Any, report_dir: Path) -> BaselineResult:
    incidents = agent_incidents(agent, report_dir)
    scores = run_correlation(city, incidents)
    dom, hub = scores["domain"], scores["city"]
    notes = (f"atlas.central.correlate on ATLAS's incidents (window {DEFAULT_WINDOW_S:g} s). "
             f"Per-domain (links inside one domain only): {_describe(dom)}. "
             f"Hub, city-wide: {_describe(hub)}.")
    if not dom["campaigns"]:
        notes += " The city has no multi-stage campaign: nothing to measure."
    return BaselineResult("per_domain", metrics={"campaigns_detected": dom["share_detected"]},
                          notes=notes, atlas={"campaigns_detected": hub["share_detected"],
                                              "campaign_scores": hub, "per_domain_scores": dom})
