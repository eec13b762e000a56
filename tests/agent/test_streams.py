"""MQTT over TCP (atlas.agent.decode.streams): reassembly, the vectorized fast path against the
reference path, stream damage (split, merged, retransmitted, reordered, lost, truncated), bounds,
and the real MQTTset captures."""
from __future__ import annotations

import collections
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atlas.agent.decode import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    MQTT_DTYPE,
    MQTT_OK,
    MQTT_OVERSIZE,
    MQTT_PROTOCOL,
    MQTT_STREAM_GAP,
    MQTT_TRUNCATED,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    TCP_ACK,
    TCP_PSH,
)
from atlas.agent.decode.mqtt import parse_message, topic_hash
from atlas.agent.decode.streams import MqttStreams, decode_vectorized
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/mqtt_segments.py (importlib mode)
from mqtt_segments import (  # noqa: E402
    DISCONNECT as DISCONNECT_MSG,
    PINGREQ as PINGREQ_MSG,
    PINGRESP as PINGRESP_MSG,
    Conn,
    Segment,
    ack,
    batch_of,
    connack,
    connect,
    ip4,
    props,
    publish,
    split_batches,
    suback,
    subscribe,
)

MQTTSET = Path(__file__).resolve().parents[3] / "shared" / "data" / "mqttset"
NOT_TS = [n for n in MQTT_DTYPE.names if n != "ts"]


def feed_all(segs: list[Segment], sizes: list[int] | None = None, streams: MqttStreams | None = None, **kw) -> tuple[np.ndarray, MqttStreams]:
    st = streams or MqttStreams(**kw)
    parts = split_batches(segs, sizes) if sizes else [batch_of(segs)]
    rows = [st.feed(b, p) for b, p in parts]
    rows.append(st.flush())
    return np.concatenate(rows), st


def content(rows: np.ndarray) -> list[tuple]:
    return [tuple(r[n] for n in NOT_TS) for r in rows]


def session(conn: Conn, n_pub: int = 20, level: int = 4, payload: bytes = b"21.5") -> list[bytes]:
    """Client messages of a typical session (the broker's answers are sent as they come)."""
    return [publish(f"city/zone{i % 3}/sensor/{i}", payload * (1 + i % 4), qos=i % 3, pid=i + 1, level=level) for i in range(n_pub)]


def conversation(conn: Conn, client_msgs: list[bytes], level: int = 4, cid: str = "sensor-1") -> Conn:
    conn.handshake()
    conn.send(True, connect(cid, level=level))
    conn.send(False, connack(0, level=level))
    conn.send(True, subscribe(("city/+/cmd", 1), level=level))
    conn.send(False, suback(1, level=level))
    for m in client_msgs:
        conn.send(True, m)
        if m[0] >> 4 == PUBLISH and (m[0] >> 1) & 3 == 1:
            conn.send(False, ack(PUBACK, parse_message(m, True, level).packet_id))
    conn.send(True, PINGREQ_MSG)
    conn.send(False, PINGRESP_MSG)
    conn.send(True, DISCONNECT_MSG)
    conn.fin(True)
    conn.fin(False)
    return conn


# ---- the basics ------------------------------------------------------------------------------


def test_a_session_decodes_every_message_in_order_with_addresses():
    c = conversation(Conn(), [publish("a/b", b"1"), publish("$SYS/x", b"22", qos=1, pid=5)])
    rows, st = feed_all(c.segs)
    assert rows["mtype"].tolist() == [CONNECT, CONNACK, SUBSCRIBE, SUBACK, PUBLISH, PUBLISH, PUBACK, PINGREQ, PINGRESP, DISCONNECT]
    assert (rows["error"] == MQTT_OK).all()
    assert (rows["client"] == ip4("10.0.0.2")).all() and (rows["broker"] == ip4("10.0.0.1")).all()
    assert (rows["client_port"] == 40000).all()
    assert rows["to_broker"].tolist() == [1, 0, 1, 0, 1, 1, 0, 1, 0, 1]
    assert rows["sys_topic"].tolist()[5] == 1 and rows["qos"][5] == 1 and rows["packet_id"][5] == 5
    assert rows["topic_hash"][4] == topic_hash(b"a/b") and rows["payload_len"][4] == 1
    assert rows["wildcard"][2] == 1 and rows["n_filters"][2] == 1
    assert (rows["client_hash"] == topic_hash(b"sensor-1")).all()
    assert np.all(np.diff(rows["ts"]) >= 0)
    s = st.stats()
    assert (s["messages"], s["flows"], s["closed_flows"], s["active_flows"], s["internal_errors"]) == (10, 1, 1, 0, 0)
    assert st.client_id(ip4("10.0.0.2"), 40000) == "sensor-1" and st.latest_client_id(ip4("10.0.0.2")) == "sensor-1"
    assert st.client_id(ip4("10.0.0.2"), 40001) is None and st.latest_client_id(ip4("10.0.0.9")) is None


def test_pure_acks_and_other_ports_are_ignored():
    c = Conn().handshake()
    c.send(True, connect("x"))
    c.ack(False)
    other = Conn(cport=5000, bport=8080)
    other.send(True, publish("not/mqtt", b"x"))
    rows, _ = feed_all(c.segs + other.segs)
    assert rows["mtype"].tolist() == [CONNECT]


def test_feed_rejects_a_wrong_dtype_by_name():
    b, p = batch_of(Conn().handshake().segs)
    with pytest.raises(TypeError, match="PACKET_DTYPE"):
        MqttStreams().feed(b, np.zeros(3, dtype=[("x", "u1")]))
    with pytest.raises(ValueError, match="max_flows"):
        MqttStreams(max_flows=0)
    with pytest.raises(ValueError, match="ports"):
        MqttStreams(ports=(70000,))


def test_empty_and_non_mqtt_batches():
    st = MqttStreams()
    b, p = batch_of(Conn().segs[:0] or [Segment(1.0, 1, 2, 3, 4, 0, TCP_ACK, b"")])
    assert len(st.feed(b, p)) == 0
    assert len(st.feed(b, p[:0])) == 0


# ---- fast path == reference path -------------------------------------------------------------


def _mixed_conns(level: int = 4, n: int = 6, msgs: int = 40) -> list[Conn]:
    conns = []
    for k in range(n):
        c = Conn(client=f"10.1.0.{k + 2}", cport=41000 + k, isn_c=(0xFFFFFF00 + 977 * k) & 0xFFFFFFFF)  # some wrap
        pubs = [publish(f"t/{k}/{i}", bytes([65 + i % 26]) * (i % 50), qos=i % 3, pid=i + 1, level=level) for i in range(msgs)]
        pubs += [PINGREQ_MSG, publish("$SYS/load", b"7", level=level), ack(PUBACK, 3)]
        conns.append(conversation(c, pubs, level=level, cid=f"dev-{k}"))
    return conns


def _interleave(conns: list[Conn], seed: int) -> list[Segment]:
    rng = random.Random(seed)
    queues = [list(c.segs) for c in conns]
    out = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        out.append(q.pop(0))
    for i, s in enumerate(out):
        s.ts = 2000.0 + i * 1e-3
    return out


@pytest.mark.parametrize("level", [4, 5])
def test_fast_path_equals_reference_path(level):
    segs = _interleave(_mixed_conns(level), seed=level)
    reference, st_ref = feed_all(segs, fast_rounds=0)  # the reference path only
    assert st_ref.stats()["fast_path"] == 0
    assert (reference["error"] == MQTT_OK).all()
    # One batch (connections that end in it take the ordered path), small batches, and few rounds.
    for sizes, rounds in ((None, 4), ([40] + [7] * 200, 4), ([3] * 300, 1), ([25] * 30, 2)):
        fast, st_fast = feed_all(segs, sizes=sizes, fast_rounds=rounds)
        assert content(fast) == content(reference), (sizes, rounds)
        if sizes:
            assert st_fast.stats()["fast_path"] > len(segs) // 3, (sizes, rounds)


def test_fast_path_resumes_after_connect_within_one_batch():
    conns = _mixed_conns(5)
    for c in conns:  # connections that go on: no FIN in the batch
        c.segs = [s for s in c.segs if not s.flags & 1]
    segs = _interleave(conns, seed=9)
    reference, _ = feed_all(segs, fast_rounds=0)
    rows, st = feed_all(segs)
    assert content(rows) == content(reference)
    s = st.stats()
    # Per direction: the CONNECT / CONNACK / SUBSCRIBE / SUBACK (and the SYNs) take the
    # reference path, the PUBLISH and acks after them the vectorized one.
    assert s["fast_path"] > 0.6 * s["segments"], s


@pytest.mark.parametrize("per_segment", [2, 3, 17])
def test_coalesced_segments_give_the_same_messages(per_segment):
    msgs = [publish(f"x/{i}", b"p" * (i % 300), qos=i % 2, pid=i + 1) for i in range(200)] + [PINGREQ_MSG] * 5
    one = Conn()
    one.handshake().send(True, connect("c1"))
    for m in msgs:
        one.send(True, m)
    merged = Conn()
    merged.handshake().send(True, connect("c1"))
    for i in range(0, len(msgs), per_segment):
        merged.send(True, b"".join(msgs[i : i + per_segment]))
    a, sa = feed_all(one.segs, sizes=[5] + [13] * 100)
    b, sb = feed_all(merged.segs, sizes=[5] + [13] * 100)
    assert len(a) == len(msgs) + 1 and content(a) == content(b)
    assert sa.stats()["fast_path"] > 150


def test_messages_split_at_every_byte_boundary():
    data = b"".join([connect("split-me", level=5, properties=props(b"\x11\x00\x00\x00\x05")),
                     publish("s/1", b"z" * 300, qos=2, pid=9, level=5, properties=props(b"\x23\x00\x01")),
                     publish("s/2", b"", level=5), PINGREQ_MSG, subscribe(("s/#", 2), level=5)])
    whole = Conn()
    whole.handshake().send(True, data)
    expect = content(feed_all(whole.segs)[0])
    assert len(expect) == 5
    rng = random.Random(7)
    for trial in range(30):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        c = Conn()
        c.handshake()
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            c.send(True, data[a:b])
        assert content(feed_all(c.segs, sizes=[rng.randint(1, 6) for _ in range(60)])[0]) == expect, cuts


def test_vectorized_hash_equals_python_hash():
    rng = np.random.default_rng(3)
    topics = [bytes(rng.integers(0x20, 0x7F, n, dtype=np.uint8)).replace(b"#", b"a").replace(b"+", b"b") for n in rng.integers(1, 400, 3000)]
    topics += [b"$SYS", b"$SYS/x", b"$SY", b"a"]
    msgs = [publish(t, b"v") for t in topics]
    buf = np.frombuffer(b"".join(msgs) + b"\x00" * 8, dtype=np.uint8)
    lens = np.array([len(m) for m in msgs])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    cols, ok = decode_vectorized(buf, starts, lens, np.full(len(msgs), 4, np.uint8), np.ones(len(msgs), bool))
    assert ok.all()
    assert cols["topic_hash"].tolist() == [topic_hash(t) for t in topics]
    assert cols["sys_topic"].tolist() == [t.startswith(b"$SYS") for t in topics]


def test_vectorized_decoder_agrees_with_the_reference_on_what_it_accepts():
    rng = random.Random(11)
    corpus = [publish("a" * rng.randint(1, 30), b"x" * rng.randint(0, 200), qos=rng.randint(0, 2), pid=rng.randint(0, 3),
                      dup=rng.random() < 0.1, retain=rng.random() < 0.5, level=lvl) for lvl in (4, 5) for _ in range(300)]
    corpus += [ack(t, rng.randint(0, 2)) for t in (4, 5, 6, 7) for _ in range(20)]
    corpus += [PINGREQ_MSG, PINGRESP_MSG, DISCONNECT_MSG, b"\x62\x02\x00\x01", b"\x60\x02\x00\x01", b"\xc0\x80\x00",
               publish("a/+", b""), publish("é", b""), publish("a\x00", b""), b"\x36\x03\x00\x01a"]
    corpus += [bytes(rng.getrandbits(8) for _ in range(rng.randint(2, 12))) for _ in range(500)]
    for to_broker in (True, False):
        for level in (4, 5):
            buf = np.frombuffer(b"".join(corpus) + b"\x00" * 8, dtype=np.uint8)
            lens = np.array([len(m) for m in corpus])
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            cols, ok = decode_vectorized(buf, starts, lens, np.full(len(corpus), level, np.uint8), np.full(len(corpus), to_broker))
            assert ok.sum() > 200
            # Small calls decode one by one with the reference: they accept at least as much,
            # with the same fields.
            for a in range(0, len(corpus), 10):
                sl = slice(a, a + 10)
                c2, ok2 = decode_vectorized(buf, starts[sl], lens[sl], np.full(len(lens[sl]), level, np.uint8), np.full(len(lens[sl]), to_broker))
                assert (ok2 | ~ok[sl]).all()
                for name in cols:
                    assert (c2[name][ok[sl]] == cols[name][sl][ok[sl]]).all(), name
            for i in np.flatnonzero(ok):
                m = parse_message(corpus[i], to_broker, level)
                assert m.error == MQTT_OK and m.length == lens[i], (corpus[i], m.detail)
                got = {k: int(cols[k][i]) for k in cols}
                want = dict(mtype=m.mtype, flags=m.flags, length=m.length, qos=m.qos, topic_hash=m.topic_hash,
                            topic_len=m.topic_len, payload_len=m.payload_len, packet_id=m.packet_id, sys_topic=int(m.sys_topic))
                assert got == want, corpus[i]


# ---- stream damage ---------------------------------------------------------------------------


def _publisher(n: int = 30) -> tuple[Conn, list[bytes]]:
    c = Conn()
    c.handshake()
    c.send(True, connect("pub"))
    msgs = [publish(f"d/{i}", b"%d" % i * 5, qos=1, pid=i + 1) for i in range(n)]
    for m in msgs:
        c.send(True, m)
    return c, msgs


def test_retransmitted_and_overlapping_segments_are_not_decoded_twice():
    c, msgs = _publisher()
    clean = content(feed_all(c.segs)[0])
    segs = list(c.segs)
    dup = []
    for s in segs:
        dup.append(s)
        if s.payload and s.payload[0] >> 4 == PUBLISH and len(dup) % 3 == 0:
            dup.append(Segment(s.ts, s.src, s.dst, s.sport, s.dport, s.seq, s.flags, s.payload))  # exact copy
    # A retransmission that overlaps two earlier segments and carries one new message.
    last = segs[-1]
    new = publish("d/new", b"n")
    dup.append(Segment(last.ts + 1, last.src, last.dst, last.sport, last.dport, segs[-2].seq,
                       TCP_PSH | TCP_ACK, segs[-2].payload + last.payload + new))
    for sizes in (None, [9] * 50):
        rows, st = feed_all(dup, sizes)
        assert content(rows)[:-1] == clean and rows["topic_hash"][-1] == topic_hash(b"d/new")
        assert st.stats()["bytes_retransmitted"] >= sum(len(s.payload) for s in dup) - sum(len(s.payload) for s in segs) - len(new)


def test_out_of_order_segments_are_reordered():
    c, msgs = _publisher(40)
    clean = content(feed_all(c.segs)[0])
    segs = list(c.segs)
    rng = random.Random(5)
    data_idx = [i for i, s in enumerate(segs) if s.payload]
    for _ in range(12):  # swap neighbours (and some at distance 3)
        i = rng.choice(data_idx[1:-3])
        j = i + rng.choice([1, 3])
        segs[i], segs[j] = segs[j], segs[i]
    for sizes in (None, [4] * 50, [1] * 100):
        rows, st = feed_all(segs, sizes)
        assert content(rows) == clean
        assert st.stats()["ooo_segments"] > 0 and st.stats()["gaps"] == 0


def test_a_lost_segment_is_a_gap_and_decoding_resumes():
    c, msgs = _publisher(30)
    segs = [s for i, s in enumerate(c.segs) if i != 10]  # lose one PUBLISH segment
    lost = c.segs[10]
    rows, st = feed_all(segs, ooo_timeout=0.005)
    gaps = rows[rows["error"] == MQTT_STREAM_GAP]
    assert len(gaps) == 1 and gaps["length"][0] == len(lost.payload)
    good = rows[(rows["error"] == MQTT_OK) & (rows["mtype"] == PUBLISH)]
    assert len(good) == 29 and (rows["error"] != MQTT_OK).sum() == 1
    assert st.stats()["gaps"] == 1 and st.stats()["bytes_missing"] == len(lost.payload)


def test_a_hole_is_given_up_when_the_out_of_order_bound_is_reached():
    c, _ = _publisher(60)
    segs = [s for i, s in enumerate(c.segs) if i != 8]
    rows, st = feed_all(segs, sizes=[1] * 100, max_ooo_segments=5, ooo_timeout=1e9)
    assert st.stats()["gaps"] == 1 and (rows["error"] == MQTT_STREAM_GAP).sum() == 1
    assert ((rows["mtype"] == PUBLISH) & (rows["error"] == MQTT_OK)).sum() == 59


def test_a_hole_inside_a_message_resynchronises_on_a_later_segment():
    c = Conn()
    c.handshake().send(True, connect("big"))
    big = publish("b/1", b"q" * 3000)
    for i in range(0, len(big), 1000):
        c.send(True, big[i : i + 1000])
    tail = [publish("b/2", b"after"), publish("b/3", b"after")]
    for m in tail:
        c.send(True, m)
    segs = [s for i, s in enumerate(c.segs) if i != 5]  # the second piece of the big message is lost
    rows, st = feed_all(segs, ooo_timeout=0.0001)
    assert rows["mtype"].tolist()[0] == CONNECT
    assert (rows["error"] == MQTT_STREAM_GAP).sum() == 1
    ok_pub = rows[(rows["mtype"] == PUBLISH) & (rows["error"] == MQTT_OK)]
    assert ok_pub["topic_hash"].tolist() == [topic_hash(b"b/2"), topic_hash(b"b/3")]
    assert st.stats()["bytes_dropped"] >= 1000  # the first piece (buffered) and the last (no message start)


def test_snaplen_truncation_is_counted_apart_not_a_gap_nor_invented_bytes():
    c = Conn()
    c.handshake().send(True, connect("t"))
    c.send(True, publish("x/1", b"a" * 10))
    full = publish("x/2", b"b" * 500)
    c.send(True, full[:100], wire_extra=len(full) - 100)  # only 100 bytes captured
    c.send(True, publish("x/3", b"c"))
    rows, st = feed_all(c.segs)
    # The cut message yields no row (neither malformed nor a gap): the capture cut it, not the sender.
    assert rows["mtype"].tolist() == [CONNECT, PUBLISH, PUBLISH]
    assert rows["error"].tolist() == [MQTT_OK, MQTT_OK, MQTT_OK]
    s = st.stats()
    assert s["snapped_segments"] == 1 and s["bytes_snapped"] == len(full) - 100
    assert s["gaps"] == 0 and s["bytes_missing"] == 0 and s["bytes_dropped"] == 100
    assert rows["topic_hash"][2] == topic_hash(b"x/3")


def test_truncation_inside_an_oversize_message_is_no_gap():
    c = Conn()
    c.handshake().send(True, connect("t"))
    huge = publish("h", b"z" * 5000)
    c.send(True, huge[:1500], wire_extra=len(huge) - 1500)
    c.send(True, publish("after", b"1"))
    rows, st = feed_all(c.segs, max_message=1000)
    assert rows["error"].tolist() == [MQTT_OK, MQTT_OVERSIZE, MQTT_OK]
    assert rows["length"][1] == len(huge) and st.stats()["gaps"] == 0


def test_oversize_messages_are_skipped_without_buffering():
    c = Conn()
    c.handshake().send(True, connect("o"))
    huge = publish("big", b"y" * 50_000)
    for i in range(0, len(huge), 1400):
        c.send(True, huge[i : i + 1400])
    c.send(True, publish("small", b"1") + PINGREQ_MSG)
    for sizes in (None, [3] * 100):
        rows, st = feed_all(c.segs, sizes, max_message=4096)
        assert rows["error"].tolist() == [MQTT_OK, MQTT_OVERSIZE, MQTT_OK, MQTT_OK]
        assert rows["mtype"].tolist() == [CONNECT, PUBLISH, PUBLISH, PINGREQ]
        assert st.stats()["oversize_bytes_skipped"] == len(huge) and st.stats()["buffered_bytes"] == 0


def test_fin_inside_a_message_reports_it_truncated_and_rst_ends_the_flow():
    c = Conn()
    c.handshake().send(True, connect("f"))
    c.send(True, publish("p", b"x" * 100)[:40])
    c.fin(True)
    rows, st = feed_all(c.segs)
    assert rows["error"].tolist() == [MQTT_OK, MQTT_TRUNCATED] and rows["mtype"][1] == PUBLISH
    assert st.stats()["active_flows"] == 1  # the broker side did not close yet
    c2 = Conn(cport=40001)
    c2.handshake().send(True, connect("g"))
    c2.rst(False)
    c2.send(True, publish("late", b"1"))  # after the reset: a new flow, mid-stream
    rows, st = feed_all(c2.segs)
    assert st.stats()["closed_flows"] == 1 and st.stats()["flows"] == 2
    assert rows["mtype"].tolist() == [CONNECT, PUBLISH]


def test_port_reuse_with_a_new_syn_starts_a_new_connection():
    a = Conn(isn_c=100, isn_b=200)
    a.handshake().send(True, connect("first"))
    a.send(True, publish("p", b"1")[:3])  # unfinished
    b = Conn(isn_c=90000, isn_b=80000, t=a.t + 1)
    b.handshake().send(True, connect("second", level=5))
    b.send(True, publish("p", b"2", level=5, properties=props(b"\x23\x00\x01")))
    rows, st = feed_all(a.segs + b.segs)
    assert rows["mtype"].tolist() == [CONNECT, PUBLISH, CONNECT, PUBLISH]
    assert rows["error"].tolist() == [MQTT_OK, MQTT_TRUNCATED, MQTT_OK, MQTT_OK]
    assert rows["payload_len"][3] == 1 and st.client_id(ip4("10.0.0.2"), 40000) == "second"


def test_protocol_level_from_connect_applies_to_later_batches():
    c = Conn()
    c.handshake().send(True, connect("v5", level=5))
    c.send(False, connack(0, level=5, properties=props(b"\x21\x00\x0a")))
    for i in range(30):
        p = props(b"\x23\x00\x01") if i % 2 else b"\x00"
        c.send(True, publish("five", b"abc", level=5, properties=p, qos=1, pid=i + 1))
        c.send(False, ack(PUBACK, i + 1, reason=0x10, properties=b"\x00") if i % 3 == 0 else ack(PUBACK, i + 1))
    for sizes in (None, [6] + [5] * 20):
        rows, st = feed_all(c.segs, sizes)
        assert (rows["error"] == MQTT_OK).all()
        assert (rows["payload_len"][rows["mtype"] == PUBLISH] == 3).all()
        assert rows["proto_level"][0] == 5
    assert st.stats()["fast_path"] > 10


def test_a_second_connect_on_a_connection_is_a_protocol_error():
    c = Conn()
    c.handshake().send(True, connect("one"))
    c.send(True, connect("two"))
    rows, st = feed_all(c.segs)
    assert rows["error"].tolist() == [MQTT_OK, MQTT_PROTOCOL]
    assert st.client_id(ip4("10.0.0.2"), 40000) == "one"


def test_capture_started_mid_connection():
    c = Conn()
    c.send(True, publish("mid", b"1"))  # no handshake, no CONNECT seen
    c.send(False, publish("mid", b"2", qos=1, pid=4))
    c.send(True, ack(PUBACK, 4))
    rows, _ = feed_all(c.segs)
    assert rows["mtype"].tolist() == [PUBLISH, PUBLISH, PUBACK] and (rows["error"] == MQTT_OK).all()
    assert (rows["client_hash"] == 0).all()
    # Starting on the continuation of a message: its bytes are dropped, not decoded as garbage.
    d = Conn(cport=40002)
    big = publish("big", b"k" * 2000)
    d.send(True, big[700:1400])
    d.send(True, big[1400:])
    d.send(True, publish("next", b"n"))
    rows, st = feed_all(d.segs)
    assert rows["mtype"].tolist() == [PUBLISH] and rows["topic_hash"][0] == topic_hash(b"next")
    assert st.stats()["bytes_dropped"] == len(big) - 700


def test_sequence_numbers_wrap_around():
    c = Conn(isn_c=0xFFFFFF00)
    c.handshake().send(True, connect("wrap"))
    for i in range(20):
        c.send(True, publish("w", b"x" * 40))
    assert c.segs[-1].seq < c.segs[3].seq
    for sizes in (None, [5] * 10):
        rows, st = feed_all(c.segs, sizes)
        assert len(rows) == 21 and (rows["error"] == MQTT_OK).all() and st.stats()["gaps"] == 0


def test_tls_on_an_mqtt_port_is_recognised_and_ignored():
    c = Conn(bport=8883)
    c.handshake()
    c.send(True, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(160))  # ClientHello
    c.send(False, b"\x16\x03\x03\x00\x40" + bytes(64))
    for _ in range(5):
        c.send(True, b"\x17\x03\x03\x00\x20" + bytes(32))
    rows, st = feed_all(c.segs, ports=(1883, 8883))
    assert len(rows) == 0 and st.stats()["tls_flows"] == 1


def test_both_ports_mqtt_picks_one_broker_side():
    c = Conn(cport=1883, bport=1883, client="10.0.0.9", broker="10.0.0.3")
    c.handshake().send(True, connect("bridge"))
    c.send(False, connack(0))
    rows, _ = feed_all(c.segs)
    assert rows["mtype"].tolist() == [CONNECT, CONNACK] and (rows["error"] == MQTT_OK).all()
    assert (rows["broker"] == ip4("10.0.0.3")).all()


def test_host_keys_above_48_bits_use_the_exact_grouping():
    segs = _interleave(_mixed_conns(n=3, msgs=10), seed=1)
    base = content(feed_all(segs, sizes=[30] + [6] * 100)[0])
    for s in segs:  # IPv6-like keys far above 2**48
        s.src, s.dst = s.src + (1 << 60), s.dst + (1 << 60)
    rows = feed_all(segs, sizes=[30] + [6] * 100)[0]
    moved = [tuple(v - (1 << 60) if n in ("client", "broker") else v for n, v in zip(NOT_TS, r)) for r in content(rows)]
    assert moved == base


# ---- bounds ----------------------------------------------------------------------------------


def test_flow_table_is_bounded_with_eviction():
    segs = []
    for k in range(50):
        c = Conn(cport=30000 + k, t=1000 + k)
        c.send(True, connect(f"c{k}"))
        c.send(True, publish("p", b"x" * 10)[:5])  # leaves bytes buffered
        segs += c.segs
    rows, st = feed_all(segs, max_flows=10)
    s = st.stats()
    assert s["active_flows"] == 10 and s["evicted_flows"] == 40 and s["flows"] == 50
    assert s["buffered_bytes"] == 10 * 5
    assert s["bytes_dropped"] == 40 * 5


def test_buffered_bytes_are_bounded_overall():
    segs = []
    for k in range(40):
        c = Conn(cport=30000 + k, t=1000 + k)
        c.send(True, connect(f"c{k}"))
        c.send(True, publish("p", b"x" * 20_000)[:10_000])
        segs += c.segs
    rows, st = feed_all(segs, max_buffered=100_000)
    s = st.stats()
    assert s["buffered_bytes"] <= 100_000 and s["shed_flows"] > 0
    assert (rows["error"] == MQTT_STREAM_GAP).sum() == s["shed_flows"]
    assert s["buffered_bytes"] == sum(f.held() for f in st._flows.values())


def test_client_table_is_bounded():
    segs = []
    for k in range(30):
        c = Conn(client=f"10.9.0.{k + 1}", cport=30000 + k)
        c.send(True, connect(f"id{k}"))
        segs += c.segs
    _, st = feed_all(segs, max_clients=8)
    assert st.stats()["known_clients"] == 8
    assert st.latest_client_id(ip4("10.9.0.30")) == "id29" and st.latest_client_id(ip4("10.9.0.1")) is None


def test_idle_flows_expire():
    a = Conn(cport=1, t=0.0)
    a.send(True, connect("old"))
    b = Conn(cport=2, t=5000.0)
    b.send(True, connect("new"))
    _, st = feed_all(a.segs + b.segs, sizes=[1], idle_timeout=100.0)
    assert st.stats()["expired_flows"] == 1 and st.stats()["active_flows"] == 1


# ---- real captures ---------------------------------------------------------------------------


def _mqttset_files() -> list[Path]:
    if not MQTTSET.is_dir():
        return []
    return sorted(p for p in MQTTSET.iterdir() if p.suffix in (".pcap", ".pcapng"))


def _decode_capture(path: Path, per_frame_limit: int = 0, **kw):
    """Rows of a whole capture; with a limit, its first frames are fed one per batch and their
    rows are returned per frame too."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.decode.packets import AddressBook, decode_packets

    st, book = MqttStreams(**kw), AddressBook()
    rows, per, frames = [], [], 0
    for batch in read_capture(path, batch_size=1 if per_frame_limit else 4096):
        r = st.feed(batch, decode_packets(batch, book))
        rows.append(r)
        frames += len(batch)
        if per_frame_limit:
            per.append((batch, r))
            if len(per) >= per_frame_limit:
                break
    rows.append(st.flush())
    return np.concatenate(rows), st, per, frames


needs_mqttset = pytest.mark.skipif(not _mqttset_files(), reason=f"MQTTset captures not found in {MQTTSET}")


def _scapy_whole_messages(pkt) -> list[int] | None:
    """Types of the MQTT messages Scapy dissects in a frame, if they cover its TCP payload exactly."""
    from scapy.contrib import mqtt as M
    from scapy.layers.inet import TCP

    if not pkt.haslayer(TCP) or not pkt.haslayer(M.MQTT):
        return None
    payload_len = len(pkt[TCP].payload.original) if pkt[TCP].payload.original else 0
    types, total, layer = [], 0, pkt.getlayer(M.MQTT)
    while isinstance(layer, M.MQTT):
        remaining = layer.len or 0
        varint_len = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
        types.append(layer.type)
        total += 1 + varint_len + remaining
        inner = layer.payload
        layer = inner.payload if inner is not None else None
    return types if types and total == payload_len else None


@needs_mqttset
@pytest.mark.mqttset
@pytest.mark.slow
@pytest.mark.parametrize("path", _mqttset_files(), ids=lambda p: p.name)
def test_mqttset_capture_decodes_consistently_with_scapy(path):
    """Frame by frame (the first 2500 frames): where Scapy dissects a frame into whole MQTT
    messages, we find the same messages in it."""
    from scapy.contrib.mqtt import MQTT  # noqa: F401  (binds MQTT to port 1883)
    from scapy.layers.l2 import CookedLinux, Ether

    def dissect(frame: bytes, linktype: int):
        return (CookedLinux if linktype == 113 else Ether)(frame)

    _, st, per, _ = _decode_capture(path, per_frame_limit=2500)
    assert st.stats()["internal_errors"] == 0
    compared = mismatched = 0
    for batch, r in per:
        if batch.caplens[0] > 4000:  # TSO segments: Scapy recurses per message (see the flood test)
            continue
        types = _scapy_whole_messages(dissect(batch.frame(0), batch.linktype))
        if types is None:
            continue  # Scapy does not see whole messages here (split, PINGREQ followed by more, ...)
        compared += 1
        mismatched += sorted(r["mtype"][r["error"] != MQTT_STREAM_GAP].tolist()) != sorted(types)
    assert compared > (0 if path.name.startswith("flood") else 50)
    assert mismatched == 0, f"{mismatched} of {compared} frames differ from Scapy"


def _tshark_counts(path: Path) -> collections.Counter | None:
    if not shutil.which("tshark"):
        return None
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "mqtt.msgtype"],
                         capture_output=True, text=True, timeout=120).stdout
    return collections.Counter(int(t) for line in out.split() for t in line.split(",") if t)


@needs_mqttset
@pytest.mark.mqttset
@pytest.mark.parametrize("path", _mqttset_files(), ids=lambda p: p.name)
def test_mqttset_capture_counts_match_tshark_reassembly(path):
    rows, st, _, _ = _decode_capture(path)
    assert st.stats()["internal_errors"] == 0
    ours = collections.Counter(rows["mtype"][rows["error"] == MQTT_OK].tolist())
    theirs = _tshark_counts(path)
    if theirs is None:
        pytest.skip("tshark is not installed (Debian package tshark)")
    assert ours == theirs


@needs_mqttset
@pytest.mark.mqttset
@pytest.mark.parametrize("path", _mqttset_files(), ids=lambda p: p.name)
def test_mqttset_capture_fast_path_equals_reference_path(path):
    rows, st, _, _ = _decode_capture(path)
    reference, st_ref, _, _ = _decode_capture(path, fast_rounds=0)
    assert st_ref.stats()["fast_path"] == 0
    assert len(rows) == len(reference) and (rows == reference).all()


@needs_mqttset
@pytest.mark.mqttset
def test_mqttset_flood_has_far_more_publish_than_frames():
    path = MQTTSET / "flood-train.pcap"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows, st, _, frames = _decode_capture(path)
    publishes = int(((rows["mtype"] == PUBLISH) & (rows["error"] == MQTT_OK)).sum())
    print(f"flood-train.pcap: {publishes} PUBLISH in {frames} frames")
    assert publishes > 100 * frames
    assert st.stats()["gaps"] == 0 and (rows["error"] == MQTT_OK).all()
