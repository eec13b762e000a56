"""Fuzzers of the agent's packet path, seeded and sized by the caller.

Each `fuzz_*` function feeds `n` generated inputs to one stage of the packet path and returns a
`FuzzRun`: how many inputs, how long, and what was unexpected (an exception other than the
stage's own error for bad input, or a broken invariant), with the first few examples and the
seed to replay them. The tests run them small (seconds); `bench/fuzz_packet_path.py` runs them
to a million inputs each.

  capture_files  mutated pcap / pcapng files          -> CaptureReader (only CaptureError)
  headers        mutated, truncated and random frames -> decode_packets (offsets stay in the frame)
  mqtt_messages  mutated MQTT messages                -> parse_message (never raises)
  mqtt_streams   crafted TCP segments                 -> MqttStreams (no internal error, bounded)
  times          NaN, infinite, out-of-range, backward and jumping frame times
                                                      -> AgentPipeline (finite, in-range incidents)
"""
from __future__ import annotations

import io
import itertools
import logging
import random
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.packet import Raw

from atlas.agent.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    FrameBatch,
)
from atlas.agent.capture.clock import MAX_TS
from atlas.agent.capture.pcapfile import CaptureError, CaptureReader
from atlas.agent.decode import MQTT_DTYPE, MQTT_OK, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
from atlas.agent.decode.mqtt import parse_message
from atlas.agent.decode.packets import AddressBook, decode_packets
from atlas.agent.decode.streams import MqttStreams

from capture_files import block, epb, idb, old_pb, pcap_file, shb, spb
from mqtt_segments import (
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


@dataclass
class FuzzRun:
    name: str
    seed: int
    inputs: int = 0
    seconds: float = 0.0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)  # the first few unexpected results
    stats: dict = field(default_factory=dict)  # what the inputs reached (coverage of the fuzz)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def fail(self, what: str) -> None:
        self.unexpected += 1
        if len(self.examples) < 5:
            self.examples.append(f"seed {self.seed}: {what}")


# ---- crafted traffic (Scapy, built once) -------------------------------------------------------

V4 = IP(src="192.0.2.10", dst="198.51.100.7")


def ETH(**kw):
    # Explicit addresses: Scapy would otherwise look up routes and ARP for every frame.
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)

V6 = IPv6(src="2001:db8::10", dst="2001:db8:1::7")


def l4_variants():
    return [
        TCP(sport=51000, dport=1883, flags="PA", seq=0xDEADBEEF) / Raw(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"),
        TCP(sport=1883, dport=51000, flags="SA", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)]),
        TCP(sport=40000, dport=8883, flags="A", options=[("Timestamp", (5, 6))]) / Raw(b"x" * 300),
        UDP(sport=5353, dport=53) / Raw(b"query"),
    ]


def ip_variants():
    out = []
    for l4 in l4_variants():
        out.append(V4 / l4)
        out.append(V6 / l4)
    out.append(V4 / ICMP(type=8, code=0) / Raw(b"ping"))
    out.append(V6 / ICMPv6EchoRequest(data=b"ping6"))
    out.append(IP(src="10.1.1.1", dst="10.1.1.2", options=b"\x94\x04\x00\x00" + b"\x01" * 8) / TCP(sport=1, dport=2) / Raw(b"opt"))
    return out


def link_wrap(linktype: int, ip) -> bytes:
    et = 0x86DD if IPv6 in ip else 0x0800
    if linktype == LINKTYPE_ETHERNET:
        return bytes(ETH() / ip)
    if linktype == LINKTYPE_LINUX_SLL:
        return bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=et) / ip)
    if linktype == LINKTYPE_LINUX_SLL2:
        return bytes(CookedLinuxV2(proto=et, ifindex=3, lladdrtype=1, lladdrlen=6) / ip)
    return bytes(ip)


# ---- MQTT messages and TCP segments ------------------------------------------------------------


def valid_messages(rng: random.Random) -> list[bytes]:
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


def mutate(rng: random.Random, base: bytes) -> bytes:
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


def random_input(rng: random.Random, corpus: list[bytes]) -> bytes:
    r = rng.random()
    if r < 0.25:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if r < 0.85:
        return mutate(rng, rng.choice(corpus))
    return b"".join(mutate(rng, rng.choice(corpus)) if rng.random() < 0.5 else rng.choice(corpus) for _ in range(rng.randint(2, 5)))


def crafted_segments(rng: random.Random, corpus: list[bytes], n: int, damage: float = 1.0, garbage: float = 0.6) -> list[Segment]:
    """n crafted segments (see `segment_stream`)."""
    return list(itertools.islice(segment_stream(rng, corpus, damage, garbage), n))


def segment_stream(rng: random.Random, corpus: list[bytes], damage: float = 1.0, garbage: float = 0.6) -> Iterator[Segment]:
    """Crafted segments over a few dozen connections, without end: mostly in order, with damage
    (`damage` scales how often: SYN/FIN/RST, retransmissions, holes, snap-length cuts, split
    messages); `garbage` of the payloads are malformed or random bytes."""
    flows = []
    for k in range(40):
        flows.append({"c": (10 << 24) + k, "b": (10 << 24) + 250, "cp": 20000 + k, "bp": rng.choice((1883, 1883, 8883)),
                      "seq": {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}})
    t = 1000.0
    while True:
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
            payload = random_input(rng, corpus) if rng.random() < garbage else rng.choice(corpus)
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
        yield Segment(t, src, dst, sp, dp, seq, flags, payload, wire_extra)
        if s >= 0.05 or rng.random() < 0.5:
            f["seq"][to_b] = (seq + len(payload) + wire_extra + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF


# ---- the fuzzers ---------------------------------------------------------------------------------

# Frame times that are not times, for the timestamp fuzzer.
BAD_TIMES = (float("nan"), float("inf"), float("-inf"), -1.0, -1e12, MAX_TS, 1e19, 1e300)


class _Quiet:
    """Silence the warnings a fuzz run provokes by the million (each is one line in real use)."""

    def __enter__(self) -> None:
        self._log = logging.getLogger("atlas.agent")
        self._level = self._log.level
        self._log.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._log.setLevel(self._level)


def fuzz_capture_files(n: int, seed: int) -> FuzzRun:
    """Mutated pcap and pcapng files (fields set to extremes, bit flips, cuts, splices) through
    CaptureReader with random batch and chunk sizes, strict or not: CaptureError is the only
    error allowed, and every frame of every batch lies inside its buffer, with a time."""
    run = FuzzRun("capture_files", seed)
    rng = random.Random(seed)
    bases = [_capture_file(rng, kind) for kind in range(24)]
    counts = {"read": 0, "capture_errors": 0, "frames": 0, "truncated": 0, "corrupt": 0, "untimed": 0}
    t0 = time.perf_counter()
    with _Quiet():
        for i in range(n):
            r = rng.random()
            data = rng.choice(bases) if r < 0.05 else _mutate_file(rng, rng.choice(bases), bases)
            reader = CaptureReader(io.BytesIO(data), rng.choice((1, 3, 64, 4096)), chunk_size=rng.choice((64, 80, 256, 4096)),
                                   strict=rng.random() < 0.25)
            try:
                for b in reader:
                    problem = _batch_problem(b)
                    if problem:
                        run.fail(f"file {i}: {problem}: {data.hex()}")
                        break
                counts["read"] += 1
            except CaptureError:
                counts["capture_errors"] += 1
            except Exception as e:  # the point of the fuzzer
                run.fail(f"file {i}: {e!r}: {data.hex()}")
            counts["frames"] += reader.frames
            counts["truncated"] += reader.truncated_records
            counts["corrupt"] += reader.corrupt_records
            counts["untimed"] += reader.untimed_frames
    run.inputs, run.seconds, run.stats = n, time.perf_counter() - t0, counts
    return run


def _capture_file(rng: random.Random, kind: int) -> bytes:
    """A small valid capture: pcap (both byte orders, µs / ns) or pcapng (both orders, two
    interfaces with time options, every packet block type, blocks without packets, sections)."""
    frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(90))) for _ in range(rng.randint(1, 6))]
    order = "<" if kind % 2 else ">"
    lt = rng.choice((LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6))
    if kind < 8:
        recs = [(rng.randrange(1 << 32), rng.randrange(1_000_000), f, len(f) + rng.choice((0, 0, 7))) for f in frames]
        return pcap_file(recs, order=order, nanos=kind % 4 >= 2, linktype=lt, snaplen=rng.choice((0, 64, 65535, 262144)))
    out = [shb(order)]
    for _ in range(2):
        out.append(idb(order, lt, snaplen=rng.choice((0, 40, 65535)), tsresol=rng.choice((None, 6, 9, 0x80 | 20, 0)),
                       tsoffset=rng.choice((None, 0, 1 << 40, -5))))
    for f in frames:
        t = rng.randrange(1 << 64)
        pick = rng.randrange(6)
        if pick < 3:
            out.append(epb(order, rng.randrange(2), t, f, len(f) + rng.choice((0, 5))))
        elif pick == 3:
            out.append(spb(order, f))
        elif pick == 4:
            out.append(old_pb(order, rng.randrange(2), t, f))
        else:
            out.append(block(order, rng.choice((4, 5, 0x80000001)), f))  # name resolution, stats, custom
    if kind % 5 == 0:  # a second section, other byte order
        other = ">" if order == "<" else "<"
        out += [shb(other), idb(other, lt), epb(other, 0, 1, frames[0])]
    return b"".join(out)


def _mutate_file(rng: random.Random, data: bytes, bases: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 0 and b:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and len(b) >= 4:  # a length / type / interface field set to an extreme
            i = rng.randrange(len(b) // 4) * 4
            value = rng.choice((0, 1, 4, 11, 12, 16, 28, 31, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, len(b), len(b) + 4,
                                rng.randrange(1 << 32)))
            b[i : i + 4] = struct.pack(rng.choice("<>") + "I", value)
        elif kind == 2:  # cut
            del b[rng.randrange(len(b) + 1) :]
        elif kind == 3:  # insert or delete bytes
            i = rng.randrange(len(b) + 1)
            if rng.random() < 0.5:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                del b[i : i + rng.randint(1, 8)]
        elif kind == 4:  # splice another file's tail
            other = rng.choice(bases)
            b[rng.randrange(len(b) + 1) :] = other[rng.randrange(len(other) + 1) :]
        elif kind == 5 and b:  # a repeated stretch
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randint(1, 64)]
        elif b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _batch_problem(b: FrameBatch) -> str:
    n = len(b)
    if not (len(b.caplens) == len(b.wirelens) == len(b.ts) == n):
        return "arrays of different lengths"
    if n and ((b.offsets < 0).any() or (b.caplens < 0).any() or (b.offsets + b.caplens > len(b.buf)).any()):
        return "a frame outside its buffer"
    if np.isnan(b.ts).any():
        return "a NaN time"
    return ""


HEADER_LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_RAW_BSD,
                    LINKTYPE_IPV4, LINKTYPE_IPV6, 0)


def header_bases(linktype: int) -> list[bytes]:
    """Real frames of every IP / L4 variant for one link type (VLAN and IPv6 extension chains too)."""
    frames = [link_wrap(linktype, ip) for ip in ip_variants()]
    frames.append(link_wrap(linktype, V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(nh=6) / TCP()))
    if linktype == LINKTYPE_ETHERNET:
        frames.append(bytes(ETH() / Dot1Q(vlan=3) / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(nh=6) / TCP()))
    return frames


def mutated_frames(rng: np.random.Generator, bases: list[bytes], n: int) -> list[bytes]:
    """Real frames with 1-4 of their first 80 bytes overwritten, cut at a random length; a tenth
    are random bytes."""
    out = []
    for k in range(n):
        if rng.random() < 0.1:
            out.append(rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes())
            continue
        f = bytearray(bases[k % len(bases)])
        for pos in rng.integers(0, 80, int(rng.integers(1, 5))):
            if pos < len(f):
                f[pos] = int(rng.integers(0, 256))
        out.append(bytes(f[: int(rng.integers(0, len(f) + 1))]))
    return out


def fuzz_headers(n: int, seed: int, batch: int = 8192) -> FuzzRun:
    """Mutated, truncated and random frames of every link type through decode_packets: no
    exception, one row per frame, payloads inside their frame, IP version 0, 4 or 6."""
    run = FuzzRun("headers", seed)
    rng = np.random.default_rng(seed)
    bases = {lt: header_bases(lt) for lt in HEADER_LINKTYPES}
    book = AddressBook(capacity=4096)
    counts = {"ipv4": 0, "ipv6": 0, "l4": 0, "payload": 0}
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        lt = HEADER_LINKTYPES[int(rng.integers(len(HEADER_LINKTYPES)))]
        frames = mutated_frames(rng, bases[lt], k)
        b = FrameBatch.from_frames(frames, np.arange(k, dtype=float), lt)
        b.wirelens = rng.integers(0, 70000, k).astype(np.int32)
        try:
            rows = decode_packets(b, book)
        except Exception as e:  # the point of the fuzzer
            run.fail(f"batch at input {done} (link type {lt}): {e!r}")
            done += k
            continue
        end = b.offsets + b.caplens
        outside = (rows["payload_off"] < b.offsets) | (rows["payload_off"] + rows["payload_len"] > end)
        if len(rows) != k or outside.any() or not np.isin(rows["ipver"], (0, 4, 6)).all():
            i = int(np.argmax(outside)) if outside.any() else 0
            run.fail(f"input {done + i} (link type {lt}): row out of bounds or bad ipver: {frames[i].hex()}")
        counts["ipv4"] += int((rows["ipver"] == 4).sum())
        counts["ipv6"] += int((rows["ipver"] == 6).sum())
        counts["l4"] += int((rows["sport"] > 0).sum())
        counts["payload"] += int((rows["payload_len"] > 0).sum())
        done += k
    run.inputs, run.seconds, run.stats = n, time.perf_counter() - t0, counts
    return run


def fuzz_mqtt_messages(n: int, seed: int) -> FuzzRun:
    """Mutated, truncated, concatenated and random MQTT 3.1 / 3.1.1 / 5 messages through
    parse_message: no exception; a well-formed result is exactly its announced bytes (decoding
    them alone agrees); a malformed one says why."""
    run = FuzzRun("mqtt_messages", seed)
    rng = random.Random(seed)
    corpus = valid_messages(rng)
    malformed = 0
    t0 = time.perf_counter()
    for i in range(n):
        data = random_input(rng, corpus)
        to_broker, level = rng.random() < 0.5, rng.choice((3, 4, 5))
        max_size = rng.choice((64, 1024, 256 * 1024))
        try:
            m = parse_message(data, to_broker, level, max_size)
        except Exception as e:  # the point of the fuzzer
            run.fail(f"input {i}: parse_message({data!r}, {to_broker}, {level}, {max_size}) raised {e!r}")
            continue
        if not data:
            if m is not None:
                run.fail(f"input {i}: a message from no bytes")
            continue
        if m is None or not (0 <= m.mtype <= 15 and m.length >= 1):
            run.fail(f"input {i}: no message or a bad type / length from {data!r}")
            continue
        if m.error == MQTT_OK:
            again = parse_message(data[: m.length], to_broker, level, max_size)
            if m.length > min(len(data), max_size) or (again.error, again.mtype, again.payload_len, again.topic_hash) != (
                    m.error, m.mtype, m.payload_len, m.topic_hash):
                run.fail(f"input {i}: a well-formed message that is not its own bytes: {data!r}")
        else:
            malformed += 1
            if not m.detail:
                run.fail(f"input {i}: malformed without a reason: {data!r}")
    run.inputs, run.seconds, run.stats = n, time.perf_counter() - t0, {"malformed": malformed}
    return run


def fuzz_mqtt_streams(n: int, seed: int) -> FuzzRun:
    """Crafted TCP segments (reordered, retransmitted, cut, SYN/FIN/RST, holes, MQTT 5) in
    batches of random size through MqttStreams with small limits: no exception, MQTT rows out,
    buffered bytes within the limit, no internal error counted."""
    run = FuzzRun("mqtt_streams", seed)
    rng = random.Random(seed)
    corpus = valid_messages(rng)
    segments = segment_stream(rng, corpus)
    limit = 256 * 1024

    def fresh() -> MqttStreams:
        return MqttStreams(ports=(1883, 8883), max_message=rng.choice((4096, 64 * 1024)), max_flows=24,
                           max_buffered=limit, max_ooo_bytes=16 * 1024, max_ooo_segments=8)

    st, rows_out = fresh(), 0
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(rng.choice((1, 7, 64, 512, 4000)), n - done)
        b, p = batch_of(list(itertools.islice(segments, k)))
        try:
            rows = st.feed(b, p)
            held = sum(f.held() for f in st._flows.values())
            if rows.dtype != MQTT_DTYPE or not st.stats()["buffered_bytes"] == held <= limit:
                run.fail(f"segments {done}..{done + k}: bad rows or buffered bytes over the limit")
            rows_out += len(rows)
        except Exception as e:  # the point of the fuzzer
            run.fail(f"segments {done}..{done + k}: feed raised {e!r}")
            st = fresh()
        done += k
    try:
        rows_out += len(st.flush())
    except Exception as e:  # pragma: no cover
        run.fail(f"flush raised {e!r}")
    s = st.stats()
    if s["internal_errors"]:
        run.fail(f"{s['internal_errors']} internal errors counted")
    run.inputs, run.seconds = n, time.perf_counter() - t0
    run.stats = {"segments": s["segments"], "rows": rows_out, "gaps": s["gaps"], "malformed": sum(s["malformed"].values()),
                 "evicted_flows": s["evicted_flows"], "fast_path": s["fast_path"]}
    return run


_TRAFFIC: dict[int, FrameBatch] = {}


def attacked_traffic(seed: int = 5) -> FrameBatch:
    """A gateway's traffic with a port scan and an MQTT brute force (the simulator), in one batch."""
    if seed not in _TRAFFIC:
        from atlas.sim.attacks import AttackSpec
        from atlas.sim.capture import generate_capture

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gw.pcap"
            generate_capture(path, devices=20, duration=120, seed=seed, attacks=[
                AttackSpec("port_scan", start=20, duration=20), AttackSpec("mqtt_bruteforce", start=60, duration=30)])
            _TRAFFIC[seed] = FrameBatch.concat(list(CaptureReader(path)))
    return _TRAFFIC[seed]


def fuzz_times(n: int, seed: int, detector=None, pipeline_inputs: int = 200_000) -> FuzzRun:
    """Real traffic (with attacks) whose frame times are spoiled batch by batch: NaN, infinite,
    negative and out-of-range times at any rate, jitter back, clock steps back (seconds to
    decades), jumps forward, one frame far ahead, times all equal or running backwards, and the
    idle clock at such times, through AgentPipeline with the real detector. No exception; every
    incident's times finite and in range; every bad time counted, none reaching the tracker."""
    from atlas.agent.capture.clock import bad_times
    from atlas.agent.config import AgentConfig
    from atlas.agent.detect import Detector
    from atlas.agent.pipeline import AgentPipeline

    run = FuzzRun("times", seed)
    rng = np.random.default_rng(seed)
    cfg = AgentConfig()
    detector = detector or Detector(None, batch=cfg.detect.batch)
    src = attacked_traffic()
    span = float(src.ts[-1] - src.ts[0]) + 1.0
    counts = {"bad_times": 0, "clock_steps": 0, "incidents": 0, "rows": 0}
    sizes = (1, 17, 256, 1024, 4096, 4096)

    def check(pipe: AgentPipeline, expected_bad: int, at: int) -> None:
        try:
            incidents = pipe.finish()
        except Exception as e:  # the point of the fuzzer
            run.fail(f"input {at}: finish raised {e!r}")
            return
        for inc in incidents:
            if not (np.isfinite([inc.time, inc.last_seen]).all() and 0 <= inc.time < MAX_TS and 0 <= inc.last_seen < MAX_TS):
                run.fail(f"input {at}: incident {inc.id} with time {inc.time!r}, last seen {inc.last_seen!r}")
        if pipe.counters.bad_timestamps != expected_bad or pipe.tracker.bad_times:
            run.fail(f"input {at}: {pipe.counters.bad_timestamps} bad times counted, {expected_bad} sent, "
                     f"{pipe.tracker.bad_times} reached the tracker")
        counts["bad_times"] += pipe.counters.bad_timestamps
        counts["clock_steps"] += pipe.counters.clock_steps
        counts["incidents"] += len(incidents)
        counts["rows"] += pipe.counters.rows

    t0 = time.perf_counter()
    with _Quiet():
        pipe, expected_bad, since = AgentPipeline(cfg, detector), 0, 0
        offset, pos, done = 0.0, 0, 0
        while done < n:
            k = min(int(rng.choice(sizes)), n - done, len(src) - pos)
            ts = src.ts[pos : pos + k] + offset
            mode = int(rng.integers(12))
            if mode == 0:  # times that are not times, at any rate
                hit = rng.random(k) < rng.choice((0.001, 0.05, 0.5, 1.0))
                ts[hit] = rng.choice(BAD_TIMES, int(hit.sum()))
            elif mode == 1:  # late packets
                ts -= rng.random(k) * 5.0
            elif mode == 2:  # the clock steps back, and stays there
                offset -= float(rng.choice((11.0, 600.0, 86400.0, 3e8)))
                ts = src.ts[pos : pos + k] + offset
            elif mode == 3:  # a jump forward
                offset += float(rng.choice((11.0, 3600.0, 1e8)))
                ts = src.ts[pos : pos + k] + offset
            elif mode == 4:  # one frame far ahead
                ts[int(rng.integers(k))] += 1e9
            elif mode == 5:  # all at one time
                ts[:] = ts[0]
            elif mode == 6:  # time running backwards
                ts = ts[::-1].copy()
            elif mode == 7:  # the idle clock at a bad, past or future time
                idle = float(rng.choice((np.nan, np.inf, -np.inf, -1.0, 1e300, ts[0] - 3600, ts[-1] + 5, ts[-1] + 3600)))
                try:
                    pipe.idle(idle)
                except Exception as e:  # the point of the fuzzer
                    run.fail(f"input {done}: idle({idle!r}) raised {e!r}")
            expected_bad += int(bad_times(ts).sum())
            batch = FrameBatch(src.buf, src.offsets[pos : pos + k], src.caplens[pos : pos + k], src.wirelens[pos : pos + k], ts,
                               src.linktype)
            try:
                pipe.process(batch)
            except Exception as e:  # the point of the fuzzer
                run.fail(f"input {done}: process raised {e!r} (mode {mode})")
                pipe, expected_bad, since = AgentPipeline(cfg, detector), 0, 0
            done += k
            since += k
            pos += k
            if pos >= len(src):  # the traffic again, later (or, after steps back, earlier)
                pos, offset = 0, offset + span
            if src.ts[0] + offset < 1e8:  # stay mostly in range: the bad times are mode 0's
                offset = 0.0
            if since >= pipeline_inputs:
                check(pipe, expected_bad, done)
                pipe, expected_bad, since = AgentPipeline(cfg, detector), 0, 0
        check(pipe, expected_bad, done)
    run.inputs, run.seconds, run.stats = n, time.perf_counter() - t0, counts
    return run


FUZZERS: dict[str, Callable[[int, int], FuzzRun]] = {
    "capture_files": fuzz_capture_files,
    "headers": fuzz_headers,
    "mqtt_messages": fuzz_mqtt_messages,
    "mqtt_streams": fuzz_mqtt_streams,
    "times": fuzz_times,
}
