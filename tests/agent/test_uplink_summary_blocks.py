"""Device summaries as arrays (SummaryBlock, what the daemon keeps until it sends them) are the
summaries DeviceSummaries.add returns."""
from __future__ import annotations

import numpy as np

from atlas.agent.uplink.summaries import DeviceSummaries


def test_summary_blocks_are_the_summaries_add_returns():
    name = lambda key: f"10.0.0.{key}"  # noqa: E731
    rng = np.random.default_rng(7)
    by_add, by_fold = DeviceSummaries(name, interval=10.0), DeviceSummaries(name, interval=10.0)
    got_add, got_fold = [], []
    for t in np.arange(1000.0, 1045.0, 1.5):
        keys = rng.choice(np.arange(1, 60, dtype=np.uint64), size=int(rng.integers(1, 30)), replace=False)
        X = rng.normal(size=(len(keys), 4)).astype(np.float32)
        packets = rng.integers(1, 50, len(keys))
        got_add += by_add.add(float(t), keys, X, packets)
        block = by_fold.fold(float(t), keys, X, packets)
        if block is not None:
            assert block.features.dtype == np.float32 and len(block) == len(block.keys)
            got_fold += block.summaries(name)
    got_add += by_add.flush()
    got_fold += by_fold.flush_block().summaries(name)
    assert len(got_add) > 100 and got_fold == got_add
    assert {s.start for s in got_add} == {1000.0, 1010.0, 1020.0, 1030.0, 1040.0}
    assert by_fold.flush_block() is None  # nothing open after a flush
