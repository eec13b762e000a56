"""Train the agent's models, evaluate them, write the model folder and its model card.

    python -m atlas.train --out agent/detect/models [--zero-day]

Reproducible: the corpus is generated from fixed seeds (training and test seeds disjoint),
training is seeded, and the MQTTset captures are read from ../shared/data/mqttset when present.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from atlas.link.incidents import KNOWN_KINDS
from atlas.agent.detect import BENIGN
from atlas.train.corpus import generate
from atlas.train.dataset import LabeledCapture, Rows, mqttset_captures
from atlas.train.evaluate import evaluate_capture, summarize
from atlas.train.fit import fit, write_models
from atlas.train.modelcard import write_model_card
from atlas.train.recipe import DEFAULT_MQTTSET, cached_rows, log, seeds, with_scan_aftermath



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atlas.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("agent/detect/models"), help="model folder to write")
    p.add_argument("--work", type=Path, default=Path(".train-work"), help="generated captures and caches")
    p.add_argument("--train-seeds", type=seeds, default=seeds("1-8"))
    p.add_argument("--test-seeds", type=seeds, default=seeds("101-104"))
    p.add_argument("--devices", type=int, default=40)
    p.add_argument("--duration", type=float, default=900.0)
    p.add_argument("--mqttset", type=Path, default=DEFAULT_MQTTSET, help="MQTTset folder ('none' to skip)")
    p.add_argument("--zero-day", action="store_true", help="also retrain with each kind left out, and report")
    p.add_argument("--realism", action="store_true",
                   help="also train on simulated traffic only and test on MQTTset (see .realism)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--version", default=time.strftime("%Y.%m.%d"))
    args = p.parse_args(argv)

    t0 = time.time()
    train_caps = [generate(args.work, s, devices=args.devices, duration=args.duration) for s in args.train_seeds]
    test_caps = [generate(args.work, s, devices=args.devices, duration=args.duration) for s in args.test_seeds]
    mqttset = mqttset_captures(args.mqttset) if str(args.mqttset) != "none" and args.mqttset.is_dir() else []
    log(f"corpus: {len(train_caps)} training and {len(test_caps)} test captures, {len(mqttset)} MQTTset captures ({time.time() - t0:.0f}s)")

    train = with_scan_aftermath(Rows.concat([cached_rows(c, args.work) for c in train_caps + mqttset]), args.seed)
    log(f"rows: {len(train)} ({', '.join(f'{k} {v}' for k, v in class_counts(train).items())})")
    fitted = fit(train, version=args.version, seed=args.seed)
    detector = write_models(fitted, args.out)
    log(f"models written to {args.out} ({time.time() - t0:.0f}s)")

    report = {
        "command": "python -m atlas.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "split": "training seeds %s, test seeds %s (disjoint captures, devices, addresses and attack draws); "
        "MQTTset captures are in training, so their figures are in-sample" % (args.train_seeds, args.test_seeds),
        "test": summarize([evaluate_capture(c, detector) for c in test_caps]),
        "mqttset_in_sample": summarize([evaluate_capture(c, detector) for c in mqttset]),
    }
    if args.zero_day:
        report["zero_day"] = zero_day(train, test_caps, mqttset, args)
    if args.realism and mqttset:
        from atlas.train.realism import realism_check

        report["realism"] = realism_check(args.work, args.mqttset, train_seeds=args.train_seeds, devices=args.devices,
                                          duration=args.duration, seed=args.seed)
        report["realism"]["command"] = report["command"]
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    write_model_card(args.out / "MODEL_CARD.md", fitted.meta, report)
    log(f"done in {time.time() - t0:.0f}s: {args.out / 'MODEL_CARD.md'}")
    return 0


def zero_day(train: Rows, test_caps: list[LabeledCapture], mqttset: list[LabeledCapture], args) -> dict:
    """Retrain without each kind in turn; can the agent still catch that kind?"""
    out = {}
    for kind in KNOWN_KINDS:
        fitted = fit(train.take(train.y != kind), version=f"{args.version}-without-{kind}", seed=args.seed)
        det = write_models(fitted, args.work / f"without-{kind}")
        caps = [_only(c, kind) for c in test_caps] + [c for c in mqttset if any(a.kind == kind for a in c.attacks)]
        results = [evaluate_capture(c, det) for c in caps]
        outs = [o for r in results for o in r.outcomes]
        out[kind] = {
            "attacks": len(outs),
            "detected": sum(o.detected for o in outs),
            "reported_as": sorted({k for o in outs for k in o.reported_kinds}),
            "mqttset_detected": [o.detected for o in outs if o.source.startswith("mqttset")],
        }
        log(f"zero-day {kind}: {out[kind]['detected']}/{out[kind]['attacks']} detected as {out[kind]['reported_as']}")
    return out


def _only(cap: LabeledCapture, kind: str) -> LabeledCapture:
    """The capture with only `kind` attacks scored (other attackers are not counted as benign)."""
    return LabeledCapture(cap.path, cap.source, [a for a in cap.attacks if a.kind == kind], cap.lookalikes)


def class_counts(rows: Rows) -> dict[str, int]:
    names, counts = np.unique(rows.y.astype(str), return_counts=True)
    return {BENIGN: int(counts[names == BENIGN].sum())} | {n: int(c) for n, c in zip(names, counts) if n != BENIGN}


if __name__ == "__main__":
    sys.exit(main())
