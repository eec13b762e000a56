"""The hub's metrics that used to read 0: decision latency (observed as the hub dispatches),
ingest queue depth, CPU share, and the new campaign and event-stream figures, scraped over HTTP
from a real hub, its real gRPC server and the daemon's LiveStatus."""
from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from atlas.link.incidents import Incident
from atlas.link.signing import RuleSigner
from atlas.link.wire import TelemetryBatch
from atlas.central.correlate import GatewayPlace
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub
from atlas.central.ingest import serve
from atlas.central.ingest.testing import make_pki
from atlas.central.daemon import LiveStatus
from atlas.central.store import open_store


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_decision_latency_queue_cpu_campaigns_and_events_are_exported(tmp_path):
    pki = make_pki(tmp_path / "pki")
    store = open_store(tmp_path / "hub.db")
    hub = Hub(store, Playbook(), RuleSigner.from_pem_file(pki.signing_key),
              places={"gw-a": GatewayPlace("gw-a", "energy"),
                      "gw-b": GatewayPlace("gw-b", "water")})
    server = serve(hub, "127.0.0.1:0", pki.hub_tls())
    live = LiveStatus(hub, server)
    live.start_metrics(0)
    try:
        now = time.time()
        for seq, gateway, kind in ((1, "gw-a", "port_scan"), (1, "gw-b", "mqtt_flood")):
            hub.telemetry(gateway, TelemetryBatch(seq=seq, time=now, incidents=[Incident(
                id=f"{gateway}/{kind}", kind=kind, src_ip="198.51.100.9", dst_ip="10.0.0.2",
                device="198.51.100.9", gateway=gateway, time=now, last_seen=now, score=0.9,
                model_version="m1", packets=10)]))
        assert hub.bus.wait_idle(5)
        spent = time.process_time() + 0.2
        while time.process_time() < spent:  # some CPU for the share to show
            pass
        live._updated = 0.0  # the next update is due now
        live.update_metrics()
        s = scrape(live.metrics_server.url)
    finally:
        live.metrics_server.close()
        server.stop(grace=0)
        hub.close()
        store.close()
    # one quarantine per incident, each dispatched within its batch's commit
    assert s[("atlas_central_decision_seconds_count", ())] == 2
    assert 0 < s[("atlas_central_decision_seconds_sum", ())] < 5
    assert s[("atlas_central_queue_depth", ())] == 0
    assert 0 < s[("atlas_central_cpu_share_ratio", ())] <= 1
    assert s[("atlas_central_campaigns_open", ())] == 1
    assert s[("atlas_central_events_total", (("outcome", "published"),))] >= 6
    assert ("atlas_central_events_total", (("outcome", "dropped"),)) not in s
