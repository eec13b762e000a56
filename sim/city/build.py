"""Generate a whole city: every gateway's capture (in parallel, one gateway at a time per
worker), then the merged ground truth, look-alikes and city.json.

    DIR/city.json
    DIR/ground_truth.jsonl              every attack step, city-wide, by start time
    DIR/benign_events.jsonl             every look-alike, by start time
    DIR/gateways/<id>/traffic.pcap      the gateway's traffic (nanosecond pcap)
    DIR/gateways/<id>/gateway.json      the simulator's record: its devices (with MQTT credentials), back-ends
    DIR/gateways/<id>/inventory.json    its device inventory, as the agent and the hub read it
    DIR/gateways/<id>/agent.toml        the agent's config: `atlas-agent replay traffic.pcap --config agent.toml`
    DIR/.gitignore                      "*": a city never lands in a git repository by mistake

Each gateway's capture depends only on the city seed and the gateway's id and schedule, so
the output is byte-identical for the same arguments whatever the number of workers.

Besides the contract's fields, the ground truth says where an attacker came from:
`params.attacker_origin` is `external` (outside the city), `rogue_host` (an unknown host on the
gateway's subnet) or `compromised_device` (a device of this or, for a campaign's pivot, another
gateway); campaign steps add `params.campaign_mode` (external | pivot | botnet) and
`params.compromised_in` (the step that gave the attacker its address; "" = before the capture).
A district-wide power cut's events carry `params.district` and `params.gateways`. city.json
also lists the `campaigns` (id, mode, attacker, stage step ids, gateways).
"""
from __future__ import annotations

import ipaddress
import json
import shlex
import multiprocessing
import os
import resource
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.city.layout import CityLayout, GatewaySpec, plan_layout
from atlas.sim.city.schedule import CitySchedule, ScheduleOptions, plan_schedule
from atlas.sim.traffic.benign import BenignOptions
from atlas.sim.capture import DEFAULT_START, PCAP_FILE, generate_capture, write_gateway_files


@dataclass
class CityResult:
    out: Path
    gateways: int
    devices: int
    packets: int
    bytes: int
    steps: int
    campaigns: int
    lookalikes: int
    seconds: float  # wall
    cpu_seconds: float  # this process and its workers
    per_gateway: list[dict[str, Any]] = field(default_factory=list)

    @property
    def packets_per_s(self) -> float:
        return self.packets / max(self.seconds, 1e-9)

    def summary(self) -> str:
        return (f"{self.out}: {self.gateways} gateways, {self.devices} devices, {self.packets:,} packets "
                f"({self.bytes / 1e6:,.0f} MB), {self.steps} attack steps, {self.campaigns} campaigns, "
                f"{self.lookalikes} look-alikes; {self.seconds:.1f} s ({self.packets_per_s:,.0f} packets/s, "
                f"{self.cpu_seconds:.1f} CPU-s)")


def gateway_seed(seed: int, gateway_id: str) -> int:
    """A gateway's own seed: independent of the others and of the worker that runs it."""
    return int(np.random.SeedSequence([seed, zlib.crc32(gateway_id.encode())]).generate_state(1, np.uint64)[0])


def build_city(
    out: str | Path,
    *,
    devices: int,
    gateways: int,
    duration: float,
    seed: int,
    start_time: float = DEFAULT_START,
    schedule: ScheduleOptions | None = None,
    workers: int | None = None,
    profiles_dir: str | Path | None = None,
    options: BenignOptions | None = None,
    command: Sequence[str] = (),
) -> CityResult:
    """Build the city (layout, schedule), generate every gateway's capture and write the city
    folder `out` (see the module doc). `workers`: gateways generated in parallel (default: the
    machine's cores). `command`: the argv recorded in city.json."""
    _check(devices, gateways, duration, seed, workers)
    w0, c0 = time.perf_counter(), _cpu()
    profiles = load_device_profiles(profiles_dir)
    layout = plan_layout(profiles, devices, gateways)
    plan = plan_schedule(layout, profiles, duration, seed, schedule)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "city.json").exists():
        raise ValueError(f"out: {out} is not empty and holds no city.json; choose a new or empty folder (or an older city to overwrite)")
    (out / "gateways").mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("*\n")
    jobs = [_Job(g, gateway_seed(seed, g.id), plan.attacks[g.id], plan.lookalikes[g.id], plan.notes, out, duration,
                 start_time, profiles_dir, options) for g in layout.gateways]
    results = _run(jobs, workers or os.cpu_count() or 1)
    _write_city(out, layout, plan, results, seed, start_time, duration, command)
    steps = sum(len(r["steps"]) for r in results)
    return CityResult(out, gateways, layout.devices, sum(r["packets"] for r in results), sum(r["bytes"] for r in results),
                      steps, len(plan.campaigns), sum(len(r["events"]) for r in results), time.perf_counter() - w0,
                      _cpu() - c0, [{k: r[k] for k in ("gateway", "packets", "bytes", "seconds")} for r in results])


def _check(devices: int, gateways: int, duration: float, seed: int, workers: int | None) -> None:
    if devices < 1:
        raise ValueError(f"devices: need at least 1, got {devices}")
    if gateways < 1:
        raise ValueError(f"gateways: need at least 1, got {gateways}")
    if not duration > 0:
        raise ValueError(f"duration: must be > 0 seconds, got {duration:g}")
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: need at least 1, got {workers}")


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class _Job:
    gw: GatewaySpec
    seed: int
    attacks: list
    lookalikes: list
    notes: dict[str, dict[str, Any]]
    out: Path
    duration: float
    start_time: float
    profiles_dir: Any
    options: BenignOptions | None


def _run(jobs: list[_Job], workers: int) -> list[dict[str, Any]]:
    """Gateways in parallel, the biggest first (the pool stays busy to the end); results in
    gateway order."""
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].gw.devices * _weight(jobs[i]), i))
    if workers == 1 or len(jobs) == 1:
        results = {i: _gateway(jobs[i]) for i in order}
    else:
        # fork: workers inherit the loaded modules and profiles; each gateway is a fresh task
        # and a worker is replaced after a few (numpy's freed arenas go back to the system).
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(workers, len(jobs)), maxtasksperchild=4) as pool:
            results = dict(zip(order, pool.imap(_gateway, [jobs[i] for i in order], chunksize=1)))
            pool.close()
            pool.join()
    return [results[i] for i in range(len(jobs))]


def _weight(job: _Job) -> float:
    """Rough packets per device by domain (measured: transportation cameras dominate)."""
    return {"transportation": 5.0, "public_safety": 1.5, "energy": 1.0}.get(job.gw.domain, 1.0)


def _gateway(job: _Job) -> dict[str, Any]:
    t = time.perf_counter()
    g = job.gw
    gdir = job.out / "gateways" / g.id
    gdir.mkdir(parents=True, exist_ok=True)
    pcap = gdir / PCAP_FILE
    try:
        gt = generate_capture(pcap, devices=g.devices, duration=job.duration, attacks=job.attacks, seed=job.seed,
                              start_time=job.start_time, broker=g.broker, subnet=g.subnet, gateway=g.id, district=g.district,
                              lookalikes=job.lookalikes, profiles_dir=job.profiles_dir, counts=g.counts, options=job.options)
    except ValueError as e:  # say which gateway (the message comes back from a worker)
        raise ValueError(f"gateway {g.id}: {e}") from None
    write_gateway_files(gdir, gt.inventory, {"seed": gt.seed, "start": gt.start, "end": gt.end, "packets": gt.packets,
                                             "domain": g.domain, "pcap": PCAP_FILE})
    own = {d.ip for d in gt.inventory.devices}
    net = ipaddress.IPv4Network(g.subnet)
    steps = []
    for s in gt.steps:
        d = s.to_dict()
        d["params"]["attacker_origin"] = _origin(s.attacker, own, net)
        d["params"].update(job.notes.get(s.id, {}))
        steps.append(d)
    events = []
    for e in gt.benign_events:
        d = e.to_dict()
        d["params"].update(job.notes.get(e.id, {}))
        events.append(d)
    devices = [{"id": d.client_id, "ip": d.ip, "class": d.cls, "domain": d.domain,
                "criticality": gt.inventory.profiles[d.cls].criticality, "gateway": g.id, "district": g.district,
                "client_id": d.client_id, "username": d.username} for d in gt.inventory.devices]
    on_wire = job.options is None or job.options.backends  # --no-backends: the inventory still names them
    backends = [{"domain": b.domain, "client_id": b.client_id, "ip": b.ip, "gateway": g.id}
                for b in gt.inventory.backends.values() if on_wire]
    return {"gateway": g.id, "start": gt.start, "end": gt.end, "packets": gt.packets, "bytes": pcap.stat().st_size, "steps": steps, "events": events,
            "devices": devices, "backends": backends, "seconds": time.perf_counter() - t}


def _origin(ip: str, own: set[str], net: ipaddress.IPv4Network) -> str:
    if ip in own:
        return "compromised_device"  # one of this gateway's devices
    if ipaddress.IPv4Address(ip) in net:
        return "rogue_host"  # an unknown host plugged into the gateway's subnet
    if ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.0.0/8"):
        return "compromised_device"  # a device of another gateway (a campaign's pivot)
    return "external"


def _write_city(out: Path, layout: CityLayout, plan: CitySchedule, results: list[dict[str, Any]], seed: int,
                start_time: float, duration: float, command: Sequence[str]) -> None:
    steps = sorted((s for r in results for s in r["steps"]), key=lambda s: (s["start"], s["gateway"], s["id"]))
    with open(out / "ground_truth.jsonl", "w") as f:
        for s in steps:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    events = sorted((e for r in results for e in r["events"]), key=lambda e: (e["start"], e["gateway"], e["id"]))
    with open(out / "benign_events.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    backends: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        for b in r["backends"]:
            entry = backends.setdefault((b["domain"], b["client_id"]), {k: b[k] for k in ("domain", "client_id", "ip")} | {"gateways": []})
            entry["gateways"].append(b["gateway"])
    city = {
        "seed": seed, "start": results[0]["start"], "end": results[0]["end"], "duration": duration,
        "devices_total": layout.devices, "command": shlex.join(command),
        "districts": layout.districts,
        "gateways": [{"id": g.id, "district": g.district, "domain": g.domain, "subnet": g.subnet, "broker": g.broker,
                      "pcap": f"gateways/{g.id}/{PCAP_FILE}", "devices": g.devices, "packets": r["packets"]}
                     for g, r in zip(layout.gateways, results)],
        "devices": [d for r in results for d in r["devices"]],
        "backends": [backends[k] for k in sorted(backends)],
        "campaigns": [c.to_dict() for c in plan.campaigns],
    }
    (out / "city.json").write_text(json.dumps(city, indent=1, sort_keys=True) + "\n")
