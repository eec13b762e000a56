"""The metrics exporter: start it on 127.0.0.1, update, scrape over HTTP, parse."""

from __future__ import annotations

import os
import urllib.request

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atlas.agent import metrics
from atlas.central.metrics import CentralMetrics


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def agent():
    m = metrics.AgentMetrics(version="0.1.0")
    server = m.serve(port=0)
    yield m, server
    server.close()


def test_agent_metrics_scraped_over_http(agent):
    m, server = agent
    assert server.host == "127.0.0.1" and server.port > 0
    m.set_info(version="0.1.0", board="raspberry_pi_4", interface="eth0")
    m.observe_batch(256, nbytes=40_000, kernel_drops=0)
    m.observe_batch(100, nbytes=15_000, kernel_drops=7)
    m.observe_malformed("mqtt", 3)
    m.set_governor(cpu_share=0.031, budget_share=0.073, shedding_level=1)
    for seconds in (20e-6, 40e-6, 3e-3):
        m.observe_inference("anomaly", seconds)
    m.observe_inference("classifier", 80e-6)
    m.incident("port_scan")
    m.incident("port_scan")
    m.incident("mqtt_flood")
    m.set_open_incidents({"port_scan": 1}, kinds=["port_scan", "mqtt_flood"])
    m.set_rules({"quarantine": 2, "rate_limit": 1})
    m.set_spool_depth(42)
    m.set_hub_state("connected")

    s = _scrape(server.url)
    assert s[("atlas_agent_packets_total", ())] == 356
    assert s[("atlas_agent_bytes_total", ())] == 55_000
    assert s[("atlas_agent_kernel_drops_total", ())] == 7
    assert s[("atlas_agent_malformed_total", (("protocol", "mqtt"),))] == 3
    assert s[("atlas_agent_cpu_share_ratio", ())] == pytest.approx(0.031)
    assert s[("atlas_agent_cpu_budget_ratio", ())] == pytest.approx(0.073)
    assert s[("atlas_agent_shedding_level", ())] == 1
    anomaly = (("model", "anomaly"),)
    assert s[("atlas_agent_inference_seconds_count", anomaly)] == 3
    assert s[("atlas_agent_inference_seconds_sum", anomaly)] == pytest.approx(3.06e-3)
    # Buckets are cumulative: two of three batches took at most 50 µs.
    assert s[("atlas_agent_inference_seconds_bucket", (("le", "5e-05"), ("model", "anomaly")))] == 2
    assert s[("atlas_agent_inference_seconds_bucket", (("le", "+Inf"), ("model", "anomaly")))] == 3
    assert s[("atlas_agent_incidents_total", (("kind", "port_scan"),))] == 2
    assert s[("atlas_agent_incidents_total", (("kind", "mqtt_flood"),))] == 1
    assert s[("atlas_agent_incidents_open", (("kind", "mqtt_flood"),))] == 0
    assert s[("atlas_agent_rules_active", (("action", "quarantine"),))] == 2
    assert s[("atlas_agent_spool_depth", ())] == 42
    hub = {dict(k[1])["atlas_agent_hub_stream_state"]: v for k, v in s.items()
           if k[0] == "atlas_agent_hub_stream_state"}
    assert hub == {"disabled": 0, "connecting": 0, "connected": 1, "backoff": 0, "disconnected": 0}
    info = [dict(k[1]) for k in s if k[0] == "atlas_agent_build_info"]
    assert info == [{"version": "0.1.0", "board": "raspberry_pi_4", "interface": "eth0"}]
    # The process's own CPU and memory come from the daemon's registry too. (qemu-user, in the
    # emulated-ARM job, synthesizes /proc/self/stat with zeros where RSS and CPU times go.)
    assert ("process_resident_memory_bytes", ()) in s and ("process_cpu_seconds_total", ()) in s
    if not os.environ.get("ATLAS_EMULATED"):
        assert s[("process_resident_memory_bytes", ())] > 1_000_000

    m.observe_batch(4)  # the next scrape sees the update
    assert _scrape(server.url)[("atlas_agent_packets_total", ())] == 360


def test_each_daemon_has_its_own_registry_not_the_global_one(agent):
    m, server = agent
    other = metrics.AgentMetrics(process_metrics=False)
    other.observe_batch(5)
    m.observe_batch(1)
    assert _scrape(server.url)[("atlas_agent_packets_total", ())] == 1
    assert b"atlas_agent_packets_total 5.0" in other.scrape()
    assert b"atlas_agent" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_unknown_hub_state_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown hub stream state 'up'"):
        metrics.AgentMetrics(process_metrics=False).set_hub_state("up")


def test_central_metrics_scraped_over_http():
    m = CentralMetrics(version="0.1.0")
    server = m.serve(port=0)
    try:
        m.observe_telemetry(1000)
        m.drop_telemetry("bad_signature", 2)
        m.set_gateway_streams({"connected": 40, "backoff": 2})
        m.observe_decision(0.02)
        m.set_queue_depth(17)
        m.incident("coordinated_attack")
        m.set_rules({"quarantine": 3})
        s = _scrape(server.url)
    finally:
        server.close()
    assert s[("atlas_central_telemetry_messages_total", ())] == 1000
    assert s[("atlas_central_telemetry_dropped_total", (("reason", "bad_signature"),))] == 2
    assert s[("atlas_central_gateway_streams", (("state", "connected"),))] == 40
    assert s[("atlas_central_gateway_streams", (("state", "disconnected"),))] == 0
    assert s[("atlas_central_decision_seconds_count", ())] == 1
    assert s[("atlas_central_queue_depth", ())] == 17
    assert s[("atlas_central_incidents_total", (("kind", "coordinated_attack"),))] == 1
    assert s[("atlas_central_rules_active", (("action", "quarantine"),))] == 3


def test_exporter_listens_on_loopback_only(agent):
    _, server = agent
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
    bound = server._httpd.socket.getsockname()  # noqa: SLF001 - the bound address is the point
    assert bound[0] == "127.0.0.1"
