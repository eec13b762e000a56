"""Labelled feature rows from captures, computed by the agent's own pipeline.

A capture comes with the attacks it contains (attacker address, kind, time span). A feature
row of the attacker inside the span (plus the damped windows' tail) is labelled with the
kind; rows of every other device are benign; rows of the attacker long after its attack are
left out (neither clean benign nor attack).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atlas.agent.config import AgentConfig
from atlas.agent.decode.packets import AddressBook
from atlas.agent.detect import BENIGN
from atlas.agent.features.schema import N_FEATURES
from atlas.agent.pipeline import AgentPipeline
from atlas.agent.capture.pcapfile import read_capture

TAIL_S = 5.0  # attack rows may still be labelled attack this long after the last attack packet


@dataclass
class AttackLabel:
    attacker: str
    kind: str
    start: float = -np.inf
    end: float = np.inf


@dataclass
class LabeledCapture:
    path: Path
    source: str  # e.g. "generated/seed-3", "mqttset/flood": the split unit
    attacks: list[AttackLabel] = field(default_factory=list)
    lookalikes: list[tuple[float, float]] = field(default_factory=list)  # benign events (start, end)


@dataclass
class Rows:
    X: np.ndarray  # float32 [n, F]
    y: np.ndarray  # object: kind or "benign"
    device: np.ndarray  # object: address
    t: np.ndarray  # float64 tick end
    source: np.ndarray  # object: the capture's source
    hard: np.ndarray  # bool: benign rows during a benign look-alike (hard negatives)

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        if not parts:
            e = np.zeros(0, dtype=object)
            return Rows(np.zeros((0, N_FEATURES), np.float32), e, e, np.zeros(0), e, np.zeros(0, dtype=bool))
        return Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: np.ndarray) -> "Rows":
        return Rows(*(getattr(self, f)[mask] for f in FIELDS))


FIELDS = ("X", "y", "device", "t", "source", "hard")


def capture_rows(cap: LabeledCapture, cfg: AgentConfig | None = None) -> Rows:
    """Feature rows of one capture with their labels."""
    X, dev, t = [], [], []
    pipe = AgentPipeline(cfg or AgentConfig(), None, on_rows=lambda r: (X.append(r.X), dev.append(r.devices), t.append(np.full(len(r), r.tick_end))))
    for batch in read_capture(cap.path):
        pipe.process(batch)
    pipe.finish()
    if not X:
        return Rows.concat([])
    book: AddressBook = pipe.book
    keys = np.concatenate(dev)
    names = np.array([book.name(int(k)) for k in keys], dtype=object)
    times = np.concatenate(t)
    y = np.full(len(names), BENIGN, dtype=object)
    keep = np.ones(len(names), dtype=bool)
    for a in cap.attacks:
        mine = names == a.attacker
        during = mine & (times >= a.start) & (times <= a.end + TAIL_S + 1.0)
        y[during] = a.kind
        keep &= ~(mine & ~during & (y == BENIGN))  # the attacker outside its attack: ambiguous
    hard = np.zeros(len(names), dtype=bool)
    for start, end in cap.lookalikes:
        hard |= (y == BENIGN) & (times >= start) & (times <= end + TAIL_S + 1.0)
    rows = Rows(np.concatenate(X), y, names, times, np.full(len(names), cap.source, dtype=object), hard)
    return rows.take(keep)


def ground_truth_labels(path: Path) -> list[AttackLabel]:
    """Attack labels from a simulator ground_truth.jsonl."""
    labels = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            g = json.loads(line)
            labels.append(AttackLabel(g["attacker"], g["kind"], float(g["start"]), float(g["end"])))
    return labels


# The MQTTset captures in ../shared/data/mqttset: one attack class per file, one attacker.
MQTTSET_ATTACKS = {
    "bruteforce-train.pcapng": AttackLabel("192.168.1.90", "mqtt_bruteforce"),
    "flood-train.pcap": AttackLabel("192.168.1.100", "mqtt_flood"),
    "malariados-train.pcap": AttackLabel("192.168.1.90", "connection_dos"),
    "malformed-train.pcap": AttackLabel("192.168.1.90", "malformed"),
    "slowite-train.pcap": AttackLabel("10.16.120.44", "slowite"),
}
MQTTSET_BENIGN = ("benign-5mb-train.pcap",)  # benign-train.pcap is its first megabyte


def mqttset_captures(folder: Path) -> list[LabeledCapture]:
    caps = [LabeledCapture(folder / f, f"mqttset/{f.split('-')[0]}", [a]) for f, a in MQTTSET_ATTACKS.items()]
    caps += [LabeledCapture(folder / f, f"mqttset/{f.rsplit('-', 1)[0]}", []) for f in MQTTSET_BENIGN]
    return [c for c in caps if c.path.exists()]
