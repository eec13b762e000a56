"""Frame times the pipeline cannot trust: NaN, infinite, out of range, going back.

The same attackers are found as on the clean capture, nothing raises, and what was repaired is
counted; through `AgentPipeline` (replay) and through the daemon's batch and idle path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlas.agent.capture import FrameBatch
from atlas.agent.capture.clock import MAX_TS
from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import AgentPipeline
from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("times") / "gw.pcap"
    truth = generate_capture(out, devices=20, duration=120, seed=5, attacks=[
        AttackSpec("port_scan", start=20, duration=20), AttackSpec("mqtt_bruteforce", start=60, duration=30)])
    return out, truth.steps


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(None, batch=AgentConfig().detect.batch)


def run(path: Path, detector: Detector, change=None) -> AgentPipeline:
    pipe = AgentPipeline(AgentConfig(), detector)
    rng = np.random.default_rng(7)
    for batch in read_capture(path, 500):
        if change is not None:
            batch.ts = change(batch.ts.copy(), rng)
        pipe.process(batch)
    pipe.finish()
    return pipe


def found(pipe: AgentPipeline) -> set[tuple[str, str]]:
    return {(i.src_ip, i.kind) for i in pipe.tracker.all()}


def assert_attackers_found(pipe: AgentPipeline, steps) -> None:
    for s in steps:
        assert (s.attacker, s.kind) in found(pipe), f"{s.kind} from {s.attacker} not found: {found(pipe)}"
    for inc in pipe.tracker.all():
        assert np.isfinite([inc.time, inc.last_seen]).all() and 0 <= inc.time < MAX_TS


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0, 1e300, MAX_TS])
def test_bad_times_get_the_time_before_them(capture, detector, caplog, bad):
    path, steps = capture
    clean = run(path, detector)
    hit = []

    def spoil(ts, rng):
        mask = rng.random(len(ts)) < 0.05
        hit.append(int(mask.sum()))
        ts[mask] = bad
        return ts

    pipe = run(path, detector, spoil)
    assert_attackers_found(pipe, steps)
    assert found(pipe) == found(clean)
    assert pipe.counters.bad_timestamps == sum(hit) > 100 and pipe.counters.clock_steps == 0
    assert pipe.tracker.bad_times == 0  # nothing bad reached the tracker
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_a_clock_step_back_starts_a_new_timeline(capture, detector, caplog):
    path, steps = capture
    clean = run(path, detector)
    t0 = float(next(iter(read_capture(path))).ts[0])
    # An hour back, 50 s into the capture: between the port scan and the brute force.
    pipe = run(path, detector, lambda ts, rng: np.where(ts >= t0 + 50, ts - 3600, ts))
    assert pipe.counters.clock_steps == 1 and pipe.counters.bad_timestamps == 0
    assert_attackers_found(pipe, steps)
    bf = next(i for i in pipe.tracker.all() if i.kind == "mqtt_bruteforce")
    ref = next(i for i in clean.tracker.all() if i.kind == "mqtt_bruteforce")
    # Ticks go on in the new timeline: the incident has its real times and length.
    assert bf.time == pytest.approx(ref.time - 3600) and bf.last_seen - bf.time == pytest.approx(ref.last_seen - ref.time)
    assert pipe.counters.rows >= 0.95 * clean.counters.rows
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "capture time went back" in line


def test_times_jittering_back_a_little_are_late_packets_not_steps(capture, detector):
    path, steps = capture
    clean = run(path, detector)
    pipe = run(path, detector, lambda ts, rng: ts - rng.random(len(ts)) * 3.0)
    assert pipe.counters.clock_steps == 0 and pipe.features.stats.late_packets > 0
    assert found(pipe) == found(clean)
    assert_attackers_found(pipe, steps)


def test_one_frame_far_in_the_future_does_not_stop_the_ticks(capture, detector):
    path, steps = capture
    clean = run(path, detector)
    first = []

    def future(ts, rng):
        if not first:
            first.append(1)
            ts[len(ts) // 2] += 10 * 365 * 86400.0  # ten years ahead, then back
        return ts

    pipe = run(path, detector, future)
    assert pipe.counters.clock_steps == 1
    assert_attackers_found(pipe, steps)
    assert pipe.counters.rows >= 0.95 * clean.counters.rows


def test_the_daemon_path_survives_bad_and_backward_times(capture, detector, tmp_path):
    from atlas.agent.daemon import AgentDaemon

    path, steps = capture
    cfg = AgentConfig()
    cfg.agent.state_dir = str(tmp_path)
    daemon = AgentDaemon(cfg, detector)
    rng = np.random.default_rng(3)
    t0 = None
    for batch in read_capture(path, 500):
        t0 = t0 or float(batch.ts[0])
        ts = np.where(batch.ts >= t0 + 50, batch.ts - 3600, batch.ts)
        ts[rng.random(len(ts)) < 0.05] = rng.choice([np.nan, np.inf, -np.inf])
        batch.ts = ts
        daemon._step(batch)
    daemon._step(FrameBatch.from_frames([], [], 1))  # idle: the wall clock passes
    for t in (float("nan"), float("inf"), t0 - 7200):
        daemon.pipeline.idle(t)
    assert not daemon.errors
    c = daemon.pipeline.counters
    assert c.bad_timestamps > 100 and c.clock_steps == 2  # the step in the capture, and the idle one
    got = {(i["src_ip"], i["kind"]) for i in daemon.incidents()}
    assert {(s.attacker, s.kind) for s in steps} <= got
    assert all(i["state"] == "closed" for i in daemon.incidents())  # the idle clock closed them
    assert daemon.status()["pipeline"]["bad_timestamps"] == c.bad_timestamps
