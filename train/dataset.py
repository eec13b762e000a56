"""Labelled feature rows from captures, computed by the agent's own pipeline.

A capture comes with the attacks it contains (attacker address, kind, time span). A feature
row of the attacker inside the span (plus the damped windows' tail) is labelled with the
kind; rows of every other device are benign; rows of a rogue attacker outside its attack are
left out (neither clean benign nor attack); a compromised device's rows before its attack and
from AFTERMATH_S after it are benign, those in between left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atlas.agent.config import AgentConfig
from atlas.agent.decode.packets import AddressBook
from atlas.agent.detect import BENIGN
from atlas.agent.features.schema import FEATURE_NAMES, N_FEATURES
from atlas.agent.pipeline import AgentPipeline
from atlas.agent.capture.pcapfile import read_capture

TAIL_S = 5.0  # attack rows may still be labelled attack this long after the last attack packet
# A compromised device's rows from this long after its attack are benign: the short window
# (half-life 2 s) has let go of the attack, the long one (30 s) still holds its residue, and
# the device's ordinary traffic must not be flagged for it.
AFTERMATH_S = 20.0
# Benign rows whose short window holds a CONNECT (>= 0.5 decayed: a device booting or
# reconnecting) count as hard negatives too: a few dozen per capture, each outweighed ~400 to 1
# by a row of the rare attack classes, so the classifier gave a booting device's first row
# (SYN, CONNECT, nothing else yet) to `malformed`, whose first rows differ by one message.
HARD_CONNECT = True
LABELLING = f"t{TAIL_S:g}-a{AFTERMATH_S:g}{'-hc' if HARD_CONNECT else ''}"  # in the row caches' names


@dataclass
class AttackLabel:
    attacker: str
    kind: str
    start: float = -np.inf
    end: float = np.inf
    compromised: bool = False  # one of the capture's own devices: its usual traffic goes on


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
        if a.compromised:  # its own traffic before the attack and after the aftermath is benign
            unclear = mine & ~during & (times > a.end) & (times < a.end + AFTERMATH_S)
        else:  # a rogue host outside its attack: ambiguous
            unclear = mine & ~during
        keep &= ~(unclear & (y == BENIGN))
    X = np.concatenate(X)
    hard = np.zeros(len(names), dtype=bool)
    for start, end in cap.lookalikes:
        hard |= (y == BENIGN) & (times >= start) & (times <= end + TAIL_S + 1.0)
    if HARD_CONNECT:
        hard |= (y == BENIGN) & (X[:, FEATURE_NAMES.index("mqtt_connect@2s")] >= np.log1p(0.5))
    rows = Rows(X, y, names, times, np.full(len(names), cap.source, dtype=object), hard)
    return rows.take(keep)


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
