"""Training: from generated captures to int8 models the agent loads, and their evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training needs the `train` extra (TensorFlow)")

from atlas.agent.detect import BENIGN, Detector  # noqa: E402
from atlas.train.corpus import generate  # noqa: E402
from atlas.train.dataset import Rows, capture_rows  # noqa: E402
from atlas.train.evaluate import evaluate_capture, summarize  # noqa: E402
from atlas.train.fit import fit, write_models  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]

KINDS = ("port_scan", "mqtt_bruteforce", "mqtt_flood")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    train = [generate(work, s, devices=15, duration=300, kinds=KINDS) for s in (1, 2)]
    test = generate(work, 9, devices=15, duration=300, kinds=KINDS)
    return train, test


def test_rows_are_labelled_from_ground_truth(corpus):
    train, _ = corpus
    rows = capture_rows(train[0])
    attackers = {a.attacker: a.kind for a in train[0].attacks}
    assert set(np.unique(rows.y)) == {BENIGN, *KINDS}
    for dev, y in zip(rows.device, rows.y):
        if y != BENIGN:
            assert attackers[dev] == y  # only attackers' rows carry an attack label
    assert rows.hard.any() and not (rows.hard & (rows.y != BENIGN)).any()


def test_fit_writes_int8_models_that_find_held_out_attacks(corpus, tmp_path):
    train, test = corpus
    fitted = fit(Rows.concat([capture_rows(c) for c in train]), version="t1", epochs_ae=15, epochs_clf=15)
    det = write_models(fitted, tmp_path / "models")
    assert isinstance(det, Detector) and det.classes == [BENIGN, *sorted(KINDS)]
    meta = json.loads((tmp_path / "models" / "meta.json").read_text())
    assert meta["anomaly"]["threshold"] > 0 and meta["quantization"]["classifier_mean_abs_error"] < 0.05
    result = summarize([evaluate_capture(test, det)])
    assert result["attacks"] == len(KINDS)
    assert result["detected"] >= len(KINDS) - 1  # held-out seed: other devices, addresses, intensities
