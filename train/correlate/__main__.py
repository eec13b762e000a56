"""Train the hub's attention correlator, or compare the correlators on the report split.

    python -m atlas.train.correlate train [--out central/correlate/models] [--seed 0]
    python -m atlas.train.correlate evaluate [--model central/correlate/models/attention.tflite]
        [--agent-run CITY REPORT ...]

Reproducible: episodes come from fixed seeds (training, validation and report disjoint, report
templates never in training), training is seeded. The link threshold is tuned on validation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from atlas.train.correlate import data
from atlas.train.correlate.model import samples, to_tflite, train

DEFAULT_OUT = Path("central/correlate/models")


def _range(text: str) -> range:
    lo, _, hi = text.partition("-")
    try:
        return range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds: {text!r} is not N or N-M") from None


def tune_threshold(link: np.ndarray, p: np.ndarray) -> float:
    """The threshold with the best F1 on validation pairs."""
    best, best_f1 = 0.5, -1.0
    for t in np.arange(0.05, 0.96, 0.05):
        pred = p >= t
        tp = float(np.sum(pred & (link == 1)))
        f1 = 2 * tp / max(float(np.sum(pred)) + float(np.sum(link == 1)), 1.0)
        if f1 > best_f1:
            best, best_f1 = float(round(t, 2)), f1
    return best


def cmd_train(args: argparse.Namespace) -> int:
    train_set = samples(data.episodes("train", args.train_seeds))
    model = train(train_set, epochs=args.epochs, seed=args.seed)
    val = samples(data.episodes("validation", args.validation_seeds))
    p = model.predict(val.inputs(), verbose=0, batch_size=1024)[0][:, 0]
    threshold = tune_threshold(val.link, p)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention.tflite").write_bytes(to_tflite(model))
    card = {"version": f"attention-s{args.seed}-e{args.epochs}-n{len(args.train_seeds)}",
            "threshold": threshold, "seed": args.seed, "epochs": args.epochs,
            "train_templates": list(data.SPLIT["train"]),
            "train_seeds": [args.train_seeds.start, args.train_seeds.stop - 1],
            "validation_seeds": [args.validation_seeds.start, args.validation_seeds.stop - 1],
            "train_samples": len(train_set), "train_positive_share": float(train_set.link.mean())}
    (args.out / "attention.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out / 'attention.tflite'} ({len(train_set)} training pairs, "
          f"threshold {threshold} from validation)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from atlas.central.correlate.attention import AttentionModel, ModelUnavailable
    from atlas.train.correlate.evaluate import markdown, report

    try:
        model = AttentionModel(args.model)
    except (ModelUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r = report(model, args.seeds)
    if args.agent_run:
        from atlas.train.correlate.evaluate import agent_cities

        r["agent_cities"] = agent_cities(model, [(Path(c), Path(e)) for c, e in args.agent_run])
    print(json.dumps(r, indent=2) if args.json else markdown(r))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atlas.train.correlate",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and write attention.tflite + attention.json")
    t.add_argument("--out", type=Path, default=DEFAULT_OUT)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--train-seeds", type=_range, default=data.SEEDS["train"])
    t.add_argument("--validation-seeds", type=_range, default=data.SEEDS["validation"])
    e = sub.add_parser("evaluate", help="compare the engines on the report templates and seeds")
    e.add_argument("--model", type=Path, default=DEFAULT_OUT / "attention.tflite")
    e.add_argument("--seeds", type=_range, default=data.SEEDS["report"])
    e.add_argument("--json", action="store_true")
    e.add_argument("--agent-run", nargs=2, action="append", default=[],
                   metavar=("CITY", "REPORT"),
                   help="also score on the real agent's incidents: a city folder (atlas-sim "
                        "city) and its report folder (atlas-sim evaluate); repeatable")
    args = p.parse_args(argv)
    return cmd_train(args) if args.cmd == "train" else cmd_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
