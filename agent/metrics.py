"""The gateway agent's Prometheus metrics (the daemon base is atlas.link.metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from atlas.link.metrics import HUB_STATES, INFERENCE_BUCKETS, DaemonMetrics


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
        self.rules_kept = Gauge(f"{ns}_rules_kept_verified",
                                "Rules enforced from their last verified copy because the hub's "
                                "newer copy failed its check (signature, vocabulary)", registry=reg)

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

    def set_rules_kept(self, count: int) -> None:
        self.rules_kept.set(count)

    def set_hub_state(self, state: str) -> None:
        if state not in HUB_STATES:
            raise ValueError(f"unknown hub stream state {state!r}; one of {', '.join(HUB_STATES)}")
        self.hub_stream.state(state)
