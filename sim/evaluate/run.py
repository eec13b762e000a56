"""`evaluate(city_dir, report_dir)`: the whole measuring stick, in order.

load the city -> run the agent per gateway (atlas.sim.evaluate.agent) -> write
incidents/<gateway>.jsonl -> score ATLAS (atlas.sim.evaluate.metrics) -> run and score the
baselines (atlas.sim.evaluate.baselines) -> report.json, report.md, plots.
"""
from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atlas.link.incidents import CONFORMANCE_KINDS, KNOWN_KINDS
from atlas.sim.evaluate import metrics as M
from atlas.sim.evaluate.campaigns import run_correlation
from atlas.sim.evaluate.agent import ANOMALY_EDGES, CLASSIFIER_EDGES, AgentRun, jobs_for, run_agent
from atlas.sim.evaluate.city import City, load_city


def evaluate(city_dir: str | Path, report_dir: str | Path, *, workers: int | None = None,
             models_dir: str | Path | None = None, baselines: bool | list[str] = True, plots: bool = True,
             conformance: bool = True, command: str | None = None, progress: Callable[[str], None] | None = None,
             policy: str = "playbook"):
    """Evaluate ATLAS (and the baselines: all registered, or the names listed) on a city folder;
    write the report into report_dir. `policy`: the hub policy scored as ATLAS's responder
    (atlas.sim.evaluate.respond: none, static, playbook or a central.toml), beside the three
    built-in ones. Returns the Report (atlas.sim.evaluate.report)."""
    from atlas.sim.evaluate.availability import POLICIES, ClosedLoop, policy_rules
    from atlas.sim.evaluate.knowledge import write_city_knowledge
    from atlas.sim.evaluate.report import Report
    from atlas.sim.evaluate.respond import load_policy, policy_key

    say = progress or (lambda msg: None)
    load_policy(policy)  # a bad --policy fails before the agent runs
    city = load_city(city_dir)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    say(f"city {city.dir}: {len(city.gateway_ids)} gateways, {city.device_count} devices, {city.duration:g} s, "
        f"{len(city.steps)} attack steps")
    # The agent as deployed: with its gateway's device inventory (profile conformance), unless told not to.
    agent = run_agent(jobs_for(city, models_dir, out / "inventory", conformance=conformance), workers,
                      progress=lambda r: say(f"  agent on {r.gateway}: {r.frames} packets, {len(r.incidents)} incidents, "
                                             f"{r.cpu_s:.2f} CPU-s"))
    write_incidents(agent, out / "incidents")
    write_city_knowledge(city.dir, agent.incidents(), out, say)
    agent.conformance = conformance
    agent.metrics = score_agent(city, agent)
    # Every policy answers ATLAS's incidents on the same traffic, attacks' effects included; the
    # baselines' pass over the captures feeds it, the gateways it did not decode are decoded at the end.
    agent.closed_loop = ClosedLoop(city, policy_rules(city, agent.incidents(), list(POLICIES) + [policy]))
    agent.models_dir = models_dir
    base: dict[str, Any] = {}
    if baselines:
        from atlas.sim.evaluate.baselines import run_baselines

        base = run_baselines(city, agent, out, only=baselines if isinstance(baselines, list) else None)
        say(f"  baselines: {', '.join(base) or 'none registered'}")
        for name, res in base.items():
            if res.detections is not None:
                scored = score_detections(city, agent, detections_of(res.detections))
                res.scored = scored
                for key, value in headline(scored).items():
                    res.metrics.setdefault(key, value)
    agent.metrics["response"] = agent.closed_loop.finish() | {"policy": policy_key(policy)}
    say("  responses: " + ", ".join(f"{k} availability {_pct(v['availability_critical'])}, containment {_pct(v['containment'])}"
                                    for k, v in agent.metrics["response"]["policies"].items()))
    cmd = command or f"atlas-sim evaluate {shlex.quote(str(city_dir))} --out {shlex.quote(str(out))}" + (
        f" --workers {workers}" if workers else "") + ("" if conformance else " --no-conformance") + (
        "" if policy == "playbook" else f" --policy {shlex.quote(policy)}")
    report = Report.build(city, agent, base, cmd)
    report.write(out, plots=plots)
    return report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def write_incidents(agent: AgentRun, folder: Path) -> None:
    """incidents/<gateway>.jsonl: Incident.to_dict() per line (evidence["detected_at"] = raise time)."""
    from atlas.link.serde import _json_default

    folder.mkdir(parents=True, exist_ok=True)
    for gw, run in agent.gateways.items():
        with open(folder / f"{gw}.jsonl", "w") as f:
            for inc in run.incidents:
                f.write(json.dumps(inc.to_dict(), sort_keys=True, default=_json_default) + "\n")


def detections_of(per_gateway: dict[str, list[Any]]) -> list[M.Detection]:
    return [M.detection_of(d, gw) for gw, items in per_gateway.items() for d in items]


def active_units(agent: AgentRun) -> set[M.Unit]:
    units: set[M.Unit] = set()
    for r in agent.gateways.values():
        units |= r.active_units
    return units


def score_detections(city: City, agent: AgentRun, detections: list[M.Detection]) -> dict[str, Any]:
    """The common scoring of any detector's detections on this city (same units, same rules)."""
    steps = [M.step_of(s) for s in city.steps]
    return M.score(detections, steps, [M.lookalike_of(e) for e in city.benign], active_units(agent),
                   origin=city.start, duration_s=city.duration, devices=city.device_count,
                   novel_kinds=[s.kind for s in steps if s.kind not in KNOWN_KINDS])


def score_agent(city: City, agent: AgentRun) -> dict[str, Any]:
    """ATLAS's detection scores plus its CPU, bandwidth and ROC figures."""
    dets = detections_of(agent.incidents())
    scored = score_detections(city, agent, dets)
    # What the learned models (and counters) alone caught: the conformance check only adds
    # incidents of its own kinds (one incident per source and kind), so dropping those is exact.
    models = score_detections(city, agent, [d for d in dets if d.kind not in CONFORMANCE_KINDS])
    scored["models_only"] = {"overall": {k: v for k, v in models["overall"].items()},
                             "novel": models["novel"], "by_kind": {k: {"steps": v["steps"], "steps_detected": v["steps_detected"],
                                                                      "ttd": v["ttd"]} for k, v in models["by_kind"].items()}}
    runs = list(agent.gateways.values())
    cpu = [r.cpu_share_one_core for r in runs]
    device_hours = sum(r.devices for r in runs) * city.duration / 3600.0
    tele_bytes = sum(r.telemetry.get("bytes", 0) for r in runs)
    scored["cpu"] = {
        "agent_cpu_s": sum(r.cpu_s for r in runs),
        "traffic_s": city.duration,
        "share_one_core_mean": float(np.mean(cpu)) if cpu else None,
        "share_one_core_max": float(np.max(cpu)) if cpu else None,
        "cores_here": agent.cores,
        "share_machine_mean": float(np.mean(cpu)) / agent.cores if cpu else None,
        "packets": sum(r.frames for r in runs),
        "packets_per_cpu_s": sum(r.frames for r in runs) / max(sum(r.cpu_s for r in runs), 1e-9),
        "harness_cpu_s_excluded": sum(r.harness_cpu_s for r in runs),
        "startup_cpu_s_excluded": sum(r.startup_cpu_s for r in runs),  # loading the models, once per agent start
        "machine": f"{platform.machine()}, {agent.cores} cores, Python {platform.python_version()}",
    }
    scored["bandwidth"] = {
        "bytes": tele_bytes,
        "raw_bytes": sum(r.telemetry.get("raw_bytes", 0) for r in runs),
        "batches": sum(r.telemetry.get("batches", 0) for r in runs),
        "device_hours": device_hours,
        "bytes_per_device_hour": tele_bytes / device_hours if device_hours else None,
    }
    scored["roc"] = roc_summary(agent)
    # The hub's correlation on ATLAS's incidents: city-wide (the ATLAS column) and per domain.
    scored["correlation"] = run_correlation(city, agent.incidents())
    return scored


def roc_summary(agent: AgentRun) -> dict[str, Any]:
    out = {}
    runs = list(agent.gateways.values())
    version = runs[0].model_version if runs else ""
    ops = _operating_points(runs)
    for name, edges in (("classifier", CLASSIFIER_EDGES), ("anomaly", ANOMALY_EDGES)):
        pos = sum((r.hist[name]["pos"] for r in runs), np.zeros(len(edges) - 1))
        neg = sum((r.hist[name]["neg"] for r in runs), np.zeros(len(edges) - 1))
        fpr, tpr, _ = M.roc_curve(pos, neg, edges)
        op = M.rate_at(pos, neg, edges, ops[name]) if name in ops else (None, None)
        out[name] = {"auc": M.auc(fpr, tpr) if pos.sum() and neg.sum() else None, "positive_rows": int(pos.sum()),
                     "negative_rows": int(neg.sum()), "threshold": ops.get(name),
                     "operating_point": {"fpr": op[0], "tpr": op[1]}, "model_version": version,
                     "_pos": pos, "_neg": neg, "_edges": edges}
    return out


def _operating_points(runs) -> dict[str, float]:
    """The thresholds the shipped models use: classifier min_prob, anomaly error/threshold 1.0."""
    try:
        from atlas.agent.detect import Detector

        d = Detector(None)
        return {"classifier": d.min_prob, "anomaly": 1.0}
    except Exception:  # the report still has the curves without the markers
        return {}


def headline(scored: dict[str, Any]) -> dict[str, Any]:
    """The METRIC_KEYS figures (atlas.sim.evaluate.baselines) from a scored detector."""
    o, n = scored["overall"], scored["novel"]
    return {"accuracy": o.get("accuracy"), "precision": o.get("precision"), "recall": o.get("recall"), "f1": o.get("f1"),
            "false_positive_rate": o.get("false_positive_rate"), "ttd_median_s": o["ttd"]["median_s"],
            "ttd_p95_s": o["ttd"]["p95_s"], "ttd_novel_median_s": n["ttd"]["median_s"], "ttd_novel_p95_s": n["ttd"]["p95_s"]}



__all__ = ["evaluate", "score_agent", "score_detections", "headline", "write_incidents"]
