"""Test helpers: MQTT messages built byte by byte, and TCP conversations as FrameBatch + packets.

The PACKET_DTYPE rows are filled by hand from the frames we build (so the MQTT tests do not
depend on the IP decoder); `decoded()` runs the real decoder over the same frames when it exists.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from atlas.agent.capture import LINKTYPE_ETHERNET, FrameBatch
from atlas.agent.decode import PACKET_DTYPE, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

# ---- MQTT messages ---------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s16(b: bytes | str) -> bytes:
    """An MQTT string / binary field: 2-byte length and the bytes."""
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def msg(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def props(*items: bytes) -> bytes:
    blob = b"".join(items)
    return varint(len(blob)) + blob


def connect(client_id: str | bytes = "dev1", *, level: int = 4, keepalive: int = 60, username: str | None = None,
            password: bytes | None = None, will: tuple[str, bytes] | None = None, clean: bool = True,
            properties: bytes = b"\x00", will_properties: bytes = b"\x00", flags: int | None = None) -> bytes:
    name = b"MQIsdp" if level == 3 else b"MQTT"
    f = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    if will:
        f |= 0x04
    body = s16(name) + bytes([level, f if flags is None else flags]) + struct.pack(">H", keepalive)
    if level == 5:
        body += properties
    body += s16(client_id)
    if will:
        if level == 5:
            body += will_properties
        body += s16(will[0]) + s16(will[1])
    if username is not None:
        body += s16(username)
    if password is not None:
        body += s16(password)
    return msg(0x10, body)


def connack(code: int = 0, *, level: int = 4, session_present: bool = False, properties: bytes = b"\x00") -> bytes:
    body = bytes([1 if session_present else 0, code])
    if level == 5:
        body += properties
    return msg(0x20, body)


def publish(topic: str | bytes, payload: bytes = b"x", *, qos: int = 0, pid: int = 1, retain: bool = False,
            dup: bool = False, level: int = 4, properties: bytes = b"\x00") -> bytes:
    body = s16(topic) + (struct.pack(">H", pid) if qos else b"")
    if level == 5:
        body += properties
    return msg(0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body + payload)


def ack(mtype: int, pid: int = 1, *, reason: int | None = None, properties: bytes | None = None) -> bytes:
    body = struct.pack(">H", pid)
    if reason is not None:
        body += bytes([reason])
    if properties is not None:
        body += properties
    return msg((mtype << 4) | (2 if mtype == 6 else 0), body)


def subscribe(*filters: tuple[str, int], pid: int = 1, level: int = 4, properties: bytes = b"\x00", flags: int = 2) -> bytes:
    body = struct.pack(">H", pid) + (properties if level == 5 else b"")
    for f, opts in filters:
        body += s16(f) + bytes([opts])
    return msg(0x80 | flags, body)


def suback(*codes: int, pid: int = 1, level: int = 4) -> bytes:
    return msg(0x90, struct.pack(">H", pid) + (b"\x00" if level == 5 else b"") + bytes(codes))


def unsubscribe(*filters: str, pid: int = 1, level: int = 4) -> bytes:
    return msg(0xA2, struct.pack(">H", pid) + (b"\x00" if level == 5 else b"") + b"".join(s16(f) for f in filters))


def unsuback(pid: int = 1, *codes: int, level: int = 4) -> bytes:
    return msg(0xB0, struct.pack(">H", pid) + ((b"\x00" + bytes(codes)) if level == 5 else b""))


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"

# ---- TCP conversations ---------------------------------------------------------------------


def ip4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


@dataclass
class Segment:
    ts: float
    src: int
    dst: int
    sport: int
    dport: int
    seq: int
    flags: int
    payload: bytes
    wire_extra: int = 0  # payload bytes on the wire beyond those captured (snap length)


@dataclass
class Conn:
    """One TCP connection between an MQTT client and a broker; `send` keeps sequence numbers."""

    client: str = "10.0.0.2"
    broker: str = "10.0.0.1"
    cport: int = 40000
    bport: int = 1883
    isn_c: int = 1000
    isn_b: int = 900_000
    t: float = 1000.0
    segs: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nxt = {True: (self.isn_c + 1) & 0xFFFFFFFF, False: (self.isn_b + 1) & 0xFFFFFFFF}

    def _seg(self, to_broker: bool, seq: int, flags: int, payload: bytes, wire_extra: int = 0) -> Segment:
        self.t += 0.001
        c, b = ip4(self.client), ip4(self.broker)
        s = Segment(self.t, c, b, self.cport, self.bport, seq, flags, payload, wire_extra) if to_broker else \
            Segment(self.t, b, c, self.bport, self.cport, seq, flags, payload, wire_extra)
        self.segs.append(s)
        return s

    def handshake(self) -> "Conn":
        self._seg(True, self.isn_c, TCP_SYN, b"")
        self._seg(False, self.isn_b, TCP_SYN | TCP_ACK, b"")
        self._seg(True, self.nxt[True], TCP_ACK, b"")
        return self

    def send(self, to_broker: bool, payload: bytes, *, flags: int = TCP_PSH | TCP_ACK, wire_extra: int = 0) -> Segment:
        s = self._seg(to_broker, self.nxt[to_broker], flags, payload, wire_extra)
        self.nxt[to_broker] = (self.nxt[to_broker] + len(payload) + wire_extra) & 0xFFFFFFFF
        return s

    def ack(self, to_broker: bool) -> Segment:
        return self._seg(to_broker, self.nxt[to_broker], TCP_ACK, b"")

    def fin(self, to_broker: bool) -> Segment:
        s = self._seg(to_broker, self.nxt[to_broker], TCP_FIN | TCP_ACK, b"")
        self.nxt[to_broker] = (self.nxt[to_broker] + 1) & 0xFFFFFFFF
        return s

    def rst(self, to_broker: bool) -> Segment:
        return self._seg(to_broker, self.nxt[to_broker], TCP_RST | TCP_ACK, b"")


def frame(s: Segment) -> tuple[bytes, int]:
    """Ethernet/IPv4/TCP frame of a segment (captured part) and its length on the wire."""
    tcp = struct.pack(">HHIIBBHHH", s.sport, s.dport, s.seq, 0, 5 << 4, s.flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(s.payload) + s.wire_extra
    ip = struct.pack(">BBHHHBBHII", 0x45, 0, total, 0, 0x4000, 64, 6, 0, s.src & 0xFFFFFFFF, s.dst & 0xFFFFFFFF)
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    data = eth + ip + tcp + s.payload
    return data, len(data) + s.wire_extra


def batch_of(segs: list[Segment]) -> tuple[FrameBatch, np.ndarray]:
    """FrameBatch of the segments' frames and their PACKET_DTYPE rows, filled by hand."""
    frames = [frame(s) for s in segs]
    batch = FrameBatch.from_frames([f for f, _ in frames], [s.ts for s in segs], LINKTYPE_ETHERNET)
    batch.wirelens[:] = [w for _, w in frames]
    p = np.zeros(len(segs), dtype=PACKET_DTYPE)
    for i, s in enumerate(segs):
        p[i] = (s.ts, 4, s.src, s.dst, 6, s.sport, s.dport, s.flags, s.seq, frames[i][1],
                int(batch.offsets[i]) + 54, len(s.payload), len(s.payload) + s.wire_extra, i)
    return batch, p


def split_batches(segs: list[Segment], sizes: list[int]) -> list[tuple[FrameBatch, np.ndarray]]:
    """The segments cut into consecutive batches of the given sizes (the rest in a last one)."""
    out, i = [], 0
    for n in sizes:
        out.append(batch_of(segs[i : i + n]))
        i += n
    if i < len(segs):
        out.append(batch_of(segs[i:]))
    return out


def coalesce(conn_msgs: list[bytes], per_segment: int) -> list[bytes]:
    """Messages packed `per_segment` to a segment (what TSO/Nagle do to a busy publisher)."""
    return [b"".join(conn_msgs[i : i + per_segment]) for i in range(0, len(conn_msgs), per_segment)]
