"""Detection on the held-out generated captures (the models' test seeds), through the agent itself.

    .venv/bin/python bench/heldout_detection.py [--seeds 101-104] [--work .train-work]

The same captures and scoring as the training's report (train/__main__.py, train/evaluate.py):
per attack kind, attacks detected, kind named right, median time to detect; false incidents.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from atlas.agent.detect import Detector
from atlas.train.corpus import generate
from atlas.train.evaluate import evaluate_capture, summarize
from atlas.train.recipe import seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=seeds, default=seeds("101-104"))
    p.add_argument("--work", type=Path, default=Path(".train-work"))
    args = p.parse_args(argv)
    det = Detector()
    caps = [generate(args.work, s, devices=40, duration=900.0) for s in args.seeds]
    rep = summarize([evaluate_capture(c, det) for c in caps])
    print(f"seeds {args.seeds}, models {det.version}\n\n| kind | attacks | detected | named right | median TTD s | other kinds on the attacker |\n|---|---|---|---|---|---|")
    for kind, k in rep["kinds"].items():
        other = Counter(r for o in rep["outcomes"] if o["kind"] == kind for r in o["reported_kinds"] if r != kind)
        print(f"| {kind} | {k['attacks']} | {k['detected']} | {k['named_right']} | {k['median_ttd_s']} | "
              f"{', '.join(f'{r} {n}' for r, n in sorted(other.items())) or '-'} |")
    named = sum(k["named_right"] for k in rep["kinds"].values())
    print(f"| all | {rep['attacks']} | {rep['detected']} | {named} | | |")
    print(f"\nfalse incidents {rep['false_incidents']} over {rep['benign_device_days']} benign device-days "
          f"({rep['false_incidents_per_device_day']} per device-day)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
