"""The classifier's calibration on validation captures, and the confidence below which its kind is refused.

    .venv/bin/python bench/calibration.py [--seeds 201-204] [--work .train-work] [--write]

Validation captures are generated from seeds that neither the models' training (1-8) nor their
test (101-104) used (train/__main__.py). Prints the reliability table and the expected
calibration error (ECE) for (a) every row, confidence = the top class probability, and (b) the
rows the detector names an attack kind, confidence = the probability of that kind. The kind
threshold is the lower edge of the lowest reliability bin from which up every bin's kind is
right on at least TARGET of its rows; `--write` stores it and the calibration figures in the models'
meta.json (classifier.kind_min_confidence, classifier.calibration).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from atlas.agent.detect import Detector, packaged_models_dir
from atlas.train.corpus import generate
from atlas.train.dataset import BENIGN, Rows
from atlas.train.recipe import cached_rows, seeds

BINS = 10
TARGET = 0.95  # kind accuracy required above the threshold


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = BINS) -> tuple[float, list[dict]]:
    """ECE and the reliability table (rows per equal-width confidence bin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        acc, c = float(correct[m].mean()), float(conf[m].mean())
        ece += m.sum() / len(conf) * abs(acc - c)
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": int(m.sum()), "confidence": round(c, 3), "accuracy": round(acc, 3)})
    return round(float(ece), 4), table


def kind_threshold(table: list[dict]) -> float:
    """Lower edge of the lowest reliability bin from which up every bin's named kind is right on
    at least TARGET of its rows: below it the classifier's kinds are not to be trusted."""
    threshold = 1.0
    for r in reversed(table):
        if r["accuracy"] < TARGET:
            break
        threshold = float(r["bin"].split("-")[0])
    return threshold


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=seeds, default=seeds("201-204"))
    p.add_argument("--work", type=Path, default=Path(".train-work"))
    p.add_argument("--models", type=Path, default=packaged_models_dir())
    p.add_argument("--write", action="store_true", help="store the threshold and figures in the models' meta.json")
    args = p.parse_args(argv)
    caps = [generate(args.work, s, devices=40, duration=900.0) for s in args.seeds]
    rows = Rows.concat([cached_rows(c, args.work) for c in caps])
    det = Detector(args.models)
    s = det.score(rows.X.astype(np.float32))
    classes = np.array(det.classes, dtype=object)
    y = rows.y.astype(str)

    top = np.argmax(s.probs, axis=1)
    ece_all, table_all = reliability(s.probs.max(axis=1), classes[top] == y)
    named = np.isin(s.kind, [c for c in det.classes if c != BENIGN])
    conf_k, right_k = s.confidence[named].astype(np.float64), s.kind[named] == y[named]
    ece_k, table_k = reliability(conf_k, right_k)
    threshold = kind_threshold(table_k)
    kept = conf_k >= threshold

    print(f"validation seeds {args.seeds}: {len(y)} rows ({int((y != BENIGN).sum())} attack rows); models {det.version}")
    for title, ece, table in (("every row, top class", ece_all, table_all), ("rows named an attack kind, that kind", ece_k, table_k)):
        print(f"\n{title}: ECE {ece}\n\n| confidence bin | rows | mean confidence | accuracy |\n|---|---|---|---|")
        for r in table:
            print(f"| {r['bin']} | {r['rows']} | {r['confidence']} | {r['accuracy']} |")
    print(f"\nkind threshold {threshold}: {int(kept.sum())}/{len(kept)} named rows keep their kind, "
          f"kind accuracy {right_k[kept].mean() if kept.any() else float('nan'):.3f} above it, "
          f"{right_k[~kept].mean() if (~kept).any() else float('nan'):.3f} below it")
    if args.write:
        meta_path = args.models / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["classifier"]["kind_min_confidence"] = threshold
        meta["classifier"]["calibration"] = {
            "validation_seeds": args.seeds, "rows": int(len(y)), "ece_all_rows": ece_all, "ece_named_kind": ece_k,
            "kind_accuracy_target": TARGET, "command": "bench/calibration.py " + " ".join(argv or sys.argv[1:]),
        }
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"written to {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
