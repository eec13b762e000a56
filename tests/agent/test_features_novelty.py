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
