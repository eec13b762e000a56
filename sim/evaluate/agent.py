"""Run the ATLAS agent on every gateway's capture, as the gateway would, and record what the
scoring needs.

Per gateway, in its own process (`workers` at a time): the agent's pipeline
(atlas.agent.pipeline.AgentPipeline with the shipped models, fresh state per gateway) over the
capture, plus the telemetry the daemon would send the hub for it: new and changed incidents
every second, per-device summaries every 300 s, health every 60 s, each batch encoded with the
real wire encoding (atlas.link.serde: protobuf, zstd) inside its AgentMessage.

The agent's CPU time is the worker's process CPU time for all of that (reading the pcap,
decoding, features, inference, incident tracking, summaries, encoding); the harness's own
bookkeeping (score histograms, unit sets, the CPU timeline) is timed separately and taken out.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atlas.link.incidents import Incident

# Score histograms for the ROC curves: fixed bins, summed over gateways.
CLASSIFIER_EDGES = np.linspace(0.0, 1.0, 1001)
ANOMALY_EDGES = np.concatenate([[0.0], np.logspace(-3, 3, 601), [np.inf]])  # error / threshold
CPU_SAMPLE_S = 30.0  # CPU timeline resolution, in seconds of traffic (a replay batch spans seconds)
GRPC_FRAMING = 5 + 9  # gRPC length prefix + HTTP/2 DATA frame header per message (as bench/test_bench_wire.py)
# The daemon's reporting policy (atlas.agent.daemon).
REPORT_INTERVAL_S = 1.0
HEALTH_INTERVAL_S = 60.0
SUMMARY_INTERVAL_S = 300.0


@dataclass
class GatewayJob:
    gateway: str
    pcap: str
    devices: int
    origin: float  # the city's start (unit minutes count from it)
    duration: float
    attack_windows: list[tuple[str, float, float]]  # (attacker, start, end) of the gateway's steps, for row labels
    models_dir: str | None = None
    inventory: str | None = None  # the gateway's device inventory: turns on the profile-conformance check


@dataclass
class GatewayRun:
    gateway: str
    devices: int
    duration: float
    frames: int = 0
    rows: int = 0
    cpu_s: float = 0.0  # the agent's CPU time (harness bookkeeping removed)
    wall_s: float = 0.0
    harness_cpu_s: float = 0.0
    startup_cpu_s: float = 0.0  # loading the models (not in cpu_s)
    incidents: list[Incident] = field(default_factory=list)
    active_units: set[tuple[str, str, int]] = field(default_factory=set)
    cpu_timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds of traffic, agent CPU s so far)
    telemetry: dict[str, int] = field(default_factory=dict)  # batches, bytes (on the wire), raw_bytes, incidents, summaries
    hist: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # detector -> {"pos", "neg"}
    model_version: str = ""
    error: str = ""

    @property
    def cpu_share_one_core(self) -> float:
        """CPU seconds per second of traffic: the share of one core the agent needs to keep up."""
        return self.cpu_s / self.duration if self.duration else 0.0


@dataclass
class AgentRun:
    """ATLAS on the whole city: what baselines and the report read."""

    gateways: dict[str, GatewayRun]
    workers: int
    wall_s: float
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    metrics: dict[str, Any] = field(default_factory=dict)  # filled by the scoring (atlas.sim.evaluate.run)
    conformance: bool = False  # the agent ran with its gateway's device inventory (profile conformance)
    models_dir: str | Path | None = None  # None: the shipped models
    closed_loop: Any = None  # atlas.sim.evaluate.availability.ClosedLoop, fed by the baselines' pass over the captures

    def incidents(self) -> dict[str, list[Incident]]:
        return {g: r.incidents for g, r in self.gateways.items()}


class _Telemetry:
    """What the daemon would send the hub, batched as atlas.agent.daemon does, measured in bytes."""

    def __init__(self, pipe) -> None:
        from atlas.agent.uplink.summaries import DeviceSummaries

        self.pipe = pipe
        self.summaries = DeviceSummaries(pipe.book.name, SUMMARY_INTERVAL_S)
        self.closed: list = []
        self.changed: dict[str, Incident] = {}
        self.last_report = self.last_health = None
        self.seq = 0
        self.counts = {"batches": 0, "bytes": 0, "raw_bytes": 0, "incidents": 0, "summaries": 0}

    def on_incident(self, inc: Incident) -> None:
        self.changed[inc.id] = inc

    def on_rows(self, rows) -> None:
        if len(rows):
            self.closed += self.summaries.add(rows.tick_end, rows.devices, rows.X, rows.packets)
        now = rows.tick_end
        if self.last_report is None:
            self.last_report = self.last_health = now
        if now - self.last_report >= REPORT_INTERVAL_S:
            self.report(now)

    def report(self, now: float, final: bool = False) -> None:
        self.last_report = now
        for inc in self.pipe.tracker.open.values():  # updates to open incidents, as the daemon sends them
            if inc.last_seen > now - 2 * REPORT_INTERVAL_S:
                self.changed.setdefault(inc.id, inc)
        incidents, self.changed = list(self.changed.values()), {}
        devices, self.closed = self.closed, []
        if final:
            devices += self.summaries.flush()
        health_due = now - self.last_health >= HEALTH_INTERVAL_S
        if incidents or devices or final or health_due:
            self.last_health = now
            self.send(now, incidents, devices)

    def send(self, now: float, incidents: list[Incident], devices: list) -> None:
        from atlas.link.wire import Health, TelemetryBatch
        from atlas.link.serde import telemetry_to_envelope
        from atlas.v1 import link_pb2

        self.seq += 1
        health = Health(time=now, packets_per_s=0.0, cpu_percent=0.0, open_incidents=len(self.pipe.tracker.open))
        env = telemetry_to_envelope(TelemetryBatch(self.seq, now, incidents, devices, health))
        self.counts["batches"] += 1
        self.counts["bytes"] += len(link_pb2.AgentMessage(telemetry=env).SerializeToString()) + GRPC_FRAMING
        self.counts["raw_bytes"] += env.raw_size
        self.counts["incidents"] += len(incidents)
        self.counts["summaries"] += len(devices)


class _Recorder:
    """The harness's bookkeeping on each tick: row labels and score histograms (for ROC), the
    active (gateway, source, minute) units, the raise time of each incident. Its CPU time is
    measured so it can be taken out of the agent's."""

    def __init__(self, job: GatewayJob, detector) -> None:
        self.job = job
        self.detector = detector
        self.version = detector.version
        self.book = None
        self.rows = None
        self.units: set[tuple[str, str, int]] = set()
        self.hist = {"classifier": {"pos": np.zeros(len(CLASSIFIER_EDGES) - 1), "neg": np.zeros(len(CLASSIFIER_EDGES) - 1)},
                     "anomaly": {"pos": np.zeros(len(ANOMALY_EDGES) - 1), "neg": np.zeros(len(ANOMALY_EDGES) - 1)}}
        self.windows: dict[int, list[tuple[float, float]]] = {}
        self.raised: dict[str, float] = {}
        self.cpu = 0.0

    def attach(self, book) -> None:
        from atlas.sim.traffic.population import ip_int

        self.book = book
        for attacker, start, end in self.job.attack_windows:
            try:
                self.windows.setdefault(ip_int(attacker), []).append((start, end))
            except ValueError:  # an IPv6 attacker: no row labels for it (the generator writes IPv4)
                pass

    def on_rows(self, rows) -> None:
        t = time.process_time()
        self.rows = rows
        if len(rows):
            minute = int((rows.tick_end - 1e-9 - self.job.origin) // 60.0)
            g = self.job.gateway
            self.units.update((g, self.book.name(k), minute) for k in set(rows.devices.tolist()))
        self.cpu += time.process_time() - t

    def __getattr__(self, name: str):
        # the pipeline reads the detector's classes and thresholds through the recorder too
        if name == "detector":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.detector, name)

    def score(self, X: np.ndarray):
        s = self.detector.score(X)  # the agent's work: counted
        t = time.process_time()
        rows = self.rows
        if rows is not None and len(rows) == len(X):
            pos = self._labels(rows)
            for name, values, edges in (("classifier", s.p_attack, CLASSIFIER_EDGES), ("anomaly", s.anomaly, ANOMALY_EDGES)):
                v = np.clip(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0), edges[0], edges[-2] if np.isinf(edges[-1]) else edges[-1])
                self.hist[name]["pos"] += np.histogram(v[pos], edges)[0]
                self.hist[name]["neg"] += np.histogram(v[~pos], edges)[0]
        self.cpu += time.process_time() - t
        return s

    def _labels(self, rows) -> np.ndarray:
        """A row is positive when its device is an attacker of a step active during the tick."""
        pos = np.zeros(len(rows), dtype=bool)
        if not self.windows:
            return pos
        t = rows.tick_end
        for i, k in enumerate(rows.devices.tolist()):
            for start, end in self.windows.get(k, ()):
                if start - 1.0 <= t <= end + 1.0:
                    pos[i] = True
                    break
        return pos

    def on_incident(self, inc: Incident) -> None:
        # The first time the pipeline hands an incident out is when it was raised (a confirmed
        # tick); `last_seen` is that tick's end at that moment.
        self.raised.setdefault(inc.id, inc.last_seen)


def run_gateway(job: GatewayJob) -> GatewayRun:
    """The agent over one gateway's capture (runs in a worker process)."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.config import AgentConfig
    from atlas.agent.detect import Detector
    from atlas.agent.pipeline import AgentPipeline

    out = GatewayRun(job.gateway, job.devices, job.duration)
    t_load = time.process_time()
    detector = Detector(job.models_dir)
    out.startup_cpu_s = time.process_time() - t_load  # loading the models: once per agent start, not per packet
    cpu0, wall0 = time.process_time(), time.perf_counter()
    cfg = AgentConfig()
    cfg.agent.gateway_id = job.gateway
    if job.inventory:  # as deployed: the gateway knows its devices and their profiles
        cfg.detect.inventory = job.inventory
    rec = _Recorder(job, detector)
    tele: _Telemetry | None = None
    next_sample = [job.origin + CPU_SAMPLE_S]

    def on_rows(rows) -> None:
        rec.on_rows(rows)
        tele.on_rows(rows)
        if rows.tick_end >= next_sample[0]:
            t = time.process_time()
            out.cpu_timeline.append((rows.tick_end - job.origin, t - cpu0 - rec.cpu))
            next_sample[0] += CPU_SAMPLE_S * max(1, int((rows.tick_end - next_sample[0]) // CPU_SAMPLE_S) + 1)
            rec.cpu += time.process_time() - t

    def on_incident(inc: Incident) -> None:
        rec.on_incident(inc)
        tele.on_incident(inc)

    pipe = AgentPipeline(cfg, rec, on_incident=on_incident, on_rows=on_rows)  # type: ignore[arg-type]
    rec.attach(pipe.book)
    tele = _Telemetry(pipe)
    for batch in read_capture(job.pcap):
        pipe.process(batch)
    incidents = pipe.finish()
    tele.report(job.origin + job.duration, final=True)
    out.cpu_s = time.process_time() - cpu0 - rec.cpu
    out.wall_s = time.perf_counter() - wall0
    out.harness_cpu_s = rec.cpu
    while out.cpu_timeline and out.cpu_timeline[-1][0] >= job.duration - 1.0:  # the end is this sample
        out.cpu_timeline.pop()
    out.cpu_timeline.append((job.duration, out.cpu_s))
    for inc in incidents:
        inc.evidence["detected_at"] = rec.raised.get(inc.id, inc.time)
    out.incidents = incidents
    out.frames = pipe.counters.frames
    out.rows = pipe.counters.rows
    out.active_units = rec.units
    out.telemetry = tele.counts
    out.hist = rec.hist
    out.model_version = detector.version
    return out


def run_agent(jobs: Sequence[GatewayJob], workers: int | None = None, progress=None) -> AgentRun:
    """Every gateway's replay, `workers` processes at a time (1: in this process)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    t0 = time.perf_counter()
    runs: dict[str, GatewayRun] = {}
    if workers == 1:
        for job in jobs:
            runs[job.gateway] = run_gateway(job)
            if progress:
                progress(runs[job.gateway])
    else:
        # spawn, not fork: the parent may hold threads (pytest, the LiteRT runtime) that fork would copy mid-state
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for run in pool.map(run_gateway, jobs):
                runs[run.gateway] = run
                if progress:
                    progress(run)
    return AgentRun(runs, workers, time.perf_counter() - t0)


def jobs_for(city, models_dir: str | Path | None = None, inventory_dir: str | Path | None = None,
             conformance: bool = False) -> list[GatewayJob]:
    """One job per gateway of a City (atlas.sim.evaluate.city). With `conformance`, the agent
    runs with its gateway's device inventory, as a deployed gateway does (the profile-conformance
    check: false_data, profile_violation): the inventory.json next to the gateway's capture, the
    same file its agent.toml names. A city folder from before those files existed gets one
    written into `inventory_dir`."""
    from atlas.agent.detect.conformance import write_device_inventory
    from atlas.sim.capture import INVENTORY_FILE

    jobs = []
    for gw in city.gateway_ids:
        windows = [(a, s.start, s.end) for s in city.steps_of(gw) for a in (s.attackers or [s.attacker])]
        inventory = city.pcap(gw).parent / INVENTORY_FILE if conformance else None
        if inventory is not None and not _device_inventory(inventory):
            if inventory_dir is None:
                raise ValueError(f"{inventory}: not a device inventory, and no folder to write one into")
            Path(inventory_dir).mkdir(parents=True, exist_ok=True)
            inventory = Path(inventory_dir) / f"{gw}.json"
            write_device_inventory(inventory, [d for d in city.devices if d.get("gateway") == gw], gateway=gw)
        jobs.append(GatewayJob(gw, str(city.pcap(gw)), city.devices_of(gw), city.start, city.duration, windows,
                               str(models_dir) if models_dir else None, str(inventory) if inventory else None))
    return jobs


def _device_inventory(path: Path) -> bool:
    """True if `path` is an inventory file (atlas.link.inventory), not an older simulator record."""
    try:
        return "device" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False
