"""MQTT stream decode speed, as ratios against Scapy's MQTT layer in the same run.

    .venv/bin/python -m pytest bench/test_bench_mqtt.py --benchmark-enable -s

- one PUBLISH per segment (the common case, vectorized fast path): MqttStreams.feed on a batch of
  100k segments vs scapy.contrib.mqtt dissecting the same TCP payloads (`MQTT(payload)`);
- coalesced segments (10 messages per segment, and 28 KB TSO-like segments of 400 messages, as in
  the MQTTset flood capture): per message, against Scapy dissecting each message alone;
- the front end that replay runs: decode_packets + feed over the frames, against Scapy
  dissecting every frame with `Ether()` and scapy.contrib.mqtt loaded;
- connection churn (handshake, CONNECT, CONNACK, DISCONNECT, FIN per connection), the worst
  case for the vectorized path, against the same Scapy baseline.

Each test prints packets (or messages) per second of both and the ratio, and stores them in the
benchmark's extra_info.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))
from mqtt_segments import Conn, batch_of, connack, connect, publish  # noqa: E402

from atlas.agent.decode import MQTT_OK, PUBLISH  # noqa: E402
from atlas.agent.decode.packets import AddressBook, decode_packets  # noqa: E402
from atlas.agent.decode.streams import MqttStreams  # noqa: E402

N_SEGMENTS = 100_000
N_FLOWS = 200
SCAPY_SAMPLE = 4000
GOAL = 30.0  # the goal for the whole replay path; decode alone must clear it


def _traffic(per_segment: int, n_messages: int, payload: bytes = b'{"t": 21.5, "unit": "C", "ok": true}'):
    """Warm-up segments (handshake, CONNECT/CONNACK) and the measured ones: PUBLISH from N_FLOWS
    clients, `per_segment` messages to a segment, with the broker's pure ACKs in between."""
    conns = [Conn(client=f"10.2.{i // 250}.{i % 250 + 1}", cport=30000 + i) for i in range(N_FLOWS)]
    warm, segs, msgs = [], [], []
    for c in conns:
        c.handshake()
        c.send(True, connect(f"sensor-{c.cport}"))
        c.send(False, connack(0))
        warm += c.segs
        c.segs = []
    k = 0
    while k < n_messages:
        for c in conns:
            batch = [publish(f"city/district{(k + j) % 9}/sensor{c.cport}/temp", payload, qos=(k + j) % 2, pid=(k + j) % 65535 + 1)
                     for j in range(per_segment)]
            msgs += batch
            segs.append(c.send(True, b"".join(batch)))
            if len(segs) % 4 == 0:
                segs.append(c.ack(False))
            k += per_segment
            if k >= n_messages:
                break
    segs.sort(key=lambda s: s.ts)
    return batch_of(warm), batch_of(segs), msgs


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _feed_once(warm, measured) -> np.ndarray:
    st = MqttStreams()
    st.feed(*warm)
    t = time.process_time()
    rows = st.feed(*measured)
    _feed_once.last = time.process_time() - t
    return rows


def _feed_time(warm, measured, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        _feed_once(warm, measured)
        best = min(best, _feed_once.last)
    return best


def _scapy_time(payloads: list[bytes]) -> float:
    from scapy.contrib.mqtt import MQTT

    def run() -> None:
        for p in payloads:
            m = MQTT(p)
            m.type, m.len

    return _best(run, 5) / len(payloads)  # best of 5: one slow round on a busy machine must not set the baseline


def _report(benchmark, name: str, ours_per_item: float, base_per_item: float, unit: str) -> float:
    ratio = base_per_item / ours_per_item
    benchmark.extra_info.update({f"ours_{unit}_per_s": round(1 / ours_per_item), f"scapy_{unit}_per_s": round(1 / base_per_item),
                                 "ratio": round(ratio, 1)})
    print(f"\n{name}: {1 / ours_per_item:,.0f} {unit}/s ({ours_per_item * 1e6:.2f} us); "
          f"Scapy: {1 / base_per_item:,.0f} {unit}/s ({base_per_item * 1e6:.1f} us); ratio {ratio:.0f}x")
    return ratio


def test_feed_one_publish_per_segment_vs_scapy_mqtt(benchmark):
    warm, measured, msgs = _traffic(1, N_SEGMENTS)
    rows = benchmark.pedantic(_feed_once, args=(warm, measured), rounds=3, iterations=1)
    assert len(rows) == N_SEGMENTS and (rows["error"] == MQTT_OK).all()
    n_packets = len(measured[1])  # PUBLISH segments and pure ACKs
    ours = _feed_time(warm, measured) / n_packets
    st = MqttStreams()
    st.feed(*warm)
    st.feed(*measured)
    assert st.stats()["fast_path"] == N_SEGMENTS  # every PUBLISH took the vectorized path
    base = _scapy_time(msgs[:SCAPY_SAMPLE])
    assert _report(benchmark, "MqttStreams.feed, 1 PUBLISH/segment", ours, base, "packets") >= GOAL


@pytest.mark.parametrize("per_segment", [10, 400])
def test_feed_coalesced_segments_vs_scapy_mqtt(benchmark, per_segment):
    warm, measured, msgs = _traffic(per_segment, N_SEGMENTS)
    rows = benchmark.pedantic(_feed_once, args=(warm, measured), rounds=3, iterations=1)
    assert ((rows["mtype"] == PUBLISH) & (rows["error"] == MQTT_OK)).sum() == len(msgs)
    ours = _feed_time(warm, measured) / len(msgs)
    base = _scapy_time(msgs[:SCAPY_SAMPLE])  # Scapy on each message alone (it has no reassembly)
    assert _report(benchmark, f"MqttStreams.feed, {per_segment} PUBLISH/segment", ours, base, "messages") >= GOAL


def test_decode_and_feed_vs_scapy_dissecting_every_frame(benchmark):
    """The replay front end after reading: header decode + MQTT streams, per frame."""
    warm, measured, _ = _traffic(1, N_SEGMENTS)
    batch = measured[0]

    def ours() -> int:
        st, book = MqttStreams(), AddressBook()
        st.feed(warm[0], decode_packets(warm[0], book))
        return len(st.feed(batch, decode_packets(batch, book)))

    assert benchmark.pedantic(ours, rounds=3, iterations=1) == N_SEGMENTS
    t_ours = _best(ours, 3) / len(batch)
    import scapy.contrib.mqtt  # noqa: F401  (binds MQTT to port 1883, as the Scapy pipeline would)
    from scapy.layers.l2 import Ether

    frames = [batch.frame(i) for i in range(SCAPY_SAMPLE)]

    def scapy_all() -> None:
        for f in frames:
            Ether(f).lastlayer()

    t_base = _best(scapy_all, 2) / SCAPY_SAMPLE
    assert _report(benchmark, "decode_packets + feed", t_ours, t_base, "packets") >= GOAL


def test_connection_churn_vs_scapy_dissecting_every_frame(benchmark):
    """The worst case for the vectorized path: short connections (handshake, CONNECT, CONNACK,
    DISCONNECT, FIN), as in a brute-force or connection flood; nearly all of it takes the
    reference path. Per frame, against Scapy dissecting every frame with its MQTT layer."""
    segs = []
    for i in range(10_000):
        c = Conn(client=f"10.3.{i // 250 % 250}.{i % 250 + 1}", cport=20000 + i % 40000, t=1000 + i * 1e-3)
        c.handshake()
        c.send(True, connect(f"bf{i}", username="admin", password=b"pw%d" % i))
        c.send(False, connack(5))
        c.send(True, b"\xe0\x00")
        c.fin(True)
        c.fin(False)
        segs += c.segs
    segs.sort(key=lambda s: s.ts)
    batch, packets = batch_of(segs)

    def ours() -> int:
        st = MqttStreams()
        return len(st.feed(batch, packets))

    assert benchmark.pedantic(ours, rounds=3, iterations=1) == 30_000
    t_ours = _best(ours, 3) / len(batch)
    import scapy.contrib.mqtt  # noqa: F401
    from scapy.layers.l2 import Ether

    frames = [batch.frame(i) for i in range(SCAPY_SAMPLE)]

    def scapy_all() -> None:
        for f in frames:
            Ether(f).lastlayer()

    t_base = _best(scapy_all, 2) / SCAPY_SAMPLE
    # A floor against regressions of the reference path, not the goal (that is the
    # replay of realistic traffic, bench/replay_throughput.py).
    assert _report(benchmark, "feed, connection churn", t_ours, t_base, "packets") >= 10
