"""The generator's building blocks: vectorized text, MQTT encoding, TCP numbering, checksums,
frame layout."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/sim/sim_pcap.py (importlib mode)

from sim_pcap import checksums_ok, mqtt_messages, read_frames, streams  # noqa: E402

from atlas.agent.capture.pcapfile import write_pcap  # noqa: E402
from atlas.sim.attacks import AttackSpec  # noqa: E402
from atlas.sim.traffic import mqtt  # noqa: E402
from atlas.sim.traffic.vec import Blobs, decimal_columns, join, ranges, table_column, uint_column, varint_column  # noqa: E402
from atlas.sim.traffic.wire import ACK, FIN, PSH, SYN, Wire, pcap_header, write_frames  # noqa: E402

T0 = 1_767_254_400 * 1_000_000_000


def test_ranges_matches_python():
    rng = np.random.default_rng(1)
    starts, lens = rng.integers(0, 1000, 50), rng.integers(0, 9, 50)
    want = [x for s, n in zip(starts, lens) for x in range(s, s + n)]
    assert ranges(starts, lens).tolist() == want


def test_json_columns_round_trip():
    rng = np.random.default_rng(2)
    vals = np.concatenate([rng.normal(0, 1000, 500), [0.0, -0.0, -0.04, 0.05, 99.95, 1e9, -1e-9]])
    ints = rng.integers(0, 10**13, vals.size)
    for d in (0, 1, 3):
        b = join([b'{"v":'] + decimal_columns(vals, d) + [b',"n":', uint_column(ints), b',"e":',
                  table_column([b'"a"', b'"bcd"'], ints % 2), b"}"], vals.size)
        for i, blob in enumerate(b.tolist()):
            obj = json.loads(blob)
            assert abs(obj["v"] - vals[i]) <= 0.5 * 10.0**-d + 1e-6 * abs(vals[i])
            text = blob.split(b":", 1)[1].split(b",")[0]
            assert (text.count(b".") == 0) if d == 0 else (len(text.split(b".")[1]) == d)
            assert obj["n"] == ints[i] and obj["e"] == ("a", "bcd")[ints[i] % 2]


def test_varint_column_matches_the_scalar_encoder():
    vals = np.array([0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
    mat, n = varint_column(vals)
    assert [bytes(mat[i, : n[i]]) for i in range(vals.size)] == [mqtt.varint(int(v)) for v in vals]


def test_mqtt_packets_parse_with_scapy():
    from scapy.contrib.mqtt import MQTT, MQTTConnack, MQTTConnect, MQTTPublish, MQTTSubscribe

    p = MQTT(mqtt.connect("tsc-d01-0001", keepalive=30, username="u", password="pw", clean=False))
    assert p[MQTTConnect].clientId == b"tsc-d01-0001" and p[MQTTConnect].klive == 30 and p[MQTTConnect].cleansess == 0
    assert MQTT(mqtt.connect("x", version=3)).protoname == b"MQIsdp"
    assert MQTT(mqtt.connack(5)).retcode == 5 and MQTTConnack in MQTT(mqtt.connack(0))
    p = MQTT(mqtt.publish("city/d01/a", b'{"x":1}', qos=1, packet_id=77))
    assert p[MQTTPublish].topic == b"city/d01/a" and p[MQTTPublish].msgid == 77 and p[MQTTPublish].value == b'{"x":1}'
    p = MQTT(mqtt.subscribe(3, [("#", 0), ("$SYS/#", 1)]))
    assert [t.topic for t in p[MQTTSubscribe].topics] == [b"#", b"$SYS/#"]


def test_publish_batch_equals_the_scalar_builder():
    rng = np.random.default_rng(3)
    n = 200
    topics = [f"city/d01/t/{i}".encode() * int(rng.integers(1, 4)) for i in range(n)]
    payloads = [rng.bytes(int(rng.choice([0, 5, 300, 600, 20000]))) for _ in range(n)]
    qos, pid, ver = rng.integers(0, 2, n), rng.integers(1, 65535, n), rng.choice([3, 4, 5], n)
    b = mqtt.publish_batch(Blobs.from_list(topics), Blobs.from_list(payloads), qos, pid, ver)
    for i in range(n):
        want = mqtt.publish(topics[i].decode(), payloads[i], qos=int(qos[i]), packet_id=int(pid[i]), version=int(ver[i]))
        assert b.get(i) == want
    assert (mqtt.publish_len(b.lens * 0 + Blobs.from_list(topics).lens, Blobs.from_list(payloads).lens, qos, ver) == b.lens).all()


def _one_connection(rng_seed=0, client_rtt=2_000_000):
    w = Wire(np.random.default_rng(rng_seed))
    dev = w.host(0x0A140105, 0x02AA00000001, rtt_ns=client_rtt, proc_ns=100_000, stack="lwip")
    brk = w.host(0x0A140001, 0x02AA000000FE, rtt_ns=0, proc_ns=30_000)
    c = w.connections([dev], brk, [40000], 1883)
    return w, c


def test_seq_and_ack_numbers_follow_the_bytes():
    w, c = _one_connection()
    t_ack = w.handshake(c, np.array([T0]))
    t1 = w.send(c, t_ack + 1000, 0, Blobs.from_list([b"A" * 10]))
    t2 = w.send(c, t1 + w.reply_delay(c, 1).astype(np.int64), 1, Blobs.from_list([b"B" * 4]))
    w.close(c, t2 + 5_000_000, 0)
    seg = w.build()
    isn_c, isn_s = int(w.conn_array("cisn")[0]), int(w.conn_array("sisn")[0])
    rows = [(int(d), int(f), int(s), int(a), int(n)) for d, f, s, a, n in zip(seg.dir, seg.flags, seg.seq, seg.ack, seg.plen)]
    m = 2**32
    assert rows == [
        (0, SYN, isn_c, 0, 0),
        (1, SYN | ACK, isn_s, (isn_c + 1) % m, 0),
        (0, ACK, (isn_c + 1) % m, (isn_s + 1) % m, 0),
        (0, PSH | ACK, (isn_c + 1) % m, (isn_s + 1) % m, 10),
        (1, PSH | ACK, (isn_s + 1) % m, (isn_c + 11) % m, 4),  # the reply carries the ACK
        (0, ACK, (isn_c + 11) % m, (isn_s + 5) % m, 0),  # the client acknowledges the reply
        (0, FIN | ACK, (isn_c + 11) % m, (isn_s + 5) % m, 0),
        (1, FIN | ACK, (isn_s + 5) % m, (isn_c + 12) % m, 0),
        (0, ACK, (isn_c + 12) % m, (isn_s + 6) % m, 0),
    ]


def test_a_distant_host_only_acknowledges_what_could_have_reached_it():
    w, c = _one_connection(client_rtt=50_000_000)  # 50 ms away (LTE)
    t = w.handshake(c, np.array([T0]))
    w.send(c, t + 1_000_000, 1, Blobs.from_list([b"S" * 20]))  # broker -> device
    w.send(c, t + 2_000_000, 0, Blobs.from_list([b"C" * 5]))  # device spoke before it arrived
    seg = w.build()
    isn_s = int(w.conn_array("sisn")[0])
    client_data = [i for i in range(len(seg)) if seg.dir[i] == 0 and seg.plen[i] == 5][0]
    assert int(seg.ack[client_data]) == (isn_s + 1) % 2**32
    later_ack = [i for i in range(len(seg)) if seg.dir[i] == 0 and seg.plen[i] == 0 and seg.ts[i] > seg.ts[client_data]]
    assert later_ack and int(seg.ack[later_ack[-1]]) == (isn_s + 21) % 2**32


def test_messages_never_interleave_in_a_stream():
    w, c = _one_connection()
    t = w.handshake(c, np.array([T0]))
    big = mqtt.publish("a/b", bytes(range(256)) * 40, qos=0)
    small = mqtt.publish("a/c", b"x", qos=0)
    w.send(np.array([c[0], c[0]]), np.array([t[0] + 1000, t[0] + 2000]), 0, Blobs.from_list([big, small]))
    seg = w.build()
    data = [(int(seg.ts[i]), int(seg.seq[i]), seg.store[seg.poff[i]: seg.poff[i] + seg.plen[i]].tobytes())
            for i in range(len(seg)) if seg.dir[i] == 0 and seg.plen[i] > 0]
    assert [d[0] for d in data] == sorted(d[0] for d in data) and [d[1] for d in data] == sorted(d[1] for d in data)
    assert len(data) == -(-len(big) // 1460) + 1  # the big message at MSS 1460, then the small one
    assert b"".join(d[2] for d in data) == big + small


def test_frames_checksums_and_pcap_layout(tmp_path):
    rng = np.random.default_rng(4)
    w = Wire(rng)
    hosts = [w.host(0x0A140000 + i, 0x020000000000 + i, rtt_ns=1_000_000, proc_ns=50_000, stack=s)
             for i, s in enumerate(["linux", "lwip", "scanner", "linux"])]
    conns = w.connections(hosts[:3], hosts[3], [41000, 41001, 41002], 1883)
    t = w.handshake(conns, np.full(3, T0))
    sizes = [1, 2, 3, 1459, 1460, 1461, 7777, 0 + 64, 65]
    msgs = Blobs.from_list([rng.bytes(int(n)) for n in sizes for _ in range(3)])
    w.send(np.tile(conns, len(sizes)), np.repeat(t.max() + np.arange(len(sizes)) * 1_000_000, 3), 0, msgs)
    seg = w.build()
    batches = [b for b, _ in w.frames(seg, chunk=7)]  # several chunks
    path = tmp_path / "w.pcap"
    with open(path, "wb") as f:
        n = write_frames(f, batches)
    assert n == len(seg)
    frames = read_frames(path)
    assert all(checksums_ok(f) == (True, True) for f in frames)
    # The shared writer produces the very same file from the same FrameBatches.
    ref = io.BytesIO()
    for i, b in enumerate(batches):
        write_pcap(ref, b, header=i == 0)
    assert ref.getvalue() == path.read_bytes()
    assert path.read_bytes().startswith(pcap_header())
    for (src, sport, dst, dport), s in streams(frames).items():
        assert s.gaps == 0


def test_coalesced_writes_never_split_a_fixed_header():
    w, c = _one_connection()
    t = w.handshake(c, np.array([T0]))
    n = 400
    rng = np.random.default_rng(5)
    msgs = mqtt.publish_batch(Blobs.from_list([b"flood/t"] * n), Blobs.from_list([rng.bytes(int(k)) for k in rng.integers(100, 900, n)]),
                              np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, 4))
    w.send(np.full(n, c[0]), t[0] + 1000 + np.arange(n) * 10_000, 0, msgs, coalesce_ns=1_000_000)
    seg = w.build()
    data = [seg.store[seg.poff[i]: seg.poff[i] + seg.plen[i]].tobytes() for i in range(len(seg)) if seg.dir[i] == 0 and seg.plen[i]]
    assert len(data) < n  # writes were batched...
    assert max(len(d) for d in data) <= 1460
    stream = b"".join(data)
    got, rest = mqtt_messages(stream)
    assert len(got) == n and not rest
    starts, pos = [], 0
    for m in got:
        starts.append((pos, 3))  # type byte + 2-byte remaining length (100..900 bytes)
        pos += len(m)
    cuts, pos = set(), 0
    for d in data[:-1]:
        pos += len(d)
        cuts.add(pos)
    assert any(s < cut < s + len(m) for cut in cuts for (s, _), m in zip(starts, got))  # ...and messages split
    assert not any(s < cut < s + h for cut in cuts for s, h in starts)


@pytest.mark.parametrize("kwargs,words", [
    (dict(kind="nope"), "must be one of"),
    (dict(kind="mqtt_flood", params={"speed": 3}), "unknown parameter 'speed'"),
    (dict(kind="mqtt_flood", params={"rate": "fast"}), "must be a number"),
    (dict(kind="mqtt_flood", params={"rate": -1}), "must be >= 0"),
    (dict(kind="topic_scan", params={"harvest": 1}), "must be true or false"),
    (dict(kind="slowite", duration=0), "duration must be > 0"),
    (dict(kind="slowite", start=-5), "start must be >= 0"),
])
def test_attack_spec_errors_name_the_problem(kwargs, words):
    with pytest.raises(ValueError, match=words):
        AttackSpec(**kwargs)
