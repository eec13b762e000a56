"""`atlas-agent run`: the live daemon around the pipeline.

One main loop reads capture batches and runs them through the pipeline; around it: the CPU
governor (inside the pipeline), the enforcer (its own expiry timer), the uplink to the hub (its
own threads, spooling to disk while the hub is away), the control socket for `atlas-agent
status`, Prometheus metrics, and systemd notification with a watchdog fed by the main loop.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from atlas.link import __version__
from atlas.link.incidents import Incident
from atlas.agent.capture import FrameBatch
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.detect.update import running_versions
from atlas.agent.governor import LEVEL_NAMES, CpuGovernor
from atlas.agent.pipeline import AgentPipeline
from atlas.link.wire import DeviceSummary, GatewayInfo, Health, TelemetryBatch
from atlas.agent.uplink.summaries import DeviceSummaries, SummaryBlock

log = logging.getLogger("atlas.agent")

# The reporting policy keeps telemetry under 5 % of shipping raw flow records
# (bench/test_bench_wire.py: 300 s summaries + 60 s health = 2.7 %; 60 s summaries = 9 %).
REPORT_INTERVAL_S = 1.0  # new and changed incidents go to the hub this often
HEALTH_INTERVAL_S = 60.0  # health alone (no incident) this often
SUMMARY_INTERVAL_S = 300.0  # per-device summaries (the bulk of telemetry), aligned intervals
BLOCK_TIMEOUT_MS = 250  # the capture ring hands over a block at least this often
# Blocks are merged into batches of up to this many frames or this much time: a sensor sends
# a packet every few seconds, so per-flow work in the stream decoder is paid per batch a flow
# appears in; one batch a second pays it about once per flow instead of once per packet.
COALESCE_FRAMES = 8192
COALESCE_S = 0.5
# Every batch allocates and frees megabytes of numpy arrays; glibc keeps freed heap memory
# mapped, so the resident size creeps up to the worst moment's. Handing it back once a second
# costs about 0.5 ms (10-25 MB less resident at 50k packets/s with 18,000 devices).
TRIM_INTERVAL_S = 1.0
# Arrays from this size up get their own mapping, given back the moment they are freed. glibc
# raises its threshold (up to 32 MiB) after the first large free, and then a tick close's
# multi-megabyte temporaries stay on the heap until the next trim. 2 MiB, not less: the
# capture's 1 MiB block copies stay on the heap, reused without page faults (1 MiB cost about
# 0.4 % of the machine at 50k packets/s; bench/RESULTS.md).
MMAP_THRESHOLD = 2 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


class AgentDaemon:
    def __init__(self, cfg: AgentConfig, detector: Detector) -> None:
        from atlas.agent.board import detect_board

        from atlas.agent.detect.update import ModelUpdater, load_installed

        self.cfg = cfg
        installed = load_installed(cfg.agent.state_dir, cfg.detect.batch)  # the hub's last push wins
        if installed is not None:
            log.info("models: running the installed bundle %s (pushed by the hub)", installed.version)
            detector = installed
        self.detector = detector
        self.board = detect_board(cfg.agent.board)
        self.governor = CpuGovernor(cfg.budget.cpu_percent)
        self.pipeline = AgentPipeline(
            cfg, detector, governor=self.governor, on_incident=self._incident_changed, on_rows=self._rows, keep_closed=1000
        )
        self.started = time.time()
        self.errors: deque[str] = deque(maxlen=20)
        self._changed: dict[str, Incident] = {}  # incidents to report at the next interval
        self._summaries = DeviceSummaries(self.pipeline.book.name, SUMMARY_INTERVAL_S)
        self._closed_summaries: list[SummaryBlock] = []  # made into DeviceSummary objects only to send
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_report = self._last_health = time.monotonic()
        self._pps = 0.0
        self._frames_at_report = 0
        self._seen = {"drops": 0, "inferences": 0, "inference_s": 0.0, "malformed": 0}  # for metric deltas
        self.capture = None
        self.enforcer = None
        self.uplink = None
        self.metrics = None
        # Model updates are checked on the uplink's thread, swapped in by the main loop.
        self.models = ModelUpdater(cfg.agent.state_dir, detector, swap=self._swap_detector, batch=cfg.detect.batch)
        self._next_detector: Detector | None = None
        self._swapped = threading.Condition()

    # ---- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        from atlas.link import notify
        from atlas.agent.capture.live import LiveCapture
        from atlas.link.control import serve

        cfg = self.cfg
        notifier = notify.Notifier.from_env()
        watchdog = notify.Watchdog.from_env(notifier)
        Path(cfg.agent.state_dir).mkdir(parents=True, exist_ok=True)
        self._start_enforcer()
        self._start_uplink()
        self._start_metrics()
        control = serve(cfg.agent.control_socket, {"status": self.status, "incidents": self.incidents})
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            with LiveCapture(
                cfg.agent.interface,
                bpf=cfg.agent.bpf or None,
                snaplen=cfg.agent.snaplen,
                ring_blocks=cfg.agent.capture_ring_mb,  # 1 MiB blocks
                backend=cfg.agent.capture_backend,
                batch_size=self.board.capture_batch,
                # Fewer, larger batches: per-batch and per-flow costs in decoding are fixed,
                # so at low rates a 250 ms block costs a fifth of a 50 ms one, and at high
                # rates a 1 MiB block fills first anyway. Detection runs on 1 s ticks.
                block_timeout_ms=BLOCK_TIMEOUT_MS,
            ) as cap:
                self.capture = cap
                notifier.ready(f"capturing on {cfg.agent.interface}")
                log.info("atlas-agent %s capturing on %s (%s), budget %.2f%%", __version__, cfg.agent.interface, self.board.name, cfg.budget.cpu_percent)
                trim = HeapTrimmer(TRIM_INTERVAL_S, MMAP_THRESHOLD)
                for batch in coalesce(cap.batches(), COALESCE_FRAMES, COALESCE_S):
                    if self._stop.is_set():
                        break
                    self._step(batch)
                    trim.maybe()
                    watchdog.tick()
        finally:
            notifier.stopping()
            self._report(final=True)
            control.close()
            if self.uplink is not None:
                self.uplink.stop()
            if self.enforcer is not None:
                self.enforcer.shutdown()
            if self.metrics is not None:
                self._metrics_server.close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def _step(self, batch) -> None:
        self._apply_model()
        try:
            if len(batch):
                self.pipeline.process(batch)
            else:
                self.pipeline.idle(time.time())
        except Exception as exc:  # never let one bad batch stop the gateway's protection
            self.errors.append(f"{time.strftime('%H:%M:%S')} pipeline: {exc!r}")
            log.exception("pipeline failed on a batch of %d frames", len(batch))
        # An incident that opened (or closed) goes to the hub now, not at the next interval:
        # the response to an attack waits for it. They are rare (debounced), so this is cheap.
        if self._changed or time.monotonic() - self._last_report >= REPORT_INTERVAL_S:
            self._report()

    def _start_enforcer(self) -> None:
        from atlas.agent.enforce.config import build_enforcer

        self.enforcer = build_enforcer(self.cfg.enforce, self.cfg.agent.state_dir, self.cfg.hub.address, self.cfg.source)
        report = self.enforcer.reconcile()
        log.info("enforcement reconciled: %s", report)
        self.enforcer.start_timer(self.cfg.enforce.expire_interval_s)

    def _start_uplink(self) -> None:
        h = self.cfg.hub
        if not h.address:
            return
        from atlas.agent.uplink.client import Uplink
        from atlas.link.tls import TlsFiles

        a = self.cfg.agent
        info = GatewayInfo(a.gateway_id, __version__, self.models.versions, self._capabilities(), self.board.name,
                           domain=a.domain, district=a.district, subnet=a.subnet)
        self.uplink = Uplink(
            h.address,
            self.cfg.agent.gateway_id,
            TlsFiles(Path(h.cert), Path(h.key), Path(h.ca)),
            h.spool_dir or os.path.join(self.cfg.agent.state_dir, "spool"),
            self.enforcer.apply,
            signing_pub=h.signing_key,
            info=info,
            spool_bytes=int(h.spool_max_mb * (1 << 20)),
            on_model=self.models.handle,
            allowlist=self.enforcer.allowlist,  # the uplink refuses what the enforcer would
            max_ttl=self.enforcer.max_ttl,
            verified=self.enforcer.rules(),  # kept across a restart, too
        ).start()

    def _start_metrics(self) -> None:
        if not self.cfg.metrics.port:
            return
        from atlas.agent.metrics import AgentMetrics

        self.metrics = AgentMetrics(__version__)
        try:
            self._metrics_server = self.metrics.serve(self.cfg.metrics.port)
        except OSError as exc:  # taken since `run` checked it
            raise OSError(exc.errno, f"metrics.port: 127.0.0.1:{self.cfg.metrics.port}: {exc.strerror}") from None

    def _capabilities(self) -> list[str]:
        """What this gateway can enforce with: its enforcement backends' names."""
        return [b.name for b in self.enforcer.backends] if self.enforcer else []

    # ---- telemetry ----------------------------------------------------------------------------

    def _incident_changed(self, inc: Incident) -> None:
        with self._lock:
            self._changed[inc.id] = inc
        if self.metrics is not None:
            self.metrics.incident(inc.kind)
        log.warning("incident %s %s from %s (score %.2f)", inc.state, inc.kind, inc.src_ip, inc.score)

    def _rows(self, rows) -> None:
        block = self._summaries.fold(rows.tick_end, rows.devices, rows.X, rows.packets)
        if block is not None:
            self._closed_summaries.append(block)

    def _report(self, final: bool = False) -> None:
        now_m = time.monotonic()
        elapsed = max(now_m - self._last_report, 1e-6)
        frames = self.pipeline.counters.frames
        self._report_frames = frames - self._frames_at_report
        self._pps = self._report_frames / elapsed
        self._frames_at_report = frames
        self._last_report = now_m
        for inc in list(self.pipeline.tracker.open.values()):  # updates to open incidents
            if inc.last_seen > time.time() - 2 * REPORT_INTERVAL_S:
                self._changed.setdefault(inc.id, inc)
        with self._lock:
            incidents = list(self._changed.values())
            self._changed.clear()
        blocks, self._closed_summaries = self._closed_summaries, []
        if final:
            blocks.append(self._summaries.flush_block())
        devices: list[DeviceSummary] = []
        if self.uplink is not None:  # without a hub nobody reads them: no objects
            devices = [s for b in blocks if b is not None for s in b.summaries(self.pipeline.book.name)]
        del blocks
        self._update_metrics()
        health_due = now_m - self._last_health >= HEALTH_INTERVAL_S
        if self.uplink is not None and (incidents or devices or final or health_due):
            self._last_health = now_m
            self.uplink.submit(TelemetryBatch(0, time.time(), incidents, devices, self._health()))

    def _health(self) -> Health:
        stats = self.capture.stats() if self.capture is not None else {}
        return Health(
            time=time.time(),
            packets_per_s=self._pps,
            kernel_drops=int(stats.get("kernel_drops", 0)),
            cpu_percent=self.governor.percent,
            cpu_budget=self.governor.budget,
            shedding_level=self.governor.level,
            open_incidents=len(self.pipeline.tracker.open),
            model_versions=self.models.versions,
        )  # the uplink fills in the spool depth

    def _update_metrics(self) -> None:
        m = self.metrics
        if m is None:
            return
        stats = self.capture.stats() if self.capture is not None else {}
        m.set_governor(self.governor.percent / 100.0, self.governor.budget / 100.0, self.governor.level)
        by_kind: dict[str, int] = {}
        for inc in self.pipeline.tracker.open.values():
            by_kind[inc.kind] = by_kind.get(inc.kind, 0) + 1
        m.set_open_incidents(by_kind)
        if self.enforcer is not None:
            by_action: dict[str, int] = {}
            for r in self.enforcer.rules():
                by_action[r.action] = by_action.get(r.action, 0) + 1
            m.set_rules(by_action)
        if self.uplink is not None:
            kept = self.uplink.kept  # those the enforcer holds: it may have refused one itself
            m.set_rules_kept(sum(1 for r in self.enforcer.rules() if r.id in kept) if self.enforcer else 0)
            m.set_hub_state("connected" if self.uplink.connected else "disconnected")
            m.set_spool_depth(self.uplink.spool.stats().depth)
        c, seen = self.pipeline.counters, self._seen
        drops = int(stats.get("kernel_drops", 0))
        m.observe_batch(self._report_frames, int(stats.get("bytes", 0)) - seen.get("bytes", 0), drops - seen["drops"])
        if c.inferences > seen["inferences"]:  # the mean of the interval's inferences, as one observation
            m.observe_inference("detector", (c.inference_s - seen["inference_s"]) / (c.inferences - seen["inferences"]))
        malformed = sum(self.pipeline.streams.stats()["malformed"].values())
        if malformed > seen["malformed"]:
            m.observe_malformed("mqtt", malformed - seen["malformed"])
        self._seen = {"drops": drops, "bytes": int(stats.get("bytes", 0)), "inferences": c.inferences, "inference_s": c.inference_s, "malformed": malformed}

    # ---- model updates ------------------------------------------------------------------------

    def _swap_detector(self, detector: Detector, timeout: float = 5.0) -> None:
        """Called by the updater (uplink thread) with a checked detector: the main loop swaps it
        in between two batches; returns once it scores, so the hub's ack tells the truth."""
        with self._swapped:
            self._next_detector = detector
            if not self._swapped.wait_for(lambda: self._next_detector is None, timeout):
                self._next_detector = None  # no batch for a while (capture stalled): swap here
                self._install_detector(detector)

    def _apply_model(self) -> None:
        if self._next_detector is None:
            return
        with self._swapped:
            if self._next_detector is not None:
                self._install_detector(self._next_detector)
                self._next_detector = None
                self._swapped.notify_all()

    def _install_detector(self, detector: Detector) -> None:
        self.pipeline.swap_detector(detector)
        self.detector = detector
        if self.uplink is not None:  # the next hello (after a reconnect) says what runs now
            self.uplink.info.model_versions = running_versions(detector)

    # ---- control socket -----------------------------------------------------------------------

    def status(self, _args: Any = None) -> dict:
        stats = self.capture.stats() if self.capture is not None else {}
        g = self.governor
        return {
            "version": __version__,
            "gateway_id": self.cfg.agent.gateway_id,
            "board": self.board.name,
            "board_source": getattr(self.board, "source", ""),
            "uptime_s": time.time() - self.started,
            "interface": self.cfg.agent.interface,
            "capture": stats,
            "packets_per_s": self._pps,
            "kernel_drops": int(stats.get("kernel_drops", 0)),
            "cpu": {"percent": g.percent, "budget": g.budget, "level": g.level, "level_name": LEVEL_NAMES[g.level]},
            "models": self.models.versions,
            "model_updates": list(self.models.history),
            "pipeline": vars(self.pipeline.counters),
            "features": vars(self.pipeline.features.stats),
            "mqtt": self.pipeline.streams.stats(),
            "incidents": [i.to_dict() for i in self.pipeline.tracker.open.values()],
            "rules": self._rules_status(),
            "hub": self._hub_status(),
            "last_errors": list(self.errors),
        }

    def incidents(self, _args: Any = None) -> list[dict]:
        return [i.to_dict() for i in self.pipeline.tracker.all()]

    def _rules_status(self) -> list[dict]:
        """The enforcer's rules; one the hub last sent a copy of that failed its check says
        so in `kept` (the gateway enforces its last verified copy until its expiry)."""
        if self.enforcer is None:
            return []
        kept = dict(self.uplink.kept) if self.uplink is not None else {}
        rules = self.enforcer.status().get("rules", [])
        for rule in rules:
            if rule["id"] in kept:
                rule["kept"] = kept[rule["id"]]
        return rules

    def _hub_status(self) -> dict:
        if self.uplink is None:
            return {"state": "standalone"}
        return {
            "state": "connected" if self.uplink.connected else "disconnected",
            "address": self.cfg.hub.address,
            "last_error": self.uplink.last_error,
            "counters": self.uplink.counters_snapshot(),
        }


class HeapTrimmer:
    """Return freed heap memory to the system (glibc's malloc_trim) at most every `interval_s`,
    and give arrays of `mmap_threshold` bytes and more their own mappings (mallopt); a no-op
    where the C library has neither."""

    def __init__(self, interval_s: float, mmap_threshold: int | None = None) -> None:
        import ctypes
        import ctypes.util

        self.interval_s = interval_s
        self._last = time.monotonic()
        self._trim = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            self._trim = libc.malloc_trim
            self._trim.argtypes, self._trim.restype = [ctypes.c_size_t], ctypes.c_int
            if mmap_threshold is not None:
                libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        except (OSError, AttributeError):  # musl, macOS: nothing to call
            self._trim = None

    def maybe(self) -> bool:
        """Trim if the interval has passed; True when it did."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.interval_s:
            return False
        self._last = now
        self._trim(0)
        return True


def coalesce(batches: Iterator[FrameBatch], max_frames: int, max_age_s: float) -> Iterator[FrameBatch]:
    """Merge consecutive capture batches until `max_frames` or `max_age_s` (since the first one
    held); an empty batch (the capture is idle) hands over what is held, then itself."""
    held: list[FrameBatch] = []
    count, since = 0, 0.0
    for batch in batches:
        if len(batch):
            if not held:
                since = time.monotonic()
            held.append(batch)
            count += len(batch)
        if held and (not len(batch) or count >= max_frames or time.monotonic() - since >= max_age_s
                     or held[0].linktype != held[-1].linktype):
            same = [b for b in held if b.linktype == held[0].linktype]
            yield merge_batches(same)
            held = held[len(same):]
            count = sum(len(b) for b in held)
            since = time.monotonic()
        if not len(batch):
            yield batch
    while held:  # the capture stopped: hand over the rest
        same = [b for b in held if b.linktype == held[0].linktype]
        yield merge_batches(same)
        held = held[len(same):]


def merge_batches(batches: list[FrameBatch]) -> FrameBatch:
    """FrameBatch.concat, copying each distinct buffer once: the capture cuts one ring block
    (1 MiB) into batches of a few hundred frames that all share the block's buffer, and
    concatenating it once per batch copied tens of MiB per merged batch."""
    runs: list[list[FrameBatch]] = []
    for b in batches:
        if runs and b.buf is runs[-1][0].buf:
            runs[-1].append(b)
        else:
            runs.append([b])
    merged = [
        r[0] if len(r) == 1 else FrameBatch(
            r[0].buf, *(np.concatenate([getattr(b, name) for b in r]) for name in ("offsets", "caplens", "wirelens", "ts")),
            r[0].linktype)
        for r in runs
    ]
    return FrameBatch.concat(merged)


def run_daemon(cfg: AgentConfig, detector: Detector) -> int:
    return AgentDaemon(cfg, detector).run()
