"""Realism check: models trained on simulated traffic only, tested on the real MQTTset captures.

    python -m atlas.train.realism --work .train-work --models agent/detect/models

The shipped models have MQTTset in their training data, so their MQTTset figures are
in-sample. This check answers the question the simulator has to pass: does a detector that
never saw a real capture still catch the real attacks (and stay quiet on the real benign
traffic)? It reuses the training corpus (same seeds, same cached feature rows) without the
MQTTset rows and writes its models to a scratch folder. It never touches the shipped models:
its result goes into the model folder's evaluation.json (key "realism") and model card.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from atlas.train.recipe import DEFAULT_MQTTSET, cached_rows, log, seeds, with_scan_aftermath
from atlas.train.corpus import generate
from atlas.train.dataset import Rows, mqttset_captures
from atlas.train.evaluate import evaluate_capture, summarize
from atlas.train.fit import fit, write_models
from atlas.train.modelcard import write_model_card


def realism_check(work: Path, mqttset: Path, *, train_seeds: list[int], devices: int, duration: float,
                  seed: int = 0) -> dict:
    """Fit on the generated training captures only; score every MQTTset capture."""
    real = mqttset_captures(mqttset) if mqttset.is_dir() else []
    if not real:
        raise FileNotFoundError(f"{mqttset}: no MQTTset captures there (the realism check needs them)")
    sim = [generate(work, s, devices=devices, duration=duration) for s in train_seeds]
    rows = with_scan_aftermath(Rows.concat([cached_rows(c, work) for c in sim]), seed)
    fitted = fit(rows, version="sim-only", seed=seed)
    detector = write_models(fitted, work / "sim-only")
    results = [evaluate_capture(c, detector) for c in real]
    summary = summarize(results)
    return {
        "trained_on": [c.source for c in sim],
        "tested_on": [c.source for c in real],
        "attacks": summary["attacks"],
        "detected": summary["detected"],
        "kinds": summary["kinds"],
        "false_incidents": summary["false_incidents"],
        "benign_device_days": summary["benign_device_days"],
        "false_incidents_per_device_day": summary["false_incidents_per_device_day"],
        "false_incidents_by_capture": {r.source: len(r.false_incidents) for r in results},
        "outcomes": summary["outcomes"],
        "false_positive_examples": summary["false_positive_examples"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atlas.train.realism", description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path(".train-work"), help="generated captures and caches")
    p.add_argument("--models", type=Path, default=Path("agent/detect/models"),
                   help="model folder whose evaluation.json and MODEL_CARD.md get the result")
    p.add_argument("--mqttset", type=Path, default=DEFAULT_MQTTSET, help="MQTTset folder")
    p.add_argument("--train-seeds", type=seeds, default=seeds("1-8"))
    p.add_argument("--devices", type=int, default=40)
    p.add_argument("--duration", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        report = realism_check(args.work, args.mqttset, train_seeds=args.train_seeds, devices=args.devices,
                               duration=args.duration, seed=args.seed)
    except FileNotFoundError as e:
        print(f"realism: {e}", file=sys.stderr)
        return 2
    report["command"] = "python -m atlas.train.realism " + " ".join(argv if argv is not None else sys.argv[1:])
    record(args.models, report)
    log(f"realism: {report['detected']}/{report['attacks']} real attacks detected by sim-only models, "
        f"{report['false_incidents']} false incidents on {report['benign_device_days']} benign device-days "
        f"({time.time() - t0:.0f}s): {args.models / 'MODEL_CARD.md'}")
    return 0


def record(models: Path, realism: dict) -> None:
    """Add the result to the model folder's evaluation.json and re-render its model card."""
    evaluation = json.loads((models / "evaluation.json").read_text()) | {"realism": realism}
    (models / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    meta = json.loads((models / "meta.json").read_text())
    write_model_card(models / "MODEL_CARD.md", meta, evaluation)


if __name__ == "__main__":
    sys.exit(main())
