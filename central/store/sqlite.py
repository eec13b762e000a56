"""SQLite store: one file, WAL journal, migrations applied at open.

One connection per store, guarded by a lock: SQLite serialises writers anyway, and the hub
keeps its own lock around compound operations. WAL lets the operator CLI read (a separate
read-only connection, another process) while the hub writes. `synchronous=FULL` by default: a
telemetry seq the hub has acknowledged must survive a power cut, or the agent would drop a
spool the hub never really kept (the hub's group commit keeps that affordable).
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from atlas.link.rules import Rule
from atlas.link.wire import DeviceSummary, GatewayInfo, Health
from atlas.central.store import (AuditRow, CampaignLink, CampaignRecord, DecisionRecord, GatewayRecord, HubIncident, HubState,
                                 IncidentReport, ModelBundleRecord, ModelStatus, OperatorCommand,
                                 RuleRecord, Store, StoreError)
from atlas.central.store.codec import pack_any, unpack_devices
from atlas.central.store.migrations import LATEST_VERSION, SQLITE_MIGRATIONS, Migration


def _dumps(value: Any) -> str:
    # default=repr: evidence from a gateway may hold odd values; store them, never crash
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


SYNC_MODES = ("full", "normal")


def _upsert_sql(table: str, columns: str, key: str) -> str:
    """INSERT ... ON CONFLICT DO UPDATE (not INSERT OR REPLACE, which deletes the row first
    and would trip the foreign keys that point at it); the same text works on PostgreSQL."""
    names = [c.strip() for c in columns.split(",")]
    keys = {k.strip() for k in key.split(",")}
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in keys)
    return (f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


class SQLiteStore(Store):
    def __init__(self, path: Path, readonly: bool = False, migrate: bool = True,
                 migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS, sync: str = "full"):
        """readonly: for reporting (another process may be writing). migrate=False: use the
        schema as it is and refuse any other version (the operator CLI must never migrate a
        database under a running hub). sync: "full" (default) fsyncs every commit, so what
        the hub acknowledged survives a power cut; "normal" survives a crash of the hub
        process but may lose the last commits to a power cut, for more throughput."""
        if sync not in SYNC_MODES:
            raise StoreError(f"sync must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no such database (has the hub ever run?)")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._db = self._connect(uri, uri=True)
        else:
            if not self.path.parent.is_dir():
                raise StoreError(f"{self.path}: folder {str(self.path.parent)!r} does not exist")
            self._db = self._connect(str(self.path))
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a hub database: {exc}") from None
        if readonly or not migrate:
            self._check_version()
        else:
            self.migrate(migrations)

    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (transaction())
            db = sqlite3.connect(target, uri=uri, timeout=10.0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA busy_timeout=10000")
            return db
        except sqlite3.Error as exc:
            raise StoreError(f"{target}: cannot open database: {exc}") from None

    # -- schema ---------------------------------------------------------------------------
    def _version_or_zero(self) -> int:
        try:
            has = self._db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                   "AND name='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a hub database: {exc}") from None
        if not has:
            return 0
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def schema_version(self) -> int:
        with self._lock:
            return self._version_or_zero()

    def _check_version(self) -> None:
        version = self._version_or_zero()
        if version > LATEST_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this "
                             f"atlas-central knows ({LATEST_VERSION}); upgrade atlas-central")
        if version < LATEST_VERSION:
            raise StoreError(f"{self.path}: schema version {version}, this atlas-central needs "
                             f"{LATEST_VERSION}; start `atlas-central serve` once to migrate it")

    def migrate(self, migrations: tuple[Migration, ...] = SQLITE_MIGRATIONS) -> list[int]:
        """Apply the migrations this file lacks, each in its own transaction. Idempotent."""
        applied = []
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER "
                             "PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)")
            known = max((m.version for m in migrations), default=0)
            current = self._version_or_zero()
            if current > known:
                raise StoreError(f"{self.path}: schema version {current} is newer than this "
                                 f"atlas-central knows ({known}); upgrade atlas-central")
            for migration in migrations:
                if migration.version <= current:
                    continue
                with self.transaction():
                    # re-check inside the write lock: another process may have just migrated
                    if self._version_or_zero() >= migration.version:
                        continue
                    for statement in migration.statements:
                        self._db.execute(statement)
                    self._db.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                     (migration.version, migration.description, time.time()))
                applied.append(migration.version)
        return applied

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                # nested: a savepoint, so a failing part rolls back alone (the hub commits
                # several gateways' batches in one transaction, one savepoint each)
                name = f"sp{self._depth}"
                self._db.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                else:
                    self._db.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:  # never leave a half-open transaction behind
                    self._db.execute("ROLLBACK")
                raise

    def _exec(self, sql: str, args: tuple | dict = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple | dict = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple | dict = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- gateways and telemetry -----------------------------------------------------------
    def record_hello(self, gateway_id: str, info: GatewayInfo, now: float) -> None:
        self._exec(
            """INSERT INTO gateways (id, first_seen, last_seen, software_version, model_versions,
                   capabilities, board, connections, domain, district, subnet)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen,
                   software_version = excluded.software_version,
                   model_versions = excluded.model_versions,
                   capabilities = excluded.capabilities, board = excluded.board,
                   connections = 1, domain = excluded.domain, district = excluded.district,
                   subnet = excluded.subnet""",
            (gateway_id, now, now, info.software_version, _dumps(info.model_versions),
             _dumps(list(info.capabilities)), info.board, info.domain, info.district,
             info.subnet))

    def record_disconnect(self, gateway_id: str, now: float) -> None:
        # The servicer keeps one stream per gateway and reports only the current one's end.
        self._exec("UPDATE gateways SET connections = 0, last_seen = ? WHERE id = ?",
                   (now, gateway_id))

    def reset_connections(self) -> None:
        self._exec("UPDATE gateways SET connections = 0")

    def get_seq(self, gateway_id: str) -> int:
        row = self._one("SELECT last_seq FROM gateways WHERE id = ?", (gateway_id,))
        return int(row[0]) if row else 0

    def record_batch(self, gateway_id: str, seq: int, now: float, health: Health | None) -> None:
        health_json = _dumps(vars(health)) if health is not None else None
        self._exec(
            """INSERT INTO gateways (id, first_seen, last_seen, health, last_seq)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen,
                   last_seq = MAX(gateways.last_seq, excluded.last_seq),
                   health = COALESCE(excluded.health, gateways.health)""",
            (gateway_id, now, now, health_json, seq))

    def store_devices(self, gateway_id: str, seq: int, time: float, received_at: float,
                      devices: list[DeviceSummary]) -> None:
        if not devices:
            return
        self._exec("INSERT INTO telemetry (gateway, seq, time, received_at, devices, body) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, seq) DO NOTHING",
                   (gateway_id, seq, time, received_at, len(devices), pack_any(devices)))

    def device_summaries(self, gateway_id: str | None = None, since: float = 0.0
                         ) -> Iterator[tuple[str, int, DeviceSummary]]:
        sql = ("SELECT received_at, gateway, seq, body FROM telemetry WHERE received_at >= ? "
               "AND (received_at, gateway, seq) > (?, ?, ?)")
        if gateway_id:
            sql += " AND gateway = ?"
        sql += " ORDER BY received_at, gateway, seq LIMIT 200"
        last: tuple = (-1e308, "", -1)
        while True:  # in pages, so a long history never sits in memory or holds the lock
            args = (since,) + last + ((gateway_id,) if gateway_id else ())
            rows = self._all(sql, args)
            if not rows:
                return
            for _, gateway, seq, body in rows:
                for summary in unpack_devices(body):
                    yield gateway, seq, summary
            last = tuple(rows[-1][:3])

    def prune_telemetry(self, before: float, limit: int = 10_000) -> int:
        cur = self._exec("DELETE FROM telemetry WHERE rowid IN (SELECT rowid FROM telemetry "
                         "WHERE received_at < ? LIMIT ?)", (before, limit))
        return cur.rowcount

    _GATEWAY_COLUMNS = ("id, first_seen, last_seen, software_version, model_versions, "
                        "capabilities, board, health, connections, last_seq, domain, district, "
                        "subnet")

    @staticmethod
    def _gateway(row: tuple) -> GatewayRecord:
        return GatewayRecord(id=row[0], first_seen=row[1], last_seen=row[2],
                             software_version=row[3], model_versions=json.loads(row[4]),
                             capabilities=json.loads(row[5]), board=row[6],
                             health=json.loads(row[7]) if row[7] else None,
                             connections=row[8], last_seq=row[9], domain=row[10],
                             district=row[11], subnet=row[12])

    def get_gateway(self, gateway_id: str) -> GatewayRecord | None:
        row = self._one(f"SELECT {self._GATEWAY_COLUMNS} FROM gateways WHERE id = ?",
                        (gateway_id,))
        return self._gateway(row) if row else None

    def list_gateways(self) -> list[GatewayRecord]:
        return [self._gateway(r) for r in
                self._all(f"SELECT {self._GATEWAY_COLUMNS} FROM gateways ORDER BY id")]

    # -- incidents ------------------------------------------------------------------------
    _REPORT_COLUMNS = ("gateway, agent_id, incident, kind, src_ip, dst_ip, device, time, "
                       "last_seen, score, packets, state, model_version, evidence, received_at")

    def get_report(self, gateway_id: str, agent_id: str) -> IncidentReport | None:
        row = self._one(f"SELECT {self._REPORT_COLUMNS} FROM incident_reports "
                        "WHERE gateway = ? AND agent_id = ?", (gateway_id, agent_id))
        if row is None:
            return None
        values = list(row)
        values[13] = json.loads(values[13])
        return IncidentReport(*values)

    def put_report(self, report: IncidentReport) -> None:
        self._exec(_upsert_sql("incident_reports", self._REPORT_COLUMNS, "gateway, agent_id"),
                   (report.gateway, report.agent_id, report.incident, report.kind,
                    report.src_ip, report.dst_ip, report.device, report.time,
                    report.last_seen, report.score, report.packets, report.state,
                    report.model_version, _dumps(report.evidence), report.received_at))

    _INCIDENT_COLUMNS = ("id, kind, src_ip, device, dst_ip, first_seen, last_seen, score, "
                         "packets, state, created_at")

    def _incident(self, row: tuple) -> HubIncident:
        incident = HubIncident(*row)
        incident.gateways = self.incident_gateways(incident.id)
        return incident

    def find_incident(self, src_ip: str, kind: str, since: float) -> HubIncident | None:
        row = self._one(f"SELECT {self._INCIDENT_COLUMNS} FROM incidents WHERE src_ip = ? "
                        "AND kind = ? AND last_seen >= ? ORDER BY last_seen DESC LIMIT 1",
                        (src_ip, kind, since))
        return self._incident(row) if row else None

    def put_incident(self, incident: HubIncident) -> None:
        self._exec(_upsert_sql("incidents", self._INCIDENT_COLUMNS, "id"),
                   (incident.id, incident.kind, incident.src_ip, incident.device,
                    incident.dst_ip, incident.first_seen, incident.last_seen, incident.score,
                    incident.packets, incident.state, incident.created_at))

    def get_incident(self, incident_id: str) -> HubIncident | None:
        row = self._one(f"SELECT {self._INCIDENT_COLUMNS} FROM incidents WHERE id = ?",
                        (incident_id,))
        return self._incident(row) if row else None

    def incident_gateways(self, incident_id: str) -> list[str]:
        # in the order the gateways first reported it
        rows = self._all("SELECT gateway FROM incident_reports WHERE incident = ? "
                         "GROUP BY gateway ORDER BY MIN(received_at), gateway", (incident_id,))
        return [r[0] for r in rows]

    def count_open_reports(self, incident_id: str) -> int:
        row = self._one("SELECT COUNT(*) FROM incident_reports WHERE incident = ? "
                        "AND state = 'open'", (incident_id,))
        return int(row[0])

    def list_incidents(self, limit: int = 100, state: str | None = None) -> list[HubIncident]:
        if state:
            rows = self._all(f"SELECT {self._INCIDENT_COLUMNS} FROM incidents WHERE state = ? "
                             "ORDER BY last_seen DESC LIMIT ?", (state, limit))
        else:
            rows = self._all(f"SELECT {self._INCIDENT_COLUMNS} FROM incidents "
                             "ORDER BY last_seen DESC LIMIT ?", (limit,))
        return [self._incident(r) for r in rows]

    def reports_since(self, since: float, limit: int = 50_000) -> list[IncidentReport]:
        rows = self._all(f"SELECT {self._REPORT_COLUMNS} FROM incident_reports "
                         "WHERE last_seen >= ? ORDER BY time, gateway, agent_id LIMIT ?",
                         (since, limit))
        out = []
        for row in rows:
            values = list(row)
            values[13] = json.loads(values[13])
            out.append(IncidentReport(*values))
        return out

    # -- campaigns ------------------------------------------------------------------------
    _CAMPAIGN_COLUMNS = ("id, engine, scope, first_seen, last_seen, created_at, updated_at, "
                         "state, merged_into, gateways, domains, attackers")

    def put_campaign(self, c: CampaignRecord) -> None:
        with self.transaction():
            self._exec(_upsert_sql("campaigns", self._CAMPAIGN_COLUMNS, "id"),
                       (c.id, c.engine, c.scope, c.first_seen, c.last_seen, c.created_at,
                        c.updated_at, c.state, c.merged_into, _dumps(list(c.gateways)),
                        _dumps(list(c.domains)), _dumps(list(c.attackers))))
            self._exec("DELETE FROM campaign_incidents WHERE campaign = ?", (c.id,))
            self._exec("DELETE FROM campaign_links WHERE campaign = ?", (c.id,))
            for incident in c.incidents:
                self._exec("INSERT INTO campaign_incidents (incident, campaign) VALUES (?, ?) "
                           "ON CONFLICT (incident) DO UPDATE SET campaign = excluded.campaign",
                           (incident, c.id))
            for lk in c.links:
                self._exec("INSERT INTO campaign_links (campaign, earlier, later, reason, scope, "
                           "detail, earlier_gateway, later_gateway, relations) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (c.id, lk.earlier, lk.later, lk.reason, lk.scope, lk.detail,
                            lk.gateways[0], lk.gateways[1], _dumps(list(lk.relations))))

    def _campaign(self, row: tuple) -> CampaignRecord:
        names = [n.strip() for n in self._CAMPAIGN_COLUMNS.split(",")]
        v = dict(zip(names, row))
        for name in ("gateways", "domains", "attackers"):
            v[name] = json.loads(v[name])
        c = CampaignRecord(**v)
        c.incidents = [r[0] for r in self._all(
            "SELECT ci.incident FROM campaign_incidents ci JOIN incidents i ON i.id = ci.incident "
            "WHERE ci.campaign = ? ORDER BY i.first_seen, i.id", (c.id,))]
        c.links = [CampaignLink(r[0], r[1], r[2], r[3], r[4], (r[5], r[6]), json.loads(r[7]))
                   for r in self._all(
            "SELECT earlier, later, reason, scope, detail, earlier_gateway, later_gateway, relations "
            "FROM campaign_links WHERE campaign = ? ORDER BY rowid", (c.id,))]
        return c

    def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        with self._lock:
            row = self._one(f"SELECT {self._CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?",
                            (campaign_id,))
            return self._campaign(row) if row else None

    def campaign_of(self, incident_id: str) -> CampaignRecord | None:
        with self._lock:
            row = self._one("SELECT campaign FROM campaign_incidents WHERE incident = ?",
                            (incident_id,))
            return self.get_campaign(row[0]) if row else None

    def list_campaigns(self, limit: int = 100, state: str | None = "open"
                       ) -> list[CampaignRecord]:
        with self._lock:
            sql = f"SELECT {self._CAMPAIGN_COLUMNS} FROM campaigns"
            args: tuple = ()
            if state:
                sql, args = sql + " WHERE state = ?", (state,)
            rows = self._all(sql + " ORDER BY last_seen DESC, id LIMIT ?", args + (limit,))
            return [self._campaign(r) for r in rows]

    # -- decisions ------------------------------------------------------------------------
    _DECISION_COLUMNS = ("id, incident, policy, action, target, params, ttl, reason, gateways, "
                         "requires_approval, shadow, state, created_at, expires_at, approved_by, "
                         "approved_at, campaign")

    @staticmethod
    def _decision(row: tuple) -> DecisionRecord:
        v = list(row)
        v[5] = json.loads(v[5])
        v[8] = json.loads(v[8])
        v[9] = bool(v[9])
        v[10] = bool(v[10])
        return DecisionRecord(*v)

    def put_decision(self, d: DecisionRecord) -> None:
        self._exec(_upsert_sql("decisions", self._DECISION_COLUMNS, "id"),
                   (d.id, d.incident, d.policy, d.action, d.target, _dumps(d.params), d.ttl,
                    d.reason, _dumps(d.gateways), int(d.requires_approval), int(d.shadow),
                    d.state, d.created_at, d.expires_at, d.approved_by, d.approved_at,
                    d.campaign))

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        row = self._one(f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE id = ?",
                        (decision_id,))
        return self._decision(row) if row else None

    def decisions_for_incident(self, incident_id: str) -> list[DecisionRecord]:
        return [self._decision(r) for r in self._all(
            f"SELECT {self._DECISION_COLUMNS} FROM decisions WHERE incident = ? "
            "ORDER BY created_at, rowid", (incident_id,))]

    def list_decisions(self, states: tuple[str, ...] | None = None,
                       limit: int = 100) -> list[DecisionRecord]:
        sql = f"SELECT {self._DECISION_COLUMNS} FROM decisions"
        args: tuple = ()
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(states)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [self._decision(r) for r in self._all(sql, args + (limit,))]

    def add_approval(self, decision_id: str, operator: str, verdict: str, now: float) -> None:
        self._exec("INSERT INTO approvals (decision, operator, verdict, time) VALUES (?, ?, ?, ?)",
                   (decision_id, operator, verdict, now))

    # -- rules ----------------------------------------------------------------------------
    _RULE_COLUMNS = ("id, gateway, decision, action, target, params, reason, expires_at, shadow, "
                     "state, signature, created_at, ended_at, ack_applied, ack_error, ack_time")

    @staticmethod
    def _rule(row: tuple) -> RuleRecord:
        rule = Rule(id=row[0], action=row[3], target=row[4], expires_at=row[7], reason=row[6],
                    decision_id=row[2], shadow=bool(row[8]), params=json.loads(row[5]))
        return RuleRecord(rule=rule, gateway=row[1], state=row[9], signature=bytes(row[10]),
                          created_at=row[11], ended_at=row[12],
                          ack_applied=None if row[13] is None else bool(row[13]),
                          ack_error=row[14], ack_time=row[15])

    def put_rule(self, r: RuleRecord) -> None:
        rule = r.rule
        self._exec(_upsert_sql("rules", self._RULE_COLUMNS, "id"),
                   (rule.id, r.gateway, rule.decision_id, rule.action, rule.target,
                    _dumps(rule.params), rule.reason, rule.expires_at, int(rule.shadow), r.state,
                    r.signature, r.created_at, r.ended_at,
                    None if r.ack_applied is None else int(r.ack_applied), r.ack_error,
                    r.ack_time))

    def get_rule(self, rule_id: str) -> RuleRecord | None:
        row = self._one(f"SELECT {self._RULE_COLUMNS} FROM rules WHERE id = ?", (rule_id,))
        return self._rule(row) if row else None

    def rules_for_gateway(self, gateway_id: str, states: tuple[str, ...]) -> list[RuleRecord]:
        return [self._rule(r) for r in self._all(
            f"SELECT {self._RULE_COLUMNS} FROM rules WHERE gateway = ? AND state IN "
            f"({','.join('?' * len(states))}) ORDER BY created_at, rowid",
            (gateway_id,) + tuple(states))]

    def rules_for_decision(self, decision_id: str) -> list[RuleRecord]:
        return [self._rule(r) for r in self._all(
            f"SELECT {self._RULE_COLUMNS} FROM rules WHERE decision = ? ORDER BY created_at, rowid",
            (decision_id,))]

    def rules_due(self, now: float) -> list[RuleRecord]:
        return [self._rule(r) for r in self._all(
            f"SELECT {self._RULE_COLUMNS} FROM rules WHERE state IN ('active', 'refused', "
            "'shadow') AND expires_at <= ? ORDER BY expires_at, rowid", (now,))]

    def list_rules(self, states: tuple[str, ...] | None = None,
                   limit: int = 1000) -> list[RuleRecord]:
        sql = f"SELECT {self._RULE_COLUMNS} FROM rules"
        args: tuple = ()
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(states)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        return [self._rule(r) for r in self._all(sql, args + (limit,))]

    def set_rule_ack(self, rule_id: str, applied: bool, error: str, now: float) -> None:
        # an answer with no error and not applied acknowledges a withdrawal: no state change
        state = "active" if applied else ("refused" if error else None)
        self._exec("UPDATE rules SET ack_applied = ?, ack_error = ?, ack_time = ?, "
                   "state = CASE WHEN ? IS NOT NULL AND state IN ('active', 'refused') THEN ? "
                   "ELSE state END WHERE id = ?",
                   (int(applied), error, now, state, state, rule_id))

    # -- audit ----------------------------------------------------------------------------
    def audit_append(self, row: AuditRow) -> None:
        self._exec("INSERT INTO audit (seq, time, kind, payload, prev_hash, hash) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (row.seq, row.time, row.kind, row.payload, row.prev_hash, row.hash))

    def audit_head(self) -> AuditRow | None:
        row = self._one("SELECT seq, time, kind, payload, prev_hash, hash FROM audit "
                        "ORDER BY seq DESC LIMIT 1")
        return AuditRow(*row) if row else None

    def audit_rows(self, after_seq: int = 0) -> Iterator[AuditRow]:
        # in pages, so verifying a long log never holds it all in memory or the lock for long
        last = after_seq
        while True:
            rows = self._all("SELECT seq, time, kind, payload, prev_hash, hash FROM audit "
                             "WHERE seq > ? ORDER BY seq LIMIT 2000", (last,))
            if not rows:
                return
            for row in rows:
                yield AuditRow(*row)
            last = rows[-1][0]

    # -- operator channel -----------------------------------------------------------------
    def enqueue_command(self, kind: str, argument: str, operator: str, now: float) -> int:
        cur = self._exec("INSERT INTO operator_commands (kind, argument, operator, created_at) "
                         "VALUES (?, ?, ?, ?)", (kind, argument, operator, now))
        return int(cur.lastrowid)

    _COMMAND_COLUMNS = "id, kind, argument, operator, created_at, state, result, finished_at"

    def queued_commands(self) -> list[OperatorCommand]:
        return [OperatorCommand(*r) for r in self._all(
            f"SELECT {self._COMMAND_COLUMNS} FROM operator_commands WHERE state = 'queued' "
            "ORDER BY id")]

    def finish_command(self, command_id: int, ok: bool, result: str, now: float) -> None:
        self._exec("UPDATE operator_commands SET state = ?, result = ?, finished_at = ? "
                   "WHERE id = ?", ("done" if ok else "failed", result, now, command_id))

    def get_command(self, command_id: int) -> OperatorCommand | None:
        row = self._one(f"SELECT {self._COMMAND_COLUMNS} FROM operator_commands WHERE id = ?",
                        (command_id,))
        return OperatorCommand(*row) if row else None

    def set_hub_state(self, state: HubState) -> None:
        self._exec("INSERT OR REPLACE INTO hub_state (id, pid, host, started_at, heartbeat, "
                   "listen, version, stopped_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                   (state.pid, state.host, state.started_at, state.heartbeat, state.listen,
                    state.version, state.stopped_at))

    def get_hub_state(self) -> HubState | None:
        row = self._one("SELECT pid, host, started_at, heartbeat, listen, version, stopped_at "
                        "FROM hub_state WHERE id = 1")
        return HubState(*row) if row else None

    # -- model bundles --------------------------------------------------------------------
    _BUNDLE_COLUMNS = "version, sha256, size, meta, uploaded_at, uploaded_by, signature"

    def put_model_bundle(self, record: ModelBundleRecord) -> bool:
        if record.content is None:
            raise StoreError(f"model bundle {record.version}: no content")
        with self._lock:
            known = self._one("SELECT sha256 FROM model_bundles WHERE version = ?", (record.version,))
            if known is not None:
                if known[0] != record.sha256:
                    raise StoreError(f"model bundle {record.version} is already stored with other "
                                     "content; give the new model a new version")
                return False
            self._exec("INSERT INTO model_bundles (version, sha256, size, content, meta, signature, "
                       "uploaded_at, uploaded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.version, record.sha256, record.size, record.content,
                        _dumps(record.meta), record.signature, record.uploaded_at,
                        record.uploaded_by))
            return True

    @staticmethod
    def _bundle(row: tuple, content: bytes | None = None) -> ModelBundleRecord:
        return ModelBundleRecord(version=row[0], sha256=row[1], size=row[2], meta=json.loads(row[3]),
                                 uploaded_at=row[4], uploaded_by=row[5],
                                 signature=bytes(row[6]) if row[6] is not None else None,
                                 content=content)

    def get_model_bundle(self, version: str, content: bool = False) -> ModelBundleRecord | None:
        row = self._one(f"SELECT {self._BUNDLE_COLUMNS}, content FROM model_bundles "
                        "WHERE version = ?", (version,))
        if row is None:
            return None
        return self._bundle(row, bytes(row[7]) if content else None)

    def list_model_bundles(self) -> list[ModelBundleRecord]:
        return [self._bundle(r) for r in self._all(
            f"SELECT {self._BUNDLE_COLUMNS} FROM model_bundles ORDER BY uploaded_at DESC, rowid DESC")]

    def set_model_signature(self, version: str, signature: bytes) -> None:
        self._exec("UPDATE model_bundles SET signature = ? WHERE version = ?", (signature, version))

    def set_model_target(self, gateway: str, version: str, now: float, operator: str) -> None:
        with self._lock:
            if gateway == "*":
                self._exec("DELETE FROM model_targets")
            self._exec(_upsert_sql("model_targets", "gateway, version, set_at, set_by", "gateway"),
                       (gateway, version, now, operator))

    def model_targets(self) -> dict[str, str]:
        return dict(self._all("SELECT gateway, version FROM model_targets"))

    _STATUS_COLUMNS = "gateway, version, state, error, sent_at, acked_at"

    def put_model_status(self, status: ModelStatus) -> None:
        self._exec(_upsert_sql("model_status", self._STATUS_COLUMNS, "gateway, version"),
                   (status.gateway, status.version, status.state, status.error, status.sent_at,
                    status.acked_at))

    def model_status(self, gateway: str | None = None) -> list[ModelStatus]:
        if gateway is None:
            rows = self._all(f"SELECT {self._STATUS_COLUMNS} FROM model_status "
                             "ORDER BY gateway, COALESCE(acked_at, sent_at)")
        else:
            rows = self._all(f"SELECT {self._STATUS_COLUMNS} FROM model_status WHERE gateway = ? "
                             "ORDER BY COALESCE(acked_at, sent_at)", (gateway,))
        return [ModelStatus(*r) for r in rows]

    def set_gateway_models(self, gateway_id: str, model_versions: dict[str, str]) -> None:
        self._exec("UPDATE gateways SET model_versions = ? WHERE id = ?",
                   (_dumps(dict(model_versions)), gateway_id))

    def counts(self) -> dict[str, int]:
        queries = {
            "gateways": "SELECT COUNT(*) FROM gateways",
            "gateways_online": "SELECT COUNT(*) FROM gateways WHERE connections > 0",
            "incidents": "SELECT COUNT(*) FROM incidents",
            "incidents_open": "SELECT COUNT(*) FROM incidents WHERE state = 'open'",
            "campaigns": "SELECT COUNT(*) FROM campaigns WHERE state = 'open'",
            "rules_active": "SELECT COUNT(*) FROM rules WHERE state = 'active'",
            "rules_shadow": "SELECT COUNT(*) FROM rules WHERE state = 'shadow'",
            "rules_refused": "SELECT COUNT(*) FROM rules WHERE state = 'refused'",
            "pending_approvals": "SELECT COUNT(*) FROM decisions WHERE state = 'pending_approval'",
            "queued_commands": "SELECT COUNT(*) FROM operator_commands WHERE state = 'queued'",
            "audit_rows": "SELECT COUNT(*) FROM audit",
            "model_bundles": "SELECT COUNT(*) FROM model_bundles",
        }
        return {name: int(self._one(sql)[0]) for name, sql in queries.items()}
