"""malformed: packets that break the MQTT specification, each on its own connection.

Kinds (rotated in random order): a remaining length of five bytes, reserved fixed-header
flags, invalid UTF-8 in a topic or client id, U+0000 in a topic, a wrong protocol name or
level, QoS 3, reserved packet types, a reserved CONNECT flag. The broker drops the connection
(3.1.1) or sends DISCONNECT 0x81 first (5.0); a wrong protocol level gets CONNACK 1 first.
"""
from __future__ import annotations

import struct

import numpy as np

from atlas.sim.attacks import attack
from atlas.sim.attacks.base import NS, AttackContext, PlannedStep, client_id
from atlas.sim.traffic import mqtt
from atlas.sim.traffic.session import app_delay
from atlas.sim.traffic.vec import Blobs

CONNECT_KINDS = ("invalid_utf8_client_id", "bad_protocol_name", "bad_protocol_level", "reserved_connect_flag")
AFTER_KINDS = ("bad_remaining_length", "reserved_flags", "invalid_utf8_topic", "null_in_topic", "qos3", "reserved_type")
KINDS = CONNECT_KINDS + AFTER_KINDS


def _raw_connect(name: bytes, level: int, flags: int, cid: bytes, ka: int = 60) -> bytes:
    body = struct.pack(">H", len(name)) + name + bytes([level, flags]) + struct.pack(">H", ka)
    if level == 5:
        body += b"\x00"
    body += struct.pack(">H", len(cid)) + cid
    return mqtt.packet(mqtt.CONNECT, 0, body)


def _bad_packet(kind: str, rng, ver: int) -> bytes:
    topic = f"city/d01/{rng.choice(['transport', 'energy', 'safety'])}/x{int(rng.integers(0, 1000))}".encode()
    props = b"\x00" if ver == 5 else b""
    if kind == "bad_remaining_length":
        return b"\x30\xff\xff\xff\xff\x7f" + mqtt.mstr(topic) + b"junk"
    if kind == "reserved_flags":
        body = struct.pack(">H", int(rng.integers(1, 65535))) + props + mqtt.mstr(topic) + b"\x00"
        return mqtt.packet(mqtt.SUBSCRIBE, 0x00, body)  # SUBSCRIBE must carry flags 0b0010
    if kind == "invalid_utf8_topic":
        return mqtt.packet(mqtt.PUBLISH, 0, mqtt.mstr(topic + b"/\xc3\x28\xff") + props + b"{}")
    if kind == "null_in_topic":
        return mqtt.packet(mqtt.PUBLISH, 0, mqtt.mstr(topic + b"/\x00/x") + props + b"{}")
    if kind == "qos3":
        return mqtt.packet(mqtt.PUBLISH, 0x06, mqtt.mstr(topic) + b"\x00\x01" + props + b"{}")
    if kind == "reserved_type":
        return b"\x00\x00" if ver != 5 or rng.random() < 0.5 else b"\x00\x02\x00\x00"
    raise ValueError(kind)


def _bad_connect(kind: str, rng, ver: int) -> tuple[bytes, int | None]:
    """A malformed CONNECT and the CONNACK code the broker answers with (None: no CONNACK)."""
    cid = client_id(rng, "fz").encode()
    name, level = (b"MQTT", ver)
    if kind == "invalid_utf8_client_id":
        return _raw_connect(name, level, 0x02, cid[:4] + b"\xed\xa0\x80" + cid[4:]), None
    if kind == "bad_protocol_name":
        return _raw_connect(rng.choice([b"MQTX", b"HTTP", b"MQIsdq"]), level, 0x02, cid), None
    if kind == "bad_protocol_level":
        return _raw_connect(name, int(rng.choice([6, 7, 0x84])), 0x02, cid), 1
    if kind == "reserved_connect_flag":
        return _raw_connect(name, level, 0x03, cid), None
    raise ValueError(kind)


@attack("malformed", {"count": 40, "rate": 2.0, "version": 0}, duration=60.0)
def malformed(ctx: AttackContext, spec, rng: np.random.Generator) -> PlannedStep:
    """`count` malformed packets (each on a fresh connection) at `rate`/s."""
    p = ctx.params
    ip, me = ctx.attacker_host(rng)
    ver = int(p["version"]) or (5 if rng.random() < 0.3 else 4)
    n = max(1, int(p["count"]))
    t = ctx.start + np.sort(rng.uniform(0, min(ctx.dur, n / max(float(p["rate"]), 1e-3) * NS), n)).astype(np.int64)
    t = t[t < ctx.t1]
    n = t.size
    kinds = [KINDS[i % len(KINDS)] for i in rng.permutation(max(n, len(KINDS)))[:n]]
    w = ctx.wire
    conn = w.connections(np.full(n, me), ctx.broker_host, ctx.ports(rng, n), 1883)
    t_ack = w.handshake(conn, t)
    used = []
    for i, kind in enumerate(kinds):
        c = conn[i : i + 1]
        t_now = t_ack[i : i + 1] + app_delay(rng, 1)
        if kind in CONNECT_KINDS:
            pkt, code = _bad_connect(kind, rng, ver)
            t_now = w.send(c, t_now, 0, Blobs.from_list([pkt]))
            t_now = t_now + w.reply_delay(c, 1).astype(np.int64)
            if code is not None:
                t_now = w.send(c, t_now, 1, Blobs.from_list([mqtt.connack(code, version=4)])) + 20_000
        else:
            t_now = w.send(c, t_now, 0, Blobs.from_list([mqtt.connect(client_id(rng, "fz"), version=ver, keepalive=60)]))
            t_now = w.send(c, t_now + w.reply_delay(c, 1).astype(np.int64), 1, Blobs.from_list([mqtt.connack(0, version=ver)]))
            t_now = t_now + w.reply_delay(c, 0).astype(np.int64)
            t_now = w.send(c, t_now, 0, Blobs.from_list([_bad_packet(kind, rng, ver)]))
            t_now = t_now + w.reply_delay(c, 1).astype(np.int64)
            if ver == 5:
                t_now = w.send(c, t_now, 1, Blobs.from_list([mqtt.disconnect(version=5, reason=mqtt.DISCONNECT_MALFORMED_V5)])) + 20_000
        w.close(c, t_now, 1)
        used.append(kind)
    return PlannedStep([ip], [ctx.broker_ip], {"packets": int(n), "kinds": sorted(set(used)), "version": ver})
