"""A tick adds its batches into per-device totals as they come (it keeps no rows): the feature
rows must not depend on how the capture was cut into batches, down to a few frames a batch."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import parse_config
from atlas.agent.pipeline import AgentPipeline


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A small gateway with a scan, a brute force and a flood: ports, hosts, topics, refusals."""
    from atlas.train.corpus import device_addresses
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.capture import generate_capture

    seed, devices = 5, 30
    rogue = device_addresses(seed, devices)[4]
    path = tmp_path_factory.mktemp("batches") / "gw.pcap"
    generate_capture(path, devices=devices, duration=40.0, seed=seed, attacks=[
        AttackSpec("mirai_scan", start=5.0, duration=10.0, attacker=rogue),
        AttackSpec("mqtt_bruteforce", start=15.0, duration=10.0),
        AttackSpec("mqtt_flood", start=25.0, duration=10.0),
    ])
    return path


def _rows(path, batch_size: int, tick: float):
    rows = []
    pipe = AgentPipeline(parse_config({"detect": {"tick_seconds": tick}}), None, on_rows=rows.append)
    for batch in read_capture(path, batch_size=batch_size):
        pipe.process(batch)
    pipe.finish()
    return rows


@pytest.mark.parametrize("tick", [1.0, 4.0])
def test_rows_do_not_depend_on_batch_boundaries(capture, tick, monkeypatch):
    from atlas.agent.features import windows

    whole = _rows(capture, 1 << 20, tick)  # the capture in one batch: every tick in one piece
    monkeypatch.setattr(windows, "_EMIT_CHUNK", 5)  # and the close makes its rows 5 devices at a time
    cut = _rows(capture, 7, tick)  # a tick in hundreds of pieces
    assert len(whole) == len(cut) >= 40 / tick
    assert sum(len(r) for r in whole) > 100
    for a, b in zip(whole, cut):
        assert a.tick_end == b.tick_end
        assert np.array_equal(a.devices, b.devices)
        assert np.array_equal(a.first_ts, b.first_ts)
        assert np.array_equal(a.packets, b.packets)
        assert np.array_equal(a.top_peer, b.top_peer)
        # Counts are integer-valued and the same; only the order of float64 additions into
        # the damped sums differs, below float32's resolution.
        np.testing.assert_allclose(a.X, b.X, rtol=1e-6, atol=1e-6)
    # The attacks are in the rows: the scanner reached many new hosts, a client was refused.
    from atlas.agent.features.schema import FEATURE_NAMES

    X = np.concatenate([r.X for r in whole])
    assert X[:, FEATURE_NAMES.index("new_dhosts@2s")].max() > np.log1p(10)
    assert X[:, FEATURE_NAMES.index("mqtt_refused@2s")].max() > 0
