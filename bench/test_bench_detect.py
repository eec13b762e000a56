"""Features and inference, each as a ratio against a baseline in the same run.

    .venv/bin/python -m pytest bench/test_bench_detect.py --benchmark-enable -s

- features: `FeatureExtractor.update` over decoded packets of a generated gateway capture (all
  41 features, novelty and entropy included), reported next to a per-packet Python loop that
  keeps the 22 damped counters alone, the way Kitsune-style extractors work. The baseline does
  a fraction of the work, so the figure is reported, not held to a goal: it shows where the
  per-tick cost of the batched design stops being amortized (a sparse capture);
- inference: the int8 models on a batch of 256 rows at once, vs the same models invoked row by
  row (what a per-device, per-event detector would do).
Both need nothing beyond the package (traffic generated on the fly), so they run unchanged on
a gateway.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.decode.packets import AddressBook, decode_packets
from atlas.agent.decode.streams import MqttStreams
from atlas.agent.detect import Detector
from atlas.agent.features.schema import N_FEATURES
from atlas.agent.features.windows import FeatureExtractor
from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture

INFERENCE_GOAL = 5.0  # a batch of 256 vs 256 single-row invokes


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    pcap = tmp_path_factory.mktemp("detect") / "gw.pcap"
    generate_capture(pcap, devices=300, duration=120, seed=4, attacks=[AttackSpec("mqtt_flood", start=30, duration=40)])
    book, streams, out = AddressBook(), MqttStreams(), []
    for batch in read_capture(pcap):
        packets = decode_packets(batch, book)
        out.append((packets, streams.feed(batch, packets)))
    return out


def _per_packet_baseline(parts) -> int:
    """22 damped per-device counters (the schema's COUNTERS) updated packet by packet."""
    state: dict[int, list[float]] = {}
    n = 0
    for packets, _ in parts:
        for ts, src, size, flags in zip(packets["ts"].tolist(), packets["src"].tolist(), packets["wirelen"].tolist(), packets["tcp_flags"].tolist()):
            s = state.get(src)
            if s is None:
                s = state[src] = [ts] + [0.0] * 22
            decay = math.exp2(-(ts - s[0]) / 2.0)
            inc = (1.0, 0.0, size, 0.0, float(flags & 2 != 0)) + (0.0,) * 17
            s[0] = ts
            for j in range(22):
                s[j + 1] = s[j + 1] * decay + inc[j]
            n += 1
    return n


def test_features_batched_vs_per_packet(benchmark, decoded):
    n = sum(len(p) for p, _ in decoded)
    t0 = time.process_time()
    _per_packet_baseline(decoded)
    base = time.process_time() - t0

    def run():
        fx = FeatureExtractor()
        rows = [r for p, m in decoded for r in fx.update(p, m)] + fx.flush()
        return rows

    t0 = time.process_time()
    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    ours = time.process_time() - t0
    ratio = base / ours
    benchmark.extra_info.update(packets=n, us_per_packet=round(ours / n * 1e6, 3), baseline_us_per_packet=round(base / n * 1e6, 3), ratio=round(ratio, 1))
    print(f"\nfeatures: {ours / n * 1e6:.2f} us/packet batched ({len(rows)} ticks), per-packet Python "
          f"{base / n * 1e6:.2f} us/packet (22 counters only): {ratio:.1f}x")
    X = np.concatenate([r.X for r in rows])
    assert len(X) > 0 and np.isfinite(X).all() and X.shape[1] == N_FEATURES


def test_inference_batch_vs_single_rows(benchmark):
    det = Detector(batch=256)
    single = Detector(batch=1)
    X = np.random.default_rng(1).normal(size=(256, N_FEATURES)).astype(np.float32)
    det.score(X)
    t0 = time.process_time()
    for i in range(256):
        single.score(X[i : i + 1])
    base = time.process_time() - t0
    reps = 20
    t0 = time.process_time()
    out = benchmark.pedantic(lambda: [det.score(X) for _ in range(reps)], rounds=1, iterations=1)
    ours = (time.process_time() - t0) / reps
    ratio = base / ours
    benchmark.extra_info.update(us_per_batch=round(ours * 1e6, 1), single_rows_us=round(base * 1e6, 1), ratio=round(ratio, 1))
    print(f"\ninference: {ours * 1e6:.0f} us per batch of 256 rows ({ours / 256 * 1e6:.2f} us/row), "
          f"256 single-row calls {base * 1e6:.0f} us: {ratio:.1f}x")
    assert len(out[-1].kind) == 256
    assert ratio >= INFERENCE_GOAL
