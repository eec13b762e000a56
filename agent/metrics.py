"""Prometheus metrics of the ATLAS daemons, served over HTTP on a local port.

Each daemon owns one `CollectorRegistry` (never prometheus-client's global one), so two
daemons, or a daemon and its tests, in one process do not collide. The daemon updates the
metrics from its main loop with the small methods below (one call per batch or per event,
each a lock and an add), and `serve()` starts the exporter in a daemon thread, by default on
127.0.0.1 only: metrics say what the gateway sees and are not for the street.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

__all__ = [
    "AGENT_PORT",
    "CENTRAL_PORT",
    "HUB_STATES",
    "INFERENCE_BUCKETS",
    "MetricsServer",
    "DaemonMetrics",
    "AgentMetrics",
    "CentralMetrics",
]

AGENT_PORT = 9731
CENTRAL_PORT = 9732

# The uplink's connection states, from the agent's side.
HUB_STATES = ("disabled", "connecting", "connected", "backoff", "disconnected")

# Inference per batch: about 1 µs per invoke on x86, 6-9x that on a small ARM core, up to
# milliseconds for a large batch with quantize/dequantize.
INFERENCE_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
                     10e-3, 25e-3, 50e-3, 0.1, 0.25, 1.0)


@dataclass
class MetricsServer:
    """A running exporter; `port` is the bound port (useful with port 0)."""

    host: str
    port: int
    _httpd: object
    _thread: object

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class DaemonMetrics:
    """What both daemons export: build info, process CPU/memory, CPU share, incidents, rules."""

    def __init__(self, daemon: str, version: str = "", registry: CollectorRegistry | None = None,
                 process_metrics: bool = True) -> None:
        self.daemon = daemon
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        ns = f"atlas_{daemon}"
        self.ns = ns
        if process_metrics:  # process_cpu_seconds_total, process_resident_memory_bytes, ...
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.info = Info(f"{ns}_build", "Version and hardware profile of this daemon",
                         registry=self.registry)
        self.info.info({"version": version})
        self.cpu_share = Gauge(f"{ns}_cpu_share_ratio",
                               "The daemon's CPU use as a share of the whole machine (0-1)",
                               registry=self.registry)
        self.incidents = Counter(f"{ns}_incidents_total", "Incidents opened, by kind",
                                 ["kind"], registry=self.registry)
        self.incidents_open = Gauge(f"{ns}_incidents_open", "Incidents currently open, by kind",
                                    ["kind"], registry=self.registry)
        self.rules_active = Gauge(f"{ns}_rules_active", "Enforcement rules in force, by action",
                                  ["action"], registry=self.registry)
        self.errors = Counter(f"{ns}_errors_total", "Errors handled without stopping, by stage",
                              ["stage"], registry=self.registry)

    def set_info(self, **labels: str) -> None:
        self.info.info({k: str(v) for k, v in labels.items()})

    def set_cpu_share(self, share: float) -> None:
        self.cpu_share.set(share)

    def incident(self, kind: str) -> None:
        self.incidents.labels(kind=kind).inc()

    def set_open_incidents(self, by_kind: dict[str, int], kinds: Iterable[str] = ()) -> None:
        """Open incidents per kind; kinds absent from `by_kind` but listed in `kinds` read 0."""
        for kind in set(kinds) | set(by_kind):
            self.incidents_open.labels(kind=kind).set(by_kind.get(kind, 0))

    def set_rules(self, by_action: dict[str, int], actions: Iterable[str] = ()) -> None:
        for action in set(actions) | set(by_action):
            self.rules_active.labels(action=action).set(by_action.get(action, 0))

    def error(self, stage: str) -> None:
        self.errors.labels(stage=stage).inc()

    def scrape(self) -> bytes:
        """The exposition text, as a scrape would return it."""
        return generate_latest(self.registry)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
        """Start the HTTP exporter in a daemon thread; port 0 picks a free port."""
        httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(host, httpd.server_port, httpd, thread)


class AgentMetrics(DaemonMetrics):
    """The gateway agent: traffic, drops, governor, inference, spool and hub stream."""

    def __init__(self, version: str = "", registry: CollectorRegistry | None = None,
                 process_metrics: bool = True) -> None:
        super().__init__("agent", version, registry, process_metrics)
        ns, reg = self.ns, self.registry
        self.packets = Counter(f"{ns}_packets_total", "Packets captured", registry=reg)
        self.bytes = Counter(f"{ns}_bytes_total", "Bytes captured", registry=reg)
        self.kernel_drops = Counter(f"{ns}_kernel_drops_total",
                                    "Packets the kernel dropped before capture read them",
                                    registry=reg)
        self.malformed = Counter(f"{ns}_malformed_total", "Malformed messages counted, by protocol",
                                 ["protocol"], registry=reg)
        self.cpu_budget = Gauge(f"{ns}_cpu_budget_ratio",
                                "The CPU budget as a share of the whole machine (0-1)", registry=reg)
        self.shedding_level = Gauge(f"{ns}_shedding_level",
                                    "Load shedding level of the governor (0 = none)", registry=reg)
        self.inference = Histogram(f"{ns}_inference_seconds", "Inference time per batch, by model",
                                   ["model"], buckets=INFERENCE_BUCKETS, registry=reg)
        self.spool_depth = Gauge(f"{ns}_spool_depth",
                                 "Telemetry messages waiting in the spool for the hub", registry=reg)
        self.hub_stream = Enum(f"{ns}_hub_stream_state", "State of the telemetry stream to the hub",
                               states=list(HUB_STATES), registry=reg)
        self.hub_stream.state("disabled")

    def observe_batch(self, packets: int, nbytes: int = 0, kernel_drops: int = 0) -> None:
        """One capture batch: counts since the previous batch (not running totals)."""
        self.packets.inc(packets)
        if nbytes:
            self.bytes.inc(nbytes)
        if kernel_drops:
            self.kernel_drops.inc(kernel_drops)

    def observe_malformed(self, protocol: str, count: int = 1) -> None:
        self.malformed.labels(protocol=protocol).inc(count)

    def set_governor(self, cpu_share: float, budget_share: float, shedding_level: int) -> None:
        """The governor's view each second: shares of the whole machine (7.3 % = 0.073)."""
        self.cpu_share.set(cpu_share)
        self.cpu_budget.set(budget_share)
        self.shedding_level.set(shedding_level)

    def observe_inference(self, model: str, seconds: float) -> None:
        self.inference.labels(model=model).observe(seconds)

    def set_spool_depth(self, depth: int) -> None:
        self.spool_depth.set(depth)

    def set_hub_state(self, state: str) -> None:
        if state not in HUB_STATES:
            raise ValueError(f"unknown hub stream state {state!r}; one of {', '.join(HUB_STATES)}")
        self.hub_stream.state(state)


class CentralMetrics(DaemonMetrics):
    """The hub: telemetry ingested and dropped, gateway streams, decisions, spool/queue depth."""

    def __init__(self, version: str = "", registry: CollectorRegistry | None = None,
                 process_metrics: bool = True) -> None:
        super().__init__("central", version, registry, process_metrics)
        ns, reg = self.ns, self.registry
        self.telemetry = Counter(f"{ns}_telemetry_messages_total",
                                 "Telemetry messages ingested from gateways", registry=reg)
        self.telemetry_dropped = Counter(f"{ns}_telemetry_dropped_total",
                                         "Telemetry messages refused or dropped, by reason",
                                         ["reason"], registry=reg)
        self.gateways = Gauge(f"{ns}_gateway_streams", "Gateway telemetry streams, by state",
                              ["state"], registry=reg)
        self.decision = Histogram(f"{ns}_decision_seconds",
                                  "Time from incident to dispatched decision",
                                  buckets=(1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
                                  registry=reg)
        self.queue_depth = Gauge(f"{ns}_queue_depth", "Messages waiting in the ingest queue",
                                 registry=reg)

    def observe_telemetry(self, messages: int) -> None:
        self.telemetry.inc(messages)

    def drop_telemetry(self, reason: str, messages: int = 1) -> None:
        self.telemetry_dropped.labels(reason=reason).inc(messages)

    def set_gateway_streams(self, by_state: dict[str, int]) -> None:
        for state in set(HUB_STATES) | set(by_state):
            self.gateways.labels(state=state).set(by_state.get(state, 0))

    def observe_decision(self, seconds: float) -> None:
        self.decision.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)
