"""Prometheus metrics both ATLAS daemons export, served over HTTP on a local port.

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
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)


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
