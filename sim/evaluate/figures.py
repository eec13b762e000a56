"""report.json's top-level `metrics`: numbers under fixed names, and why any is missing.

Keys (issue 11, item 7; fractions in [0, 1]):

    incident_precision               incidents that matched an attack step / all incidents
    false_incidents_per_device_day   incidents that matched no step, per device-day of traffic
    kind_accuracy                    detected steps whose incidents include the step's own kind / detected steps
    step_recall                      attack steps with at least one matching incident / steps
    ttd_novel_median_s               null: needs leave-one-kind-out models (see metrics_missing)
    campaign_link_precision          pairs of incidents (of two different attack steps) the hub's city-wide
                                     correlation linked that belong to one true campaign / pairs it linked
    campaign_link_recall             such pairs linked / pairs belonging to one true campaign
                                     (atlas.sim.evaluate.campaigns.link_scores)
    campaign_full_chain              ground-truth campaigns whose every stage one correlated campaign holds / campaigns
    availability_critical            per policy: critical service-slots met (atlas.sim.evaluate.availability)
    containment                      per policy: attack steps whose packets the rules mostly removed
    bandwidth_bytes_per_device_hour  null: needs IPFIX and mirroring at their real sizes
    seeds                            the city seeds the figures come from
    commit                           the source commit (with "+dirty" for uncommitted changes)
    model_version                    the models' version string + a digest of their files' content
"""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

KEYS = ("incident_precision", "false_incidents_per_device_day", "kind_accuracy", "step_recall", "ttd_novel_median_s",
        "campaign_link_precision", "campaign_link_recall", "campaign_full_chain", "availability_critical", "containment",
        "bandwidth_bytes_per_device_hour", "seeds", "commit", "model_version")
MISSING = {
    "ttd_novel_median_s": "time to detection of a kind the models were not trained on needs leave-one-kind-out "
                          "models; the shipped models saw every known kind, so today's novel-kind TTD "
                          "(atlas.novel.ttd) would mix in kinds caught by profile rules written against them",
    "bandwidth_bytes_per_device_hour": "the alternatives (IPFIX records at their real size, full mirroring) are not "
                                       "measured yet; ATLAS's own telemetry is in atlas.bandwidth",
}


def metrics_object(city: Any, scored: dict[str, Any], model_version: str, models_dir: str | Path | None = None
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics, metrics_missing) from the scored run (run.score_agent plus `response`)."""
    missing = dict(MISSING)
    o = scored["overall"]
    dets = scored.get("detections", 0)
    fp = scored["false_positives"]
    detected = o["steps_detected"]
    city_corr = (scored.get("correlation") or {}).get("city") or {}
    response = scored.get("response") or {}
    policies = response.get("policies") or {}
    m: dict[str, Any] = {k: None for k in KEYS}
    m["incident_precision"] = (dets - fp["incidents"]) / dets if dets else None
    if not dets:
        missing["incident_precision"] = "no incident was raised"
    m["false_incidents_per_device_day"] = fp["per_device_day"]
    m["kind_accuracy"] = o["named_right"] / detected if detected else None
    if not detected:
        missing["kind_accuracy"] = "no attack step was detected"
    m["step_recall"] = o["step_recall"]
    links = city_corr.get("links") or {}
    m["campaign_link_precision"] = links.get("precision")
    m["campaign_link_recall"] = links.get("recall")
    if m["campaign_link_precision"] is None:
        missing["campaign_link_precision"] = "the hub linked no pair of incidents of two different attack steps"
    if m["campaign_link_recall"] is None:
        missing["campaign_link_recall"] = "no two detected incidents belong to one campaign"
    m["campaign_full_chain"] = city_corr.get("share_full_chain")
    if m["campaign_full_chain"] is None:
        missing["campaign_full_chain"] = "the city has no multi-stage campaign"
    if policies:
        m["availability_critical"] = {k: v["availability_critical"] for k, v in policies.items()}
        m["containment"] = {k: v["containment"] for k, v in policies.items()}
    else:
        missing["availability_critical"] = missing["containment"] = "the response policies were not scored"
    m["seeds"] = [city.seed]
    m["commit"] = source_commit()
    if m["commit"] is None:
        missing["commit"] = "the source is not a git checkout (or git is not installed)"
    m["model_version"] = f"{model_version}+{models_digest(models_dir)}" if model_version else None
    if m["model_version"] is None:
        missing["model_version"] = "the agent reported no model version"
    return m, {k: v for k, v in missing.items() if m.get(k) is None}


def source_commit(where: str | Path | None = None) -> str | None:
    """HEAD of the checkout this code runs from, "+dirty" when it has uncommitted changes."""
    here = Path(where) if where else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def models_digest(models_dir: str | Path | None = None) -> str:
    """sha256 (first 12 hex digits) over the model folder's files, names and bytes: two model
    sets with the same version string still get different digests."""
    if models_dir is None:
        from atlas.agent.detect import packaged_models_dir

        models_dir = packaged_models_dir()
    h = hashlib.sha256()
    for p in sorted(Path(models_dir).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(models_dir).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()[:12]


__all__ = ["KEYS", "MISSING", "metrics_object", "models_digest", "source_commit"]
