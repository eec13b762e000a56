"""Traffic generation speed: packets written per CPU-second by `generate_capture` (a city
gateway: devices from every profile, back-ends, every attack kind, the look-alikes), as a
ratio against Scapy building the very same packets (Ether/IP/TCP with the same fields and
payloads, checksums computed by Scapy) and writing them with wrpcap, in the same run.

    .venv/bin/python -m pytest bench/test_bench_generate.py --benchmark-enable -s

ATLAS_BENCH_GEN_DEVICES / ATLAS_BENCH_GEN_SECONDS scale the capture (default 100 devices for
90 s with every attack kind, about 80k packets; Scapy needs most of the run time). Issue 3's
goal is at least 200k packets/s written; the ratio goal below (10x Scapy) was set assuming Scapy
builds and writes about 20k packets/s, but it measured 1.6-1.9k packets per CPU-second here
(2026-11-27, both cases), so 10x is a floor, not the goal: the packets per CPU-second recorded
in extra_info are what bench/RESULTS.md compares with 200k.

The city case (`test_city_generate_vs_scapy`) runs `build_city` (every gateway in parallel on
the machine's cores, schedule, campaigns, merged ground truth) and counts its packets per
CPU-second of the process and its workers against Scapy on a sample of the same packets
(ATLAS_BENCH_CITY_DEVICES / _GATEWAYS / _SECONDS, default 300 devices, 6 gateways, 300 s), and
for information against the same devices generated as one gateway in this process (not asserted:
the city also carries its attacks, and small gateways pay a fixed cost each). Its packets per
wall second are recorded too (they depend on what else runs on the machine).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


from atlas.link.incidents import KNOWN_KINDS
from atlas.sim.attacks import AttackSpec
from atlas.sim.traffic import LookalikeSpec
from atlas.sim.capture import generate_capture

DEVICES = int(os.environ.get("ATLAS_BENCH_GEN_DEVICES", "100"))
SECONDS = float(os.environ.get("ATLAS_BENCH_GEN_SECONDS", "90"))
GEN_GOAL = 10.0  # x Scapy building + writing the same packets


def _attacks(seconds: float) -> list[AttackSpec]:
    slot = seconds / (len(KNOWN_KINDS) + 1)
    return [AttackSpec(k, start=slot * (i + 0.5), duration=slot * 0.6) for i, k in enumerate(KNOWN_KINDS)]


def measure_generate(out: Path) -> dict:
    c0, w0 = time.process_time(), time.perf_counter()
    gt = generate_capture(out, devices=DEVICES, duration=SECONDS, seed=1, attacks=_attacks(SECONDS),
                          lookalikes=[LookalikeSpec("power_cut", start=SECONDS * 0.7, duration=10),
                                      LookalikeSpec("firmware_update", start=SECONDS * 0.3)])
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"packets": gt.packets, "bytes": out.stat().st_size, "cpu_s": cpu, "wall_s": wall,
            "packets_per_cpu_s": gt.packets / cpu, "packets_per_s": gt.packets / wall}


CITY_DEVICES = int(os.environ.get("ATLAS_BENCH_CITY_DEVICES", "300"))
CITY_GATEWAYS = int(os.environ.get("ATLAS_BENCH_CITY_GATEWAYS", "6"))
CITY_SECONDS = float(os.environ.get("ATLAS_BENCH_CITY_SECONDS", "300"))
SCAPY_SAMPLE = 8_000  # frames of the city rebuilt by Scapy (its rate per packet is what counts)


def measure_scapy(src: Path | list[Path], out: Path, *, sample: int | None = None) -> dict:
    """Scapy builds each packet of `src` (or an evenly spread sample of about `sample` frames
    of several captures) from its fields and writes them all with wrpcap."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import RawPcapReader, wrpcap

    srcs = src if isinstance(src, list) else [src]
    every = 1
    if sample:
        total = sum(sum(1 for _ in RawPcapReader(str(s))) for s in srcs)
        every = max(1, total // sample)
    fields = []
    frames = ((raw, meta) for s in srcs for i, (raw, meta) in enumerate(RawPcapReader(str(s))) if i % every == 0)
    for raw, meta in frames:  # reading is not timed
        p = Ether(raw)
        fields.append((p.src, p.dst, p[IP].src, p[IP].dst, p[IP].id, p[IP].ttl, p[TCP].sport, p[TCP].dport, p[TCP].seq,
                       p[TCP].ack, int(p[TCP].flags), p[TCP].window, p[TCP].options, bytes(p[TCP].payload),
                       meta.sec + meta.usec * 1e-9))
    c0, w0 = time.process_time(), time.perf_counter()
    pkts = []
    for smac, dmac, sip, dip, ipid, ttl, sport, dport, seq, ack, flags, win, opts, payload, ts in fields:
        p = Ether(src=smac, dst=dmac) / IP(src=sip, dst=dip, id=ipid, ttl=ttl, flags="DF") / TCP(
            sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=win, options=opts)
        if payload:
            p = p / Raw(payload)
        p.time = ts
        pkts.append(p)
    wrpcap(str(out), pkts, nano=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"packets": len(pkts), "cpu_s": cpu, "wall_s": wall, "packets_per_cpu_s": len(pkts) / cpu}


def test_generate_vs_scapy_wrpcap(benchmark, tmp_path):
    # One warm-up round: steady-state throughput, as when generating a corpus capture after capture.
    ours = benchmark.pedantic(measure_generate, args=(tmp_path / "gen.pcap",), rounds=1, iterations=1, warmup_rounds=1)
    scapy = measure_scapy(tmp_path / "gen.pcap", tmp_path / "scapy.pcap")
    assert scapy["packets"] == ours["packets"]
    ratio = ours["packets_per_cpu_s"] / scapy["packets_per_cpu_s"]
    benchmark.extra_info.update(
        packets=ours["packets"], mbytes=round(ours["bytes"] / 1e6, 1),
        generate_packets_per_cpu_s=round(ours["packets_per_cpu_s"]), generate_packets_per_s=round(ours["packets_per_s"]),
        scapy_packets_per_cpu_s=round(scapy["packets_per_cpu_s"]), ratio=round(ratio, 1),
    )
    print(f"\ngenerate: {ours['packets']:,} packets ({ours['bytes'] / 1e6:.0f} MB) in {ours['cpu_s']:.2f} CPU-s = "
          f"{ours['packets_per_cpu_s']:,.0f} packets/CPU-s ({ours['packets_per_s']:,.0f}/s wall); Scapy build + wrpcap "
          f"{scapy['packets_per_cpu_s']:,.0f} packets/CPU-s: {ratio:.1f}x")
    assert ratio >= GEN_GOAL


def measure_city(out: Path) -> dict:
    from atlas.sim.city import build_city

    r = build_city(out, devices=CITY_DEVICES, gateways=CITY_GATEWAYS, duration=CITY_SECONDS, seed=7, workers=os.cpu_count())
    return {"packets": r.packets, "bytes": r.bytes, "cpu_s": r.cpu_seconds, "wall_s": r.seconds, "steps": r.steps,
            "packets_per_cpu_s": r.packets / r.cpu_seconds, "packets_per_s": r.packets_per_s,
            "pcaps": [out / "gateways" / g["gateway"] / "traffic.pcap" for g in r.per_gateway]}


def measure_one_gateway(out: Path) -> dict:
    """The city's devices (every class, by profile weight) behind one gateway, in this process."""
    c0 = time.process_time()
    gt = generate_capture(out, devices=CITY_DEVICES, duration=CITY_SECONDS, seed=7)
    cpu = time.process_time() - c0
    return {"packets": gt.packets, "cpu_s": cpu, "packets_per_cpu_s": gt.packets / cpu}


def test_city_generate_vs_scapy(benchmark, tmp_path):
    ours = benchmark.pedantic(measure_city, args=(tmp_path / "city",), rounds=1, iterations=1)
    one = measure_one_gateway(tmp_path / "one.pcap")
    scapy = measure_scapy(ours["pcaps"], tmp_path / "scapy.pcap", sample=SCAPY_SAMPLE)
    assert ours["steps"] > 0 and scapy["packets"] >= min(SCAPY_SAMPLE, ours["packets"]) // 2
    ratio = ours["packets_per_cpu_s"] / scapy["packets_per_cpu_s"]
    overhead = ours["packets_per_cpu_s"] / one["packets_per_cpu_s"]
    benchmark.extra_info.update(
        packets=ours["packets"], mbytes=round(ours["bytes"] / 1e6, 1), workers=os.cpu_count(),
        city_packets_per_cpu_s=round(ours["packets_per_cpu_s"]), city_packets_per_s=round(ours["packets_per_s"]),
        one_gateway_packets_per_cpu_s=round(one["packets_per_cpu_s"]), city_vs_one_gateway=round(overhead, 2),
        scapy_packets_per_cpu_s=round(scapy["packets_per_cpu_s"]), ratio=round(ratio, 1),
    )
    print(f"\ncity ({CITY_DEVICES} devices, {CITY_GATEWAYS} gateways, {CITY_SECONDS:g} s): {ours['packets']:,} packets "
          f"({ours['bytes'] / 1e6:.0f} MB) in {ours['cpu_s']:.2f} CPU-s = {ours['packets_per_cpu_s']:,.0f} packets/CPU-s "
          f"({ours['packets_per_s']:,.0f}/s wall, {os.cpu_count()} workers); one gateway with the same devices "
          f"{one['packets_per_cpu_s']:,.0f} packets/CPU-s: {overhead:.2f}x; Scapy build + wrpcap "
          f"{scapy['packets_per_cpu_s']:,.0f} packets/CPU-s: {ratio:.1f}x")
    assert ratio >= GEN_GOAL
