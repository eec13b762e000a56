"""CPU cost of the agent's whole pipeline (decode, streams, features, models, alerts) on one capture.

    .venv/bin/python bench/replay_cpu.py CAPTURE [--repeat 3]

Reads the capture into memory first, then replays it `--repeat` times with fresh state and
prints packets per CPU-second of this process (time.process_time: other load does not count),
the best of the runs. Run it with main's and a branch's interpreter to compare two versions.
"""
from __future__ import annotations

import argparse
import sys
import time

from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import AgentPipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("capture")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    batches = list(read_capture(args.capture))
    n = sum(len(b) for b in batches)
    det = Detector()
    best = float("inf")
    for _ in range(args.repeat):
        pipe = AgentPipeline(AgentConfig(), det)
        t0 = time.process_time()
        for b in batches:
            pipe.process(b)
        pipe.finish()
        best = min(best, time.process_time() - t0)
    print(f"{n} packets, best of {args.repeat}: {best:.3f} CPU-s, {n / best:,.0f} packets per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
