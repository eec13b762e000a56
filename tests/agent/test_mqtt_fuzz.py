"""The MQTT decoder never raises on malformed, truncated or random bytes.

Seeded and reproducible: >= 100k inputs through `parse_message`, and >= 100k TCP payloads of
crafted segments (reordered, retransmitted, truncated, SYN/FIN/RST, MQTT 5 connections) through
`MqttStreams.feed`. A failure prints the seed and the input.
"""
from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from atlas.agent.decode import MQTT_DTYPE, MQTT_OK, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
from atlas.agent.decode.mqtt import parse_message
from atlas.agent.decode.streams import MqttStreams
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/mqtt_segments.py (importlib mode)
from mqtt_segments import (  # noqa: E402
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    Segment,
    ack,
    batch_of,
    connack,
    connect,
    msg,
    props,
    publish,
    s16,
    suback,
    subscribe,
    unsuback,
    unsubscribe,
)

SEED = 20240611
N_PARSE = 110_000
N_SEGMENTS = 110_000


def _valid_messages(rng: random.Random) -> list[bytes]:
    """A corpus of well-formed messages of every type, 3.1 / 3.1.1 / 5.0."""
    out = []
    for level in (3, 4, 5):
        p5 = props(b"\x11" + struct.pack(">I", rng.randrange(1 << 32)), b"\x26" + s16("k") + s16("v")) if level == 5 else b"\x00"
        out.append(connect(f"id{rng.randrange(1000)}", level=level, keepalive=rng.randrange(65536), username="u",
                           password=b"p", will=("lwt/x", b"bye"), properties=p5))
        out.append(connack(rng.randrange(6), level=level))
        for qos in (0, 1, 2):
            pp = props(b"\x23\x00\x02", b"\x03" + s16("text/plain"), b"\x0b\x81\x01") if level == 5 else b"\x00"
            out.append(publish("city/" + "x" * rng.randrange(40), bytes(rng.randrange(256) for _ in range(rng.randrange(60))),
                               qos=qos, pid=rng.randrange(1, 65536), level=level, properties=pp))
        out.append(subscribe(("a/+/b", 1), ("$SYS/#", 2), ("c", 0), level=level))
        out.append(suback(0, 1, 0x80, level=level))
        out.append(unsubscribe("a/+/b", "c", level=level))
        out.append(unsuback(3, 0, level=level))
        for t in (4, 5, 6, 7):
            out.append(ack(t, rng.randrange(1, 65536)))
            if level == 5:
                out.append(ack(t, 7, reason=0, properties=props(b"\x1f" + s16("r"))))
    out += [PINGREQ, PINGRESP, DISCONNECT, msg(0xE0, b"\x8e" + props(b"\x1f" + s16("bye"))),
            msg(0xF0, b"\x18" + props(b"\x15" + s16("SCRAM")))]
    return out


def _mutate(rng: random.Random, base: bytes) -> bytes:
    b = bytearray(base)
    kind = rng.randrange(9)
    if kind == 0 and b:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del b[rng.randrange(len(b) + 1) :]
    elif kind == 2 and len(b) > 1:  # remaining-length corruption
        n = rng.randint(1, 6)
        b[1:2] = bytes(rng.choice([0xFF, 0x80, 0x7F, rng.randrange(256)]) for _ in range(n))
    elif kind == 3 and len(b) > 4:  # inner length field corruption (string / property lengths)
        i = rng.randrange(2, len(b) - 1)
        b[i : i + 2] = struct.pack(">H", rng.choice([0, 1, 0xFFFF, rng.randrange(65536)]))
    elif kind == 4:  # MQTT 5 property garbage: a property block of random bytes
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
        block = bytes([len(garbage)]) + garbage if rng.random() < 0.7 else garbage
        body = s16("t") + (b"\x00\x01" if rng.random() < 0.5 else b"") + block + b"payload"
        return msg(rng.choice([0x30, 0x32, 0x34]), body)
    elif kind == 5:  # insert / delete bytes
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b) + 1)
            if rng.random() < 0.5:
                b[i:i] = bytes([rng.randrange(256)])
            elif i < len(b):
                del b[i]
    elif kind == 6:  # random first byte (types, reserved flags)
        if b:
            b[0] = rng.randrange(256)
    elif kind == 7:  # invalid UTF-8 / U+0000 spliced into the middle
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice([b"\x00", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"])
    return bytes(b)


def _random_input(rng: random.Random, corpus: list[bytes]) -> bytes:
    r = rng.random()
    if r < 0.25:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if r < 0.85:
        return _mutate(rng, rng.choice(corpus))
    return b"".join(_mutate(rng, rng.choice(corpus)) if rng.random() < 0.5 else rng.choice(corpus) for _ in range(rng.randint(2, 5)))


def test_parse_message_never_raises_on_100k_inputs():
    rng = random.Random(SEED)
    corpus = _valid_messages(rng)
    errors = 0
    for i in range(N_PARSE):
        data = _random_input(rng, corpus)
        to_broker, level = rng.random() < 0.5, rng.choice((3, 4, 5))
        max_size = rng.choice((64, 1024, 256 * 1024))
        try:
            m = parse_message(data, to_broker, level, max_size)
        except Exception as e:  # pragma: no cover - the point of the test
            pytest.fail(f"seed {SEED} input {i}: parse_message({data!r}, {to_broker}, {level}, {max_size}) raised {e!r}")
        if not data:
            assert m is None
            continue
        assert m is not None and 0 <= m.mtype <= 15 and m.length >= 1, (i, data)
        errors += m.error != MQTT_OK
        if m.error == MQTT_OK:
            # A well-formed message is exactly its announced bytes; decoding them alone agrees.
            assert m.length <= len(data) and m.length <= max_size
            again = parse_message(data[: m.length], to_broker, level, max_size)
            assert (again.error, again.mtype, again.payload_len, again.topic_hash) == (m.error, m.mtype, m.payload_len, m.topic_hash)
        else:
            assert m.detail, (i, data)
    assert errors > N_PARSE // 2  # the inputs really are mostly malformed


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(data=st.binary(max_size=200), to_broker=st.booleans(), level=st.sampled_from((3, 4, 5)))
def test_parse_message_never_raises_hypothesis(data, to_broker, level):
    m = parse_message(data, to_broker, level)
    assert (m is None) == (not data)


def _segments(rng: random.Random, corpus: list[bytes], n: int, damage: float = 1.0, garbage: float = 0.6) -> list[Segment]:
    """n crafted segments over a few dozen connections: mostly in order, with damage (`damage`
    scales how often: SYN/FIN/RST, retransmissions, holes, snap-length cuts, split messages);
    `garbage` of the payloads are malformed or random bytes."""
    flows = []
    for k in range(40):
        flows.append({"c": (10 << 24) + k, "b": (10 << 24) + 250, "cp": 20000 + k, "bp": rng.choice((1883, 1883, 8883)),
                      "seq": {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}})
    out, t = [], 1000.0
    while len(out) < n:
        f = rng.choice(flows)
        to_b = rng.random() < 0.7
        r = rng.random() / damage
        if r < 0.03:
            flags, payload = TCP_SYN | (0 if to_b else TCP_ACK), b""
        elif r < 0.05:
            flags, payload = TCP_FIN | TCP_ACK, b""
        elif r < 0.06:
            flags, payload = TCP_RST, b""
        else:
            flags = TCP_PSH | TCP_ACK
            payload = _random_input(rng, corpus) if rng.random() < garbage else rng.choice(corpus)
            if rng.random() < 0.1 * damage:
                payload = connect("fz", level=5) + payload
            if rng.random() < 0.05 * damage:  # a split message
                payload = payload[: rng.randrange(len(payload) + 1)]
        seq = f["seq"][to_b]
        s = rng.random() / damage
        if s < 0.05:
            seq = (seq - rng.randrange(1, 3000)) & 0xFFFFFFFF  # retransmission / overlap
        elif s < 0.10:
            seq = (seq + rng.randrange(1, 3000)) & 0xFFFFFFFF  # ahead of a hole
        elif s < 0.11:
            seq = rng.randrange(1 << 32)
        wire_extra = rng.randrange(1, 2000) if rng.random() < 0.03 * damage else 0
        t += rng.random() * 0.01
        src, dst, sp, dp = (f["c"], f["b"], f["cp"], f["bp"]) if to_b else (f["b"], f["c"], f["bp"], f["cp"])
        out.append(Segment(t, src, dst, sp, dp, seq, flags, payload, wire_extra))
        if s >= 0.05 or rng.random() < 0.5:
            f["seq"][to_b] = (seq + len(payload) + wire_extra + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
    return out


@pytest.mark.slow
def test_stream_decoder_never_raises_on_100k_crafted_segments():
    rng = random.Random(SEED + 1)
    corpus = _valid_messages(rng)
    segs = _segments(rng, corpus, N_SEGMENTS)
    st = MqttStreams(ports=(1883, 8883), max_message=rng.choice((4096, 64 * 1024)), max_flows=24,
                     max_buffered=256 * 1024, max_ooo_bytes=16 * 1024, max_ooo_segments=8)
    total = 0
    i = 0
    while i < len(segs):
        n = rng.choice((1, 7, 64, 512, 4000))
        b, p = batch_of(segs[i : i + n])
        try:
            rows = st.feed(b, p)
        except Exception as e:  # pragma: no cover
            pytest.fail(f"seed {SEED + 1}: feed raised {e!r} on segments {i}..{i + n}")
        assert rows.dtype == MQTT_DTYPE
        total += len(rows)
        held = sum(f.held() for f in st._flows.values())
        assert st.stats()["buffered_bytes"] == held <= 256 * 1024
        i += n
    rows = st.flush()
    s = st.stats()
    assert s["internal_errors"] == 0
    assert s["segments"] > N_SEGMENTS * 0.9 and total > N_SEGMENTS // 2
    assert s["gaps"] > 100 and s["evicted_flows"] > 0 and sum(s["malformed"].values()) > 1000


def test_packet_rows_pointing_outside_the_buffer_are_survived():
    """PACKET_DTYPE rows are trusted to lie inside the batch; if not, nothing is read out of bounds."""
    rng = random.Random(SEED + 2)
    corpus = _valid_messages(rng)
    segs = _segments(rng, corpus, 2000)
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
    corpus = _valid_messages(rng)
    # Well-formed messages (with the TCP damage), so that the fast path is really taken.
    common = [publish(f"city/t/{i}", b"v" * i, qos=i % 3, pid=i + 1) for i in range(60)] + [PINGREQ, PINGRESP, ack(4, 9)]
    segs = _segments(rng, common * 10 + corpus, 30_000, damage=0.05, garbage=0.002)
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
