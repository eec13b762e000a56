"""MQTT 3.1, 3.1.1 and 5.0 control packets as bytes: scalar builders for the few packets per
connection (CONNECT, CONNACK, SUBSCRIBE, ...) and a vectorized PUBLISH builder for the many.

Protocol levels: 3 = MQTT 3.1 ("MQIsdp"), 4 = 3.1.1, 5 = 5.0. Everything here is well formed;
the malformed attack builds its broken packets on top of these helpers on purpose.
"""
from __future__ import annotations

import struct

import numpy as np

from atlas.sim.traffic.vec import Blobs, blobs_column, join, rowcat, u16be_column, varint_column, varint_len

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

# CONNACK return codes (3.1/3.1.1) and the matching 5.0 reason codes.
CONNACK_OK = 0
CONNACK_BAD_CREDENTIALS = {4: 4, 3: 4, 5: 0x86}
CONNACK_NOT_AUTHORIZED = {4: 5, 3: 5, 5: 0x87}
CONNACK_SERVER_UNAVAILABLE = {4: 3, 3: 3, 5: 0x88}
SUBACK_FAILURE = {4: 0x80, 3: 0x80, 5: 0x87}  # 5.0: not authorized
DISCONNECT_MALFORMED_V5 = 0x81
DISCONNECT_PROTOCOL_ERROR_V5 = 0x82

# 5.0 property identifiers used here.
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_TOPIC_ALIAS_MAXIMUM = 0x22
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_REASON_STRING = 0x1F


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s: str | bytes) -> bytes:
    """MQTT UTF-8 string: 2-byte big-endian length then the bytes."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def props(items: list[tuple[int, bytes]] | None = None) -> bytes:
    """5.0 property block: varint length then id/value pairs (values already encoded)."""
    raw = b"".join(bytes([pid]) + val for pid, val in (items or []))
    return varint(len(raw)) + raw


def connect(
    client_id: str,
    *,
    version: int = 4,
    keepalive: int = 60,
    username: str | None = None,
    password: str | bytes | None = None,
    clean: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
    session_expiry: int | None = None,
    receive_maximum: int | None = None,
) -> bytes:
    name, level = (b"MQIsdp", 3) if version == 3 else (b"MQTT", version)
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    if will:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    var = mstr(name) + bytes([level, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        p = []
        if session_expiry is not None:
            p.append((PROP_SESSION_EXPIRY, struct.pack(">I", session_expiry)))
        if receive_maximum is not None:
            p.append((PROP_RECEIVE_MAXIMUM, struct.pack(">H", receive_maximum)))
        var += props(p)
    payload = mstr(client_id)
    if will:
        if version == 5:
            payload += props()
        payload += mstr(will[0]) + mstr(will[1])
    if username is not None:
        payload += mstr(username)
    if password is not None:
        payload += mstr(password)
    return packet(CONNECT, 0, var + payload)


def connack(code: int = 0, *, version: int = 4, session_present: bool = False, assigned_id: str | None = None) -> bytes:
    body = bytes([1 if session_present and code == 0 else 0, code])
    if version == 5:
        p = [] if code else [(PROP_TOPIC_ALIAS_MAXIMUM, struct.pack(">H", 10)), (PROP_RECEIVE_MAXIMUM, struct.pack(">H", 100))]
        if assigned_id is not None:
            p.append((PROP_ASSIGNED_CLIENT_ID, mstr(assigned_id)))
        body += props(p)
    return packet(CONNACK, 0, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, version: int = 4) -> bytes:
    body = struct.pack(">H", packet_id) + (props() if version == 5 else b"")
    for topic, qos in filters:
        body += mstr(topic) + bytes([qos])
    return packet(SUBSCRIBE, 0x02, body)


def suback(packet_id: int, codes: list[int], *, version: int = 4) -> bytes:
    return packet(SUBACK, 0, struct.pack(">H", packet_id) + (props() if version == 5 else b"") + bytes(codes))


def unsubscribe(packet_id: int, filters: list[str], *, version: int = 4) -> bytes:
    body = struct.pack(">H", packet_id) + (props() if version == 5 else b"") + b"".join(mstr(t) for t in filters)
    return packet(UNSUBSCRIBE, 0x02, body)


def pingreq() -> bytes:
    return b"\xc0\x00"


def pingresp() -> bytes:
    return b"\xd0\x00"


def disconnect(*, version: int = 4, reason: int = 0) -> bytes:
    if version == 5 and reason:
        return packet(DISCONNECT, 0, bytes([reason]) + props())
    return b"\xe0\x00"


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, version: int = 4, retain: bool = False, dup: bool = False) -> bytes:
    body = mstr(topic) + (struct.pack(">H", packet_id) if qos else b"") + (props() if version == 5 else b"") + payload
    return packet(PUBLISH, (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body)


def publish_batch(
    topics: Blobs,
    payloads: Blobs,
    qos: np.ndarray,
    packet_id: np.ndarray,
    version: np.ndarray,
    retain: np.ndarray | None = None,
) -> Blobs:
    """N PUBLISH packets at once; every argument has one row per packet."""
    n = len(payloads)
    qos = np.asarray(qos, dtype=np.int64)
    version = np.asarray(version)
    retain = np.zeros(n, dtype=np.int64) if retain is None else np.asarray(retain, dtype=np.int64)
    small = payloads.lens <= 512
    if small.all() or not small.any():
        return _publish_rows(topics, payloads, qos, packet_id, version, retain, padded=bool(small.all()))
    # Short payloads as padded columns, long ones (snapshots) without padding; the two results
    # share one buffer and keep their row order through the offsets.
    parts = []
    for rows in (np.flatnonzero(small), np.flatnonzero(~small)):
        parts.append(_publish_rows(topics.take(rows), payloads.take(rows), qos[rows], np.asarray(packet_id)[rows],
                                   version[rows], retain[rows], padded=rows is not None and bool(small[rows[0]])))
    a, b = parts
    offs = np.empty(n, dtype=np.int64)
    offs[small] = a.offs
    offs[~small] = b.offs + a.buf.shape[0]
    lens = np.empty(n, dtype=np.int64)
    lens[small] = a.lens
    lens[~small] = b.lens
    return Blobs(np.concatenate([a.buf, b.buf]), offs, lens)


def _publish_rows(topics: Blobs, payloads: Blobs, qos, packet_id, version, retain, *, padded: bool) -> Blobs:
    n = len(payloads)
    v5 = version == 5
    remaining = 2 + topics.lens + 2 * (qos > 0) + v5 + payloads.lens
    first = (PUBLISH << 4) | (qos << 1) | retain
    pid_mat, _ = u16be_column(packet_id)
    head = [
        (first.astype(np.uint8)[:, None], np.ones(n, dtype=np.int64)),
        varint_column(remaining),
        u16be_column(topics.lens),
        blobs_column(topics),
        (pid_mat, 2 * (qos > 0)),
        (np.zeros((n, 1), dtype=np.uint8), v5.astype(np.int64)),  # 5.0: empty property block
    ]
    if padded:
        return join(head + [blobs_column(payloads)], n)
    # Payloads are joined without padding: snapshots of 90 kB next to 60-byte readings.
    return rowcat([join(head, n), payloads])


def publish_len(topic_len: np.ndarray, payload_len: np.ndarray, qos: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Length on the wire of the PUBLISH packets publish_batch() would build."""
    remaining = 2 + np.asarray(topic_len) + 2 * (np.asarray(qos) > 0) + (np.asarray(version) == 5) + np.asarray(payload_len)
    return 1 + varint_len(remaining) + remaining
