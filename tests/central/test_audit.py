"""The audit chain: intact logs verify; edited, deleted, reordered or truncated ones do not."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from atlas.central.audit import GENESIS, AuditLog, canonical, row_hash
from atlas.central.store import open_store


@pytest.fixture
def log_path(tmp_path):
    """A store with 6 audit rows, and its path for tampering through plain SQL."""
    path = tmp_path / "hub.db"
    store = open_store(path)
    log = AuditLog(store)
    with store.transaction():
        for i in range(1, 7):
            kind = "decision" if i % 2 else "rule"
            log.append(kind, {"n": i, "target": f"10.0.0.{i}", "nested": {"b": [1, 2], "a": i}},
                       1000.0 + i / 3)
    store.close()
    return path


def tamper(path, *statements, args=()):
    """What an intruder with the file does: drop the append-only triggers, rewrite rows."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for i, statement in enumerate(statements):
        db.execute(statement, args[i] if i < len(args) else ())
    db.commit()
    db.close()


def verify(path, anchor=None):
    return AuditLog(open_store(path, readonly=True)).verify(anchor=anchor)


def row(path, seq):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT seq, time, kind, payload, prev_hash, hash FROM audit "
                          "WHERE seq = ?", (seq,)).fetchone()
    finally:
        db.close()


def test_intact_chain_verifies_and_links(log_path):
    assert verify(log_path) == (True, None)
    first = row(log_path, 1)
    assert first[4] == GENESIS
    for seq in range(2, 7):
        assert row(log_path, seq)[4] == row(log_path, seq - 1)[5]
    # the documented formula, computed independently here
    seq, time, kind, payload, prev, digest = row(log_path, 3)
    text = f"{prev}\n{seq}\n{time!r}\n{kind}\n{payload}".encode()
    assert hashlib.sha256(text).hexdigest() == digest


def test_empty_log_verifies(tmp_path):
    assert AuditLog(open_store(tmp_path / "hub.db")).verify() == (True, None)


def test_edited_payload_is_found(log_path):
    tamper(log_path, "UPDATE audit SET payload = replace(payload, '10.0.0.4', '10.0.0.99') "
                     "WHERE seq = 4")
    assert verify(log_path) == (False, 4)


def test_edited_time_is_found(log_path):
    tamper(log_path, "UPDATE audit SET time = time + 3600 WHERE seq = 2")
    assert verify(log_path) == (False, 2)


def test_edited_kind_is_found(log_path):
    tamper(log_path, "UPDATE audit SET kind = 'approval' WHERE seq = 5")
    assert verify(log_path) == (False, 5)


def test_edit_with_recomputed_hash_breaks_the_next_link(log_path):
    seq, time, kind, payload, prev, _ = row(log_path, 3)
    forged = payload.replace("10.0.0.3", "10.0.0.77")
    tamper(log_path, "UPDATE audit SET payload = ?, hash = ? WHERE seq = 3",
           args=[(forged, row_hash(prev, seq, time, kind, forged))])
    assert verify(log_path) == (False, 4)


def test_deleted_row_is_found(log_path):
    tamper(log_path, "DELETE FROM audit WHERE seq = 3")
    assert verify(log_path) == (False, 3)


def test_deleted_first_row_is_found(log_path):
    tamper(log_path, "DELETE FROM audit WHERE seq = 1")
    assert verify(log_path) == (False, 1)


def test_reordered_rows_are_found(log_path):
    # swap the contents of rows 2 and 3, keeping their seq numbers
    r2, r3 = row(log_path, 2), row(log_path, 3)
    tamper(log_path,
           "UPDATE audit SET time = ?, kind = ?, payload = ?, prev_hash = ?, hash = ? WHERE seq = 2",
           "UPDATE audit SET time = ?, kind = ?, payload = ?, prev_hash = ?, hash = ? WHERE seq = 3",
           args=[r3[1:], r2[1:]])
    assert verify(log_path) == (False, 2)


def test_renumbered_rows_are_found(log_path):
    # move row 6 to seq 2's place and row 2 to the end
    tamper(log_path, "UPDATE audit SET seq = 100 WHERE seq = 2",
           "UPDATE audit SET seq = 2 WHERE seq = 6",
           "UPDATE audit SET seq = 6 WHERE seq = 100")
    assert verify(log_path) == (False, 2)


def test_truncated_tail_needs_an_anchor(log_path):
    anchor = (6, row(log_path, 6)[5])
    assert verify(log_path, anchor) == (True, None)
    tamper(log_path, "DELETE FROM audit WHERE seq >= 5")
    # a shorter chain is still a valid chain: only the anchor kept outside shows the loss
    assert verify(log_path) == (True, None)
    assert verify(log_path, anchor) == (False, 6)
    assert verify(log_path, (4, row(log_path, 4)[5])) == (True, None)
    assert verify(log_path, (4, "0" * 64)) == (False, 4)


def test_appending_continues_the_chain_after_reopen(log_path):
    store = open_store(log_path)
    with store.transaction():
        added = AuditLog(store).append("expiry", {"rule": "r-1"}, 2000.0)
    assert added.seq == 7 and added.prev_hash == row(log_path, 6)[5]
    assert verify(log_path) == (True, None)


def test_rolled_back_append_leaves_no_gap(tmp_path):
    store = open_store(tmp_path / "hub.db")
    log = AuditLog(store)
    with store.transaction():
        log.append("decision", {"n": 1}, 1.0)
    with pytest.raises(RuntimeError):
        with store.transaction():
            log.append("decision", {"n": 2}, 2.0)
            raise RuntimeError("the change it described failed")
    with store.transaction():
        assert log.append("decision", {"n": 3}, 3.0).seq == 2
    assert log.verify() == (True, None)


def test_canonical_payload_is_independent_of_key_order():
    assert canonical({"b": 1, "a": {"d": 2, "c": [3, "é"]}}) == \
        canonical({"a": {"c": [3, "é"], "d": 2}, "b": 1}) == '{"a":{"c":[3,"é"],"d":2},"b":1}'
    assert canonical({"sig": b"\x00\xff"}) == '{"sig":"00ff"}'


def test_unknown_kind_is_refused(tmp_path):
    store = open_store(tmp_path / "hub.db")
    with pytest.raises(ValueError, match="unknown audit kind"):
        AuditLog(store).append("decisoin", {}, 1.0)
