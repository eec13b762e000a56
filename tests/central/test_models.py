"""Model bundles at the hub, against a real SQLite file: upload, push (signed once, audited),
dispatch to connected gateways and on reconnect, acks (applied or refused with the reason), and
the operator's `atlas-central models` commands."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.agent.detect import packaged_models_dir
from atlas.link.bundle import BundleError, read_bundle_dir, unpack_bundle
from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleChange
from atlas.link.signing import RuleSigner, RuleVerifier
from atlas.central.audit import AuditLog
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub, OperatorError
from atlas.central.models import ModelUploadError, bundle_record, load_bundle
from atlas.central.store import StoreError, open_store

CLI = Path(sys.executable).with_name("atlas-central")
SHIPPED = read_bundle_dir(packaged_models_dir())


def version_of(version: str):
    bundle = read_bundle_dir(packaged_models_dir())
    meta = bundle.meta
    meta["version"] = version
    bundle.files["meta.json"] = json.dumps(meta).encode()
    bundle.version = version
    return bundle


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def hub(tmp_path, key):
    the_hub = Hub(open_store(tmp_path / "hub.db"), Playbook(), RuleSigner(key))
    yield the_hub
    the_hub.close()
    the_hub.store.close()


def upload(hub: Hub, version: str) -> None:
    with hub.store.transaction():
        hub.store.put_model_bundle(bundle_record(version_of(version), "alice", time.time()))


def connect(hub: Hub, gateway: str, running: str = SHIPPED.version):
    hub.hello(gateway, GatewayInfo(gateway, "1.0", {"bundle": running}))
    feed = hub.watch(gateway)
    first = feed.get(1.0)
    assert isinstance(first, RuleChange) and first.kind == "snapshot"  # the rules always first
    return feed


def status(hub: Hub, gateway: str, version: str):
    return next((s for s in hub.store.model_status(gateway) if s.version == version), None)


def test_push_signs_once_sends_to_the_connected_target_and_is_audited(hub, key):
    with pytest.raises(OperatorError, match="no model bundle"):
        hub.push_model("v9", ["gw-1"], "alice")
    upload(hub, "v2")
    feed1, feed2 = connect(hub, "gw-1"), connect(hub, "gw-2")
    text = hub.push_model("v2", ["gw-1"], "alice")
    assert "sent now to 1 connected gateway(s): gw-1" in text
    update = feed1.get(1.0)
    assert isinstance(update, ModelUpdate) and update.name == "bundle" and update.version == "v2"
    RuleVerifier(key.public_key()).verify_model(update)  # the hub's signature over these bytes
    assert unpack_bundle(update.content).version == "v2"
    assert feed2.get(0.2) is None  # not a target
    assert status(hub, "gw-1", "v2").state == "sent"
    signature = hub.store.get_model_bundle("v2").signature
    hub.push_model("v2", ["gw-1"], "alice")  # again: the same signature, not a new one
    assert hub.store.get_model_bundle("v2").signature == signature
    kinds = [r.kind for r in hub.store.audit_rows()]
    assert kinds.count("model_push") == 2
    push = json.loads(next(r.payload for r in hub.store.audit_rows() if r.kind == "model_push"))
    assert push["operator"] == "alice" and push["sha256"] == hub.store.get_model_bundle("v2").sha256
    assert AuditLog(hub.store).verify()[0]


def test_acks_are_recorded_refusals_not_resent_until_pushed_again(hub):
    upload(hub, "v2")
    feed = connect(hub, "gw-1")
    hub.push_model("v2", [], "alice")  # every gateway
    assert isinstance(feed.get(1.0), ModelUpdate)
    hub.model_ack("gw-1", ModelAck("bundle", "v2", False, "schema_version: trained on 2, agent computes 1",
                                   {"bundle": SHIPPED.version}))
    refused = status(hub, "gw-1", "v2")
    assert refused.state == "refused" and refused.error.startswith("schema_version:") and refused.acked_at
    feed.close()
    feed = connect(hub, "gw-1")  # reconnect: the refusal is not retried on its own
    assert feed.get(0.3) is None
    hub.push_model("v2", [], "alice")  # the operator asks again: sent again
    assert isinstance(feed.get(1.0), ModelUpdate)
    hub.model_ack("gw-1", ModelAck("bundle", "v2", True, "", {"bundle": "v2", "anomaly": "v2-ae"}))
    assert status(hub, "gw-1", "v2").state == "applied"
    assert hub.store.get_gateway("gw-1").model_versions == {"bundle": "v2", "anomaly": "v2-ae"}
    feed.close()
    feed = connect(hub, "gw-1", running="v2")  # runs the desired model: nothing to send
    assert feed.get(0.3) is None
    acks = [json.loads(r.payload) for r in hub.store.audit_rows() if r.kind == "model_ack"]
    assert [a["applied"] for a in acks] == [False, True] and acks[0]["error"].startswith("schema_version")


def test_a_gateway_that_was_away_gets_the_desired_model_after_its_rules(hub):
    upload(hub, "v2")
    upload(hub, "v3")
    hub.push_model("v2", [], "alice")  # nobody connected
    hub.push_model("v3", ["gw-2"], "alice")  # gw-2 has a target of its own
    assert "sent now to 0" in hub.push_model("v3", ["gw-2"], "alice")
    got = {}
    for gateway in ("gw-1", "gw-2", "gw-new"):
        update = connect(hub, gateway).get(1.0)
        got[gateway] = update.version if isinstance(update, ModelUpdate) else None
    assert got == {"gw-1": "v2", "gw-2": "v3", "gw-new": "v2"}
    hub.push_model("v3", [], "alice")  # "all" replaces the per-gateway targets
    assert hub.store.model_targets() == {"*": "v3"}


def test_health_reports_the_running_model(hub):
    from atlas.link.wire import Health, TelemetryBatch

    connect(hub, "gw-1")
    hub.telemetry("gw-1", TelemetryBatch(1, time.time(), health=Health(time.time(), model_versions={"bundle": "v7"})))
    assert hub.store.get_gateway("gw-1").model_versions == {"bundle": "v7"}


def test_store_refuses_a_known_version_with_other_content(hub):
    upload(hub, "v2")
    upload(hub, "v2")  # the same again: fine, nothing changes
    other = version_of("v2")
    meta = other.meta
    meta["clip"] = 40.0
    other.files["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(StoreError, match="already stored with other content"):
        with hub.store.transaction():
            hub.store.put_model_bundle(bundle_record(other, "bob", time.time()))
    assert len(hub.store.list_model_bundles()) == 1


def test_load_bundle_from_a_folder_or_a_file_with_clear_errors(tmp_path):
    from atlas.link.bundle import pack_bundle

    assert load_bundle(packaged_models_dir()).files == SHIPPED.files
    (tmp_path / "b.bundle").write_bytes(pack_bundle(SHIPPED))
    assert load_bundle(tmp_path / "b.bundle").version == SHIPPED.version
    with pytest.raises(ModelUploadError, match="no such folder"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUploadError, match="meta.json: missing"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(ModelUploadError, match="bad magic"):
        (tmp_path / "x.bundle").write_bytes(b"not a bundle")
        load_bundle(tmp_path / "x.bundle")
    assert issubclass(BundleError, ValueError)


def run(*args, timeout=60):
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_push_and_list(tmp_path, key):
    db = tmp_path / "hub.db"
    hub = Hub(open_store(db), Playbook(), RuleSigner(key), operator_poll=0.05)
    try:
        bad = run("models", "push", tmp_path / "missing", "--db", db)
        assert bad.returncode == 2 and "no such folder or bundle file" in bad.stderr
        bad = run("models", "push", packaged_models_dir(), "--gateway", "not a gateway!", "--db", db)
        assert bad.returncode == 2 and "--gateway" in bad.stderr
        assert "no model bundle has been pushed" in run("models", "list", "--db", db).stdout
        queued = run("models", "push", packaged_models_dir(), "--db", db, "--wait", "0")
        assert queued.returncode == 3 and "no hub is running" in queued.stderr  # hub not started
        hub.start()
        hub.hello("gw-1", GatewayInfo("gw-1", "1.0", {"bundle": "old"}))
        done = run("models", "push", packaged_models_dir(), "--gateway", "gw-1", "--db", db, "--json")
        assert done.returncode == 0, done.stderr
        assert f"model {SHIPPED.version} is the desired model of gw-1" in json.loads(done.stdout)["result"]
        listing = json.loads(run("models", "list", "--json", "--db", db).stdout)
        assert [b["version"] for b in listing["bundles"]] == [SHIPPED.version]
        assert listing["bundles"][0]["signature"]  # signed by the hub, not the CLI
        # the queued push (every gateway) ran when the hub started, then the one for gw-1
        assert listing["targets"] == {"*": SHIPPED.version, "gw-1": SHIPPED.version}
        hub.model_ack("gw-1", ModelAck("bundle", SHIPPED.version, False, "probe: a probe row scored to a non-finite value", {"bundle": "old"}))
        text = run("models", "list", "--db", db).stdout
        assert "1 refused" in text and "gw-1 refused" in text and "probe:" in text
        gateways = run("gateways", "--db", db).stdout
        assert f"old ({SHIPPED.version} refused)" in gateways
        other = version_of(SHIPPED.version)
        meta = other.meta
        meta["clip"] = 1.0
        other.files["meta.json"] = json.dumps(meta).encode()
        from atlas.link.bundle import pack_bundle
        (tmp_path / "other.bundle").write_bytes(pack_bundle(other))
        clash = run("models", "push", tmp_path / "other.bundle", "--db", db)
        assert clash.returncode == 2 and "already stored with other content" in clash.stderr
        # a stored version by name: pushed again (how an operator rolls back)
        again = run("models", "push", SHIPPED.version, "--gateway", "gw-2", "--db", db, "--json")
        assert again.returncode == 0 and "desired model of gw-2" in json.loads(again.stdout)["result"]
        assert "never connected" in again.stderr
        nope = run("models", "push", "no-such-version", "--db", db)
        assert nope.returncode == 2 and "nor a bundle version stored" in nope.stderr
    finally:
        hub.close()
        hub.store.close()
