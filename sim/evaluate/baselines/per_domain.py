"""Baseline 3: per-domain isolation for multi-stage campaigns, against the hub's city-wide
correlation (atlas.central.correlate), both on ATLAS's incidents of the same run.

Per-domain isolation is the same correlation engine restricted to links inside one domain
(`scope="domain"`): what a transportation, an energy and a public-safety SOC would each see.
The city-wide engine may also link across domains (`scope="city"`).

Scoring against the ground truth (full chain linked, >= 2 stages linked): see
atlas.sim.evaluate.campaigns, which the harness also runs city-wide for the ATLAS column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from atlas.central.correlate import DEFAULT_WINDOW_S
from atlas.sim.evaluate.baselines import BaselineResult, baseline
from atlas.sim.evaluate.campaigns import city_events, describe, run_correlation, score_campaigns  # noqa: F401 (re-exported)


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


@baseline("per_domain")
def per_domain_baseline(city: Any, agent: Any, report_dir: Path) -> BaselineResult:
    """Per-domain isolation (the baseline column). The ATLAS column, city-wide correlation on the
    same incidents, is the harness's own (atlas.sim.evaluate.run.score_agent, `correlation`)."""
    dom = run_correlation(city, agent_incidents(agent, report_dir))["domain"]
    notes = f"atlas.central.correlate on ATLAS's incidents, links inside one domain only (window {DEFAULT_WINDOW_S:g} s): {describe(dom)}."
    if not dom["campaigns"]:
        notes += " The city has no multi-stage campaign: nothing to measure."
    return BaselineResult("per_domain", notes=notes, metrics={
        "campaigns_detected": dom["share_full_chain"], "campaigns_two_or_more_linked": dom["share_two_or_more"],
        "campaign_link_precision": dom["links"]["precision"], "campaign_link_recall": dom["links"]["recall"],
        "campaign_link_recall_within_domain": dom["links"]["recall_within_domain"]})
