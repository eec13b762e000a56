"""Scoring detections against the ground truth: small pure functions, tested on hand-made cases.

Definitions (the report repeats them):

- A *detection* is an incident (ATLAS) or an alert (a baseline) reduced to who, where and when:
  gateway, source address, kind, `detected_at` (when it was raised: the tick that confirmed it,
  plus any shipping delay for a baseline) and `last_seen` (its latest evidence).
- A detection *matches* an attack step when it is on the step's gateway, its source is one of
  the step's attackers, and its evidence span [time, max(last_seen, detected_at)] overlaps the
  step's window [start - SLACK_S, end + CLOSE_S] (start/end: the attacker's first/last packet;
  CLOSE_S is the agent's incident close window). The span starts at the first evidence, not at
  the raise, so a late detection of a real attack (a flow export shipped minutes after the
  attack ended) counts as detected, with its true delay below. A detection that matches no
  step is a *false positive*, whether its source is a benign device or an attacker's address
  outside its steps.
- *Time to detection* of a step: the earliest `detected_at` of its matching detections minus
  the step's first attack packet, floored at 0 (an attacker already flagged is detected at once).
- The unit of precision, recall, F1 and accuracy is the *(gateway, source address, minute)*:
  every source that sent or received traffic in that minute at that gateway is one unit. A unit
  is *positive* when the source is an attacker of a step whose [start, end] overlaps the minute,
  and *predicted positive* when a detection on that source is active ([detected_at, last_seen])
  in the minute. Why this unit: one unit measures both errors in the same currency (a missed
  minute of attack weighs as much as a falsely flagged minute of a benign device), detection
  delay costs recall (the minutes before the alert are misses), and the negatives are the real
  population (every device, every minute) rather than a chosen sample. Accuracy is dominated
  by the many benign minutes, so the report gives balanced accuracy and the step-level recall
  beside it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SLACK_S = 5.0  # a tick that closes just before the first attack packet may already hold it
CLOSE_S = 60.0  # atlas.agent.config AlertsSection.close_after_s: an incident lives this long after its last evidence
UNIT_S = 60.0  # the scoring unit: one source in one minute


@dataclass(frozen=True)
class Detection:
    gateway: str
    src_ip: str
    kind: str
    detected_at: float
    last_seen: float
    time: float = 0.0  # first triggering packet, when known (0: unknown, the raise stands for it)
    id: str = ""

    @property
    def evidence_span(self) -> tuple[float, float]:
        """[first evidence, latest evidence or raise]: what the detection speaks about."""
        first = min(self.time, self.detected_at) if self.time > 0 else self.detected_at
        return first, max(self.last_seen, self.detected_at)


@dataclass(frozen=True)
class Step:
    """An attack step as scoring sees it (atlas.sim.capture.AttackStep has more)."""

    id: str
    kind: str
    gateway: str
    attackers: tuple[str, ...]
    start: float
    end: float
    campaign: str = ""
    stage: int = 1


@dataclass(frozen=True)
class Lookalike:
    id: str
    kind: str
    gateway: str
    hosts: tuple[str, ...]
    start: float
    end: float


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def rates(self) -> dict[str, float | None]:
        return rates(self.tp, self.fp, self.fn, self.tn)


def _getter(obj: Any):
    """`get(key, default)` on a dict or on an object's attributes: the records scored here come
    as dataclasses (a run in process) or as their JSON dicts (files on disk)."""
    return obj.get if isinstance(obj, Mapping) else lambda k, d=None: getattr(obj, k, d)


def step_of(s: Any) -> Step:
    """An AttackStep (or its dict) as a Step."""
    get = _getter(s)
    attackers = tuple(get("attackers") or ()) or (get("attacker"),)
    return Step(str(get("id")), str(get("kind")), str(get("gateway")), attackers, float(get("start")), float(get("end")),
                str(get("campaign") or ""), int(get("stage") or 1))


def lookalike_of(e: Any) -> Lookalike:
    get = _getter(e)
    return Lookalike(str(get("id")), str(get("kind")), str(get("gateway")), tuple(get("hosts") or ()),
                     float(get("start")), float(get("end")))


def detection_of(inc: Any, gateway: str = "") -> Detection:
    """An Incident (or its dict, or a baseline's detection dict) as a Detection. An incident's
    raise time is `evidence["detected_at"]` (set by the harness); without it, `time`."""
    get = _getter(inc)
    evidence = get("evidence") or {}
    t = float(get("time") or 0.0)
    detected = get("detected_at")
    if detected is None:
        detected = evidence.get("detected_at", t)
    last = float(get("last_seen") or detected)
    return Detection(str(get("gateway") or gateway), str(get("src_ip")), str(get("kind") or ""), float(detected),
                     max(last, float(detected)), t, str(get("id") or ""))


# ---- matching -------------------------------------------------------------------------------

def overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    """Closed intervals [a0, a1] and [b0, b1] share a point."""
    return a0 <= b1 and b0 <= a1


def matches(d: Detection, s: Step, slack: float = SLACK_S, close: float = CLOSE_S) -> bool:
    if d.gateway and s.gateway and d.gateway != s.gateway:
        return False
    return d.src_ip in s.attackers and overlaps(*d.evidence_span, s.start - slack, s.end + close)


@dataclass
class Matching:
    by_step: dict[str, list[int]]  # step id -> indices of matching detections
    false_positives: list[int]  # indices of detections matching no step


def match(detections: Sequence[Detection], steps: Sequence[Step], slack: float = SLACK_S, close: float = CLOSE_S) -> Matching:
    by_step: dict[str, list[int]] = {s.id: [] for s in steps}
    index: dict[tuple[str, str], list[Step]] = {}
    for s in steps:
        for a in s.attackers:
            index.setdefault((s.gateway, a), []).append(s)
            index.setdefault(("", a), []).append(s)  # detections that carry no gateway
    fps = []
    for i, d in enumerate(detections):
        hit = False
        for s in index.get((d.gateway, d.src_ip), ()):
            if matches(d, s, slack, close):
                by_step[s.id].append(i)
                hit = True
        fps += [] if hit else [i]
    return Matching(by_step, fps)


def time_to_detection(step: Step, detections: Sequence[Detection], idx: Iterable[int]) -> float | None:
    """Seconds from the step's first attack packet to its first matching detection (None: missed)."""
    times = [detections[i].detected_at for i in idx]
    return max(0.0, min(times) - step.start) if times else None


def in_lookalike(d: Detection, events: Sequence[Lookalike], close: float = CLOSE_S) -> Lookalike | None:
    """The look-alike a false positive fell in (its source among the event's hosts, its span
    overlapping the event), if any."""
    for e in events:
        if (not d.gateway or not e.gateway or d.gateway == e.gateway) and d.src_ip in e.hosts \
                and overlaps(*d.evidence_span, e.start, e.end + close):
            return e
    return None


# ---- rates --------------------------------------------------------------------------------

def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | None]:
    """Precision, recall, F1, accuracy, balanced accuracy, false positive rate; None where a
    denominator is 0 (e.g. precision with no positive prediction)."""
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    fpr = _div(fp, fp + tn)
    tnr = _div(tn, fp + tn)
    balanced = (recall + tnr) / 2 if recall is not None and tnr is not None else None
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": _div(tp + tn, tp + fp + fn + tn),
            "balanced_accuracy": balanced, "false_positive_rate": fpr}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, linear interpolation); None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


# ---- (gateway, source, minute) units ------------------------------------------------------

Unit = tuple[str, str, int]  # gateway, source address, minute index from the city's start


def minutes_spanned(t0: float, t1: float, origin: float, unit_s: float = UNIT_S) -> range:
    """Indices of the units [origin + k*unit_s, origin + (k+1)*unit_s) that [t0, t1] touches."""
    if t1 < t0:
        return range(0)
    return range(int(math.floor((t0 - origin) / unit_s)), int(math.floor((t1 - origin) / unit_s)) + 1)


def positive_units(steps: Sequence[Step], origin: float, unit_s: float = UNIT_S) -> dict[Unit, set[str]]:
    """Unit -> the kinds of the steps it is an attacker's minute of."""
    out: dict[Unit, set[str]] = {}
    for s in steps:
        for a in s.attackers:
            for m in minutes_spanned(s.start, s.end, origin, unit_s):
                out.setdefault((s.gateway, a, m), set()).add(s.kind)
    return out


def predicted_units(detections: Sequence[Detection], origin: float, unit_s: float = UNIT_S) -> set[Unit]:
    out: set[Unit] = set()
    for d in detections:
        out.update((d.gateway, d.src_ip, m) for m in minutes_spanned(d.detected_at, d.last_seen, origin, unit_s))
    return out


@dataclass
class UnitScores:
    overall: Confusion
    by_kind: dict[str, Confusion] = field(default_factory=dict)  # positives of that kind against every negative


def score_units(active: set[Unit], steps: Sequence[Step], detections: Sequence[Detection], origin: float,
                unit_s: float = UNIT_S) -> UnitScores:
    """Confusion counts over the units. `active`: the units that had traffic (the population);
    a positive unit counts only if the attacker had traffic in that minute, and a detection
    always adds its units to the population (a flagged silent minute is still a claim)."""
    pos_kinds = positive_units(steps, origin, unit_s)
    pred = predicted_units(detections, origin, unit_s)
    population = active | pred
    positives = {u: k for u, k in pos_kinds.items() if u in population}
    overall = Confusion()
    by_kind: dict[str, Confusion] = {s.kind: Confusion() for s in steps}
    fp = tn = 0
    for u in population:
        kinds = positives.get(u)
        flagged = u in pred
        if kinds is None:
            fp += flagged
            tn += not flagged
            continue
        if flagged:
            overall.tp += 1
        else:
            overall.fn += 1
        for k in kinds:
            if flagged:
                by_kind[k].tp += 1
            else:
                by_kind[k].fn += 1
    overall.fp, overall.tn = fp, tn
    for c in by_kind.values():
        c.fp, c.tn = fp, tn
    return UnitScores(overall, by_kind)


# ---- the whole scoring --------------------------------------------------------------------

def summarize_ttd(values: Sequence[float]) -> dict[str, float | None]:
    return {"median_s": percentile(values, 50), "p95_s": percentile(values, 95), "n": len(values)}


def score(detections: Sequence[Detection], steps: Sequence[Step], lookalikes: Sequence[Lookalike], active: set[Unit],
          *, origin: float, duration_s: float, devices: int, novel_kinds: Iterable[str] = (),
          slack: float = SLACK_S, close: float = CLOSE_S, unit_s: float = UNIT_S) -> dict[str, Any]:
    """Every detection metric of one detector (ATLAS or a baseline), as plain JSON-able data."""
    novel = set(novel_kinds)
    m = match(detections, steps, slack, close)
    units = score_units(active, steps, detections, origin, unit_s)
    per_step = []
    for s in steps:
        idx = m.by_step[s.id]
        ttd = time_to_detection(s, detections, idx)
        named = sorted({detections[i].kind for i in idx})
        per_step.append({"id": s.id, "kind": s.kind, "gateway": s.gateway, "campaign": s.campaign, "stage": s.stage,
                         "attackers": list(s.attackers), "start": s.start, "end": s.end, "detected": ttd is not None,
                         "ttd_s": ttd, "named": named, "named_right": s.kind in named, "novel": s.kind in novel})
    fps = [detections[i] for i in m.false_positives]
    look = {}
    for d in fps:
        e = in_lookalike(d, lookalikes, close)
        if e is not None:
            look.setdefault(e.kind, []).append(d.id or d.src_ip)
    device_days = devices * duration_s / 86400.0
    kinds = sorted({s.kind for s in steps})

    def block(rows: list[dict], conf: Confusion | None) -> dict[str, Any]:
        ttds = [r["ttd_s"] for r in rows if r["ttd_s"] is not None]
        out: dict[str, Any] = {"steps": len(rows), "steps_detected": sum(r["detected"] for r in rows),
                               "step_recall": _div(sum(r["detected"] for r in rows), len(rows)),
                               "named_right": sum(r["named_right"] for r in rows), "ttd": summarize_ttd(ttds)}
        if conf is not None:
            out["units"] = asdict(conf)
            out.update(conf.rates())
        return out

    by_kind = {k: block([r for r in per_step if r["kind"] == k], units.by_kind.get(k)) for k in kinds}
    novel_rows = [r for r in per_step if r["novel"]]
    novel_conf = None
    if novel_rows:  # units of novel kinds against every negative
        novel_conf = score_units(active, [s for s in steps if s.kind in novel], detections, origin, unit_s).overall
        novel_conf.fp, novel_conf.tn = units.overall.fp, units.overall.tn
    return {
        "overall": block(per_step, units.overall),
        "by_kind": by_kind,
        "novel": block(novel_rows, novel_conf) | {"kinds": sorted({r["kind"] for r in novel_rows})},
        "known": block([r for r in per_step if not r["novel"]], None),
        "detections": len(detections),
        "false_positives": {
            "incidents": len(fps),
            "share_of_detections": _div(len(fps), len(detections)),  # 1 - precision counted in incidents
            "per_device_day": _div(len(fps), device_days),
            "in_lookalikes": sum(len(v) for v in look.values()),
            "in_lookalikes_by_kind": {k: len(v) for k, v in sorted(look.items())},
            "on_attacker_addresses": sum(1 for d in fps if any(d.src_ip in s.attackers for s in steps)),
            "device_days": device_days,
        },
        "campaigns": campaigns(per_step),
        "steps": per_step,
    }


def campaigns(per_step: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per campaign: which stages some detector caught. A campaign counts as *every stage
    detected* when each of its stages was; linking them as one campaign is the hub's job."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in per_step:
        if r["campaign"]:
            by.setdefault(r["campaign"], []).append(r)
    out = {c: {"stages": len(rows), "stages_detected": sum(r["detected"] for r in rows),
               "gateways": sorted({r["gateway"] for r in rows})} for c, rows in sorted(by.items())}
    full = sum(v["stages"] == v["stages_detected"] for v in out.values())
    return {"count": len(out), "every_stage_detected": full, "share_every_stage_detected": _div(full, len(out)), "by_campaign": out}


# ---- ROC from score histograms --------------------------------------------------------------

def roc_curve(pos_hist: np.ndarray, neg_hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) when flagging every score >= each
    bin's lower edge, from the highest threshold down; histograms over the same bins."""
    pos = np.asarray(pos_hist, dtype=float)[::-1].cumsum()
    neg = np.asarray(neg_hist, dtype=float)[::-1].cumsum()
    tpr = pos / pos[-1] if pos[-1] else np.zeros_like(pos)
    fpr = neg / neg[-1] if neg[-1] else np.zeros_like(neg)
    thr = np.asarray(edges[:-1], dtype=float)[::-1]
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]), np.concatenate([[np.inf], thr])


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the (fpr, tpr) curve by trapezoids."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def rate_at(pos_hist: np.ndarray, neg_hist: np.ndarray, edges: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """(fpr, tpr) flagging scores >= threshold (to bin resolution)."""
    k = int(np.searchsorted(edges, threshold, side="left"))
    k = min(max(k, 0), len(edges) - 1)
    p, n = float(np.sum(pos_hist)), float(np.sum(neg_hist))
    return (_div(float(np.sum(neg_hist[k:])), n), _div(float(np.sum(pos_hist[k:])), p))
