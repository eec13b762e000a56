"""The MQTT decoder never raises on malformed, truncated or random bytes.

Seeded and reproducible: >= 100k inputs through `parse_message`, and >= 100k TCP payloads of
crafted segments (reordered, retransmitted, truncated, SYN/FIN/RST, MQTT 5 connections) through
`MqttStreams.feed` (the fuzzers of tests/agent/fuzzing.py, which bench/fuzz_packet_path.py runs
to 1M inputs). A failure prints the seed and the input.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from atlas.agent.decode.mqtt import parse_message
from atlas.agent.decode.streams import MqttStreams

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/*.py helpers (importlib mode)
from fuzzing import crafted_segments, fuzz_mqtt_messages, fuzz_mqtt_streams, valid_messages  # noqa: E402
from mqtt_segments import PINGREQ, PINGRESP, ack, batch_of, publish  # noqa: E402

SEED = 20240611
N_PARSE = 110_000
N_SEGMENTS = 110_000


def test_parse_message_never_raises_on_100k_inputs():
    run = fuzz_mqtt_messages(N_PARSE, SEED)
    assert run.unexpected == 0, run.examples
    assert run.stats["malformed"] > N_PARSE // 2  # the inputs really are mostly malformed


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(data=st.binary(max_size=200), to_broker=st.booleans(), level=st.sampled_from((3, 4, 5)))
def test_parse_message_never_raises_hypothesis(data, to_broker, level):
    m = parse_message(data, to_broker, level)
    assert (m is None) == (not data)


@pytest.mark.slow
def test_stream_decoder_never_raises_on_100k_crafted_segments():
    run = fuzz_mqtt_streams(N_SEGMENTS, SEED + 1)
    assert run.unexpected == 0, run.examples
    s = run.stats
    assert s["segments"] > N_SEGMENTS * 0.9 and s["rows"] > N_SEGMENTS // 2
    assert s["gaps"] > 100 and s["evicted_flows"] > 0 and s["malformed"] > 1000


def test_packet_rows_pointing_outside_the_buffer_are_survived():
    """PACKET_DTYPE rows are trusted to lie inside the batch; if not, nothing is read out of bounds."""
    rng = random.Random(SEED + 2)
    corpus = valid_messages(rng)
    segs = crafted_segments(rng, corpus, 2000)
    b, p = batch_of(segs)
    nbuf = len(b.buf)
    for _ in range(20):
        q = p.copy()
        idx = rng.sample(range(len(q)), 200)
        q["payload_off"][idx] = [rng.choice((0, nbuf - 1, nbuf, nbuf + 100, rng.randrange(nbuf))) for _ in idx]
        q["payload_len"][idx] = [rng.choice((0, 1, 5000, rng.randrange(70000))) for _ in idx]
        st = MqttStreams()
        st.feed(b, q)
        assert st.stats()["internal_errors"] == 0


def test_fast_path_and_reference_path_agree_on_damaged_traffic():
    """Differential: the vectorized path (with its rounds) and the reference path alone give the
    same rows on crafted traffic full of damage (no table pressure, so order cannot matter)."""
    rng = random.Random(SEED + 3)
    corpus = valid_messages(rng)
    # Well-formed messages (with the TCP damage), so that the fast path is really taken.
    common = [publish(f"city/t/{i}", b"v" * i, qos=i % 3, pid=i + 1) for i in range(60)] + [PINGREQ, PINGRESP, ack(4, 9)]
    segs = crafted_segments(rng, common * 10 + corpus, 30_000, damage=0.05, garbage=0.002)
    sizes = [rng.choice((1, 5, 50, 700, 3000)) for _ in range(2000)]
    results = []
    for rounds in (0, 1, 4):
        st = MqttStreams(ports=(1883, 8883), fast_rounds=rounds, ooo_timeout=1e9)
        out, i, k = [], 0, 0
        while i < len(segs):
            out.append(st.feed(*batch_of(segs[i : i + sizes[k]])))
            i += sizes[k]
            k += 1
        out.append(st.flush())
        results.append((np.concatenate(out), st.stats()))
    (ref, ref_stats), *others = results
    assert ref_stats["fast_path"] == 0 and len(ref) > 10_000
    for rows, stats in others:
        assert stats["fast_path"] > 4_000 and stats["internal_errors"] == 0
        assert len(rows) == len(ref)
        assert (rows == ref).all()
