"""Replay throughput: ATLAS's batched path vs Scapy dissecting every packet, same capture, same run.

    .venv/bin/python bench/replay_throughput.py --devices 5000 --seconds 400   # >= 1M packets

Prints packets per CPU-second for both and their ratio (goal: at least 30x). CPU time is the
process's own (time.process_time), so other load on the machine does not count.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

REPLAY_GOAL = 30.0


def make_capture(path: Path, devices: int, seconds: float, seed: int = 11) -> Path:
    """A gateway's traffic with one of each attack kind, from the simulator."""
    import numpy as np

    from atlas.train.corpus import attack_specs
    from atlas.sim.capture import generate_capture

    if not path.exists():
        rng = np.random.default_rng([seed, 7331])
        generate_capture(path, devices=devices, duration=seconds, attacks=attack_specs(rng, seconds), seed=seed)
    return path


def measure_atlas(path: Path) -> dict:
    from atlas.agent.bench import replay_cpu
    from atlas.agent.detect import Detector

    return replay_cpu(path, Detector())


def measure_scapy(path: Path, limit: int) -> dict:
    """The baseline: every frame through Scapy (with its MQTT layer), fields read per packet,
    counters per source updated per packet, as a Scapy-based monitor would."""
    from scapy.contrib.mqtt import MQTT
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import CookedLinux, Ether
    from scapy.utils import RawPcapReader

    reader = RawPcapReader(str(path))
    link = CookedLinux if getattr(reader, "linktype", 1) == 113 else Ether
    per_src: Counter = Counter()
    mqtt_types: Counter = Counter()
    t0 = time.process_time()
    n = 0
    for frame, _meta in reader:
        pkt = link(frame)
        if IP in pkt:
            ip = pkt[IP]
            per_src[(ip.src, ip.dst)] += 1
            if TCP in pkt:
                tcp = pkt[TCP]
                per_src[(ip.src, int(tcp.flags))] += 1
                if MQTT in pkt:
                    mqtt_types[pkt[MQTT].type] += 1
        n += 1
        if n >= limit:
            break
    cpu = time.process_time() - t0
    reader.close()
    return {"packets": n, "cpu_s": cpu, "packets_per_cpu_s": n / cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=400.0)
    p.add_argument("--scapy-sample", type=int, default=20000)
    p.add_argument("--capture", type=Path, help="reuse or write this capture (default: a temp file per size)")
    args = p.parse_args()
    args.capture = args.capture or Path(f"/tmp/atlas-bench-replay-{args.devices}x{args.seconds:g}.pcap")
    t0 = time.time()
    make_capture(args.capture, args.devices, args.seconds)
    print(f"capture {args.capture} ({args.capture.stat().st_size / 1e6:.0f} MB, ready in {time.time() - t0:.0f} s)")
    scapy = measure_scapy(args.capture, args.scapy_sample)
    atlas = measure_atlas(args.capture)
    ratio = atlas["packets_per_cpu_s"] / scapy["packets_per_cpu_s"]
    print(json.dumps({"atlas": atlas, "scapy": scapy, "ratio": round(ratio, 1), "goal": REPLAY_GOAL}, indent=1))
    return 0 if ratio >= REPLAY_GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
