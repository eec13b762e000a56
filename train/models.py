"""Keras models and their full-integer int8 conversion (TensorFlow: hub side only)."""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tf():
    import tensorflow as tf

    return tf


def set_seed(seed: int) -> None:
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # older TF
        pass


def train_autoencoder(z_benign: np.ndarray, *, epochs: int = 60, seed: int = 0):
    """An autoencoder of standardized benign rows (bottleneck 8)."""
    tf = _tf()
    set_seed(seed)
    n = z_benign.shape[1]
    model = tf.keras.Sequential(
        [
            tf.keras.Input((n,)),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(n),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="mse")
    model.fit(z_benign, z_benign, epochs=epochs, batch_size=256, verbose=0, shuffle=True)
    return model


def train_classifier(z: np.ndarray, y: np.ndarray, n_classes: int, *, emphasis: np.ndarray | None = None, epochs: int = 40, seed: int = 0):
    """A softmax MLP over standardized rows; classes weighted to balance them, and rows with
    `emphasis` > 1 (hard negatives) weighted that much more."""
    tf = _tf()
    set_seed(seed)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = len(y) / (n_classes * np.maximum(counts, 1))
    sample_weight = weights[y] * (emphasis if emphasis is not None else 1.0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((z.shape[1],)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(z, y, sample_weight=sample_weight.astype(np.float32), epochs=epochs, batch_size=256, verbose=0, shuffle=True)
    return model


def to_int8_tflite(model, representative: np.ndarray, *, batches: int = 64, batch_size: int = 256) -> bytes:
    """Full-integer quantization with int8 input and output.

    Calibrate with large batches drawn from the whole range of inputs: few single-row samples
    give a too-narrow input scale (DESIGN.md: 30x the error).
    """
    tf = _tf()
    rng = np.random.default_rng(0)
    rep = representative.astype(np.float32)

    def gen():
        for _ in range(batches):
            idx = rng.integers(0, len(rep), size=batch_size)
            yield [rep[idx]]

    # Keras inputs keep a dynamic batch dimension, so the agent can resize it.
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()
