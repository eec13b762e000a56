"""The wire against the real hub (atlas.central.hub.Hub on SQLite): the closed loop over mutual
TLS, and a hub restart mid-stream that loses no incident and stores none twice."""
from __future__ import annotations

import json
import time

import pytest

from atlas.link.incidents import Incident
from atlas.link.wire import RuleAck, RuleChange, TelemetryBatch
from atlas.agent.uplink.client import Uplink
from atlas.link.signing import RuleSigner
from atlas.central.ingest import serve
from atlas.central.ingest.testing import make_pki

hub_mod = pytest.importorskip("atlas.central.hub", reason="the hub core (atlas.central.hub) is not there")
from atlas.central.decide.playbook import Playbook  # noqa: E402
from atlas.central.store import open_store  # noqa: E402


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki", ["gw-1"])


def open_hub(db, pki):
    return hub_mod.Hub(open_store(db), Playbook(), RuleSigner.from_pem_file(pki.signing_key))


class Enforcer:
    def __init__(self):
        self.changes: list[RuleChange] = []

    def __call__(self, change: RuleChange) -> list[RuleAck]:
        self.changes.append(change)
        return [RuleAck(s.rule.id, applied=True) for s in change.rules]


def incident(n: int) -> Incident:
    return Incident(id=f"gw-1/10.0.0.66/mqtt_bruteforce/{n}", kind="mqtt_bruteforce", src_ip="10.0.0.66",
                    dst_ip="10.0.0.1", device="10.0.0.66", gateway="gw-1", time=time.time(),
                    last_seen=time.time(), score=0.99, model_version="cls-1", packets=10 + n)


def reported_ids(store) -> list[int]:
    """Agent incident numbers in the order the hub first recorded them (its audit log)."""
    out = []
    for row in store.audit_rows():
        if row.kind in ("incident", "incident_report"):
            out.append(int(json.loads(row.payload)["report"]["id"].rsplit("/", 1)[1]))
    return out


@pytest.mark.slow
def test_hub_restart_mid_stream_loses_nothing_and_stores_nothing_twice(pki, tmp_path):
    db = tmp_path / "hub.db"
    hub = open_hub(db, pki)
    server = serve(hub, "127.0.0.1:0", pki.hub_tls())
    port = server.port
    enforcer = Enforcer()
    up = Uplink(f"127.0.0.1:{port}", "gw-1", pki.gateway_tls("gw-1"), tmp_path / "spool", enforcer,
                signing_pub=pki.signing_pub, backoff_initial=0.05, backoff_max=0.2, window=8).start()
    total, killed_at = 200, 70
    try:
        assert up.wait_connected(10)
        for n in range(total):
            up.submit(TelemetryBatch(seq=0, time=time.time(), incidents=[incident(n)]))
            if n == killed_at:
                wait_for(lambda: hub.store.get_seq("gw-1") > 0, what="batches stored before the kill")
                server.stop(0)  # the hub process dies: its streams are cut
                hub.close()
                hub.store.close()
            if n == killed_at + 40:
                hub = open_hub(db, pki)  # a new hub on the same database and port
                server = serve(hub, f"127.0.0.1:{port}", pki.hub_tls())
            time.sleep(0.003)
        wait_for(lambda: hub.store.get_seq("gw-1") == up.spool.stats().next_seq - 1, what="the last batch")
        assert reported_ids(hub.store) == list(range(total))  # each once, in order
        wait_for(lambda: up.counters_snapshot()["spool_depth"] == 0, what="the spool to drain")
        # The closed loop over the wire: the hub decided, signed, and the agent accepted the rule.
        wait_for(lambda: any(c.rules for c in enforcer.changes), what="a rule from the hub")
        rule = next(s.rule for c in enforcer.changes for s in c.rules)
        assert rule.target == "10.0.0.66" or rule.action == "revoke_mqtt"
        assert up.counters_snapshot().get("rules_refused", 0) == 0
        wait_for(lambda: (r := hub.store.get_rule(rule.id)) is not None and r.ack_applied is True, what="the rule's ack at the hub")
    finally:
        up.stop()
        server.stop(0)
        hub.close()
        hub.store.close()
