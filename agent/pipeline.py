"""The agent's wiring: capture -> decode -> features -> detect -> alerts, in one place.

`AgentPipeline.process(batch)` is the same code for a live interface, a replayed capture and
the training pipeline's feature extraction, so what the models learn is what the agent sees.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from atlas.link.incidents import LOGINS_ACCEPTED, NEAREST_KINDS, Incident
from atlas.agent.alerts import IncidentTracker
from atlas.agent.alerts.logins import AcceptedLogins
from atlas.agent.capture import FrameBatch
from atlas.agent.capture.clock import CaptureClock
from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import AgentConfig
from atlas.agent.decode import PACKET_DTYPE
from atlas.agent.decode.dissect import summary
from atlas.agent.decode.packets import AddressBook, decode_packets
from atlas.agent.decode.streams import MqttStreams
from atlas.agent.detect import Detector
from atlas.agent.detect.domain import ANOMALY, MqttSpeakers, judge, nearest_kinds
from atlas.agent.detect.conformance import ConformanceCheck, Finding, from_config as conformance_from_config
from atlas.agent.features.schema import FEATURE_NAMES, C, HALF_LIVES
from atlas.agent.features.windows import FeatureExtractor, FeatureRows
from atlas.agent.governor import CpuGovernor, Shedding

log = logging.getLogger("atlas.agent")

_SHORT_RATE = np.log(2) / HALF_LIVES[0]  # decayed sum * this = events per second (steady state)
EVIDENCE_SAMPLES = 3
EXPIRE_EVERY_S = 1.0


@dataclass
class PipelineCounters:
    frames: int = 0
    batches: int = 0
    rows: int = 0
    inferences: int = 0  # ticks on which the models ran
    detector_errors: int = 0
    inference_s: float = 0.0  # wall time spent in the models, in total
    started: float = field(default_factory=time.time)
    first_packet_ts: float = 0.0
    last_packet_ts: float = 0.0
    mqtt_messages: int = 0
    bad_timestamps: int = 0  # frames with a NaN, infinite or out-of-range time (given the time before)
    clock_steps: int = 0  # times capture time went back by more than CLOCK_STEP_S (timeline restarted)


class AgentPipeline:
    """The gateway's data path. Feed it FrameBatches; incidents come out through `tracker`."""

    def __init__(
        self,
        cfg: AgentConfig,
        detector: Detector | None,
        *,
        governor: CpuGovernor | None = None,
        on_incident: Callable[[Incident], None] | None = None,
        on_rows: Callable[[FeatureRows], None] | None = None,
        keep_closed: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.governor = governor
        self.on_incident = on_incident
        self.on_rows = on_rows
        ports = tuple(cfg.agent.mqtt_ports)
        self.book = AddressBook()
        self.streams = MqttStreams(ports=ports)
        self.speakers = MqttSpeakers()  # who speaks MQTT: decides whether an MQTT kind can apply
        self.features = FeatureExtractor(mqtt_ports=ports, tick_s=cfg.detect.tick_seconds, max_devices=cfg.detect.max_devices)
        a = cfg.alerts
        self.tracker = IncidentTracker(
            cfg.agent.gateway_id,
            detector.version if detector else "none",
            confirm_hits=a.confirm_hits,
            confirm_window_s=a.confirm_window_s,
            strong_score=a.strong_score,
            strong_anomaly=a.strong_anomaly,
            close_after_s=a.close_after_s,
            keep_closed=keep_closed,
        )
        # Profile conformance (false_data, profile_violation): only with [detect] inventory.
        self.conformance: ConformanceCheck | None = conformance_from_config(cfg.detect, cfg.agent)
        self.logins = AcceptedLogins()
        self.counters = PipelineCounters()
        self.clock = CaptureClock()
        self._ticks = 0
        self._expired_at = float("-inf")
        self._batch: FrameBatch | None = None
        self._packets: np.ndarray | None = None

    # ---- the data path ------------------------------------------------------------------------

    def process(self, batch: FrameBatch) -> None:
        """Run one batch of frames through every stage."""
        self.counters.frames += len(batch)
        self.counters.batches += 1
        ts = self.clock.repair(batch.ts)
        if ts is not batch.ts:
            if not self.counters.bad_timestamps:
                log.warning("frames with a NaN, infinite or out-of-range time: each is given the time before it "
                            "(counted in pipeline.bad_timestamps)")
            self.counters.bad_timestamps = self.clock.bad_times
            batch = FrameBatch(batch.buf, batch.offsets, batch.caplens, batch.wirelens, ts, batch.linktype)
        start, before = 0, self.clock.now
        for cut in self.clock.steps_in(batch.ts):
            if cut > start:
                self._process(_frames(batch, start, cut))
            self._clock_stepped(float(batch.ts[cut - 1]) if cut else before, float(batch.ts[cut]))
            start = cut
        self._process(_frames(batch, start, len(batch)) if start else batch)

    def _process(self, batch: FrameBatch) -> None:
        packets = decode_packets(batch, self.book)
        mqtt = self.streams.feed(batch, packets)
        if len(self.streams.ports) != len(self.features.mqtt_ports):  # a port learned from a CONNECT
            self.features.mqtt_ports = self.streams.ports.copy()
        self._note_logins(mqtt)
        self.speakers.observe(mqtt)
        self._batch, self._packets = batch, packets
        self.counters.mqtt_messages += len(mqtt)
        if len(packets):
            self.counters.first_packet_ts = self.counters.first_packet_ts or float(packets["ts"][0])
            self.counters.last_packet_ts = float(packets["ts"][-1])
        if self.conformance is not None:
            self._check_conformance(batch, packets)
        for rows in self.features.update(packets, mqtt):
            self._on_rows(rows)
        self._after_batch()

    def idle(self, now: float) -> None:
        """Live capture with no traffic: let time pass (close ticks, expire incidents)."""
        last = self.clock.now
        if self.clock.advance(now):
            self._clock_stepped(last, now)
        if self.clock.now != now:  # not a time, or behind the timeline: no time passes
            self._after_batch()
            return
        for rows in self.features.advance(now):
            self._on_rows(rows)
        self._after_batch(now)

    def finish(self) -> list[Incident]:
        """End of input: close the open tick; returns every incident, in order."""
        tail = self.streams.flush()
        self.counters.mqtt_messages += len(tail)
        self._note_logins(tail)
        if len(tail):
            self.speakers.observe(tail)
            for rows in self.features.update(np.zeros(0, dtype=PACKET_DTYPE), tail):
                self._on_rows(rows)
        for rows in self.features.flush():
            self._on_rows(rows)
        return self.tracker.all()

    def _after_batch(self, now: float | None = None) -> None:
        if self.governor is not None and self.governor.poll():
            level = self.governor.level
            self.features.tick_s = self.cfg.detect.tick_seconds * self.governor.shedding.tick_factor
            log.info("cpu %.2f%% of budget %.2f%%: shedding level %d", self.governor.percent, self.governor.budget, level)
        now = now if now is not None else self.counters.last_packet_ts
        if now - self._expired_at >= EXPIRE_EVERY_S:  # not per batch: it walks every open incident
            self._expired_at = now
            for inc in self.tracker.expire(now):
                self._emit(inc)
            self.speakers.forget_before(now)

    def _clock_stepped(self, old: float, new: float) -> None:
        """Capture time went back: close the old timeline's tick and incidents, start a new one."""
        self.counters.clock_steps += 1
        if self.counters.clock_steps == 1:
            log.warning("capture time went back from %.6f to %.6f: closed the open tick and incidents and "
                        "started again from there (further steps are counted in pipeline.clock_steps)", old, new)
        for rows in self.features.flush():
            self._on_rows(rows)
        for inc in self.tracker.close_all():
            self._emit(inc)
        self._expired_at = float("-inf")

    def swap_detector(self, detector: Detector) -> Detector | None:
        """Score from the next tick on with `detector` (a model update); returns the old one.

        Nothing stops: capture, features and open incidents carry on. Call it from the thread
        that runs process()/idle() (between batches), so no tick is scored by one model and
        labelled with the other's version; new incidents carry the new model_version."""
        old, self.detector = self.detector, detector
        self.tracker.model_version = detector.version
        return old

    @property
    def shedding(self) -> Shedding:
        return self.governor.shedding if self.governor else Shedding.at(0)

    # ---- detection on closed ticks ------------------------------------------------------------

    def _on_rows(self, rows: FeatureRows) -> None:
        self._ticks += 1
        self.counters.rows += len(rows)
        if self.on_rows is not None:
            self.on_rows(rows)
        if not len(rows):
            return
        self._check_volumetric(rows)
        if self.detector is None or self._ticks % self.shedding.infer_every:
            return
        t0 = time.perf_counter()
        try:
            scores = self.detector.score(rows.X)
        except Exception:  # a failing detector must not stop capture
            self.counters.detector_errors += 1
            log.exception("detector failed on a batch of %d rows", len(rows))
            return
        self.counters.inferences += 1
        self.counters.inference_s += time.perf_counter() - t0
        for i in np.flatnonzero(scores.kind != ""):
            kind, hints = self._in_domain(rows, int(i), scores)
            if kind:
                self._observe(rows, int(i), kind, float(scores.score[i]), hints)

    def _in_domain(self, rows: FeatureRows, i: int, scores) -> tuple[str, dict[str, float]]:
        """The kind to report for a flagged row, and the classifier's nearest kinds as hints
        when it is not a kind the classifier can vouch for here (detect/domain.py)."""
        named = str(scores.kind[i])
        hints = nearest_kinds(scores.probs[i], self.detector.classes)
        if named == ANOMALY:
            return named, hints
        dev, now = int(rows.devices[i]), float(rows.tick_end)
        kind = judge(named, float(scores.confidence[i]), bool(scores.anomaly[i] >= 1.0), self.speakers.speaks_mqtt(dev, now),
                     self.speakers.connections_opened(dev, now), self.detector.min_confidence)
        return kind, ({} if kind == named else hints)

    def _check_volumetric(self, rows: FeatureRows) -> None:
        """Cheap counters: flag sources whose packet or SYN rate alone is abusive."""
        a = self.cfg.alerts
        pps = np.expm1(rows.X[:, C["pkts_out"]]) * _SHORT_RATE
        syn = np.expm1(rows.X[:, C["syn_out"]]) * _SHORT_RATE
        hot = (pps > a.volumetric_pps) | (syn > a.volumetric_syn_pps)
        for i in np.flatnonzero(hot):
            self._observe(rows, int(i), "volumetric", 1.0)

    def _observe(self, rows: FeatureRows, i: int, kind: str, score: float, hints: dict[str, float] | None = None) -> None:
        src = self.book.name(int(rows.devices[i]))
        peer = int(rows.top_peer[i])
        before = self.tracker.open.get((src, kind))
        inc = self.tracker.observe(
            rows.tick_end,
            src,
            kind,
            score,
            float(rows.first_ts[i]),
            int(rows.packets[i]),
            dst_ip=self.book.name(peer) if peer else "",
            device=self._device_name(int(rows.devices[i]), src),
            evidence={"features": _top_features(rows.X[i])} if before is None else None,
        )
        if inc is not None and before is None:
            inc.evidence["packets"] = self._samples(int(rows.devices[i]))
            self._with_logins(inc)
            if hints:
                inc.evidence[NEAREST_KINDS] = hints
            self._emit(inc)

    def _check_conformance(self, batch: FrameBatch, packets: np.ndarray) -> None:
        """Devices breaking their profile: one finding per device and kind per batch."""
        try:
            findings = self.conformance.check(batch, packets, dissect_every=self.shedding.dissect_every, names=self.book.name)
        except Exception:  # like a failing detector, a failing check must not stop capture
            self.counters.detector_errors += 1
            log.exception("profile-conformance check failed on a batch of %d packets", len(packets))
            return
        for f in findings:
            self._observe_finding(f)

    def _note_logins(self, mqtt: np.ndarray) -> None:
        """Accepted logins go into the evidence of every open incident from that address."""
        for address in self.logins.observe(mqtt, self.book.name, self.streams.client_id):
            for (src, _), inc in self.tracker.open.items():
                if src == address:
                    inc.evidence[LOGINS_ACCEPTED] = self.logins.of(address)

    def _with_logins(self, inc: Incident) -> None:
        logins = self.logins.of(inc.src_ip)
        if logins:
            inc.evidence[LOGINS_ACCEPTED] = logins

    def _observe_finding(self, f: Finding) -> None:
        before = self.tracker.open.get((f.src_ip, f.kind))
        # A breach of the profile is certain, not a score: 1.0 opens the incident at once.
        inc = self.tracker.observe(f.last_ts, f.src_ip, f.kind, 1.0, f.first_ts, f.packets, dst_ip=f.dst_ip,
                                   device=f.device, evidence=f.evidence if before is None else None)
        if inc is not None and before is None:
            self._with_logins(inc)
            self._emit(inc)

    def _device_name(self, key: int, src: str) -> str:
        cid = self.streams.latest_client_id(key)
        return cid or src

    def _samples(self, key: int) -> list[str]:
        """A few of the attacker's packets from the current batch, dissected (deep path)."""
        if self._batch is None or self._packets is None or self._ticks % self.shedding.dissect_every:
            return []
        idx = np.flatnonzero(self._packets["src"] == key)[:EVIDENCE_SAMPLES]
        ports = tuple(self.cfg.agent.mqtt_ports)
        return [summary(self._batch, self._packets[j], self.book, ports) for j in idx]

    def _emit(self, inc: Incident) -> None:
        if self.on_incident is not None:
            self.on_incident(inc)


def _frames(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    """Frames start..stop of a batch (a view: the buffer is shared)."""
    s = slice(start, stop)
    return FrameBatch(batch.buf, batch.offsets[s], batch.caplens[s], batch.wirelens[s], batch.ts[s], batch.linktype)


def _top_features(x: np.ndarray, k: int = 5) -> dict[str, float]:
    order = np.argsort(-np.abs(x))[:k]
    return {FEATURE_NAMES[j]: round(float(x[j]), 3) for j in order if x[j] != 0}


@dataclass
class ReplaySummary:
    """What a replay went through, for the line that ends `atlas-agent replay`."""

    packets: int = 0
    mqtt_messages: int = 0
    devices: int = 0  # hosts that got feature rows, summed over the captures
    incidents: int = 0
    capture_seconds: float = 0.0  # first to last packet, summed over the captures
    wall_seconds: float = 0.0

    def add(self, pipe: AgentPipeline, incidents: int) -> None:
        c = pipe.counters
        self.packets += c.frames
        self.mqtt_messages += c.mqtt_messages
        self.devices += pipe.features.stats.devices
        self.incidents += incidents
        self.capture_seconds += max(0.0, c.last_packet_ts - c.first_packet_ts)

    def line(self) -> str:
        return (f"{self.packets:,} packets, {self.mqtt_messages:,} MQTT messages, {self.devices:,} devices, "
                f"{self.incidents:,} incidents in {self.capture_seconds:,.0f} s of traffic "
                f"(analysed in {self.wall_seconds:.1f} s)")


def replay(paths: list[str | Path], cfg: AgentConfig, detector: Detector | None,
           summary: ReplaySummary | None = None) -> Iterator[Incident]:
    """Run captures through the pipeline (each with fresh state); yields every incident.
    `summary`, if given, is filled in as the captures are read."""
    t0 = time.perf_counter()
    for path in paths:
        pipe = AgentPipeline(cfg, detector)
        for batch in read_capture(path):
            pipe.process(batch)
        incidents = pipe.finish()
        if summary is not None:
            summary.add(pipe, len(incidents))
            summary.wall_seconds = time.perf_counter() - t0
        yield from incidents


def extract_rows(path: str | Path, cfg: AgentConfig | None = None) -> Iterator[FeatureRows]:
    """Feature rows of a capture, exactly as the agent computes them (for training)."""
    rows: list[FeatureRows] = []
    pipe = AgentPipeline(cfg or AgentConfig(), None, on_rows=rows.append)
    for batch in read_capture(path):
        pipe.process(batch)
        yield from rows
        rows.clear()
    pipe.finish()
    yield from rows
