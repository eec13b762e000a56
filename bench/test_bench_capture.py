"""Capture and header decode speed, as ratios against Scapy in the same run.

    .venv/bin/python -m pytest bench/test_bench_capture.py --benchmark-enable -s

- read_capture vs scapy's RawPcapReader / RawPcapNgReader on a generated 200k-frame file
  (goal: well above RawPcapReader);
- decode_packets vs Scapy dissecting every frame with Ether() (the path the agent avoids).

Each test prints the ratio and stores it in the benchmark's extra_info. Live capture cost (ring vs
recv_into, CPU-seconds per million packets) is measured by bench/live_capture.py.
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from atlas.agent.capture import LINKTYPE_ETHERNET, FrameBatch
from atlas.agent.capture.pcapfile import read_capture, write_pcap
from atlas.agent.decode.packets import AddressBook, decode_packets

N_FRAMES = 200_000
SCAPY_SAMPLE = 4000  # frames Scapy dissects (at ~10k/s, all 200k would take half a minute)
READ_GOAL = 3.0  # read_capture must be at least this many times faster than RawPcapReader
DECODE_GOAL = 50.0  # decode_packets vs Ether() dissection, per packet


def _frame_pool(n: int = 256) -> list[bytes]:
    """MQTT-like traffic: PUBLISH over TCP of various sizes, acks, some UDP (CoAP)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    rng = np.random.default_rng(5)
    pool = []
    for i in range(n):
        eth = Ether(src="02:00:00:00:%02x:01" % (i % 256), dst="02:00:00:00:00:02")
        ip = IP(src=f"10.1.{i // 200}.{i % 200 + 1}", dst="10.1.255.1")
        kind = i % 4
        if kind in (0, 1):
            topic = b"city/sensor/%d" % i
            body = len(topic).to_bytes(2, "big") + topic + b"x" * int(rng.integers(4, 400))
            pkt = eth / ip / TCP(sport=40000 + i, dport=1883, flags="PA", options=[("Timestamp", (i, 0))]) / Raw(
                bytes([0x30, len(body)]) + body if len(body) < 128 else bytes([0x30, len(body) & 0x7F | 0x80, len(body) >> 7]) + body
            )
        elif kind == 2:
            pkt = eth / ip / TCP(sport=1883, dport=40000 + i, flags="A")
        else:
            pkt = eth / ip / UDP(sport=5683, dport=50000 + i) / Raw(b"\x40\x01" + b"c" * int(rng.integers(4, 100)))
        pool.append(bytes(pkt))
    return pool


@pytest.fixture(scope="session")
def capture_files(tmp_path_factory) -> dict[str, Path]:
    pool = _frame_pool()
    frames = [pool[i % len(pool)] for i in range(N_FRAMES)]
    batch = FrameBatch.from_frames(frames, 1_700_000_000 + np.arange(N_FRAMES) * 1e-4, LINKTYPE_ETHERNET)
    folder = tmp_path_factory.mktemp("bench_capture")
    pcap = folder / "bench.pcap"
    write_pcap(pcap, batch)
    pcapng = folder / "bench.pcapng"
    pcapng.write_bytes(_pcapng(frames, batch.ts))
    return {"pcap": pcap, "pcapng": pcapng}


def _pcapng(frames: list[bytes], ts: np.ndarray) -> bytes:
    out = [
        struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28),
        struct.pack("<IIHHII", 1, 20, LINKTYPE_ETHERNET, 0, 0, 20),
    ]
    for f, t in zip(frames, ts):
        us = int(round(t * 1e6))
        pad = -len(f) % 4
        blen = 32 + len(f) + pad
        out.append(struct.pack("<IIIIIII", 6, blen, 0, us >> 32, us & 0xFFFFFFFF, len(f), len(f)) + f + b"\0" * pad + struct.pack("<I", blen))
    return b"".join(out)


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _count_ours(path: Path) -> int:
    return sum(len(b) for b in read_capture(path))


def _count_scapy(path: Path) -> int:
    from scapy.utils import RawPcapReader

    n = 0
    with RawPcapReader(str(path)) as reader:
        for _ in reader:
            n += 1
    return n


def _report(benchmark, name: str, ours_s: float, base_s: float, per: int, base_name: str) -> float:
    ratio = base_s / ours_s
    benchmark.extra_info.update(
        {f"{name}_pkt_per_s": round(per / ours_s), f"{base_name}_pkt_per_s": round(per / base_s), "ratio": round(ratio, 1)}
    )
    print(f"\n{name}: {per / ours_s:,.0f} pkt/s; {base_name}: {per / base_s:,.0f} pkt/s; ratio {ratio:.1f}x")
    return ratio


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_read_capture_vs_scapy_raw_reader(benchmark, capture_files, fmt):
    path = capture_files[fmt]
    assert benchmark.pedantic(_count_ours, args=(path,), rounds=5, iterations=1) == N_FRAMES
    ours = _best(lambda: _count_ours(path), 3)
    base = _best(lambda: _count_scapy(path), 2)
    ratio = _report(benchmark, f"read_capture[{fmt}]", ours, base, N_FRAMES, "RawPcapReader")
    assert ratio >= READ_GOAL


@pytest.fixture(scope="session")
def batches(capture_files) -> list[FrameBatch]:
    return list(read_capture(capture_files["pcap"]))


def _decode_all(batches: list[FrameBatch], book: AddressBook) -> int:
    return sum(len(decode_packets(b, book)) for b in batches)


def test_decode_packets_vs_scapy_dissection(benchmark, batches):
    book = AddressBook()
    assert benchmark.pedantic(_decode_all, args=(batches, book), rounds=5, iterations=1) == N_FRAMES
    ours = _best(lambda: _decode_all(batches, book), 3) / N_FRAMES
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    sample = [batches[0].frame(i) for i in range(SCAPY_SAMPLE)]

    def dissect() -> None:
        for f in sample:
            p = Ether(f)
            if TCP in p:
                p[TCP].sport

    base = _best(dissect, 2) / SCAPY_SAMPLE
    ratio = _report(benchmark, "decode_packets", ours, base, 1, "scapy_Ether")
    assert ratio >= DECODE_GOAL


def test_read_and_decode_vs_scapy_read_and_dissect(benchmark, capture_files):
    """The whole offline front end: file -> header rows, against RawPcapReader + Ether()."""
    path = capture_files["pcap"]

    def ours() -> int:
        book = AddressBook()
        return sum(len(decode_packets(b, book)) for b in read_capture(path))

    assert benchmark.pedantic(ours, rounds=3, iterations=1) == N_FRAMES
    t_ours = _best(ours, 2) / N_FRAMES
    from scapy.layers.l2 import Ether
    from scapy.utils import RawPcapReader

    def scapy_front() -> None:
        with RawPcapReader(str(path)) as reader:
            for k, (data, _meta) in enumerate(reader):
                Ether(data)
                if k + 1 == SCAPY_SAMPLE:
                    break

    t_base = _best(scapy_front, 2) / SCAPY_SAMPLE
    ratio = _report(benchmark, "read+decode", t_ours, t_base, 1, "RawPcapReader+Ether")
    assert ratio >= DECODE_GOAL
