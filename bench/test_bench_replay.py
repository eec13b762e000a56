"""The whole replay path (capture file -> decode -> MQTT streams -> features -> int8 detection ->
incidents), as a ratio against a pipeline where Scapy dissects every packet, in the same run.

    .venv/bin/python -m pytest bench/test_bench_replay.py --benchmark-enable -s

The capture is generated on the fly by the simulator (a city gateway with attacks), so the
benchmark needs nothing beyond the package. ATLAS_BENCH_DEVICES / ATLAS_BENCH_SECONDS scale it;
bench/replay_throughput.py runs the 1M-packet figure recorded in bench/RESULTS.md.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_throughput import REPLAY_GOAL, make_capture, measure_atlas, measure_scapy  # noqa: E402

DEVICES = int(os.environ.get("ATLAS_BENCH_DEVICES", "300"))
SECONDS = float(os.environ.get("ATLAS_BENCH_SECONDS", "120"))
SCAPY_SAMPLE = 5000


@pytest.fixture(scope="session")
def city_capture(tmp_path_factory) -> Path:
    return make_capture(tmp_path_factory.mktemp("replay") / "city.pcap", DEVICES, SECONDS)


def test_replay_vs_scapy_every_packet(benchmark, city_capture):
    scapy = measure_scapy(city_capture, SCAPY_SAMPLE)
    atlas = benchmark.pedantic(measure_atlas, args=(city_capture,), rounds=1, iterations=1)
    ratio = atlas["packets_per_cpu_s"] / scapy["packets_per_cpu_s"]
    benchmark.extra_info.update(
        packets=atlas["packets"],
        mqtt_messages=atlas["mqtt_messages"],
        atlas_packets_per_cpu_s=round(atlas["packets_per_cpu_s"]),
        scapy_packets_per_cpu_s=round(scapy["packets_per_cpu_s"]),
        ratio=round(ratio, 1),
    )
    print(f"\nreplay: ATLAS {atlas['packets_per_cpu_s']:,.0f} pkt/CPU-s over {atlas['packets']:,} packets "
          f"({atlas['incidents']} incidents), Scapy every packet {scapy['packets_per_cpu_s']:,.0f} pkt/CPU-s: {ratio:.1f}x")
    assert atlas["incidents"] > 0  # the attacks in the capture are found on this path
    assert ratio >= REPLAY_GOAL
