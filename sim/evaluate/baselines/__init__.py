"""Baselines the evaluation runs on the same city, in the same run, as ATLAS.

The contract between the harness (atlas.sim.evaluate) and the baseline modules:

- A baseline is a function `fn(city: City, agent: AgentRun, report_dir: Path) -> BaselineResult`
  registered with `@baseline(name)` in any module of this package (every module here is
  imported by `run_baselines`, so a new module needs no edit of this file).
  `City` is atlas.sim.evaluate.city.City (city.json, ground truth, look-alikes, pcap paths);
  `AgentRun` is atlas.sim.evaluate.agent.AgentRun (ATLAS's incidents per gateway, CPU, packets,
  telemetry bytes, and its scored metrics).
- The names the report knows (one per row of the paper's table; other names are reported too):
    "signature"        Suricata/Snort-style threshold rules     -> accuracy, false_positive_rate
    "centralized"      flow records shipped to one detector      -> ttd_novel_median_s, bandwidth_bytes_per_device_hour
    "per_domain"       correlation inside one domain only        -> campaigns_detected
    "static_playbook"  a fixed response per incident kind        -> availability
- `BaselineResult.metrics` holds only what the baseline measured, under the keys of
  METRIC_KEYS (fractions in 0..1, times in seconds, bytes). A metric it cannot measure is
  left out (or None) and the report says "not yet measurable" with the baseline's `notes`.
  Never a made-up number.
- A detecting baseline may instead (or also) return `detections`: per gateway, a list of
  dicts with at least `src_ip`, `time` (first evidence, epoch s), `last_seen` and
  `detected_at` (when the baseline would have raised it, epoch s; include shipping delays),
  plus `kind`. The harness scores them with the very rules it scores ATLAS with
  (atlas.sim.evaluate.metrics) and fills accuracy, precision, recall, f1,
  false_positive_rate, ttd_* that the baseline did not set itself.
- `BaselineResult.atlas` optionally holds ATLAS-side figures that only this harness part can
  measure (availability under ATLAS's responder next to the static playbook's: both come out
  of one decoding pass over the captures); the report uses them in the ATLAS column when the harness's own ATLAS path cannot give
  them (campaigns are the harness's own: atlas.sim.evaluate.campaigns in run.score_agent).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Keys of BaselineResult.metrics / .atlas that the report's table reads.
METRIC_KEYS = (
    "accuracy",  # (TP + TN) / all units; unit = (source address, minute), see atlas.sim.evaluate.metrics
    "precision",
    "recall",
    "f1",
    "false_positive_rate",  # FP / (FP + TN), same unit
    "ttd_median_s",  # first attack packet -> first detection naming the attacker, every kind
    "ttd_p95_s",
    "ttd_novel_median_s",  # the same for the kinds the classifier never saw (mirai_scan, exfiltration, false_data)
    "ttd_novel_p95_s",
    "campaigns_detected",  # fraction of multi-stage campaigns whose full chain was linked as one (atlas.sim.evaluate.campaigns)
    "campaigns_two_or_more_linked",  # fraction with at least two of their stages linked as one
    "campaign_link_precision",  # pairs of incidents linked that belong to one true campaign / pairs linked
    "campaign_link_recall",  # / pairs belonging to one true campaign
    "campaign_link_recall_within_domain",  # the same over true pairs inside one domain (all per-domain can reach)
    "availability",  # fraction of critical-service time kept during mitigation
    "bandwidth_bytes_per_device_hour",  # bytes the gateways send to the monitor/hub
    "cpu_share_one_core",  # CPU seconds per second of traffic on the gateway
)

NAMES = ("signature", "centralized", "per_domain", "static_playbook")


@dataclass
class BaselineResult:
    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""  # how it was measured, or what is missing ("needs the hub's correlation engine")
    detections: dict[str, list[dict[str, Any]]] | None = None  # per gateway, scored by the harness
    atlas: dict[str, Any] = field(default_factory=dict)  # ATLAS-side figures measured by this part
    scored: dict[str, Any] | None = None  # set by the harness: `detections` scored like ATLAS's incidents

    def to_dict(self) -> dict[str, Any]:
        # detections can be large: the report keeps their count, the scored metrics keep the rest
        return {"name": self.name, "metrics": dict(self.metrics), "notes": self.notes, "atlas": dict(self.atlas),
                "detections": sum(len(v) for v in self.detections.values()) if self.detections is not None else None}


BaselineFn = Callable[..., BaselineResult]
BASELINES: dict[str, BaselineFn] = {}


def baseline(name: str) -> Callable[[BaselineFn], BaselineFn]:
    """Register `fn(city, agent, report_dir) -> BaselineResult` under `name`."""

    def deco(fn: BaselineFn) -> BaselineFn:
        BASELINES[name] = fn
        return fn

    return deco


def load_all() -> dict[str, BaselineFn]:
    """Import every module of this package (each registers its baselines)."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return BASELINES


def run_baselines(city: Any, agent: Any, report_dir: str | Path, only: list[str] | None = None) -> dict[str, BaselineResult]:
    """Run every registered baseline (or `only` these); a baseline that fails is reported as
    such (its notes carry the error) instead of stopping the evaluation."""
    results: dict[str, BaselineResult] = {}
    for name, fn in sorted(load_all().items()):
        if only is not None and name not in only:
            continue
        try:
            res = fn(city, agent, Path(report_dir))
        except Exception as err:  # one broken baseline must not hide the others' figures
            res = BaselineResult(name, notes=f"failed: {type(err).__name__}: {err}")
        if not isinstance(res, BaselineResult):
            res = BaselineResult(name, notes=f"failed: returned {type(res).__name__}, not BaselineResult")
        results[name] = res
    return results


__all__ = ["BASELINES", "METRIC_KEYS", "NAMES", "BaselineResult", "baseline", "load_all", "run_baselines"]
