"""`make demo`: generate a gateway's traffic with attacks, replay it through the agent, compare.

    python -m atlas.sim.demo [--out out/demo] [--devices 30] [--duration 300] [--seed 42]

Prints the incidents the agent raised (as `atlas-agent replay` does) and, for each attack in
the ground truth, whether the agent caught it and how fast.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from atlas.agent.alerts import KNOWN_KINDS
from atlas.agent.cli import format_incident
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import replay


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atlas.sim.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--devices", type=int, default=30)
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    import numpy as np

    from atlas.central.train.corpus import attack_specs, lookalike_specs
    from atlas.sim.traffic.capture import generate_capture

    args.out.mkdir(parents=True, exist_ok=True)
    pcap = args.out / "capture.pcap"
    rng = np.random.default_rng([args.seed, 7331])
    t0 = time.perf_counter()
    truth = generate_capture(
        pcap,
        devices=args.devices,
        duration=args.duration,
        attacks=attack_specs(rng, args.duration, KNOWN_KINDS),
        lookalikes=lookalike_specs(rng, args.duration),
        seed=args.seed,
    )
    truth.write(args.out)
    print(f"generated {pcap}: {truth.packets} packets, {args.devices} devices, {args.duration:.0f} s, "
          f"{len(truth.steps)} attacks, {len(truth.benign_events)} benign look-alikes ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    detector = Detector()
    incidents = list(replay([pcap], AgentConfig(), detector))
    print(f"\nagent replay ({detector.version}, {time.perf_counter() - t0:.1f} s): {len(incidents)} incidents")
    for inc in incidents:
        print("  " + format_incident(inc))

    print("\nground truth:")
    caught = 0
    for step in truth.steps:
        attackers = set(step.attackers or [step.attacker])
        mine = [i for i in incidents if i.src_ip in attackers and i.last_seen >= step.start - 1]
        caught += bool(mine)
        if mine:
            ttd = max(0.0, min(i.time for i in mine) - step.start)
            verdict = f"caught as {', '.join(sorted({i.kind for i in mine}))} after {ttd:.1f} s"
        else:
            verdict = "MISSED"
        print(f"  {step.kind:<16} from {step.attacker:<15} {verdict}")
    attackers = {a for s in truth.steps for a in (s.attackers or [s.attacker])}
    false = [i for i in incidents if i.src_ip not in attackers]
    print(f"\n{caught}/{len(truth.steps)} attacks caught; {len(false)} incidents on devices that did not attack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
