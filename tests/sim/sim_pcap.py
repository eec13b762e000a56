"""Test helpers for generated captures, written independently of the generator's code.

Frames are read with Scapy's RawPcapReader; headers are parsed with struct; MQTT messages are
cut out of reassembled TCP streams by their fixed header and handed to scapy.contrib.mqtt.
"""
from __future__ import annotations

import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field

from scapy.utils import RawPcapReader


@dataclass
class Frame:
    ts: float
    raw: bytes
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes

    @property
    def flow(self) -> tuple:
        return (self.src, self.sport, self.dst, self.dport)


def ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def read_frames(path) -> list[Frame]:
    out = []
    reader = RawPcapReader(str(path))
    scale = 1e-9 if reader.nano else 1e-6  # a nanosecond pcap keeps nanoseconds in `usec`
    for raw, meta in reader:
        ts = meta.sec + meta.usec * scale
        assert raw[12:14] == b"\x08\x00", "not IPv4"
        ihl = (raw[14] & 0x0F) * 4
        t = 14 + ihl
        sport, dport, seq, ack, off_flags = struct.unpack(">HHIIH", raw[t : t + 14])
        doff = (off_flags >> 12) * 4
        tot = struct.unpack(">H", raw[16:18])[0]
        payload = raw[t + doff : 14 + tot]
        out.append(Frame(ts, raw, ip(raw[26:30]), ip(raw[30:34]), sport, dport, seq, ack, off_flags & 0x3F, payload))
    return out


def ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksums_ok(f: Frame) -> tuple[bool, bool]:
    """(IP header checksum ok, TCP checksum ok), computed from the raw bytes."""
    raw = f.raw
    ihl = (raw[14] & 0x0F) * 4
    ip_ok = ones_complement(raw[14 : 14 + ihl]) == 0xFFFF
    tot = struct.unpack(">H", raw[16:18])[0]
    seg = raw[14 + ihl : 14 + tot]
    pseudo = raw[26:34] + struct.pack(">BBH", 0, 6, len(seg))
    return ip_ok, ones_complement(pseudo + seg) == 0xFFFF


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass
class Stream:
    """One direction of one TCP connection, in capture order."""

    frames: list[Frame] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    gaps: int = 0  # segments whose seq did not continue the previous one


def streams(frames: list[Frame]) -> dict[tuple, Stream]:
    """Per-direction byte streams; a connection is keyed by its 4-tuple and its SYN/first seq."""
    out: dict[tuple, Stream] = defaultdict(Stream)
    nxt: dict[tuple, int] = {}
    for f in frames:
        s = out[f.flow]
        s.frames.append(f)
        if f.flow in nxt and f.flags & RST == 0:
            expect = nxt[f.flow]
            if f.seq != expect:
                s.gaps += 1
        used = len(f.payload) + (1 if f.flags & SYN else 0) + (1 if f.flags & FIN else 0)
        if f.flags & RST == 0:
            nxt[f.flow] = (f.seq + used) & 0xFFFFFFFF
        s.data += f.payload
    return out


def mqtt_messages(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut a byte stream into MQTT control packets by their fixed headers; returns (messages,
    leftover bytes that do not form a whole packet)."""
    msgs, i = [], 0
    while i < len(data):
        j, mult, length = i + 1, 1, 0
        while True:
            if j >= len(data) or j - i > 4:
                return msgs, data[i:]
            b = data[j]
            length += (b & 0x7F) * mult
            mult *= 128
            j += 1
            if not b & 0x80:
                break
        if j + length > len(data):
            return msgs, data[i:]
        msgs.append(data[i : j + length])
        i = j + length
    return msgs, b""


def tshark_fields(path, display_filter: str, fields: list[str]) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-Y", display_filter, "-T", "fields"] + sum((["-e", f] for f in fields), [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def timed_messages(s: Stream) -> list[tuple[float, bytes]]:
    """The stream's MQTT messages with the capture time of the segment completing each."""
    ends, total = [], 0
    for f in s.frames:
        total += len(f.payload)
        ends.append((total, f.ts))
    msgs, _ = mqtt_messages(bytes(s.data))
    out, pos, k = [], 0, 0
    for m in msgs:
        pos += len(m)
        while ends[k][0] < pos:
            k += 1
        out.append((ends[k][1], m))
    return out
