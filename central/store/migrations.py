"""The hub's schema as numbered migrations.

Never edit a migration that has shipped: append a new one. A store applies, in one transaction
each, every migration above the version recorded in `schema_version`, so opening an
up-to-date database changes nothing and an old one is brought forward without losing rows.
The SQL sticks to what SQLite and PostgreSQL both accept (ON CONFLICT upserts, no SQLite-only
types) except where a comment says otherwise, so a PostgreSQL list can mirror this one.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "gateways, incidents, decisions, approvals, rules, audit", (
        """CREATE TABLE gateways (
            id TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            software_version TEXT NOT NULL DEFAULT '',
            model_versions TEXT NOT NULL DEFAULT '{}',
            capabilities TEXT NOT NULL DEFAULT '[]',
            board TEXT NOT NULL DEFAULT '',
            health TEXT,
            connections INTEGER NOT NULL DEFAULT 0,
            last_seq INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            src_ip TEXT NOT NULL,
            device TEXT NOT NULL,
            dst_ip TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            score REAL NOT NULL,
            packets INTEGER NOT NULL,
            state TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        "CREATE INDEX incidents_attacker ON incidents (src_ip, kind, last_seen)",
        "CREATE INDEX incidents_recent ON incidents (last_seen)",
        """CREATE TABLE incident_reports (
            gateway TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            incident TEXT NOT NULL REFERENCES incidents (id),
            kind TEXT NOT NULL,
            src_ip TEXT NOT NULL,
            dst_ip TEXT NOT NULL,
            device TEXT NOT NULL,
            time REAL NOT NULL,
            last_seen REAL NOT NULL,
            score REAL NOT NULL,
            packets INTEGER NOT NULL,
            state TEXT NOT NULL,
            model_version TEXT NOT NULL,
            evidence TEXT NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (gateway, agent_id))""",
        "CREATE INDEX incident_reports_incident ON incident_reports (incident)",
        """CREATE TABLE decisions (
            id TEXT PRIMARY KEY,
            incident TEXT NOT NULL REFERENCES incidents (id),
            policy TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            params TEXT NOT NULL,
            ttl REAL NOT NULL,
            reason TEXT NOT NULL,
            gateways TEXT NOT NULL,
            requires_approval INTEGER NOT NULL,
            shadow INTEGER NOT NULL,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            approved_by TEXT NOT NULL DEFAULT '',
            approved_at REAL)""",
        "CREATE INDEX decisions_incident ON decisions (incident)",
        "CREATE INDEX decisions_state ON decisions (state)",
        """CREATE TABLE approvals (
            decision TEXT NOT NULL REFERENCES decisions (id),
            operator TEXT NOT NULL,
            verdict TEXT NOT NULL,
            time REAL NOT NULL)""",
        """CREATE TABLE rules (
            id TEXT PRIMARY KEY,
            gateway TEXT NOT NULL,
            decision TEXT NOT NULL REFERENCES decisions (id),
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            params TEXT NOT NULL,
            reason TEXT NOT NULL,
            expires_at REAL NOT NULL,
            shadow INTEGER NOT NULL,
            state TEXT NOT NULL,
            signature BLOB NOT NULL,
            created_at REAL NOT NULL,
            ended_at REAL,
            ack_applied INTEGER,
            ack_error TEXT NOT NULL DEFAULT '',
            ack_time REAL)""",
        "CREATE INDEX rules_gateway_state ON rules (gateway, state)",
        "CREATE INDEX rules_state_expiry ON rules (state, expires_at)",
        "CREATE INDEX rules_decision ON rules (decision)",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)""",
        # Defence in depth: the hub's own code cannot rewrite history by mistake. Someone with
        # the file can drop these triggers; the hash chain is what detects that.
        # (SQLite trigger syntax; PostgreSQL needs a trigger function.)
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    )),
    Migration(2, "telemetry batches: per-device summaries, one packed row per batch", (
        # body: atlas.central.store.codec (one row per batch, not per device: see there)
        """CREATE TABLE telemetry (
            gateway TEXT NOT NULL,
            seq INTEGER NOT NULL,
            time REAL NOT NULL,
            received_at REAL NOT NULL,
            devices INTEGER NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (gateway, seq))""",
        "CREATE INDEX telemetry_received ON telemetry (received_at)",
    )),
    Migration(3, "operator command queue and hub heartbeat", (
        """CREATE TABLE operator_commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            argument TEXT NOT NULL,
            operator TEXT NOT NULL,
            created_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued',
            result TEXT NOT NULL DEFAULT '',
            finished_at REAL)""",
        "CREATE INDEX operator_commands_state ON operator_commands (state)",
        """CREATE TABLE hub_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started_at REAL NOT NULL,
            heartbeat REAL NOT NULL,
            listen TEXT NOT NULL,
            version TEXT NOT NULL,
            stopped_at REAL)""",
    )),
    Migration(4, "model bundles, each gateway's desired bundle, and what gateways answered", (
        # content: atlas.link.bundle's bytes, exactly what is signed and sent
        """CREATE TABLE model_bundles (
            version TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            content BLOB NOT NULL,
            meta TEXT NOT NULL,
            signature BLOB,
            uploaded_at REAL NOT NULL,
            uploaded_by TEXT NOT NULL)""",
        # desired state: gateway id, or '*' for every gateway without a target of its own
        """CREATE TABLE model_targets (
            gateway TEXT PRIMARY KEY,
            version TEXT NOT NULL REFERENCES model_bundles (version),
            set_at REAL NOT NULL,
            set_by TEXT NOT NULL)""",
        """CREATE TABLE model_status (
            gateway TEXT NOT NULL,
            version TEXT NOT NULL,
            state TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            sent_at REAL,
            acked_at REAL,
            PRIMARY KEY (gateway, version))""",
    )),
    Migration(5, "rules a gateway refused are in state 'refused', not 'active'", (
        # before this, a refusal was kept only in ack_applied/ack_error
        "UPDATE rules SET state = 'refused' WHERE state = 'active' AND ack_applied = 0 "
        "AND ack_error <> ''",
    )),
    Migration(6, "gateway places, campaigns and their links, the campaign of a decision", (
        "ALTER TABLE gateways ADD COLUMN domain TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateways ADD COLUMN district TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateways ADD COLUMN subnet TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE decisions ADD COLUMN campaign TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE campaigns (
            id TEXT PRIMARY KEY,
            engine TEXT NOT NULL,
            scope TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            state TEXT NOT NULL,
            merged_into TEXT NOT NULL DEFAULT '',
            gateways TEXT NOT NULL,
            domains TEXT NOT NULL,
            attackers TEXT NOT NULL)""",
        "CREATE INDEX campaigns_recent ON campaigns (state, last_seen)",
        # one campaign per incident: the correlator moves an incident when campaigns merge
        """CREATE TABLE campaign_incidents (
            incident TEXT PRIMARY KEY REFERENCES incidents (id),
            campaign TEXT NOT NULL REFERENCES campaigns (id))""",
        "CREATE INDEX campaign_incidents_campaign ON campaign_incidents (campaign)",
        """CREATE TABLE campaign_links (
            campaign TEXT NOT NULL REFERENCES campaigns (id),
            earlier TEXT NOT NULL,
            later TEXT NOT NULL,
            reason TEXT NOT NULL,
            scope TEXT NOT NULL,
            detail TEXT NOT NULL,
            earlier_gateway TEXT NOT NULL,
            later_gateway TEXT NOT NULL,
            PRIMARY KEY (campaign, earlier, later, reason))""",
        "CREATE INDEX incident_reports_recent ON incident_reports (last_seen)",
    )),
    Migration(7, "the city graph's relations between a campaign link's assets", (
        "ALTER TABLE campaign_links ADD COLUMN relations TEXT NOT NULL DEFAULT '[]'",
    )),
)

LATEST_VERSION = SQLITE_MIGRATIONS[-1].version


def check_numbering(migrations: tuple[Migration, ...]) -> None:
    """Versions must be 1, 2, 3...: a gap or a duplicate is a programming error."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise AssertionError(f"migration #{expected} has version {migration.version}")


check_numbering(SQLITE_MIGRATIONS)
