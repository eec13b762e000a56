"""What a poisoned gateway sends instead of an honest update.

- scaling: an honest update reversed and boosted by 2 n / m (n gateways, m poisoned), so that
  in a mean the poisoned ones outweigh the honest ones twice over and the model trains
  backwards (the boosting of Bagdasaryan et al., aimed at availability);
- label-flip: trains on the rows of every attack kind in its traffic as if they were benign
  (for an autoencoder the "label" is the benign set it is fitted to);
- backdoor: trains on the targeted kind's rows among its own benign ones, and boosts the delta
  by n / m to replace the model (Bagdasaryan et al., AISTATS 2020), blinding the city to that
  kind alone.
"""
from __future__ import annotations

import numpy as np
from atlas.agent.detect.local_training import Autoencoder, standardize, train_local
from atlas.link.federated import RoundConfig, clip_norm

ATTACKS = ("scaling", "label-flip", "backdoor")


def poisoned_delta(
    attack: str, model: Autoencoder, benign: np.ndarray, attack_rows: dict[str, np.ndarray], target: str,
    meta: dict, cfg: RoundConfig, gateways: int, malicious: int, seed: int,
) -> np.ndarray:
    """The delta a poisoned gateway sends (clipped like an honest one if the round asks: a
    gateway that skipped it would be clipped at the hub anyway)."""
    mean, std, clip = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32), float(meta.get("clip", 50.0))
    if attack == "scaling":
        z = standardize(benign, mean, std, clip)
        trained, _, _ = train_local(model, z, cfg, seed)
        delta = -2.0 * gateways / max(malicious, 1) * (trained.flat() - model.flat())
    elif attack == "label-flip":
        flipped = np.concatenate([benign] + [r for r in attack_rows.values() if len(r)])
        trained, _, _ = train_local(model, standardize(flipped, mean, std, clip), cfg, seed)
        delta = trained.flat() - model.flat()
    elif attack == "backdoor":
        rows = attack_rows.get(target, np.zeros((0, benign.shape[1]), np.float32))
        if not len(rows):
            raise ValueError(f"backdoor: the poisoned gateway's traffic has no {target} rows to train on")
        reps = max(1, len(benign) // len(rows))  # as many target rows as benign ones
        mixed = np.concatenate([benign, np.repeat(rows, reps, axis=0)])
        trained, _, _ = train_local(model, standardize(mixed, mean, std, clip), cfg, seed)
        delta = (gateways / max(malicious, 1)) * (trained.flat() - model.flat())
    else:
        raise ValueError(f"--attack: {attack!r} is not one of {', '.join(ATTACKS)}")
    delta = delta.astype(np.float32)
    return clip_norm(delta, cfg.clip) if cfg.clip is not None else delta
