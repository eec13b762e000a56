"""The hub's Prometheus metrics (the daemon base is atlas.link.metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from atlas.link.metrics import HUB_STATES, DaemonMetrics


class CentralMetrics(DaemonMetrics):
    """The hub: telemetry ingested and dropped, gateway streams, decision latency, ingest queue
    depth, campaigns, the event stream."""

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
        self.queue_depth = Gauge(f"{ns}_queue_depth",
                                 "Telemetry batches waiting for the next group commit",
                                 registry=reg)
        self.campaigns = Gauge(f"{ns}_campaigns_open", "Campaigns the correlator holds open",
                               registry=reg)
        self.events = Counter(f"{ns}_events_total", "Events on the hub's stream, by outcome "
                              "(published; dropped by a full subscriber queue; handler errors)",
                              ["outcome"], registry=reg)

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

    def set_campaigns(self, open_campaigns: int) -> None:
        self.campaigns.set(open_campaigns)

    def count_events(self, outcome: str, n: int) -> None:
        if n > 0:
            self.events.labels(outcome=outcome).inc(n)
