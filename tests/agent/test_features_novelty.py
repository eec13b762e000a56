"""Novelty of (device, thing) pairs in sorted arrays, against a plain dict doing the same."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.agent.features import windows
from atlas.agent.features.windows import _Novelty


class _DictNovelty:
    """The reference: what the features mean by "new within the horizon"."""

    def __init__(self, horizon: float, max_keys: int) -> None:
        self.horizon, self.max_keys, self.seen = horizon, max_keys, {}

    def count_new(self, dev, thing, now):
        new = []
        for k in zip(dev.tolist(), thing.tolist()):
            last = self.seen.get(k)
            new.append(last is None or now - last > self.horizon)
            self.seen[k] = now
        return np.array(new, dtype=bool)

    def prune(self, now):
        if len(self.seen) <= self.max_keys:
            return False
        self.seen = {k: t for k, t in self.seen.items() if now - t <= self.horizon}
        if len(self.seen) > self.max_keys:
            self.seen.clear()
            return True
        return False


@pytest.mark.parametrize("seed", range(4))
def test_novelty_arrays_equal_the_dict_reference(seed):
    rng = np.random.default_rng(seed)
    fast, ref = _Novelty(30.0, 400), _DictNovelty(30.0, 400)
    now = 1000.0
    for _ in range(300):
        now += float(rng.choice([0.5, 1.0, 7.0, 40.0]))
        n = int(rng.integers(0, 60))
        pairs = {(int(d), int(t)) for d, t in zip(rng.integers(0, 30, n) + (1 << 40), rng.integers(0, 2**64, n, dtype=np.uint64) % 97)}
        dev = np.array([d for d, _ in pairs], dtype=np.uint64)
        thing = np.array([t for _, t in pairs], dtype=np.uint64)
        assert fast.count_new(dev, thing, now).tolist() == ref.count_new(dev, thing, now).tolist()
        assert fast.prune(now) == ref.prune(now)
        assert len(fast) == len(ref.seen)


def test_pairs_of_the_same_hash_are_not_merged(monkeypatch):
    monkeypatch.setattr(windows, "_pair_hash", lambda a, b: np.zeros(len(a), dtype=np.uint64))
    nov = _Novelty(300.0, 100)
    dev, thing = np.array([1, 2], dtype=np.uint64), np.array([5, 5], dtype=np.uint64)
    assert nov.count_new(dev, thing, 0.0).tolist() == [True, True]
    # The first pair is held; the second shares its hash, so it keeps counting as new.
    assert nov.count_new(dev, thing, 1.0).tolist() == [False, True]


def _tick(fx, t: float, srcs: np.ndarray):
    from atlas.agent.decode import PACKET_DTYPE, TCP_ACK

    p = np.zeros(len(srcs), dtype=PACKET_DTYPE)
    p["ts"], p["ipver"], p["proto"], p["src"], p["dst"] = t, 4, 6, srcs, 0x0A000001
    p["sport"], p["dport"], p["tcp_flags"], p["wirelen"] = 50000, 1883, TCP_ACK, 60
    return fx.update(p)


def test_device_slots_are_distinct_even_when_a_tick_overflows_the_table():
    fx = windows.FeatureExtractor(max_devices=32)
    first = 0x0B000000 + np.arange(20, dtype=np.uint64)
    _tick(fx, 100.0, first)
    # 37 devices in one tick, 12 known: only the 8 others can go, the table runs over (slots
    # are given as the tick's batches come).
    rows = _tick(fx, 101.5, np.concatenate([first[:12], 0x0C000000 + np.arange(25, dtype=np.uint64)]))
    assert len(fx._slot) == 37 and fx.stats.evicted_devices == 8
    rows += _tick(fx, 102.5, np.array([0x0D000000], dtype=np.uint64))  # closes the tick of 37
    # The next new device brings it back under its bound, least recently updated first.
    rows += fx.flush()
    assert len(np.unique(fx._slot_of)) == len(fx._slot_of)  # no two devices share a slot
    assert fx.stats.devices == 46 and [len(r) for r in rows] == [20, 37, 1]
    assert len(fx._slot) <= 32 and 0x0D000000 in fx._slot.tolist()
