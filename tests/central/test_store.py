"""The SQLite store: migrations (fresh and old databases), transactions, the records."""
from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from atlas.link.rules import Rule
from atlas.link.wire import DeviceSummary, GatewayInfo, Health
from atlas.central.store import (RULE_SENT, DecisionRecord, HubIncident, RuleRecord, StoreError,
                                 open_store)
from atlas.central.store.migrations import LATEST_VERSION, SQLITE_MIGRATIONS
from atlas.central.store.sqlite import SQLiteStore

TABLES = {"schema_version", "gateways", "incidents", "incident_reports", "decisions",
          "approvals", "rules", "audit", "telemetry", "operator_commands", "hub_state"}


def tables(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                         "AND name NOT LIKE 'sqlite_%'")}
    finally:
        db.close()


def incident(iid="i-1", src="10.0.0.9", kind="port_scan", last=100.0) -> HubIncident:
    return HubIncident(id=iid, kind=kind, src_ip=src, device=src, dst_ip="10.0.0.2",
                       first_seen=last - 10, last_seen=last, score=0.9, packets=5, state="open",
                       created_at=last)


def decision(did="d-1", iid="i-1") -> DecisionRecord:
    return DecisionRecord(id=did, incident=iid, policy="playbook", action="quarantine",
                          target="10.0.0.9", params={}, ttl=60.0, reason="test",
                          gateways=["gw1"], requires_approval=False, shadow=False,
                          state="active", created_at=100.0, expires_at=160.0)


def rule_record(rid="r-1", did="d-1", gateway="gw1", state="active", expires=160.0) -> RuleRecord:
    rule = Rule(id=rid, action="rate_limit", target="10.0.0.9", expires_at=expires,
                reason="test", decision_id=did, params={"pps": 20})
    return RuleRecord(rule=rule, gateway=gateway, state=state, signature=b"\x01" * 64,
                      created_at=100.0)


def test_fresh_database_gets_every_migration_once(tmp_path):
    path = tmp_path / "hub.db"
    store = open_store(path)
    assert store.schema_version() == LATEST_VERSION == len(SQLITE_MIGRATIONS)
    assert TABLES <= tables(path)
    assert store.migrate() == []  # idempotent: nothing left to apply
    store.close()
    again = open_store(path)  # reopening applies nothing and keeps the version
    assert again.schema_version() == LATEST_VERSION
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall()
    assert sorted(r[0] for r in rows) == list(range(1, LATEST_VERSION + 1))


def test_old_database_is_brought_forward_without_losing_rows(tmp_path):
    path = tmp_path / "hub.db"
    old = SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:1])  # as the first release left it
    assert old.schema_version() == 1
    assert "telemetry" not in tables(path) and "operator_commands" not in tables(path)
    with old.transaction():
        # rows in the first release's columns (today's code writes later columns too)
        old._exec("INSERT INTO gateways (id, first_seen, last_seen, software_version, board, "
                  "connections) VALUES ('gw1', 50.0, 50.0, '0.0.9', 'pi4', 1)")
        old.record_batch("gw1", 41, 60.0, None)
        old.put_incident(incident())
        d = decision()
        old._exec("INSERT INTO decisions (id, incident, policy, action, target, params, ttl, "
                  "reason, gateways, requires_approval, shadow, state, created_at, expires_at) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (d.id, d.incident, d.policy, d.action, d.target, json.dumps(d.params), d.ttl,
                   d.reason, json.dumps(d.gateways), int(d.requires_approval), int(d.shadow),
                   d.state, d.created_at, d.expires_at))
        old.put_rule(rule_record())
    old.close()

    store = open_store(path)
    assert store.schema_version() == LATEST_VERSION
    gw = store.get_gateway("gw1")
    assert (gw.software_version, gw.board, gw.last_seq) == ("0.0.9", "pi4", 41)
    assert store.get_rule("r-1").rule.params == {"pps": 20}
    assert store.get_decision("d-1").state == "active"
    # the tables of later migrations work
    store.store_devices("gw1", 42, 1.0, 2.0, [DeviceSummary("cam-1", "10.0.0.5", 1.0, 2.0, 3,
                                                             400, [0.25])])
    assert store.list_devices("gw1")[0]["packets"] == 3
    assert store.enqueue_command("revoke", "r-1", "alice", 70.0) == 1


def test_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "hub.db"
    open_store(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)",
               (LATEST_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST_VERSION + 1} is newer"):
        open_store(path)
    with pytest.raises(StoreError, match="newer"):
        open_store(path, readonly=True)


def test_readonly_and_no_migrate_opens_refuse_an_old_schema(tmp_path):
    path = tmp_path / "hub.db"
    SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:2]).close()
    with pytest.raises(StoreError, match="start `atlas-central serve` once"):
        open_store(path, readonly=True)
    with pytest.raises(StoreError, match="schema version 2"):
        open_store(path, migrate=False)
    assert SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:2]).schema_version() == 2


def test_readonly_store_reads_but_cannot_write(tmp_path):
    path = tmp_path / "hub.db"
    writer = open_store(path)
    with writer.transaction():
        writer.record_hello("gw1", GatewayInfo("gw1", "1.0"), 10.0)
    reader = open_store(path, readonly=True)
    assert [g.id for g in reader.list_gateways()] == ["gw1"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.record_hello("gw2", GatewayInfo("gw2", "1.0"), 11.0)


def test_missing_or_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="no such database"):
        open_store(tmp_path / "absent.db", readonly=True)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "no-such-dir" / "hub.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a hub database|cannot open"):
        open_store(junk)
    with pytest.raises(StoreError, match="PostgreSQL is not implemented"):
        open_store("postgresql://atlas:secret@db.example/atlas")


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = open_store(tmp_path / "hub.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put_incident(incident())
            with store.transaction():  # nested: joins the outer one
                store.put_decision(decision())
            raise RuntimeError("boom")
    assert store.get_incident("i-1") is None
    assert store.get_decision("d-1") is None
    with store.transaction():  # and the store is still usable
        store.put_incident(incident())
    assert store.get_incident("i-1").src_ip == "10.0.0.9"


def test_audit_rows_cannot_be_updated_or_deleted_through_sql(tmp_path):
    from atlas.central.audit import AuditLog

    store = open_store(tmp_path / "hub.db")
    with store.transaction():
        AuditLog(store).append("decision", {"x": 1}, 1.0)
    db = sqlite3.connect(tmp_path / "hub.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET payload = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")


def test_seq_only_moves_forward_and_health_is_kept(tmp_path):
    store = open_store(tmp_path / "hub.db")
    store.record_batch("gw1", 5, 10.0, Health(time=10.0, packets_per_s=123.0))
    store.record_batch("gw1", 3, 11.0, None)  # an older seq never lowers it
    gw = store.get_gateway("gw1")
    assert gw.last_seq == 5
    assert gw.health["packets_per_s"] == 123.0  # a batch without health keeps the last one


def test_device_summaries_are_kept_per_batch_and_summed(tmp_path):
    store = open_store(tmp_path / "hub.db")
    store.store_devices("gw1", 1, 20.0, 100.0, [
        DeviceSummary("m-1", "10.0.0.7", 10.0, 20.0, 5, 500, [0.5, 1.5]),
        DeviceSummary("cam-é", "10.0.0.8", 10.0, 20.0, 1, 60, [])])
    store.store_devices("gw1", 2, 30.0, 101.0,
                        [DeviceSummary("m-1", "10.0.0.7", 20.0, 30.0, 7, 700, [2.0, -1.0])])
    store.store_devices("gw1", 2, 30.0, 101.0,  # the same seq again: kept once
                        [DeviceSummary("m-1", "10.0.0.7", 20.0, 30.0, 7, 700, [2.0, -1.0])])
    store.store_devices("gw2", 1, 30.0, 102.0,
                        [DeviceSummary("m-1", "10.9.0.7", 20.0, 30.0, 1, 10, [])])
    rows = {(d["gateway"], d["device"]): d for d in store.list_devices()}
    m1 = rows[("gw1", "m-1")]
    assert (m1["packets"], m1["bytes"], m1["first_seen"], m1["last_seen"], m1["batches"]) == \
        (12, 1200, 10.0, 30.0, 2)
    assert m1["features"] == [2.0, -1.0]  # the latest
    assert rows[("gw1", "cam-é")]["features"] == []
    assert rows[("gw2", "m-1")]["address"] == "10.9.0.7"  # same name behind another gateway
    assert [s.device for _, _, s in store.device_summaries("gw2")] == ["m-1"]
    assert [seq for _, seq, _ in store.device_summaries(since=100.5)] == [2, 1]
    assert store.prune_telemetry(before=101.0) == 1  # the batch received at 100
    assert {(g, seq) for g, seq, _ in store.device_summaries()} == {("gw1", 2), ("gw2", 1)}


def test_device_summary_pack_round_trip_and_corruption():
    from atlas.central.store.codec import CodecError, pack_devices, unpack_devices

    devices = [DeviceSummary(f"dev-{i}", f"10.0.0.{i}", 1.5, 2.5, i, 10 * i,
                             [float(i), -0.25, 1e6], schema_version=2) for i in range(50)]
    assert unpack_devices(pack_devices(devices)) == devices
    blob = pack_devices(devices)
    for bad, message in ((b"X" + blob[1:], "not a device-summary pack"),
                         (blob[:1] + b"\x09" + blob[2:], "version 9"),
                         (blob[:40], "corrupt|truncated")):
        with pytest.raises(CodecError, match=message):
            unpack_devices(bad)


def test_rules_queries(tmp_path):
    store = open_store(tmp_path / "hub.db")
    store.put_incident(incident())
    store.put_decision(decision())
    store.put_rule(rule_record("r-1", expires=160.0))
    store.put_rule(rule_record("r-2", expires=300.0))
    store.put_rule(rule_record("r-3", gateway="gw2", state="shadow", expires=150.0))
    store.put_rule(rule_record("r-4", state="revoked", expires=100.0))
    assert [r.rule.id for r in store.rules_for_gateway("gw1", ("active",))] == ["r-1", "r-2"]
    assert [r.rule.id for r in store.rules_due(200.0)] == ["r-3", "r-1"]  # by expiry
    store.set_rule_ack("r-1", False, "nft: no such table", 120.0)
    got = store.get_rule("r-1")
    assert (got.ack_applied, got.ack_error, got.signature) == (False, "nft: no such table",
                                                               b"\x01" * 64)
    # the gateway refused it: refused, not in force; still sent to the gateway and still due
    assert got.state == "refused"
    assert (store.counts()["rules_active"], store.counts()["rules_refused"]) == (1, 1)
    assert [r.rule.id for r in store.rules_for_gateway("gw1", RULE_SENT)] == ["r-1", "r-2"]
    assert [r.rule.id for r in store.rules_due(200.0)] == ["r-3", "r-1"]
    store.set_rule_ack("r-1", True, "", 121.0)  # applied after all (a backend came back)
    assert store.get_rule("r-1").state == "active"
    store.set_rule_ack("r-1", False, "", 122.0)  # acknowledges a withdrawal: no change
    assert store.get_rule("r-1").state == "active"
    store.set_rule_ack("r-4", False, "signature: does not match", 123.0)  # ended stays ended
    assert store.get_rule("r-4").state == "revoked"


def test_rules_refused_before_the_refused_state_existed_are_migrated(tmp_path):
    path = tmp_path / "hub.db"
    old = SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:4])
    with old.transaction():
        old.put_incident(incident())
        old._exec("INSERT INTO decisions (id, incident, policy, action, target, params, ttl, "
                  "reason, gateways, requires_approval, shadow, state, created_at) VALUES "
                  "('d-1', 'i-1', 'playbook', 'quarantine', '10.0.0.9', '{}', 60, 'old', "
                  "'[\"gw1\"]', 0, 0, 'active', 100.0)")
        for rid in ("r-1", "r-2", "r-3"):
            old.put_rule(rule_record(rid))
    old.close()
    db = sqlite3.connect(path)  # as the old hub recorded acks: state left 'active'
    db.execute("UPDATE rules SET ack_applied = 0, ack_error = 'target: loopback' WHERE id = 'r-1'")
    db.execute("UPDATE rules SET ack_applied = 1 WHERE id = 'r-2'")
    db.commit()
    db.close()
    store = open_store(path)
    assert [store.get_rule(r).state for r in ("r-1", "r-2", "r-3")] == ["refused", "active",
                                                                        "active"]


def test_incident_upsert_keeps_foreign_keys_intact(tmp_path):
    # put_incident on an existing id must update in place: decisions point at it
    store = open_store(tmp_path / "hub.db")
    store.put_incident(incident())
    store.put_decision(decision())
    changed = incident(last=500.0)
    store.put_incident(changed)
    assert store.get_incident("i-1").last_seen == 500.0
    assert store.find_incident("10.0.0.9", "port_scan", since=400.0).id == "i-1"
    assert store.find_incident("10.0.0.9", "port_scan", since=501.0) is None
    assert store.find_incident("10.0.0.9", "mqtt_flood", since=0.0) is None


def test_reader_is_not_blocked_by_a_writer_transaction(tmp_path):
    path = tmp_path / "hub.db"
    writer = open_store(path)
    writer.put_incident(incident())
    reader = open_store(path, readonly=True)
    inside = threading.Event()
    release = threading.Event()

    def hold():
        with writer.transaction():
            writer.put_incident(incident("i-2"))
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(5)
        # WAL: the reader sees the last commit while the write is still open
        assert [i.id for i in reader.list_incidents()] == ["i-1"]
    finally:
        release.set()
        t.join()
    assert {i.id for i in reader.list_incidents()} == {"i-1", "i-2"}


@pytest.mark.parametrize("compress", [True, False])
def test_wire_summaries_are_stored_as_received_and_read_back(tmp_path, compress):
    """Ingest hands the store the gateway's payload (PackedDevices): kept byte for byte, never
    decoded on the way in, and read back as the same summaries a full decode gives."""
    from atlas.link.wire import TelemetryBatch
    from atlas.link import serde
    from atlas.central.store.codec import CodecError, unpack_devices

    devices = [DeviceSummary(f"cam-é{i}", f"10.0.0.{i}", 1.5, 2.5, i, 10 * i, [0.1 * i, -3.0, 7.25])
               for i in range(50)]
    env = serde.telemetry_to_envelope(TelemetryBatch(7, 3.0, devices=devices, health=Health(3.0)),
                                      compress=compress)
    packed = serde.telemetry_from_envelope(env, packed_devices=True)
    full = serde.telemetry_from_envelope(env)
    assert isinstance(packed.devices, serde.PackedDevices) and len(packed.devices) == 50
    assert packed.health == full.health and packed.seq == 7
    store = open_store(tmp_path / "hub.db")
    store.store_devices("gw1", 7, 3.0, 100.0, packed.devices)
    assert packed.devices._items is None  # stored without being decoded
    body = bytes(store._one("SELECT body FROM telemetry WHERE gateway = 'gw1'")[0])
    assert body[:1] == b"W" and body[3:] == env.payload  # as received
    assert [s for _, _, s in store.device_summaries("gw1")] == full.devices
    assert packed.devices == full.devices and full.devices == packed.devices
    rows = {d["device"]: d for d in store.list_devices("gw1")}
    assert rows["cam-é3"]["features"] == full.devices[3].features and rows["cam-é3"]["packets"] == 3
    with pytest.raises(CodecError, match="corrupt wire"):
        unpack_devices(body[:3] + b"\x00garbage")


def test_migration_6_keeps_gateways_and_decisions_and_adds_places_and_campaigns(tmp_path):
    from atlas.central.store import CampaignLink, CampaignRecord

    path = tmp_path / "hub.db"
    old = SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:4])
    assert old.schema_version() == 4 and "campaigns" not in tables(path)
    with old.transaction():
        old._exec("INSERT INTO gateways (id, first_seen, last_seen, board) "
                  "VALUES ('gw1', 50.0, 50.0, 'pi4')")
        old.put_incident(incident())
        old.put_incident(incident("i-2", src="10.0.0.10", last=120.0))
        old._exec("INSERT INTO decisions (id, incident, policy, action, target, params, ttl, "
                  "reason, gateways, requires_approval, shadow, state, created_at) VALUES "
                  "('d-1', 'i-1', 'playbook', 'quarantine', '10.0.0.9', '{}', 60, 'old', "
                  "'[\"gw1\"]', 0, 0, 'active', 100.0)")
    old.close()

    store = open_store(path)
    assert store.schema_version() == LATEST_VERSION >= 6
    gw = store.get_gateway("gw1")
    assert (gw.board, gw.domain, gw.district, gw.subnet) == ("pi4", "", "", "")
    assert (store.get_decision("d-1").reason, store.get_decision("d-1").campaign) == ("old", "")
    # the hello now fills the place; campaigns store and move incidents
    with store.transaction():
        store.record_hello("gw1", GatewayInfo("gw1", "0.2", domain="energy", district="d01",
                                              subnet="10.2.0.0/16"), 200.0)
    assert (store.get_gateway("gw1").domain, store.get_gateway("gw1").subnet) == \
        ("energy", "10.2.0.0/16")
    link = CampaignLink("i-1", "i-2", "same_attacker", "city", "10.0.0.9", ("gw1", "gw2"))
    with store.transaction():
        store.put_campaign(CampaignRecord("c-1", "rules", "city", 90.0, 120.0, 200.0, 200.0,
                                          incidents=["i-1", "i-2"], gateways=["gw1", "gw2"],
                                          domains=["energy"], attackers=["10.0.0.9"],
                                          links=[link]))
        store.put_campaign(CampaignRecord("c-2", "rules", "gateway", 90.0, 120.0, 201.0, 201.0,
                                          incidents=["i-2"]))
    c1 = store.get_campaign("c-1")
    assert (c1.incidents, c1.links, c1.domains) == (["i-1"], [link], ["energy"])
    assert store.campaign_of("i-2").id == "c-2"
    assert store.counts()["campaigns"] == 2
    assert [c.id for c in store.list_campaigns()] == ["c-1", "c-2"]
