"""The packet path's in-process fuzzers, run to a million inputs each.

    .venv/bin/python bench/fuzz_packet_path.py --inputs 1000000 --seed 1 [--only times,headers] [--json]

Each fuzzer (tests/agent/fuzzing.py) feeds seeded inputs to one stage: capture files to the
reader, frames to the header decoder, MQTT messages to the parser, TCP segments to the stream
decoder, spoiled frame times (NaN, infinite, out of range, backward, jumping) to the whole
pipeline with the real detector. Prints, per fuzzer, the inputs, the rate and the unexpected
results (an exception other than the stage's own error for bad input, or a broken invariant),
with the first examples and their seed. Exit status 1 when anything was unexpected.
The tests run the same fuzzers small (tests/agent/test_fuzz_packet_path.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "agent"))  # fuzzing.py and its builders

from fuzzing import FUZZERS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs per fuzzer (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated fuzzers (default: all): " + ", ".join(FUZZERS))
    p.add_argument("--json", action="store_true", help="one JSON object per fuzzer")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(FUZZERS)
    unknown = [n for n in names if n not in FUZZERS]
    if unknown or args.inputs < 1:
        p.error(f"unknown fuzzer {unknown[0]!r}" if unknown else "--inputs must be at least 1")
    bad = 0
    if not args.json:
        print(f"{'fuzzer':<14} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} {'unexpected':>10}  reached", flush=True)
    for name in names:
        run = FUZZERS[name](args.inputs, args.seed)
        bad += run.unexpected
        if args.json:
            print(json.dumps({"fuzzer": name, "seed": args.seed, "inputs": run.inputs, "seconds": round(run.seconds, 1),
                              "rate": round(run.rate), "unexpected": run.unexpected, "examples": run.examples,
                              "stats": run.stats}), flush=True)
        else:
            reached = ", ".join(f"{k} {v:,}" for k, v in run.stats.items())
            print(f"{name:<14} {run.inputs:>10,} {run.seconds:>8.1f} {run.rate:>9,.0f} {run.unexpected:>10}  {reached}", flush=True)
            for ex in run.examples:
                print(f"    {ex[:500]}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
