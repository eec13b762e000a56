"""The hub serving N gateways inside its own unit's limits, while one certificate tries to deny
them service (issue 17).

    python bench/hub_gateways.py --gateways 1000 --seconds 60       # issue 17's figure (about 6 min)
    python bench/hub_gateways.py --gateways 100 --seconds 15        # a quick look

It makes a PKI with `atlas-central pki init` and one certificate per gateway with `atlas-central
pki issue` (kept in --workdir for the next run), starts `atlas-central serve` on loopback with
the shipped unit's limits applied for real (TasksMax as a pids cgroup's pids.max, MemoryMax as
a memory cgroup's limit, LimitNOFILE as RLIMIT_NOFILE; read from systemd/atlas-central.service),
and starts the gateways in a few client processes (grpc.aio, one stream each over mutual TLS,
a telemetry batch every second, connections spread over --ramp seconds). Once all are up, one
more certificate opens --abusive-streams hello-less streams on one connection, again and again
until the end. Measured over the window after the ramp: the hub's threads (peak, from the
cgroup), RSS and open files, its CPU share, and the p50/p99 telemetry ack latency seen by the
gateways (sent -> ack, stored in SQLite with fsync). Traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "atlas-central.service"
MAX_GATEWAYS = 5000  # a bound on what this script will start
MAX_SECONDS = 900
CGROUP = Path("/sys/fs/cgroup")
HELLO_TIMEOUT_S = 5.0  # the hub's default ingest.hello_timeout


# --- the two kinds of load (run in client processes) -----------------------------------------

def gateways_main(args: argparse.Namespace) -> int:
    from atlas.central.ingest.testing import GatewayLoad
    from atlas.central.pki import PkiDir

    pki = PkiDir(Path(args.pki))
    names = [f"gw-{i:04d}" for i in range(args.first, args.first + args.count)]
    end = args.start_at + args.ramp + args.seconds

    async def one(load: GatewayLoad, delay: float) -> GatewayLoad:
        await asyncio.sleep(max(0.0, args.start_at + delay - time.time()))
        return await load.run(end - time.time())

    async def main():
        loads = [GatewayLoad(f"127.0.0.1:{args.port}", name, pki.gateway_tls(name), interval=args.interval,
                             measure_from=args.start_at + args.ramp) for name in names]
        step = args.ramp / max(1, args.total)
        return await asyncio.gather(*(one(load, (args.first + i) * step) for i, load in enumerate(loads)))

    loads = asyncio.run(main())
    out = [{"gateway": x.gateway_id, "acked": x.acked, "unacked": x.unacked, "snapshot": x.snapshot,
            "error": x.error, "latencies": [round(v, 5) for v in x.latencies]} for x in loads]
    Path(args.out).write_text(json.dumps(out))
    return 0


def abuser_main(args: argparse.Namespace) -> int:
    from collections import Counter

    from atlas.central.ingest.testing import abusive_streams
    from atlas.central.pki import PkiDir

    tls = PkiDir(Path(args.pki)).gateway_tls("abuser")
    end = args.start_at + args.ramp + args.seconds

    async def main() -> Counter:
        await asyncio.sleep(max(0.0, args.start_at + args.ramp - time.time()))
        total, rounds = Counter(), 0
        while end - time.time() > HELLO_TIMEOUT_S + 2 and rounds < 1000:  # each round ends by itself
            total += await abusive_streams(f"127.0.0.1:{args.port}", tls, args.streams, end - time.time())
            rounds += 1
        total["rounds"] = rounds
        return total

    Path(args.out).write_text(json.dumps(asyncio.run(main())))
    return 0


# --- the hub, inside its unit's limits ------------------------------------------------------

def unit_limits(unit: Path = UNIT) -> dict[str, int]:
    """TasksMax, LimitNOFILE and MemoryMax (bytes) as the shipped unit sets them."""
    text = unit.read_text()

    def value(key: str) -> str:
        found = re.search(rf"^{key}=(\S+)", text, re.M)
        if not found:
            raise SystemExit(f"{unit}: no {key}= (the bench applies the unit's own limits)")
        return found.group(1)

    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    memory = value("MemoryMax")
    return {"TasksMax": int(value("TasksMax")), "LimitNOFILE": int(value("LimitNOFILE").split(":")[-1]),
            "MemoryMax": int(memory[:-1]) * units[memory[-1]] if memory[-1] in units else int(memory)}


class Cgroups:
    """A pids and a memory cgroup (v1) of our own for the hub, removed afterwards."""

    def __init__(self, name: str, limits: dict[str, int]):
        self.pids, self.memory = CGROUP / "pids" / name, CGROUP / "memory" / name
        self.pids.mkdir()
        self.memory.mkdir()
        (self.pids / "pids.max").write_text(str(limits["TasksMax"]))
        (self.memory / "memory.limit_in_bytes").write_text(str(limits["MemoryMax"]))

    def enter(self) -> None:  # in the child, before exec
        for group in (self.pids, self.memory):
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def peak_tasks(self) -> int:
        return int((self.pids / "pids.peak").read_text())

    def refused_tasks(self) -> int:
        return int((self.pids / "pids.events").read_text().split()[-1])

    def close(self) -> None:
        for group in (self.pids, self.memory):
            try:
                group.rmdir()
            except OSError as err:
                print(f"bench: could not remove {group}: {err}", file=sys.stderr)


def proc_sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    waited = 0  # ns its threads spent runnable but not running (the machine's other work)
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            waited += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            pass
    return {"runqueue_s": waited / 1e9,"threads": int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),
            "rss_mb": int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": (int(stat[11]) + int(stat[12])) / tick}


def central(*args: str) -> list[str]:
    return [sys.executable, "-m", "atlas.central.cli", *args]


def make_pki(work: Path, gateways: int) -> Path:
    pki = work / "pki"
    if not (pki / "ca.crt").exists():
        subprocess.run(central("pki", "init", "--dir", str(pki)), check=True, capture_output=True)
    names = [f"gw-{i:04d}" for i in range(gateways)] + ["abuser"]
    missing = [n for n in names if not (pki / "gateways" / f"{n}.crt").exists()]

    def issue(name: str) -> None:
        subprocess.run(central("pki", "issue", "--dir", str(pki), name), check=True, capture_output=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(issue, missing))
    return pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(args: argparse.Namespace) -> dict:
    gateways, seconds = min(args.gateways, MAX_GATEWAYS), min(args.seconds, MAX_SECONDS)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="atlas-hubscale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pki = make_pki(work, gateways)
    print(f"bench: {gateways} gateway certificates in {pki} ({time.monotonic() - started:.0f} s)", flush=True)
    db = work / "central.db"
    for old in work.glob("central.db*"):
        old.unlink()
    port, sock = free_port(), work / "central.sock"
    config = work / "central.toml"
    config.write_text(f'[hub]\nlisten = "127.0.0.1:{port}"\ndatabase = "{db}"\npki = "{pki}"\n'
                      f'control_socket = "{sock}"\nsync = "{args.sync}"\n[ingest]\nworkers = {args.workers}\n')
    limits = unit_limits()
    groups = Cgroups(f"atlas-hubscale-{os.getpid()}", limits)

    def inside_the_unit_limits() -> None:
        groups.enter()
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["LimitNOFILE"], limits["LimitNOFILE"]))

    hub_log = open(work / "hub.log", "w")
    hub = subprocess.Popen(central("serve", "--config", str(config)), stdout=hub_log, stderr=subprocess.STDOUT,
                           preexec_fn=inside_the_unit_limits)
    clients: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if hub.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: the hub did not start; see {work / 'hub.log'}")
            time.sleep(0.1)
        idle = proc_sample(hub.pid)
        start_at = time.time() + 3  # the client processes import grpc first
        per = -(-gateways // args.client_procs)
        common = ["--port", str(port), "--pki", str(pki), "--start-at", f"{start_at:.3f}", "--ramp", str(args.ramp),
                  "--seconds", str(seconds)]
        for first in range(0, gateways, per):
            clients.append(subprocess.Popen([sys.executable, __file__, "gateways", *common, "--first", str(first),
                                             "--count", str(min(per, gateways - first)), "--total", str(gateways),
                                             "--interval", str(args.interval), "--out", str(work / f"gw-{first}.json")]))
        if args.abusive_streams:
            clients.append(subprocess.Popen([sys.executable, __file__, "abuser", *common, "--streams",
                                             str(args.abusive_streams), "--out", str(work / "abuser.json")]))
        samples = []
        window = None
        while any(c.poll() is None for c in clients):
            time.sleep(1.0)
            if hub.poll() is not None:
                raise SystemExit(f"bench: the hub exited ({hub.returncode}); see {work / 'hub.log'}")
            now = time.time()
            sample = proc_sample(hub.pid)
            sample["at"] = now
            if start_at + args.ramp <= now <= start_at + args.ramp + seconds:
                samples.append(sample)
                window = window or (now, sample["cpu_s"], sample["runqueue_s"])
        status = json.loads(subprocess.run(central("status", "--json", "--config", str(config)),
                                           capture_output=True, text=True, timeout=30).stdout or "{}")
        last = proc_sample(hub.pid)
        stop_sent = time.monotonic()
        hub.send_signal(signal.SIGTERM)
        exit_code = hub.wait(30)
        stop_s = time.monotonic() - stop_sent
    finally:
        for proc in [hub, *clients]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        hub_log.close()
        peak_tasks, refused_tasks = groups.peak_tasks(), groups.refused_tasks()
        groups.close()
    if any(c.returncode for c in clients):
        raise SystemExit(f"bench: a client process failed ({[c.returncode for c in clients]})")
    loads = [row for f in sorted(work.glob("gw-*.json")) for row in json.loads(f.read_text())]
    for f in work.glob("gw-*.json"):
        f.unlink()
    latencies = [v for row in loads for v in row["latencies"]]
    abuse = json.loads((work / "abuser.json").read_text()) if args.abusive_streams else {}
    span = max(1e-9, samples[-1]["at"] - window[0]) if window else float("nan")
    cpu_share = (samples[-1]["cpu_s"] - window[1]) / span if window else float("nan")
    waited_share = (samples[-1]["runqueue_s"] - window[2]) / span if window else float("nan")
    return {
        "gateways": gateways, "seconds": seconds, "interval_s": args.interval, "unit_limits": limits,
        "sync": args.sync, "workers": args.workers,
        "hub_idle": idle,
        "hub_threads_max": max(s["threads"] for s in samples), "hub_tasks_peak_cgroup": peak_tasks,
        "hub_tasks_refused_cgroup": refused_tasks,
        "hub_rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
        "hub_fds_max": max(s["fds"] for s in samples),
        "hub_cpu_share_of_one_core": round(cpu_share, 3),
        # threads runnable but waiting for a CPU (summed over threads): the machine's other load
        "hub_runqueue_wait_share": round(waited_share, 3),
        # the whole run (TLS handshakes of the ramp included) over every batch it stored
        "hub_cpu_ms_per_batch": round(1000 * (last["cpu_s"] - idle["cpu_s"])
                                      / max(1, status.get("wire", {}).get("telemetry_batches", 0)), 3),
        "gateways_served": sum(1 for r in loads if r["snapshot"] and r["latencies"]),
        "gateways_with_errors": sorted({r["error"] for r in loads if r["error"]}),
        "batches_measured": len(latencies), "batches_unacked": sum(r["unacked"] for r in loads),
        "ack_p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "ack_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "ack_max_ms": round(1000 * max(latencies), 1) if latencies else None,
        "abuser": abuse,
        "wire": status.get("wire", {}),
        "sigterm_exit": exit_code, "sigterm_seconds": round(stop_s, 2),
        "workdir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="role")
    for role in ("gateways", "abuser"):
        c = sub.add_parser(role)
        c.add_argument("--port", type=int, required=True)
        c.add_argument("--pki", required=True)
        c.add_argument("--start-at", type=float, required=True)
        c.add_argument("--ramp", type=float, required=True)
        c.add_argument("--seconds", type=float, required=True)
        c.add_argument("--out", required=True)
        if role == "gateways":
            c.add_argument("--first", type=int, required=True)
            c.add_argument("--count", type=int, required=True)
            c.add_argument("--total", type=int, required=True)
            c.add_argument("--interval", type=float, default=1.0)
        else:
            c.add_argument("--streams", type=int, required=True)
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0, help="measured window, after the ramp")
    p.add_argument("--ramp", type=float, default=30.0, help="seconds over which the gateways connect")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a gateway's batches")
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--sync", choices=("full", "normal"), default="full", help="the hub's hub.sync")
    p.add_argument("--workers", type=int, default=16, help="the hub's ingest.workers")
    p.add_argument("--abusive-streams", type=int, default=260, help="hello-less streams per round (0: no abuser)")
    p.add_argument("--workdir", help="keeps the PKI between runs (default: a new temporary folder)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.role == "gateways":
        return gateways_main(args)
    if args.role == "abuser":
        return abuser_main(args)
    if os.geteuid() != 0:
        print("bench: needs root (it puts the hub in cgroups with the unit's limits)", file=sys.stderr)
        return 2
    figures = run(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
