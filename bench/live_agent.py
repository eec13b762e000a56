"""The whole agent live: CPU share, kernel drops and flood detection at offered packet rates.

    python bench/live_agent.py --rates 5000,20000,50000 --seconds 20      # the live figures in RESULTS
    python bench/live_agent.py --rates 5000 --seconds 600                 # memory after 10 minutes

For each rate it builds a lab (tests/lab.py: a gateway namespace with a bridge, a device
namespace on a veth), starts `atlas-agent run` in the gateway namespace on the bridge, and
offers MQTT traffic from the device namespace for `seconds`: simulated devices (as many as it
takes at DEVICE_PPS each) publishing in-sequence TCP segments that the broker's side ACKs, so
the stream decoder sees real conversations, plus one source flooding PUBLISH at FLOOD_SHARE of
the rate. Frames only ever cross the lab's own veth. The agent's CPU
is read from outside (psutil on its pid) over the sending window, as a share of the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MAX_RATE = 100_000  # a bound on what this script may offer (frames/s)
MAX_SECONDS = 900
DEVICE_PPS = 2.5  # background devices: a PUBLISH and the broker's ACK every 0.8 s each
MIN_DEVICES = 500
FLOOD_SHARE = 0.1  # of the offered rate, from one flooding source
FLOOD_SRC = "10.79.255.66"


def _publish_frame(src_ip: str, dst_ip: str, sport: int, topic: bytes, payload: bytes) -> bytearray:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    body = len(topic).to_bytes(2, "big") + topic + payload
    mqtt = bytes([0x30, len(body)]) + body  # PUBLISH QoS 0, remaining length < 128
    pkt = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / IP(src=src_ip, dst=dst_ip) / TCP(sport=sport, dport=1883, flags="PA", seq=1000, ack=1) / mqtt
    return bytearray(bytes(pkt))


def _ack_frame(broker_ip: str, device_ip: str, dport: int) -> bytearray:
    """The broker's pure TCP ACK of a device's PUBLISH (the reverse direction of the flow)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkt = Ether(src="02:00:00:00:00:02", dst="ff:ff:ff:ff:ff:ff") / IP(src=broker_ip, dst=device_ip) / TCP(sport=1883, dport=dport, flags="A", seq=1, ack=1000)
    return bytearray(bytes(pkt))


def send_main(args: argparse.Namespace) -> int:
    """Offer `rate` frames/s for `seconds` on `iface` (runs inside the device namespace)."""
    rate, seconds = min(args.rate, MAX_RATE), min(args.seconds, MAX_SECONDS)
    flood_every = max(1, round(1 / FLOOD_SHARE))
    n = max(MIN_DEVICES, int(rate * (1 - FLOOD_SHARE) / DEVICE_PPS))
    addrs = [(f"10.79.{1 + i // 250}.{i % 250 + 1}", 40000 + i % 20000) for i in range(n)]
    devices = [_publish_frame(ip, args.dst, port, b"city/dev%d/reading" % i, b'{"v":21.5,"u":"C"}') for i, (ip, port) in enumerate(addrs)]
    acks = [_ack_frame(args.dst, ip, port) for ip, port in addrs]
    flood = _publish_frame(FLOOD_SRC, args.dst, 45555, b"city/flood", b"x" * 100)
    seq_off = 14 + 20 + 4  # Ethernet + IPv4 header + TCP ports: the TCP sequence number
    ack_off = seq_off + 4
    seqs = [1000] * n
    turn = 0  # background packets alternate: a device's PUBLISH, then the broker's ACK of it
    flood_seq = 1000
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    send, pack_into = sock.send, struct.pack_into
    total = int(rate * seconds)
    if args.ready_file:
        Path(args.ready_file).touch()  # the frames are built: sending starts now
    per_tick = max(1, int(rate * 0.002))  # bursts paced every 2 ms
    start = time.monotonic()
    sent = k = 0
    while sent < total and time.monotonic() - start < seconds * 2 + 5:
        for _ in range(min(per_tick, total - sent)):
            if k % flood_every == 0:
                frame = flood
                pack_into("!I", frame, seq_off, flood_seq)
                flood_seq = (flood_seq + len(frame) - 54) & 0xFFFFFFFF
            else:
                d = (turn // 2) % n
                if turn % 2 == 0:
                    frame = devices[d]
                    pack_into("!I", frame, seq_off, seqs[d])
                    seqs[d] = (seqs[d] + len(frame) - 54) & 0xFFFFFFFF
                else:
                    frame = acks[d]
                    pack_into("!I", frame, ack_off, seqs[d])
                turn += 1
            try:
                send(frame)
            except BlockingIOError:
                pass
            k += 1
        sent = k
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}), flush=True)
    return 0


def _status(sock: Path) -> dict | None:
    from atlas.link.control import ControlError, query

    try:
        return query(sock, "status", timeout=5)
    except ControlError:
        return None


def run_one(rate: int, seconds: float, tmp: Path, budget: float | None = None) -> dict:
    import psutil

    import lab

    with lab.Lab(subnet="10.79.0.0/24", subnet6="fd79::/64") as the_lab:
        dev = the_lab.add_device("city")
        sock = tmp / f"agent-{rate}.sock"
        cfg = tmp / f"agent-{rate}.toml"
        cfg.write_text(
            f'[agent]\ngateway_id = "bench"\ninterface = "{the_lab.bridge}"\nstate_dir = "{tmp / "state"}"\n'
            f'control_socket = "{sock}"\n[enforce]\nnftables = "off"\n'
            + (f"[budget]\ncpu_percent = {budget}\n" if budget is not None else "")
        )
        log = open(tmp / f"agent-{rate}.log", "w")
        agent = the_lab.popen(the_lab.gw, [sys.executable, "-m", "atlas.agent.cli", "run", "--config", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
        end = time.monotonic() + 60
        while _status(sock) is None:
            if agent.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"agent did not start: {(tmp / f'agent-{rate}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        proc = psutil.Process(agent.pid)
        before = _status(sock)
        # The sender builds its frames first (tens of seconds for 18,000 devices): the agent's
        # CPU and memory are measured from its first frame on, not over that set-up.
        ready = tmp / f"sending-{rate}"
        ready.unlink(missing_ok=True)
        sender = the_lab.popen(dev.netns, [sys.executable, __file__, "send", "--iface", dev.veth_dev, "--dst", "10.79.0.2",
                                           "--rate", str(rate), "--seconds", str(seconds), "--ready-file", str(ready)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not ready.exists() and sender.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
        rss_during: list[int] = []  # sampled every second while traffic is offered
        sending = threading.Event()
        sending.set()

        def sample_rss() -> None:
            while sending.is_set():
                try:
                    rss_during.append(proc.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(1.0)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        try:
            out, _ = sender.communicate(timeout=seconds * 3 + 30)
        except subprocess.TimeoutExpired:
            sender.kill()
            out, _ = sender.communicate()
        cpu1, wall1 = sum(proc.cpu_times()[:2]), time.monotonic()
        sending.clear()
        sampler.join(timeout=5)
        time.sleep(2.5)  # let the last ticks close and be scored
        after = _status(sock) or {}
        rss = proc.memory_info().rss
        agent.terminate()
        agent.wait(timeout=30)
        log.close()
    sent = json.loads(out.strip().splitlines()[-1]) if sender.returncode == 0 and out.strip() else {"sent": 0, "seconds": 0}
    incidents = after.get("incidents", [])
    flood = [i for i in incidents if i["src_ip"] == FLOOD_SRC]
    frames = after.get("pipeline", {}).get("frames", 0) - before.get("pipeline", {}).get("frames", 0)
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent["sent"],
        "send_seconds": sent["seconds"],
        "captured": frames,
        "kernel_drops": after.get("kernel_drops", 0),
        "agent_cpu_percent_of_machine": round(100 * (cpu1 - cpu0) / ((wall1 - wall0) * (psutil.cpu_count() or 1)), 2),
        "governor_percent": round(after.get("cpu", {}).get("percent", 0), 2),
        "shedding_level": after.get("cpu", {}).get("level"),
        "flood_detected": bool(flood),
        "flood_kinds": sorted({i["kind"] for i in flood}),
        "other_incidents": len(incidents) - len(flood),
        "other_incident_kinds": sorted({i["kind"] for i in incidents if i["src_ip"] != FLOOD_SRC}),
        "rss_mb": round(rss / 2**20, 1),  # after the traffic (and its last ticks)
        "rss_mb_during_max": round(max(rss_during, default=0) / 2**20, 1),
        "rss_mb_during_median": round(sorted(rss_during)[len(rss_during) // 2] / 2**20, 1) if rss_during else 0.0,
        "rss_mb_last_minute_max": round(max(rss_during[-60:], default=0) / 2**20, 1),
        "rss_mb_series": [round(r / 2**20) for r in rss_during],  # one a second
        "capture_backend": after.get("capture", {}).get("backend"),
        "mqtt_fast_path": after.get("mqtt", {}).get("fast_path", 0) - before.get("mqtt", {}).get("fast_path", 0),
        "mqtt_slow_path": after.get("mqtt", {}).get("slow_path", 0) - before.get("mqtt", {}).get("slow_path", 0),
        "batches": after.get("pipeline", {}).get("batches", 0) - before.get("pipeline", {}).get("batches", 0),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "budget": budget,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("send")
    s.add_argument("--iface", required=True)
    s.add_argument("--dst", required=True)
    s.add_argument("--rate", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--ready-file", default="", help="touched when the frames are built and sending starts")
    p.add_argument("--rates", default="5000,20000,50000")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--budget", type=float, help="the agent's CPU budget in percent (100: never sheds; default: the agent's)")
    args = p.parse_args(argv)
    if args.cmd == "send":
        return send_main(args)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="atlas-live-") as tmp:
        for rate in (int(r) for r in args.rates.split(",")):
            row = run_one(rate, min(args.seconds, MAX_SECONDS), Path(tmp), args.budget)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| offered pkt/s | captured | kernel drops | agent CPU (% of machine) | shedding | flood detected | other incidents | RSS MB after | RSS MB during (median / max) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['rate']:,} | {r['captured']:,}/{r['sent']:,} | {r['kernel_drops']} | {r['agent_cpu_percent_of_machine']} | "
              f"{r['shedding_level']} | {'yes (' + ', '.join(r['flood_kinds']) + ')' if r['flood_detected'] else 'NO'} | "
              f"{r['other_incidents']} | {r['rss_mb']} | {r['rss_mb_during_median']} / {r['rss_mb_during_max']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
