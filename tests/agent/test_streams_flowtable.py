"""The MQTT stream decoder's connection table (agent/decode/flowtable.py) and the decoder on top
of it when the table's hash is weak: connections whose hashes collide must still decode exactly."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from atlas.agent.decode import flowtable
from atlas.agent.decode.flowtable import FlowTable
from atlas.agent.decode.streams import MqttStreams

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/agent/mqtt_segments.py (importlib mode)
from mqtt_segments import batch_of, split_batches  # noqa: E402
from test_streams import _interleave, _mixed_conns, content  # noqa: E402


def _weak_hash(monkeypatch, fn) -> None:
    """Make the table's hash (vectorized and scalar, and the decoder's) collide on purpose."""
    import atlas.agent.decode.streams as streams_mod

    monkeypatch.setattr(flowtable, "flow_hash", fn)
    monkeypatch.setattr(streams_mod, "flow_hash", fn)
    monkeypatch.setattr(flowtable, "_flow_hash_one", lambda c, b, cp, bp: int(fn(np.array([c], dtype=np.uint64), np.array([b], dtype=np.uint64), np.array([cp]), np.array([bp]))[0]))


def _find(t: FlowTable, *tuples) -> list[int]:
    a = np.array(tuples, dtype=np.uint64)
    return t.lookup(a[:, 0], a[:, 1], a[:, 2].astype(np.uint16), a[:, 3].astype(np.uint16)).tolist()


def test_slots_are_found_after_commit_and_not_after_removal():
    t = FlowTable(capacity=2)
    a = t.add(10, 1, 40000, 1883, 5.0)
    assert _find(t, (10, 1, 40000, 1883)) == [-1]  # not indexed before commit
    assert t.commit() == []
    b = t.add(11, 1, 40000, 1883, 6.0)
    c = t.add(12, 1, 40001, 1883, 7.0)  # grows the table past its capacity
    t.commit()
    assert len(t) == 3 and _find(t, (10, 1, 40000, 1883), (12, 1, 40001, 1883), (10, 1, 40001, 1883)) == [a, c, -1]
    t.remove(b)
    assert _find(t, (11, 1, 40000, 1883)) == [-1] and len(t) == 2
    again = t.add(11, 1, 40000, 1883, 9.0)  # the same four-tuple reopened takes over its entry
    t.commit()
    assert _find(t, (11, 1, 40000, 1883)) == [again]


def test_hash_collisions_are_never_a_wrong_connection(monkeypatch):
    # Every tuple with the same client parity hashes alike.
    _weak_hash(monkeypatch, lambda c, b, cp, bp: np.asarray(c, dtype=np.uint64) & np.uint64(1))
    t = FlowTable()
    first = t.add(2, 1, 1, 1883, 0.0)
    other = t.add(4, 1, 1, 1883, 0.0)
    assert t.commit() == [other]  # the second of the same hash cannot be indexed: its owner keeps it
    assert _find(t, (2, 1, 1, 1883), (4, 1, 1, 1883), (6, 1, 1, 1883)) == [first, -1, -1]


def test_oldest_is_the_least_recently_seen():
    t = FlowTable()
    slots = [t.add(100 + k, 1, 1, 1883, float(k)) for k in range(40)]
    t.commit()
    assert t.oldest() == slots[0]
    t.rows["last"][slots[1]] = 99.0  # seen again since
    t.remove(slots[0])
    assert t.oldest() == slots[2]
    assert t.idle(3.0).tolist() == [slots[2]]


@pytest.mark.parametrize("sizes", [None, [5] * 400, [1] * 2000])
def test_streams_decode_exactly_with_a_colliding_hash(monkeypatch, sizes):
    segs = _interleave(_mixed_conns(4, n=8), seed=3)
    ref = MqttStreams(fast_rounds=0)
    parts = split_batches(segs, sizes) if sizes else [batch_of(segs)]
    reference = np.concatenate([ref.feed(b, p) for b, p in parts] + [ref.flush()])
    _weak_hash(monkeypatch, lambda c, b, cp, bp: np.asarray(cp, dtype=np.uint64) & np.uint64(3))
    st = MqttStreams()
    rows = np.concatenate([st.feed(b, p) for b, p in parts] + [st.flush()])
    assert content(rows) == content(reference)
    s = st.stats()
    assert s["internal_errors"] == 0 and s["flows"] == ref.stats()["flows"]


def test_only_connections_holding_bytes_keep_a_python_object():
    segs = _interleave(_mixed_conns(4, n=6), seed=5)
    st = MqttStreams()
    for b, p in split_batches(segs, [7] * 400):
        st.feed(b, p)
        assert all(f.holding() for f in st._flows.values())
    assert st.stats()["active_flows"] == 0 and not st._flows  # the sessions end with FIN


def test_the_scalar_hash_equals_the_vectorized_one():
    rng = np.random.default_rng(7)
    for bits in (32, 48, 64):  # IPv4 keys, interned IPv6 keys, and beyond
        c, b = (rng.integers(0, 2**bits, 200, dtype=np.uint64) for _ in range(2))
        cp, bp = (rng.integers(0, 65536, 200).astype(np.uint16) for _ in range(2))
        v = flowtable.flow_hash(c, b, cp, bp)
        assert [int(x) for x in v] == [flowtable._flow_hash_one(int(c[i]), int(b[i]), int(cp[i]), int(bp[i])) for i in range(200)]
