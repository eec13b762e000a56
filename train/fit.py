"""Fit the agent's two models from labelled rows and write the model folder the agent loads."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlas.agent.detect import BENIGN, Detector
from atlas.agent.detect.runtime import Int8Model
from atlas.agent.features.schema import FEATURE_NAMES, SCHEMA_VERSION
from atlas.train.dataset import Rows
from atlas.train.models import to_int8_tflite, train_autoencoder, train_classifier

STD_FLOOR = 0.5  # features are on log scales: one unit (a count x2.7) is at most 2 sigma, so a
# feature that is near-constant in benign training data (a device connecting) cannot explode
CLIP = 50.0
ANOMALY_QUANTILE = 0.9999  # of benign training errors (int8 model) ...
ANOMALY_MARGIN = 1.5  # ... times this margin is the threshold
MIN_PROB = 0.8  # classifier: P(attack) needed to name a kind
HARD_NEGATIVE_WEIGHT = 20.0  # benign rows during look-alikes (firmware pushes, storms) are rare


@dataclass
class Fitted:
    meta: dict
    anomaly_tflite: bytes
    classifier_tflite: bytes


def fit(train: Rows, *, version: str, seed: int = 0, epochs_ae: int = 60, epochs_clf: int = 40) -> Fitted:
    """Standardize on benign rows, train both models, convert to int8, calibrate the threshold."""
    benign = train.y == BENIGN
    if benign.sum() < 50:
        raise ValueError(f"only {benign.sum()} benign rows: not enough to learn normal traffic")
    mean = train.X[benign].mean(axis=0)
    std = np.maximum(train.X[benign].std(axis=0), STD_FLOOR)
    z = np.clip((train.X - mean) / std, -CLIP, CLIP).astype(np.float32)

    classes = [BENIGN] + sorted(set(train.y[~benign].tolist()))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in train.y], dtype=np.int64)

    ae = train_autoencoder(z[benign], epochs=epochs_ae, seed=seed)
    ae_bytes = to_int8_tflite(ae, z[benign])
    emphasis = np.where(train.hard, HARD_NEGATIVE_WEIGHT, 1.0)
    clf = train_classifier(z, y, len(classes), emphasis=emphasis, epochs=epochs_clf, seed=seed)
    clf_bytes = to_int8_tflite(clf, z)

    meta = {
        "version": version,
        "schema_version": SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "clip": CLIP,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "anomaly": {"file": "anomaly.tflite", "version": f"{version}-ae", "threshold": 1.0},
        "classifier": {"file": "classifier.tflite", "version": f"{version}-clf", "classes": classes, "min_prob": MIN_PROB},
        "training": {
            "rows": int(len(train)),
            "rows_by_class": {c: int((train.y == c).sum()) for c in classes},
            "hard_negative_rows": int(train.hard.sum()),
            "sources": sorted(set(train.source.tolist())),
        },
    }
    # Calibrate on the int8 model the agent will run, not on the float one.
    errs = _int8_errors(ae_bytes, z[benign])
    meta["anomaly"]["threshold"] = float(np.quantile(errs, ANOMALY_QUANTILE) * ANOMALY_MARGIN)
    meta["quantization"] = {
        "anomaly_mean_abs_error": float(np.abs(_int8_outputs(ae_bytes, z[benign][:5000]) - ae.predict(z[benign][:5000], verbose=0)).mean()),
        "classifier_mean_abs_error": float(np.abs(_int8_outputs(clf_bytes, z[:5000]) - clf.predict(z[:5000], verbose=0)).mean()),
    }
    return Fitted(meta, ae_bytes, clf_bytes)


def write_models(fitted: Fitted, out: Path) -> Detector:
    out.mkdir(parents=True, exist_ok=True)
    (out / "anomaly.tflite").write_bytes(fitted.anomaly_tflite)
    (out / "classifier.tflite").write_bytes(fitted.classifier_tflite)
    (out / "meta.json").write_text(json.dumps(fitted.meta, indent=1) + "\n")
    return Detector(out)


def _int8_outputs(model_bytes: bytes, z: np.ndarray) -> np.ndarray:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model_bytes)
        f.flush()
        return Int8Model(f.name)(z)


def _int8_errors(model_bytes: bytes, z: np.ndarray) -> np.ndarray:
    return np.mean((_int8_outputs(model_bytes, z) - z) ** 2, axis=1)
