"""`make demo`: a small city end to end, then the paper's table.

    python -m atlas.sim.demo [--out out/demo] [--devices 500] [--gateways 15] [--duration 300] [--seed 7]

Builds the city (`atlas-sim city`: devices from the firmware profiles, one gateway per district
and domain, attacks of every kind, a cross-domain campaign, benign look-alikes), runs the ATLAS
agent on every gateway's capture and the baselines on the same traffic (`atlas-sim evaluate`),
and prints the table that opens OUT/report/report.md. The same two commands make the
5,000-device evaluation: see the README.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atlas.sim.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--gateways", type=int, default=15)
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=None, help="processes for generation and replay (default: the cores)")
    args = p.parse_args(argv)

    from atlas.sim.cli import main as sim

    city, report = args.out / "city", args.out / "report"
    city_cmd = ["city", "--devices", str(args.devices), "--gateways", str(args.gateways), "--duration", f"{args.duration:g}",
                "--seed", str(args.seed), "--out", str(city)]
    eval_cmd = ["evaluate", str(city), "--out", str(report)]
    if args.workers:
        city_cmd += ["--workers", str(args.workers)]
        eval_cmd += ["--workers", str(args.workers)]
    t0 = time.perf_counter()
    for cmd in (city_cmd, eval_cmd):
        print(f"\n$ atlas-sim {' '.join(cmd)}", flush=True)
        rc = sim(cmd)
        if rc:
            return rc
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; the report with its plots: {report / 'report.md'}")
    print(f"one gateway as its agent saw it: atlas-agent replay {city}/gateways/ID/traffic.pcap --config {city}/gateways/ID/agent.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
