"""Incident-level evaluation of a model folder on labelled captures, through the agent itself."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import AgentPipeline
from atlas.train.dataset import LabeledCapture

MATCH_SLACK_S = 30.0  # an incident counts for an attack if it starts at most this long after it


@dataclass
class AttackOutcome:
    source: str
    kind: str
    attacker: str
    detected: bool
    reported_kinds: list[str]
    ttd_s: float | None  # first incident's first packet - first attack packet


@dataclass
class CaptureResult:
    source: str
    outcomes: list[AttackOutcome] = field(default_factory=list)
    false_incidents: list[dict] = field(default_factory=list)  # incidents on non-attackers
    benign_devices: int = 0
    seconds: float = 0.0

    @property
    def device_days(self) -> float:
        return self.benign_devices * self.seconds / 86400.0


def evaluate_capture(cap: LabeledCapture, detector: Detector, cfg: AgentConfig | None = None) -> CaptureResult:
    pipe = AgentPipeline(cfg or AgentConfig(), detector)
    first = last = None
    for batch in read_capture(cap.path):
        if len(batch):
            first = float(batch.ts[0]) if first is None else first
            last = float(batch.ts[-1])
        pipe.process(batch)
    incidents = pipe.finish()
    attackers = {a.attacker for a in cap.attacks}
    res = CaptureResult(cap.source, seconds=(last - first) if first is not None else 0.0)
    res.benign_devices = max(pipe.features.stats.devices - len(attackers), 0)
    for a in cap.attacks:
        mine = [
            i for i in incidents
            if i.src_ip == a.attacker and i.last_seen >= a.start - 1.0 and i.time <= a.end + MATCH_SLACK_S
        ]
        ttd = None
        if mine and np.isfinite(a.start):
            ttd = max(0.0, min(i.time for i in mine) - a.start)
        res.outcomes.append(AttackOutcome(cap.source, a.kind, a.attacker, bool(mine), sorted({i.kind for i in mine}), ttd))
    res.false_incidents = [i.to_dict() for i in incidents if i.src_ip not in attackers]
    for d in res.false_incidents:
        d.pop("evidence", None)
    return res


def summarize(results: list[CaptureResult]) -> dict:
    """Per attack kind: detected / total, kind named right, median time to detect; false positives."""
    by_kind: dict[str, list[AttackOutcome]] = {}
    for r in results:
        for o in r.outcomes:
            by_kind.setdefault(o.kind, []).append(o)
    kinds = {}
    for kind, outs in sorted(by_kind.items()):
        ttds = [o.ttd_s for o in outs if o.ttd_s is not None]
        kinds[kind] = {
            "attacks": len(outs),
            "detected": sum(o.detected for o in outs),
            "named_right": sum(kind in o.reported_kinds for o in outs),
            "median_ttd_s": round(float(np.median(ttds)), 2) if ttds else None,
        }
    device_days = sum(r.device_days for r in results)
    fps = sum(len(r.false_incidents) for r in results)
    return {
        "kinds": kinds,
        "attacks": sum(k["attacks"] for k in kinds.values()),
        "detected": sum(k["detected"] for k in kinds.values()),
        "false_incidents": fps,
        "benign_device_days": round(device_days, 3),
        "false_incidents_per_device_day": round(fps / device_days, 3) if device_days else None,
        "outcomes": [asdict(o) for r in results for o in r.outcomes],
        "false_positive_examples": [f for r in results for f in r.false_incidents][:20],
    }
