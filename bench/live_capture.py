"""Live capture cost: CPU-seconds per million packets of the TPACKET_V3 ring vs recv_into.

    python bench/live_capture.py [--rates 5000,20000,50000] [--seconds 10] [--decode]

Creates its own network namespaces (a gateway with a bridge and one device, via tests/lab.py),
sends crafted UDP/TCP frames from the device namespace at each offered rate (bounded in count
and time, only into the lab's veth), and captures them on the gateway side in a separate
process per backend, which reports its own CPU time (getrusage) for the capture loop. Output:
one JSON line per run plus a table; the ratio socket/ring is measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_RATE = 200_000  # frames/s: a bound on what this script may offer
MAX_SECONDS = 60


def _frames(src_ip: str, dst_ip: str, n: int = 64) -> list[bytes]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    eth = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
    out = []
    for i in range(n):
        l4 = TCP(sport=40000 + i, dport=1883, flags="PA") if i % 2 else UDP(sport=40000 + i, dport=5683)
        out.append(bytes(eth / IP(src=src_ip, dst=dst_ip) / l4 / Raw(b"m" * (20 + i))))
    return out


def send_main(args: argparse.Namespace) -> int:
    """Offer `rate` frames/s for `seconds` on `iface` (run inside the device namespace)."""
    rate = min(args.rate, MAX_RATE)
    seconds = min(args.seconds, MAX_SECONDS)
    frames = _frames(args.src, args.dst)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    send = sock.send
    total = int(rate * seconds)
    tick = 0.002  # send in small bursts, paced every 2 ms
    per_tick = max(1, int(rate * tick))
    start = time.monotonic()
    sent = 0
    k = 0
    while sent < total:
        burst = min(per_tick, total - sent)
        for _ in range(burst):
            try:
                send(frames[k & 63])
            except BlockingIOError:
                continue
            k += 1
        sent += burst
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - start > seconds * 2 + 5:  # hard stop if we cannot keep pace
            break
    print(json.dumps({"sent": k, "seconds": round(time.monotonic() - start, 3)}), flush=True)
    return 0


def capture_main(args: argparse.Namespace) -> int:
    """Capture on `iface` until `seconds` after the first frame (or `idle` s of silence)."""
    sys.path.insert(0, str(ROOT))
    from atlas.agent.capture.live import LiveCapture
    from atlas.agent.decode.packets import AddressBook, decode_packets

    book = AddressBook()
    with LiveCapture(args.iface, bpf=args.bpf or None, backend=args.backend, netns=args.netns, timeout=0.1) as cap:
        print(json.dumps({"ready": True}), flush=True)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        first = last = None
        packets = 0
        for batch in cap.batches():
            now = time.monotonic()
            if len(batch):
                if first is None:
                    first = now
                last = now
                packets += len(batch)
                if args.decode:
                    decode_packets(batch, book)
            if first is not None and last is not None and now - last > args.idle:
                break
            if first is None and now - w0 > args.seconds + 10:
                break
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        stats = cap.stats()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    active = (last - first) if first is not None and last is not None else 0.0
    print(
        json.dumps(
            {
                "backend": stats["backend"],
                "packets": packets,
                "kernel_drops": stats["kernel_drops"],
                "cpu_s": round(cpu, 4),
                "user_s": round(r1.ru_utime - r0.ru_utime, 4),
                "sys_s": round(r1.ru_stime - r0.ru_stime, 4),
                "active_s": round(active, 3),
                "wall_s": round(time.monotonic() - w0, 3),
            }
        ),
        flush=True,
    )
    return 0


def run_one(lab, dev, backend: str, rate: int, seconds: float, decode: bool) -> dict:
    me = str(Path(__file__).resolve())
    cap_argv = [sys.executable, me, "capture", "--iface", dev.veth_gw, "--backend", backend, "--idle", "1.0",
                "--seconds", str(seconds)]
    if decode:
        cap_argv.append("--decode")
    cap = lab.popen(lab.gw, cap_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = cap.stdout.readline()
    if not line or not json.loads(line).get("ready"):
        raise RuntimeError(f"capture did not start: {line!r} {cap.stderr.read()}")
    send_argv = [sys.executable, me, "send", "--iface", dev.veth_dev, "--rate", str(rate), "--seconds", str(seconds),
                 "--src", dev.ip, "--dst", lab.gw_ip]
    sender = lab.run(dev.netns, send_argv, timeout=seconds * 3 + 30)
    if sender.returncode != 0:
        raise RuntimeError(f"sender failed: {sender.stderr}")
    sent = json.loads(sender.stdout.strip().splitlines()[-1])
    out, err = cap.communicate(timeout=seconds + 60)
    result = json.loads(out.strip().splitlines()[-1])
    duration = max(sent["seconds"], 1e-9)
    result.update(
        rate=rate,
        sent=sent["sent"],
        send_s=sent["seconds"],
        cpu_s_per_mpkt=round(result["cpu_s"] / max(result["packets"], 1) * 1e6, 2),
        machine_pct=round(100 * result["cpu_s"] / duration / os.cpu_count(), 3),
        decode=decode,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("send")
    s.add_argument("--iface", required=True)
    s.add_argument("--rate", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--src", required=True)
    s.add_argument("--dst", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--iface", required=True)
    c.add_argument("--backend", default="ring")
    c.add_argument("--netns", default=None)
    c.add_argument("--bpf", default="")
    c.add_argument("--decode", action="store_true")
    c.add_argument("--idle", type=float, default=1.0)
    c.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rates", default="5000,20000,50000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--backends", default="ring,socket")
    parser.add_argument("--decode", action="store_true", help="also run decode_packets on each batch")
    args = parser.parse_args(argv)
    if args.cmd == "send":
        return send_main(args)
    if args.cmd == "capture":
        return capture_main(args)

    sys.path.insert(0, str(ROOT / "tests"))
    import lab as lab_mod

    reason = lab_mod.netns_unavailable_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    if any(not 0 < r <= MAX_RATE for r in rates) or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"rates must be in 1..{MAX_RATE} and seconds in (0, {MAX_SECONDS}]")
    results = []
    with lab_mod.Lab() as lab:
        dev = lab.add_device("src")
        for rate in rates:
            for backend in args.backends.split(","):
                r = run_one(lab, dev, backend, rate, args.seconds, args.decode)
                print(json.dumps(r), flush=True)
                results.append(r)
    print(f"\n{'rate':>7} {'backend':>7} {'sent':>8} {'captured':>8} {'drops':>6} {'cpu_s':>7} {'cpu_s/Mpkt':>10} {'% machine':>9}")
    for r in results:
        print(f"{r['rate']:>7} {r['backend']:>7} {r['sent']:>8} {r['packets']:>8} {r['kernel_drops']:>6} "
              f"{r['cpu_s']:>7.3f} {r['cpu_s_per_mpkt']:>10.2f} {r['machine_pct']:>9.3f}")
    for rate in rates:
        by = {r["backend"]: r for r in results if r["rate"] == rate}
        if "ring" in by and "socket" in by and by["ring"]["cpu_s_per_mpkt"] > 0:
            print(f"{rate:>7} socket/ring CPU per packet: {by['socket']['cpu_s_per_mpkt'] / by['ring']['cpu_s_per_mpkt']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
