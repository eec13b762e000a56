"""The wire end to end: real gRPC over mutual TLS on 127.0.0.1, certificates from our pki.

The hub side is the real servicer on top of MemoryHub (central/ingest/testing.py), an
in-memory implementation of the Hub contract; tests/central/test_ingest_hub.py runs the same
stream against the real Hub on SQLite.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import grpc
import pytest
import zstandard
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from atlas.link.incidents import Incident
from atlas.link.rules import Rule
from atlas.link.wire import DeviceSummary, Health, ModelAck, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.link import serde
from atlas.agent.uplink.client import Uplink
from atlas.link.signing import RuleSigner
from atlas.central import pki as pki_mod
from atlas.central.ingest import serve
from atlas.central.ingest.testing import MemoryHub, MemoryStore, make_pki
from atlas.v1 import link_pb2, link_pb2_grpc, telemetry_pb2

GATEWAYS = ["gw-1", "gw-2"]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), GATEWAYS)


@pytest.fixture(scope="module")
def signer(pki):
    return RuleSigner.from_pem_file(pki.signing_key)


@pytest.fixture
def hub():
    return MemoryHub()


@pytest.fixture
def server(hub, pki):
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls())
    yield srv
    srv.stop(0)


class Recorder:
    """on_rules for tests: records what enforcement was asked to do and applies everything."""

    def __init__(self):
        self.changes: list[RuleChange] = []

    def __call__(self, change: RuleChange) -> list[RuleAck]:
        self.changes.append(change)
        return [RuleAck(s.rule.id, applied=True) for s in change.rules]

    def rule_ids(self, kind: str) -> list[str]:
        return [s.rule.id for c in self.changes if c.kind == kind for s in c.rules]


@pytest.fixture
def make_uplink(pki, tmp_path):
    made: list[Uplink] = []

    def make(port: int, gateway_id: str = "gw-1", spool: str = "spool", tls=None, **kw) -> Uplink:
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_max", 0.2)
        up = Uplink(f"127.0.0.1:{port}", gateway_id, tls or pki.gateway_tls(gateway_id), tmp_path / spool,
                    kw.pop("on_rules", None) or Recorder(), signing_pub=pki.signing_pub, **kw)
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop()


def incident(n: int, gateway: str = "gw-1") -> Incident:
    return Incident(id=f"{gateway}/10.0.0.9/mqtt_flood/{n}", kind="mqtt_flood", src_ip="10.0.0.9", dst_ip="10.0.0.1",
                    device="attacker", gateway=gateway, time=1000.0 + n, last_seen=1001.0 + n, score=0.97,
                    model_version="cls-1", packets=n, evidence={"n": n})


def a_rule(n: int = 1, **changes) -> Rule:
    rule = Rule(id=f"r-{n}", action="quarantine", target=f"10.0.0.{n}", expires_at=time.time() + 600,
                reason="flood", decision_id=f"d-{n}")
    return dataclasses.replace(rule, **changes)


def test_telemetry_and_rules_round_trip(hub, server, signer, make_uplink):
    standing = signer.sign_rule(a_rule(1))
    hub.store.desired["gw-1"] = {"r-1": standing}
    up = make_uplink(server.port)
    up.start()
    assert up.wait_connected(10)
    rec = up.on_rules
    wait_for(lambda: rec.changes, what="the snapshot")
    assert rec.changes[0].kind == "snapshot" and rec.rule_ids("snapshot") == ["r-1"]
    assert hub.hellos[0].gateway_id == "gw-1"

    sent = []
    for n in range(3):
        batch = TelemetryBatch(seq=0, time=2000.0 + n, incidents=[incident(n)],
                               devices=[DeviceSummary("dev-7", "10.0.0.7", 0.0, 10.0, 42, 4200, [0.25, 0.5, 1.0])],
                               health=Health(time=2000.0 + n, packets_per_s=120.0, cpu_percent=3.1))
        up.submit(batch)
        sent.append(batch)
    wait_for(lambda: len(hub.store.batches.get("gw-1", [])) == 3, what="3 batches at the hub")
    assert hub.store.batches["gw-1"] == sent  # every field, through zstd and back
    wait_for(lambda: up.counters_snapshot()["spool_depth"] == 0, what="acks to empty the spool")

    upsert = signer.sign_rule(a_rule(2, action="rate_limit", params={"pps": 10}))
    hub.push("gw-1", RuleChange("upsert", [upsert]))
    wait_for(lambda: rec.rule_ids("upsert") == ["r-2"], what="the upsert")
    assert rec.changes[-1].rules[0] == upsert
    hub.push("gw-1", RuleChange("withdraw", withdrawn=["r-1"]))
    wait_for(lambda: any(c.kind == "withdraw" and c.withdrawn == ["r-1"] for c in rec.changes), what="the withdrawal")
    wait_for(lambda: {a.rule_id for a in hub.store.acks["gw-1"]} == {"r-1", "r-2"}, what="acks at the hub")
    assert all(a.applied for a in hub.store.acks["gw-1"])
    assert server.counters()["telemetry_records"] == 6


def test_reconnect_gets_a_fresh_snapshot(hub, server, signer, make_uplink):
    up = make_uplink(server.port).start()
    assert up.wait_connected(10)
    wait_for(lambda: up.on_rules.changes)
    up.stop()
    hub.store.desired["gw-1"] = {"r-5": signer.sign_rule(a_rule(5))}  # decided while it was away
    again = make_uplink(server.port, on_rules=up.on_rules).start()
    wait_for(lambda: up.on_rules.rule_ids("snapshot") == ["r-5"], what="the new snapshot")
    assert again.counters_snapshot()["rules_accepted"] == 1


def raw_call(port: int, credentials, messages, timeout: float = 5.0) -> list[link_pb2.HubMessage]:
    """A hand-made client: sends `messages`, half-closes, returns what the hub answered."""
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return list(link_pb2_grpc.GatewayLinkStub(channel).Connect(iter(messages), timeout=timeout))


def credentials(tls=None, ca: Path | None = None) -> grpc.ChannelCredentials:
    if tls is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    cert, key, ca_bytes = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca_bytes, private_key=key, certificate_chain=cert)


def hello(gateway_id: str) -> link_pb2.AgentMessage:
    return link_pb2.AgentMessage(hello=telemetry_pb2.Hello(gateway_id=gateway_id, software_version="t", protocol_version=1))


def test_a_client_without_a_certificate_is_refused(hub, server, pki):
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, credentials(ca=pki.ca_cert), [hello("gw-1")])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert hub.hellos == [] and server.counters().get("streams", 0) == 0


def test_a_certificate_from_another_ca_is_refused(hub, server, pki, tmp_path, make_uplink):
    foreign = make_pki(tmp_path / "foreign", ["gw-1"])  # same gateway name, another CA
    tls = dataclasses.replace(foreign.gateway_tls("gw-1"), ca=pki.ca_cert)  # it trusts our hub
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, credentials(tls), [hello("gw-1")])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    up = make_uplink(server.port, tls=tls).start()
    wait_for(lambda: up.counters_snapshot().get("connect_attempts", 0) >= 3, what="refused attempts")
    assert not up.connected and hub.hellos == []


def test_a_certificate_of_our_ca_that_names_no_gateway_is_refused(hub, server, pki, tmp_path):
    ca_cert, ca_key = pki_mod._load_ca(pki)
    key, cert = pki_mod._leaf(ca_cert, ca_key, "gw-1", [x509.DNSName("gw-1")], ExtendedKeyUsageOID.CLIENT_AUTH, 1)
    (tmp_path / "x.key").write_bytes(pki_mod._key_pem(key))
    (tmp_path / "x.crt").write_bytes(pki_mod._cert_pem(cert))
    tls = pki_mod.TlsFiles(cert=tmp_path / "x.crt", key=tmp_path / "x.key", ca=pki.ca_cert)
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, credentials(tls), [hello("gw-1")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.counters()["refused_identity"] == 1 and hub.hellos == []
    with pytest.raises(grpc.RpcError) as err:  # the hub's own certificate is no gateway either
        raw_call(server.port, credentials(pki.hub_tls()), [hello("gw-1")])
    assert err.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)
    assert hub.hellos == []


def test_a_gateway_cannot_report_as_another(hub, server, pki, make_uplink):
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, credentials(pki.gateway_tls("gw-1")), [hello("gw-2")])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'gw-2' differs from the certificate's gateway 'gw-1'" in err.value.details()
    assert server.counters()["refused_impersonation"] == 1 and hub.hellos == []
    # The same through the real client: gw-2's name with gw-1's certificate never connects.
    up = make_uplink(server.port, gateway_id="gw-2", tls=pki.gateway_tls("gw-1")).start()
    wait_for(lambda: up.counters_snapshot().get("refused_by_hub", 0) >= 2, what="refusals")
    assert not up.connected and hub.hellos == [] and "PERMISSION_DENIED" in up.last_error


def envelope_message(batch: TelemetryBatch) -> link_pb2.AgentMessage:
    return link_pb2.AgentMessage(telemetry=serde.telemetry_to_envelope(batch))


def acks_of(replies) -> list[link_pb2.TelemetryAck]:
    return [m.telemetry_ack for m in replies if m.WhichOneof("body") == "telemetry_ack"]


def test_telemetry_about_another_gateway_is_refused_and_acknowledged(hub, server, pki):
    forged = TelemetryBatch(seq=10, time=1.0, incidents=[incident(1, gateway="gw-2")])
    honest = TelemetryBatch(seq=11, time=1.0, incidents=[incident(2, gateway="")])
    replies = raw_call(server.port, credentials(pki.gateway_tls("gw-1")),
                       [hello("gw-1"), envelope_message(forged), envelope_message(honest)])
    assert replies[0].rule_change.kind == replies[0].rule_change.KIND_SNAPSHOT
    acks = acks_of(replies)
    assert max(a.seq for a in acks) == 11 and sum(a.refused for a in acks) == 1
    assert "claims gateway 'gw-2'" in " ".join(a.error for a in acks)
    assert [b.seq for b in hub.store.batches["gw-1"]] == [11]
    assert hub.store.batches["gw-1"][0].incidents[0].gateway == "gw-1"  # filled in from the certificate
    assert "gw-2" not in hub.store.batches and server.counters()["refused_batches"] == 1


def test_a_compression_bomb_is_refused_and_the_stream_goes_on(hub, pki):
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls(), max_raw_bytes=1 << 20)
    try:
        bomb = telemetry_pb2.TelemetryEnvelope(seq=1, codec=telemetry_pb2.CODEC_ZSTD, raw_size=10,
                                               payload=zstandard.ZstdCompressor().compress(bytes(64 << 20)))
        good = TelemetryBatch(seq=2, time=1.0, incidents=[incident(2)])
        replies = raw_call(srv.port, credentials(pki.gateway_tls("gw-1")),
                           [hello("gw-1"), link_pb2.AgentMessage(telemetry=bomb), envelope_message(good)])
        acks = acks_of(replies)
        assert max(a.seq for a in acks) == 2 and sum(a.refused for a in acks) == 1
        assert "inflates past" in " ".join(a.error for a in acks)
        assert [b.seq for b in hub.store.batches["gw-1"]] == [2]
    finally:
        srv.stop(0)


def test_an_oversized_message_from_a_gateway_is_refused_and_counted(hub, pki):
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls(), max_receive_bytes=64 << 10)
    try:
        huge = link_pb2.AgentMessage(telemetry=telemetry_pb2.TelemetryEnvelope(
            seq=1, codec=telemetry_pb2.CODEC_NONE, payload=bytes(100 << 10)))
        with pytest.raises(grpc.RpcError) as err:
            raw_call(srv.port, credentials(pki.gateway_tls("gw-1")), [hello("gw-1"), huge])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over the 65536-byte limit" in err.value.details()
        assert srv.counters()["oversized_messages"] == 1
        assert "gw-1" not in hub.store.batches
    finally:
        srv.stop(0)


def test_a_malformed_message_is_refused_and_counted(hub, server, pki):
    with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials(pki.gateway_tls("gw-1"))) as channel:
        connect = channel.stream_stream("/atlas.v1.GatewayLink/Connect")  # raw bytes, no serializer
        with pytest.raises(grpc.RpcError) as err:
            list(connect(iter([hello("gw-1").SerializeToString(), b"\x0a\xff\xff\xff"]), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an atlas.v1.AgentMessage" in err.value.details()
    assert server.counters()["malformed_messages"] == 1


def test_first_message_must_be_hello_of_our_protocol(hub, server, pki):
    tls = credentials(pki.gateway_tls("gw-1"))
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, tls, [envelope_message(TelemetryBatch(seq=1, time=1.0))])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hello" in err.value.details()
    future = link_pb2.AgentMessage(hello=telemetry_pb2.Hello(gateway_id="gw-1", protocol_version=2))
    with pytest.raises(grpc.RpcError) as err:
        raw_call(server.port, tls, [future])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert hub.hellos == []


def test_the_agent_refuses_bad_rules_over_the_wire(hub, server, signer, make_uplink):
    up = make_uplink(server.port).start()
    assert up.wait_connected(10)
    wait_for(lambda: up.on_rules.changes)
    good = signer.sign_rule(a_rule(1))
    original = signer.sign_rule(a_rule(2))
    tampered = SignedRule(dataclasses.replace(original.rule, target="10.0.0.250"), original.signature)
    expired = signer.sign_rule(a_rule(3, expires_at=time.time() - 30))
    bad_target = signer.sign_rule(a_rule(4, target="10.0.0.4; nft flush ruleset"))
    unsigned = SignedRule(a_rule(5), b"")
    hub.push("gw-1", RuleChange("upsert", [good, tampered, expired, bad_target, unsigned]))
    wait_for(lambda: len(hub.store.acks.get("gw-1", [])) == 5, what="5 acks")
    acks = {a.rule_id: a for a in hub.store.acks["gw-1"]}
    assert acks["r-1"].applied
    assert not acks["r-2"].applied and "signature: does not match" in acks["r-2"].error
    assert not acks["r-3"].applied and "expires_at: expired" in acks["r-3"].error
    assert not acks["r-4"].applied and "target: " in acks["r-4"].error
    assert not acks["r-5"].applied and "signature: missing" in acks["r-5"].error
    assert up.on_rules.rule_ids("upsert") == ["r-1"]  # enforcement only ever saw the good one
    counters = up.counters_snapshot()
    assert counters["rules_refused"] == 4
    assert (counters["rules_refused_signature"], counters["rules_refused_expires_at"], counters["rules_refused_target"]) == (2, 1, 1)


def test_model_updates_are_verified_and_oversized_ones_refused(hub, server, signer, make_uplink):
    models = []

    def on_model(update):
        models.append(update)
        return ModelAck(update.name, update.version, applied=True)

    up = make_uplink(server.port, on_model=on_model, max_receive_bytes=256 << 10).start()
    assert up.wait_connected(10)
    wait_for(lambda: up.on_rules.changes)
    update = signer.sign_model("anomaly", "v2", b"TFL3" + bytes(5000))
    hub.push("gw-1", dataclasses.replace(update, version="v3"))  # signature no longer matches
    hub.push("gw-1", update)
    wait_for(lambda: models, what="the model")
    assert models == [update] and up.counters_snapshot()["models_refused"] == 1
    # the hub hears both answers: the refusal with its reason, then the install
    wait_for(lambda: len(hub.store.model_acks.get("gw-1", [])) == 2, what="2 model acks")
    refused, applied = hub.store.model_acks["gw-1"]
    assert not refused.applied and refused.version == "v3" and refused.error.startswith("signature:")
    assert applied.applied and applied.version == "v2"
    hub.push("gw-1", signer.sign_model("anomaly", "v4", bytes(300 << 10)))  # over the agent's limit
    wait_for(lambda: up.counters_snapshot().get("oversized_messages") == 1, what="the refusal")
    wait_for(lambda: up.counters_snapshot().get("connections") == 2, what="the reconnect")
    assert models == [update]


def test_hub_killed_mid_stream_loses_no_incident(pki, tmp_path, make_uplink):
    """The hub dies while the agent keeps submitting; a new hub on the same store and port gets
    every incident exactly once and in order."""
    store = MemoryStore()
    first = serve(MemoryHub(store), "127.0.0.1:0", pki.hub_tls())
    port = first.port
    up = make_uplink(port, window=8).start()
    assert up.wait_connected(10)
    total, killed_at = 300, 120
    second = None
    try:
        for n in range(total):
            up.submit(TelemetryBatch(seq=0, time=float(n), incidents=[incident(n)]))
            if n == killed_at:
                wait_for(lambda: store.highest.get("gw-1"), what="some batches stored before the kill")
                first.stop(0)
            if n == killed_at + 60:
                assert up.counters_snapshot()["spool_depth"] >= 50  # spooled while the hub was away
                second = serve(MemoryHub(store), f"127.0.0.1:{port}", pki.hub_tls())
            time.sleep(0.003)
        wait_for(lambda: len(store.incidents("gw-1")) == total, timeout=20, what="every incident")
    finally:
        if second is not None:
            second.stop(0)
    got = [int(i.id.rsplit("/", 1)[1]) for i in store.incidents("gw-1")]
    assert got == list(range(total))
    counters = up.counters_snapshot()
    assert counters["connections"] >= 2 and counters["spool_dropped_batches"] == 0
    wait_for(lambda: up.counters_snapshot()["spool_depth"] == 0, what="the spool to drain")


AGENT = """
import sys, time
from atlas.link.wire import TelemetryBatch
from atlas.link.incidents import Incident
from atlas.agent.uplink.client import Uplink
from atlas.link.tls import TlsFiles
from pathlib import Path
d = Path(sys.argv[1])
up = Uplink(sys.argv[2], "gw-1", TlsFiles(d / "gateways/gw-1.crt", d / "gateways/gw-1.key", d / "ca.crt"),
            sys.argv[3], lambda change: [], signing_pub=d / "rule-signing.pub", backoff_initial=0.05, backoff_max=0.1)
up.start()
for n in range(int(sys.argv[4])):
    up.submit(TelemetryBatch(seq=0, time=float(n), incidents=[Incident(
        id=f"gw-1/10.0.0.9/anomaly/{n}", kind="anomaly", src_ip="10.0.0.9", dst_ip="", device="x",
        gateway="gw-1", time=1.0, last_seen=1.0, score=2.0, model_version="m")]))
print("submitted", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_agent_killed_with_a_full_spool_delivers_it_after_restart(pki, tmp_path, make_uplink):
    import signal
    import subprocess
    import sys

    hub = MemoryHub()
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls())
    port = srv.port
    srv.stop(0)  # the hub is down while the agent works
    proc = subprocess.Popen([sys.executable, "-c", AGENT, str(pki.root), f"127.0.0.1:{port}", str(tmp_path / "spool"), "50"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "submitted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    srv = serve(hub, f"127.0.0.1:{port}", pki.hub_tls())
    try:
        up = make_uplink(port).start()  # the restarted agent, same spool
        wait_for(lambda: len(hub.store.incidents("gw-1")) == 50, what="the spooled incidents")
        assert [int(i.id.rsplit("/", 1)[1]) for i in hub.store.incidents("gw-1")] == list(range(50))
        wait_for(lambda: up.counters_snapshot()["spool_depth"] == 0, what="the spool to drain")
    finally:
        srv.stop(0)


def test_a_full_spool_drops_the_oldest_counts_it_and_delivers_the_rest(pki, tmp_path, make_uplink):
    hub = MemoryHub()
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls())
    port = srv.port
    srv.stop(0)
    up = make_uplink(port, spool_bytes=16 << 10, compress=False).start()
    for n in range(400):
        up.submit(TelemetryBatch(seq=0, time=float(n), incidents=[incident(n)]))
    counters = up.counters_snapshot()
    dropped = counters["spool_dropped_batches"]
    assert dropped > 100 and counters["spool_dropped_incidents"] == dropped
    assert counters["spool_bytes"] <= 16 << 10
    report = TelemetryBatch(seq=0, time=400.0, health=Health(time=400.0))
    up.submit(report)  # the next health report tells the hub what was lost
    assert report.health.spool_dropped == dropped and report.health.spool_depth > 0
    dropped = up.counters_snapshot()["spool_dropped_batches"]
    srv = serve(hub, f"127.0.0.1:{port}", pki.hub_tls())
    try:
        wait_for(lambda: len(hub.store.incidents("gw-1")) == 400 - dropped, what="the kept batches")
        wait_for(lambda: hub.store.batches["gw-1"][-1].health is not None, what="the health report")
        assert hub.store.batches["gw-1"][-1].health.spool_dropped >= 100
        got = [int(i.id.rsplit("/", 1)[1]) for i in hub.store.incidents("gw-1")]
        assert got == list(range(dropped, 400))  # the newest, in order, none twice
    finally:
        srv.stop(0)


class FlakyHub(MemoryHub):
    """Fails to store (a locked database, a full disk) until told otherwise."""

    def __init__(self):
        super().__init__()
        self.failing = True

    def telemetry(self, gateway_id, batch):
        if self.failing:
            raise OSError("database is locked")
        return super().telemetry(gateway_id, batch)


def test_a_hub_that_cannot_store_acknowledges_nothing_and_loses_nothing(pki, make_uplink):
    hub = FlakyHub()
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls())
    try:
        up = make_uplink(srv.port).start()
        for n in range(5):
            up.submit(TelemetryBatch(seq=0, time=float(n), incidents=[incident(n)]))
        wait_for(lambda: srv.counters().get("hub_errors", 0) >= 2, what="failed stores")
        assert up.counters_snapshot()["spool_depth"] == 5  # nothing acknowledged, nothing dropped
        assert "hub could not take telemetry" in up.last_error
        hub.failing = False
        wait_for(lambda: len(hub.store.incidents("gw-1")) == 5, what="delivery once the hub recovers")
        assert [int(i.id.rsplit("/", 1)[1]) for i in hub.store.incidents("gw-1")] == list(range(5))
    finally:
        srv.stop(0)


def test_a_hub_failing_on_hello_is_retried(pki, make_uplink):
    class NoHello(MemoryHub):
        calls = 0

        def hello(self, gateway_id, info):
            NoHello.calls += 1
            if NoHello.calls < 3:
                raise RuntimeError("store migrating")
            super().hello(gateway_id, info)

    hub = NoHello()
    srv = serve(hub, "127.0.0.1:0", pki.hub_tls())
    try:
        up = make_uplink(srv.port).start()
        assert up.wait_connected(10)
        assert srv.counters()["hub_errors"] == 2 and NoHello.calls == 3 and hub.connected == {"gw-1"}
    finally:
        srv.stop(0)


def test_a_rule_the_wire_cannot_carry_is_left_out_not_fatal(hub, server, signer, make_uplink):
    odd = signer.sign_rule(a_rule(7, action="rate_limit", params={"pps": 5, "burst": 10}))  # no such param in v1
    fine = signer.sign_rule(a_rule(8))
    hub.store.desired["gw-1"] = {"r-7": odd, "r-8": fine}
    up = make_uplink(server.port).start()
    wait_for(lambda: up.on_rules.changes, what="the snapshot")
    assert up.on_rules.rule_ids("snapshot") == ["r-8"]
    assert server.counters()["unencodable_rules"] == 1
