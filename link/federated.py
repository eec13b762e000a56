"""What a federated round exchanges between hub and gateway: the round's training settings,
the norm bound on an update, and the update's bytes (weight deltas only, never rows)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

UPDATE_DTYPE = np.dtype("<f2")  # deltas are small and noisy: float16 halves the bytes, loses nothing that matters


@dataclass(frozen=True)
class RoundConfig:
    """What every gateway trains in one round."""

    round: int
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    clip: float | None = None  # the L2 bound a gateway clips its delta to before sending


def clip_norm(delta: np.ndarray, bound: float) -> np.ndarray:
    """`delta` scaled down to L2 norm `bound` if it is longer: bounds what one gateway can move."""
    norm = float(np.linalg.norm(delta))
    return delta if norm <= bound or norm == 0.0 else (delta * (bound / norm)).astype(delta.dtype)


def encode_update(delta: np.ndarray) -> bytes:
    """A flat weight delta as it travels: float16, deflated."""
    return zlib.compress(np.ascontiguousarray(delta, dtype=UPDATE_DTYPE).tobytes(), 6)


def decode_update(blob: bytes, size: int) -> np.ndarray:
    """The delta of `encode_update`, checked against the model's weight count."""
    try:
        raw = zlib.decompress(blob)
    except zlib.error as exc:
        raise ValueError(f"model update: not a deflated delta ({exc})") from None
    if len(raw) != size * UPDATE_DTYPE.itemsize:
        raise ValueError(f"model update: {len(raw) // UPDATE_DTYPE.itemsize} weights, the model has {size}")
    return np.frombuffer(raw, dtype=UPDATE_DTYPE).astype(np.float32)
