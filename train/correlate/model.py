"""The attention-based recurrent correlator: samples, the Keras model, training, TFLite export.

For each incident of an episode (in time order) and each campaign open at that moment (the
true campaigns so far, decoys included: teacher forcing) that the hub would score (sharing more
than a place with it: atlas.central.correlate.attention.Placer), one sample: does the incident
continue this campaign? For the true continuations, also: the domain of this next stage
(predicted from the campaign's history alone).

The model: a GRU reads the campaign's history; attention scores each step of the history by
its GRU state and its relations to the new incident; the attended context, the strongest
relations and the new incident give the link probability; the GRU's last state gives the next
stage's domain. The attention weights are an output, so the hub can show them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from atlas.central.correlate import features as F
from atlas.train.correlate.data import Episode

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HORIZON_S = 6 * 3600.0  # campaigns stay open this long after their last incident


@dataclass
class Samples:
    history: np.ndarray
    relations: np.ndarray
    mask: np.ndarray
    incident: np.ndarray
    link: np.ndarray  # [n] 1 = continues the campaign
    next_domain: np.ndarray  # [n] domain index (meaningful where link = 1)

    def __len__(self) -> int:
        return len(self.link)

    def inputs(self) -> list[np.ndarray]:
        return [self.history, self.relations, self.mask, self.incident]


def samples(episodes: list[Episode], horizon_s: float = HORIZON_S) -> Samples:
    parts: list[tuple] = []
    for ep in episodes:
        open_: dict[str, F.CampaignState] = {}
        keys: dict[str, set] = {}  # what each campaign's incidents are found by
        for b in ep.events:
            fb = F.facts_of(b, ep.topology)
            later = F.keys_as_later(fb)
            names = [c for c, s in open_.items() if b.time - s.last_seen <= horizon_s
                     and not keys[c].isdisjoint(later)]
            if names:
                states = [open_[c] for c in names]
                hist, rel, mask, inc = F.pair_tensors(states, b, ep.topology)
                link = np.array([float(c == ep.truth[b.id]) for c in names], dtype=np.float32)
                dom = np.full(len(names), F.domain_index(b.domain), dtype=np.int32)
                parts.append((hist, rel, mask, inc, link, dom))
            c = ep.truth[b.id]
            if c in open_:
                F.grow(open_[c], b, ep.topology)
            else:
                open_[c] = F.new_state([b], ep.topology)
            keys.setdefault(c, set()).update(F.keys_as_earlier(fb))
    cols = list(zip(*parts))
    return Samples(*(np.concatenate(col) for col in cols))


def _tf():
    import tensorflow as tf

    return tf


def build(gru: int = 32):
    tf = _tf()
    L = tf.keras.layers
    hist = tf.keras.Input((F.T, F.H), name="history")
    rel = tf.keras.Input((F.T, F.R), name="relations")
    mask = tf.keras.Input((F.T,), name="mask")
    inc = tf.keras.Input((F.N,), name="incident")
    states = L.GRU(gru, return_sequences=True, unroll=True, name="gru")(hist)
    last = L.Lambda(lambda s: s[:, -1, :], name="last_state")(states)
    next_domain = L.Dense(len(F.DOMAINS), activation="softmax", name="next_domain")(
        L.Dense(32, activation="relu")(last))
    keyed = L.Concatenate(axis=-1)([states, rel])
    score = L.Dense(1)(L.Dense(32, activation="tanh")(keyed))
    score = L.Reshape((F.T,))(score)
    score = L.Lambda(lambda a: a[0] + (a[1] - 1.0) * 1e4, name="masked")([score, mask])
    attention = L.Softmax(name="attention")(score)
    context = L.Dot(axes=(1, 1))([attention, keyed])
    strongest = L.Lambda(lambda a: tf.reduce_max(a[0] * a[1][:, :, None], axis=1),
                         name="strongest")([rel, mask])
    z = L.Concatenate()([context, strongest, inc])
    z = L.Dense(64, activation="relu")(z)
    z = L.Dense(32, activation="relu")(z)
    link = L.Dense(1, activation="sigmoid", name="link")(z)
    model = tf.keras.Model([hist, rel, mask, inc], [link, next_domain, attention])
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3),
                  loss=["binary_crossentropy", "sparse_categorical_crossentropy", None],
                  loss_weights=[1.0, 0.3, 0.0])
    return model


def train(s: Samples, *, epochs: int = 8, seed: int = 0, batch: int = 256):
    from atlas.train.models import set_seed

    set_seed(seed)
    model = build()
    weights = [np.ones(len(s), dtype=np.float32), s.link.astype(np.float32),
               np.zeros(len(s), dtype=np.float32)]
    model.fit(s.inputs(), [s.link, s.next_domain, np.zeros((len(s), F.T), np.float32)],
              sample_weight=weights, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    return model


def to_tflite(model) -> bytes:
    """Float TFLite with a dynamic batch (the hub resizes it to the open campaigns)."""
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    return conv.convert()
