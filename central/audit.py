"""Audit: an append-only, hash-chained log of everything the hub decided and why.

Each row is (seq, time, kind, payload, prev_hash, hash) with

    hash = sha256(prev_hash || "\\n" || seq || "\\n" || repr(time) || "\\n" || kind || "\\n" || payload)

where `payload` is canonical JSON (sorted keys, no spaces) stored as the exact text that was
hashed, so verifying never depends on re-serialising. The header fields are in the hash too:
changing a row's time or kind breaks the chain as surely as changing its payload.

`verify()` walks the chain: a seq gap finds a deleted row, a prev_hash that is not the previous
row's hash finds a reordered or inserted row, a recomputed hash that differs finds an edited
row. Deleting rows at the END leaves a shorter but valid chain; only a head recorded outside the
database (an "anchor": `atlas-central audit head`, kept by the operator or a log shipper) catches
that, so `verify(anchor=...)` checks it.

Rows are appended inside the store transaction of the change they describe, so a decision and
its audit row commit together or not at all.
"""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from atlas.central.store import AuditRow, Store

GENESIS = "0" * 64

# What the hub logs. Kept closed so a typo cannot create a kind no report looks for.
AUDIT_KINDS = (
    "hub_start",
    "incident",  # a new hub incident
    "incident_report",  # a gateway's report joined a hub incident (first time per report)
    "incident_closed",
    "decision",
    "approval",
    "rule",  # a rule issued to a gateway (active or shadow)
    "rule_ack",
    "revocation",  # an operator withdrew a rule
    "expiry",  # a rule reached its TTL and was withdrawn
    "model_push",  # an operator made a model bundle the desired model of gateways
    "model_ack",  # a gateway installed a pushed model, or refused it (with the reason)
)


def canonical(payload: Any) -> str:
    """The one text form of a payload: the same data always gives the same bytes."""
    # NaN stays "NaN" (not strict JSON, but deterministic): a gateway's odd float must never
    # stop the hub from recording what it did.
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return repr(value)


def row_hash(prev_hash: str, seq: int, time: float, kind: str, payload: str) -> str:
    text = f"{prev_hash}\n{seq}\n{float(time)!r}\n{kind}\n{payload}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends to and verifies the chain kept in a Store."""

    def __init__(self, store: Store):
        self._store = store
        self._lock = threading.Lock()

    def append(self, kind: str, payload: dict[str, Any], time: float) -> AuditRow:
        """Add one row. Call it inside the store transaction of the change it records."""
        if kind not in AUDIT_KINDS:
            raise ValueError(f"unknown audit kind {kind!r}")
        text = canonical(payload)
        with self._lock:
            # Re-read the head every time: cheap (primary key), and correct even if another
            # writer appended or a failed transaction rolled our previous row back.
            head = self._store.audit_head()
            seq = head.seq + 1 if head else 1
            prev = head.hash if head else GENESIS
            row = AuditRow(seq=seq, time=float(time), kind=kind, payload=text, prev_hash=prev,
                           hash=row_hash(prev, seq, time, kind, text))
            self._store.audit_append(row)
            return row

    def head(self) -> AuditRow | None:
        return self._store.audit_head()

    def verify(self, anchor: tuple[int, str] | None = None) -> tuple[bool, int | None]:
        """(True, None) if the chain is intact, else (False, seq of the first bad row).

        `anchor` = (seq, hash) recorded earlier outside the database: it must still be there.
        A truncated log reports the anchor's seq.
        """
        expected_seq = 1
        prev = GENESIS
        anchor_seen = anchor is None
        for row in self._store.audit_rows():
            if row.seq != expected_seq:
                # a gap: rows expected_seq..row.seq-1 were deleted
                return False, expected_seq
            if row.prev_hash != prev:
                return False, row.seq
            if row_hash(row.prev_hash, row.seq, row.time, row.kind, row.payload) != row.hash:
                return False, row.seq
            if anchor is not None and row.seq == anchor[0]:
                if row.hash != anchor[1]:
                    return False, row.seq
                anchor_seen = True
            prev = row.hash
            expected_seq += 1
        if not anchor_seen:
            return False, anchor[0]
        return True, None
