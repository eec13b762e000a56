"""Detect: the packaged int8 models, loaded by the edge runtime, on real feature rows."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from atlas.agent.capture.pcapfile import read_capture
from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector, ModelError, packaged_models_dir
from atlas.agent.detect.runtime import Int8Model
from atlas.agent.features.schema import N_FEATURES
from atlas.agent.pipeline import AgentPipeline
from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.fixture(scope="module")
def scan_rows(tmp_path_factory):
    """Feature rows of a generated gateway capture with a port scan, and who scanned."""
    pcap = tmp_path_factory.mktemp("detect") / "scan.pcap"
    truth = generate_capture(pcap, devices=15, duration=90, seed=21, attacks=[AttackSpec("port_scan", start=30, duration=30)])
    rows = []
    pipe = AgentPipeline(AgentConfig(), None, on_rows=rows.append)
    for batch in read_capture(pcap):
        pipe.process(batch)
    pipe.finish()
    scanner = pipe.book.key(truth.steps[0].attacker)
    return rows, scanner


def test_packaged_models_are_int8_and_match_the_schema(detector):
    meta = json.loads((packaged_models_dir() / "meta.json").read_text())
    assert detector.anomaly_model.n_inputs == detector.classifier.n_inputs == N_FEATURES
    assert detector.classifier.n_outputs == len(meta["classifier"]["classes"])
    assert detector.anomaly_model.runtime in ("ai-edge-litert", "tflite-runtime")
    assert (packaged_models_dir() / "MODEL_CARD.md").is_file()


def test_scanner_rows_score_as_attack_and_benign_rows_do_not(detector, scan_rows):
    rows, scanner = scan_rows
    attack, benign = [], []
    for r in rows:
        s = detector.score(r.X)
        for i, dev in enumerate(r.devices.tolist()):
            (attack if dev == scanner else benign).append(s.kind[i])
    assert attack and benign
    assert sum(k != "" for k in attack) >= len(attack) // 2  # most scanner ticks are flagged
    assert "port_scan" in attack
    assert sum(k != "" for k in benign) <= len(benign) * 0.01


def test_batches_larger_than_the_interpreter_batch(detector, scan_rows):
    rows, _ = scan_rows
    X = np.concatenate([r.X for r in rows])
    X = np.concatenate([X] * (600 // len(X) + 1))[:600]
    small = Detector(batch=64)
    a, b = detector.score(X), small.score(X)
    assert np.array_equal(a.kind, b.kind) and np.allclose(a.score, b.score)
    assert detector.score(X[:0]).kind.shape == (0,)


def test_a_tick_of_many_devices_is_scored_in_chunks_row_for_row(detector, scan_rows, monkeypatch):
    import atlas.agent.detect as detect

    rows, _ = scan_rows
    X = np.concatenate([r.X for r in rows])
    X = np.concatenate([X] * (1000 // len(X) + 1))[:1000]
    whole = detector.score(X)
    monkeypatch.setattr(detect, "SCORE_CHUNK", 96)  # 11 chunks, the last one short
    chunked = detector.score(X)
    assert (whole.kind != "").any() and (whole.kind == "").any()
    for f in ("kind", "score", "p_attack", "anomaly"):
        assert np.array_equal(getattr(whole, f), getattr(chunked, f)), f


def test_wrong_schema_is_refused(tmp_path):
    shutil.copytree(packaged_models_dir(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    meta["schema_version"] = 999
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="retrain"):
        Detector(tmp_path / "m")
    with pytest.raises(ModelError, match="missing"):
        Detector(tmp_path / "nothing-here")


def test_int8_model_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite"):
        Int8Model(bad)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        Int8Model(tmp_path / "missing.tflite")
    m = Int8Model(packaged_models_dir() / "classifier.tflite")
    with pytest.raises(ValueError, match="expected input"):
        m(np.zeros((3, N_FEATURES + 1), np.float32))
