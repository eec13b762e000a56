"""Local training on the gateway: the numpy autoencoder is the shipped int8 model's network,
its gradients are right, a round learns a gateway's own normal, and only clipped weight
deltas (never rows) come out."""
from __future__ import annotations

import numpy as np
import pytest
from atlas.agent.detect import Detector, packaged_models_dir
from atlas.agent.detect.local_training import (
    Autoencoder,
    BenignBuffer,
    load_tflite_autoencoder,
    local_round,
    standardize,
    train_local,
)
from atlas.agent.features.schema import N_FEATURES
from atlas.link.federated import RoundConfig, decode_update, encode_update
from atlas.sim.capture import generate_capture
from atlas.train.dataset import LabeledCapture, capture_rows


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.fixture(scope="module")
def model():
    return load_tflite_autoencoder(packaged_models_dir() / "anomaly.tflite")


@pytest.fixture(scope="module")
def benign_rows(tmp_path_factory) -> np.ndarray:
    """Feature rows of a small generated gateway (the agent's real pipeline), benign only."""
    pcap = tmp_path_factory.mktemp("lt") / "gw.pcap"
    generate_capture(pcap, devices=15, duration=120, seed=11)
    rows = capture_rows(LabeledCapture(pcap, "test"))
    assert len(rows) > 300
    return rows.X


def test_dequantized_network_matches_the_int8_model(detector, model, benign_rows):
    z = detector.standardize(benign_rows)
    int8 = detector.anomaly_model(z)
    flt, _ = model.forward(z)
    assert model.size == 41 * 32 + 32 + 32 * 8 + 8 + 8 * 32 + 32 + 32 * 41 + 41
    # within the int8 model's own quantization error (meta.json, measured at training)
    assert np.mean(np.abs(int8 - flt)) <= 2 * detector.meta["quantization"]["anomaly_mean_abs_error"]


def test_gradients_match_finite_differences(model):
    """In float64 (the code is dtype-agnostic), central differences at every weight sampled."""
    rng = np.random.default_rng(1)
    m64 = Autoencoder([w.astype(np.float64) for w in model.weights], [b.astype(np.float64) for b in model.biases])
    z = rng.normal(0, 0.7, (16, N_FEATURES))
    _, gw, gb = m64.gradients(z)
    params = [p for wb in zip(m64.weights, m64.biases) for p in wb]
    grads = [g for wb in zip(gw, gb) for g in wb]
    for p, g in zip(params, grads):
        for flat_i in rng.choice(p.size, 6, replace=False):
            i = np.unravel_index(flat_i, p.shape)
            keep = p[i]
            p[i] = keep + 1e-6
            up = float(np.mean((m64.forward(z)[0] - z) ** 2))
            p[i] = keep - 1e-6
            down = float(np.mean((m64.forward(z)[0] - z) ** 2))
            p[i] = keep
            assert (up - down) / 2e-6 == pytest.approx(g[i], rel=1e-3, abs=1e-8)


def test_a_round_learns_the_gateways_own_normal(detector, model, benign_rows):
    """Rows of a device unlike anything in training (a shifted mix) reconstruct badly at first;
    a few epochs on them cut the error, and the model still rejects what is far from them."""
    rng = np.random.default_rng(2)
    own = benign_rows * rng.uniform(0.5, 2.0, N_FEATURES).astype(np.float32)
    z = standardize(own, detector.mean, detector.std, detector.clip)
    cfg = RoundConfig(round=1, epochs=5, batch_size=64, learning_rate=1e-3)
    trained, before, after = train_local(model, z, cfg, seed=0)
    assert after < 0.7 * before
    assert np.mean(trained.errors(z)) == pytest.approx(after)
    far = rng.normal(0, 8, z.shape).astype(np.float32)
    assert np.median(trained.errors(far)) > 5 * detector.threshold


def test_buffer_keeps_only_benign_rows_and_rolls(detector):
    buf = BenignBuffer(N_FEATURES, capacity=10)
    X = np.arange(8 * N_FEATURES, dtype=np.float32).reshape(8, N_FEATURES)
    kind = np.array(["", "", "mqtt_flood", "", "anomaly", "", "", ""], dtype=object)
    anomaly = np.array([0.1, 0.6, 0.1, 0.2, 1.5, 0.49, 0.0, 0.3])
    incident = np.array([False] * 7 + [True])
    assert buf.offer(X, kind, anomaly, incident) == 4  # rows 0, 3, 5, 6
    assert np.array_equal(buf.view()[:, 0], X[[0, 3, 5, 6], 0])
    for _ in range(3):  # 12 more rows: the oldest 6 of the 16 go
        buf.offer(X[:4], np.full(4, "", dtype=object), np.zeros(4))
    assert len(buf) == 10 and buf.rows.shape == (10, N_FEATURES)
    stream = [0, 3, 5, 6] + [0, 1, 2, 3] * 3
    assert sorted(buf.view()[:, 0].tolist()) == sorted(X[stream[-10:], 0].tolist())
    big = BenignBuffer(N_FEATURES, capacity=3)
    big.offer(X, np.full(8, "", dtype=object), np.zeros(8))  # more than fits at once: the last 3
    assert sorted(big.view()[:, 0].tolist()) == X[5:, 0].tolist()
    with pytest.raises(ValueError, match="buffer_rows"):
        BenignBuffer(N_FEATURES, capacity=0)


def test_local_round_sends_a_clipped_delta_and_no_rows(detector, model, benign_rows):
    buf = BenignBuffer(N_FEATURES, capacity=512)
    s = detector.score(benign_rows)
    buf.offer(benign_rows, s.kind, s.anomaly)
    assert len(buf) > 100
    up = local_round(model, buf, detector.meta, RoundConfig(round=1, epochs=2, clip=0.05))
    assert up.delta.shape == (model.size,) and up.rows == len(buf)
    assert np.linalg.norm(up.delta) <= 0.05 + 1e-6
    blob = encode_update(up.delta)
    assert len(blob) <= model.size * 2  # float16, never more than the weights
    back = decode_update(blob, model.size)
    assert np.allclose(back, up.delta, atol=1e-4)
    row_bytes = buf.view().tobytes()
    assert row_bytes[:64] not in blob  # the rows themselves are not in what is sent
    with pytest.raises(ValueError, match="model update: 3249 weights, the model has 10"):
        decode_update(blob, 10)
    with pytest.raises(ValueError, match="model update: not a deflated delta"):
        decode_update(b"rows", 10)
