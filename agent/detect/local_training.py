"""Local training on the gateway: the anomaly autoencoder's training step in numpy, on a
bounded rolling buffer of the gateway's own benign feature rows. No TensorFlow.

The float weights come from the shipped int8 TFLite model, dequantized (per-channel int8
weight scales, int32 biases at input scale x weight scale). Why not a float copy: the gateway
already holds the signed .tflite, so nothing new has to be pushed or verified, and the
dequantized network reconstructs the standardized rows within the quantization error the
int8 model itself has (tested). The hub starts every round from its float aggregate.

The training is plain mini-batch Adam on mean squared reconstruction error, as train/models.py
fits the model with Keras; the optimizer state lives only for one round, so the memory between
rounds is the row buffer alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from atlas.agent.detect.runtime import _quiet_runtime, interpreter_class
from atlas.link.federated import RoundConfig, clip_norm

# Rows kept for training: a rolling window of the latest benign rows (41 float32 each: 4096
# rows are 672 KB). More rows are not better here: they only make the round longer.
DEFAULT_BUFFER_ROWS = 4096
# A row is "well below" the threshold when its reconstruction error is under this share of it:
# borderline rows would teach the model to accept what is nearly anomalous.
BENIGN_MARGIN = 0.5


@dataclass
class Autoencoder:
    """Dense layers (weights [in, out], biases [out]); ReLU on every layer but the last."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]

    @property
    def size(self) -> int:
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases))

    def flat(self) -> np.ndarray:
        return np.concatenate([p.ravel() for wb in zip(self.weights, self.biases) for p in wb]).astype(np.float32)

    def with_flat(self, flat: np.ndarray) -> Autoencoder:
        """A copy with the weights of a flat vector in `flat()`'s order."""
        if flat.shape != (self.size,):
            raise ValueError(f"autoencoder weights: got {list(flat.shape)}, the model has [{self.size}]")
        ws, bs, at = [], [], 0
        for w, b in zip(self.weights, self.biases):
            ws.append(flat[at : at + w.size].reshape(w.shape).astype(np.float32))
            at += w.size
            bs.append(flat[at : at + b.size].astype(np.float32))
            at += b.size
        return Autoencoder(ws, bs)

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Reconstruction of standardized rows, and each layer's input (for the backward pass)."""
        acts = [z]
        h = z
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < last:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return h, acts

    def errors(self, z: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per row (the agent's anomaly score before / threshold)."""
        recon, _ = self.forward(z)
        return np.mean((recon - z) ** 2, axis=1)

    def gradients(self, z: np.ndarray) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Loss (mean over rows and features, as Keras' "mse") and its gradients."""
        recon, acts = self.forward(z)
        diff = recon - z
        loss = float(np.mean(diff * diff))
        g = (2.0 / diff.size) * diff
        gw: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        gb: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            gw[i] = acts[i].T @ g
            gb[i] = g.sum(axis=0)
            if i > 0:
                g = (g @ self.weights[i].T) * (acts[i] > 0)
        return loss, gw, gb


def load_tflite_autoencoder(path: str | Path) -> Autoencoder:
    """The float network of an int8 TFLite autoencoder (a chain of FULLY_CONNECTED ops)."""
    cls, _ = interpreter_class()
    with _quiet_runtime():
        it = cls(model_path=str(path))
        it.allocate_tensors()
    details = {t["index"]: t for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    if not ops:
        raise ValueError(f"{path}: no FULLY_CONNECTED layers: not the dense autoencoder train/models.py builds")
    weights, biases = [], []
    for op in ops:
        _, w_idx, b_idx = (int(i) for i in op["inputs"][:3])  # input, weights, bias
        wq = details[w_idx]["quantization_parameters"]
        w_scale, w_zp = wq["scales"], wq["zero_points"]
        w = (it.get_tensor(w_idx).astype(np.float32) - w_zp[:, None]) * w_scale[:, None]  # [out, in], per output channel
        b = it.get_tensor(b_idx).astype(np.float32) * details[b_idx]["quantization_parameters"]["scales"]
        weights.append(np.ascontiguousarray(w.T))
        biases.append(b.astype(np.float32))
    return Autoencoder(weights, biases)


class BenignBuffer:
    """A bounded rolling set of benign feature rows (raw, not standardized: the standardization
    may change with a model push). Only rows no model flagged, scored well below the threshold,
    and outside any incident window get in; the oldest go first."""

    def __init__(self, n_features: int, capacity: int = DEFAULT_BUFFER_ROWS, margin: float = BENIGN_MARGIN) -> None:
        if capacity < 1:
            raise ValueError(f"federated buffer_rows: must be >= 1, got {capacity}")
        self.rows = np.zeros((capacity, n_features), dtype=np.float32)
        self.capacity, self.margin = capacity, margin
        self._next = 0
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def offer(self, X: np.ndarray, kind: np.ndarray, anomaly: np.ndarray, incident: np.ndarray | None = None) -> int:
        """Keep the rows of a scored tick that are benign enough; returns how many were kept.
        `kind` and `anomaly` are the detector's `Scores` fields; `incident` marks rows of devices
        inside an open incident's window."""
        keep = (kind == "") & (anomaly < self.margin)
        if incident is not None:
            keep &= ~incident
        taken = X[keep][-self.capacity :]
        n = len(taken)
        end = self._next + n
        if end <= self.capacity:
            self.rows[self._next : end] = taken
        else:
            split = self.capacity - self._next
            self.rows[self._next :] = taken[:split]
            self.rows[: n - split] = taken[split:]
        self._next = end % self.capacity
        self._filled = min(self._filled + n, self.capacity)
        return n

    def view(self) -> np.ndarray:
        return self.rows[: self._filled]


@dataclass
class LocalUpdate:
    delta: np.ndarray  # float32, flat: trained weights minus the round's starting weights
    rows: int
    loss_before: float
    loss_after: float


def train_local(model: Autoencoder, z: np.ndarray, cfg: RoundConfig, seed: int = 0) -> tuple[Autoencoder, float, float]:
    """Fit `model` to standardized rows `z` for cfg.epochs with Adam; returns the trained model
    and the loss before and after."""
    rng = np.random.default_rng(seed)
    params = [p.copy() for wb in zip(model.weights, model.biases) for p in wb]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-7  # Keras Adam's defaults
    step = 0
    current = model
    before = float(np.mean(model.errors(z))) if len(z) else 0.0
    for _ in range(cfg.epochs):
        order = rng.permutation(len(z))
        for start in range(0, len(z), cfg.batch_size):
            batch = z[order[start : start + cfg.batch_size]]
            _, gw, gb = current.gradients(batch)
            grads = [g for wb in zip(gw, gb) for g in wb]
            step += 1
            lr = cfg.learning_rate * np.sqrt(1 - b2**step) / (1 - b1**step)
            for p, g, mi, vi in zip(params, grads, m, v):
                mi *= b1
                mi += (1 - b1) * g
                vi *= b2
                vi += (1 - b2) * g * g
                p -= (lr * mi / (np.sqrt(vi) + eps)).astype(p.dtype)
            current = Autoencoder(params[0::2], params[1::2])
    after = float(np.mean(current.errors(z))) if len(z) else 0.0
    return current, before, after


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float) -> np.ndarray:
    """As the Detector standardizes rows before scoring them."""
    return np.clip((X - mean) / std, -clip, clip).astype(np.float32)


def local_round(
    model: Autoencoder, buffer: BenignBuffer, meta: dict, cfg: RoundConfig, seed: int = 0
) -> LocalUpdate:
    """One gateway's part of a round: train on the buffered rows from the round's weights and
    return the clipped delta (what leaves the gateway: weights only, never rows)."""
    z = standardize(buffer.view(), np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32), float(meta.get("clip", 50.0)))
    trained, before, after = train_local(model, z, cfg, seed)
    delta = trained.flat() - model.flat()
    if cfg.clip is not None:
        delta = clip_norm(delta, cfg.clip)
    return LocalUpdate(delta.astype(np.float32), len(z), before, after)
