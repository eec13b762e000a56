"""`atlas-agent bench`: a one-screen summary of what this gateway can do, for a ticket.

Generates a gateway's traffic on the fly (the simulator ships in the package), replays it
through the agent's own pipeline, times int8 inference per batch, and estimates how many
packets per second fit in the CPU budget. Numbers are per CPU-second of this process, so a
busy machine lowers them less than wall-clock figures would.
"""
from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def run_bench(devices: int = 300, seconds: float = 60.0, seed: int = 3) -> dict:
    from atlas.agent.board import detect_board
    from atlas.agent.config import AgentConfig
    from atlas.agent.detect import Detector
    from atlas.agent.features.schema import N_FEATURES

    board = detect_board()
    detector = Detector(batch=board.inference_batch)
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        replay = replay_cpu(_generate(Path(tmp) / "gateway.pcap", devices, seconds, seed), detector)
    packets, pps = replay["packets"], replay["packets_per_cpu_s"]

    rows = np.random.default_rng(seed).normal(size=(board.inference_batch, N_FEATURES)).astype(np.float32)
    detector.score(rows)  # warm up
    reps = 200
    t0 = time.process_time()
    for _ in range(reps):
        detector.score(rows)
    infer_us = (time.process_time() - t0) / reps * 1e6

    cores = (board.hardware.cores if board.hardware else 0) or os.cpu_count() or 1
    budget = board.cpu_budget_percent or AgentConfig().budget.cpu_percent
    return {
        "board": board.name,
        "board_source": getattr(board, "source", ""),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runtime": detector.anomaly_model.runtime,
        "models": detector.versions,
        "cores": cores,
        "replay_packets": packets,
        "replay_incidents": replay["incidents"],
        "packets_per_cpu_s": round(pps),
        "inference_batch": board.inference_batch,
        "inference_us_per_batch": round(infer_us, 1),
        "cpu_budget_percent": budget,
        "packets_per_s_within_budget": round(pps * cores * budget / 100.0),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def replay_cpu(path: Path, detector) -> dict:
    """The whole replay path over one capture, in CPU-seconds of this process."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.config import AgentConfig
    from atlas.agent.pipeline import AgentPipeline

    t0 = time.process_time()
    pipe = AgentPipeline(AgentConfig(), detector)
    for batch in read_capture(path):
        pipe.process(batch)
    incidents = pipe.finish()
    cpu = time.process_time() - t0
    n = pipe.counters.frames
    return {
        "packets": n,
        "mqtt_messages": pipe.streams.stats()["messages"],
        "incidents": len(incidents),
        "cpu_s": cpu,
        "packets_per_cpu_s": n / cpu,
    }


def format_bench(r: dict) -> str:
    return "\n".join(
        [
            f"ATLAS agent bench on {r['board']} ({r['machine']}, {r['cores']} cores, Python {r['python']}, {r['runtime']})",
            f"  models                     {', '.join(f'{k} {v}' for k, v in r['models'].items())}",
            f"  replay                     {r['packets_per_cpu_s']:,} packets per CPU-second ({r['replay_packets']:,} packets, {r['replay_incidents']} incidents)",
            f"  inference                  {r['inference_us_per_batch']:.1f} us per batch of {r['inference_batch']}",
            f"  within the CPU budget      about {r['packets_per_s_within_budget']:,} packets/s at {r['cpu_budget_percent']}% of the machine",
            f"  peak memory (RSS)          {r['max_rss_mb']:.0f} MB",
        ]
    )


def _generate(path: Path, devices: int, seconds: float, seed: int) -> Path:
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.capture import generate_capture

    attacks = [AttackSpec("mqtt_flood", start=seconds * 0.3, duration=seconds * 0.2), AttackSpec("port_scan", start=seconds * 0.6, duration=seconds * 0.2)]
    generate_capture(path, devices=devices, duration=seconds, attacks=attacks, seed=seed)
    return path

