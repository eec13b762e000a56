"""Detect: score per-device feature rows with two int8 models.

- The *anomaly* model is an autoencoder trained on benign traffic only: a row whose
  reconstruction error exceeds the calibrated threshold is anomalous, whatever the attack.
- The *classifier* names the known attack kinds.

`Detector.score(X)` takes rows in the feature schema's order and returns, per row, the kind
(a known kind, "anomaly", or "" when benign) and a score. The models, their standardisation
and thresholds come from one folder with a `meta.json` (see train).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from atlas.agent.detect.runtime import Int8Model
from atlas.agent.features.schema import FEATURE_NAMES, SCHEMA_VERSION

BENIGN = "benign"
# Rows scored at a time: the float64 temporaries of standardizing and quantizing are some 300
# bytes a row each, 12 MB at once for a tick of 18,000 devices; chunks keep them near 1 MB.
SCORE_CHUNK = 2048


def packaged_models_dir() -> Path:
    """The models shipped inside the package (agent/detect/models/)."""
    return Path(str(resources.files("atlas.agent.detect") / "models"))


@dataclass
class Scores:
    kind: np.ndarray  # object array of str: "" (benign), a known kind, or "anomaly"
    score: np.ndarray  # float: classifier attack probability, or anomaly error / threshold
    p_attack: np.ndarray  # float: 1 - P(benign) from the classifier
    anomaly: np.ndarray  # float: reconstruction error / threshold (>= 1 is anomalous)
    confidence: np.ndarray  # float: the classifier's probability of the kind it named (0 otherwise)
    probs: np.ndarray  # float [n, classes]: the classifier's probabilities (for hints)


class ModelError(ValueError):
    """A model folder that cannot be used (missing file, wrong schema, bad meta.json)."""


class Detector:
    def __init__(self, models_dir: str | Path | None = None, batch: int = 256) -> None:
        self.dir = Path(models_dir) if models_dir else packaged_models_dir()
        meta_path = self.dir / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(f"{meta_path}: missing (no trained models in {self.dir})") from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path}: not valid JSON: {exc}") from exc
        self.meta = meta
        if meta.get("schema_version") != SCHEMA_VERSION or tuple(meta.get("feature_names", ())) != FEATURE_NAMES:
            raise ModelError(
                f"{meta_path}: models were trained on feature schema {meta.get('schema_version')}, "
                f"this agent computes schema {SCHEMA_VERSION}: retrain (train)"
            )
        self.mean = np.asarray(meta["mean"], dtype=np.float32)
        self.std = np.asarray(meta["std"], dtype=np.float32)
        self.classes: list[str] = list(meta["classifier"]["classes"])
        self.min_prob = float(meta["classifier"]["min_prob"])
        # Below this probability of the kind it names, the classifier is outside what it knows
        # (chosen on validation captures: bench/calibration.py); absent: every kind is kept.
        self.min_confidence = float(meta["classifier"].get("kind_min_confidence", 0.0))
        self.threshold = float(meta["anomaly"]["threshold"])
        self.clip = float(meta.get("clip", 50.0))
        self.version = str(meta["version"])
        self.anomaly_model = Int8Model(self.dir / meta["anomaly"]["file"], batch=batch)
        self.classifier = Int8Model(self.dir / meta["classifier"]["file"], batch=batch)
        self._attack_cols = np.array([i for i, c in enumerate(self.classes) if c != BENIGN])
        self._benign_col = self.classes.index(BENIGN)

    @property
    def versions(self) -> dict[str, str]:
        return {"anomaly": self.meta["anomaly"]["version"], "classifier": self.meta["classifier"]["version"]}

    def standardize(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def score(self, X: np.ndarray) -> Scores:
        n = X.shape[0]
        if n == 0:
            e = np.zeros(0)
            return Scores(np.zeros(0, dtype=object), e, e, e, e, np.zeros((0, len(self.classes)), dtype=np.float32))
        if n > SCORE_CHUNK:  # row by row the same: only the temporaries are smaller
            parts = [self._score(X[i : i + SCORE_CHUNK]) for i in range(0, n, SCORE_CHUNK)]
            return Scores(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("kind", "score", "p_attack", "anomaly", "confidence", "probs")))
        return self._score(X)

    def _score(self, X: np.ndarray) -> Scores:
        n = X.shape[0]
        z = self.standardize(X)
        recon = self.anomaly_model(z)
        err = np.mean((recon - z) ** 2, axis=1) / self.threshold
        probs = self.classifier(z)
        p_attack = 1.0 - probs[:, self._benign_col]
        kind = np.full(n, "", dtype=object)
        confidence = np.zeros(n, dtype=np.float32)
        known = p_attack >= self.min_prob
        if known.any():
            best = self._attack_cols[np.argmax(probs[known][:, self._attack_cols], axis=1)]
            kind[known] = np.array(self.classes, dtype=object)[best]
            confidence[known] = probs[known][np.arange(len(best)), best]
        anomalous = ~known & (err >= 1.0)
        kind[anomalous] = "anomaly"
        score = np.where(known, p_attack, np.where(anomalous, err, np.maximum(p_attack, 0.0)))
        return Scores(kind, score, p_attack, err, confidence, probs)
