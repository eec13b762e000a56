"""Each simulated gateway's traffic as the agent sees it: a generated capture of its own device
mix, through the agent's real pipeline, cut into labelled feature rows.

Labels as train/dataset.py makes them (the simulator may not import train): rows of an
attacker inside its step (plus TAIL_S) carry the step's kind, its rows outside are left out,
every other row is benign. Attackers here are rogue hosts, never the gateway's own devices.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from atlas.link.incidents import KNOWN_KINDS

TAIL_S = 5.0
BENIGN = "benign"


@dataclass
class GatewayRows:
    X: np.ndarray  # float32 [n, F]
    y: np.ndarray  # object: kind or "benign"
    devices: int
    duration: float

    def of(self, kind: str) -> np.ndarray:
        return self.X[self.y == kind]


def device_mix(rng: np.random.Generator, classes: list[str], low: int = 3, high: int = 6) -> list[str]:
    """A gateway's device classes: a few of the city's, different per gateway."""
    k = int(rng.integers(low, min(high, len(classes)) + 1))
    return sorted(rng.choice(classes, size=k, replace=False).tolist())


def gateway_rows(out: Path, *, classes: list[str], devices: int, duration: float, seed: int, attacks: bool) -> GatewayRows:
    """One gateway's rows, from `out`/rows.npz when an earlier run made them with the same
    arguments (runs that compare attacks share their gateways), else generated."""
    key = json.dumps({"classes": classes, "devices": devices, "duration": duration, "seed": seed, "attacks": attacks}, sort_keys=True)
    cached = out / "rows.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return GatewayRows(z["X"], z["y"].astype(object), devices, duration)
    rows = _generate_rows(out, classes=classes, devices=devices, duration=duration, seed=seed, attacks=attacks)
    np.savez(cached, X=rows.X, y=rows.y.astype(str), key=np.array(key))
    return rows


def _generate_rows(out: Path, *, classes: list[str], devices: int, duration: float, seed: int, attacks: bool) -> GatewayRows:
    """Generate one gateway's capture (with one attack of each known kind if `attacks`) and
    replay it through the agent's pipeline."""
    from atlas.agent.capture.pcapfile import read_capture
    from atlas.agent.config import AgentConfig
    from atlas.agent.pipeline import AgentPipeline
    from atlas.sim.attacks import one_of_each
    from atlas.sim.capture import generate_capture

    out.mkdir(parents=True, exist_ok=True)
    specs = one_of_each(np.random.default_rng([seed, 0xFED]), duration, KNOWN_KINDS) if attacks else []
    gt = generate_capture(out / "traffic.pcap", devices=devices, duration=duration, attacks=specs, seed=seed, classes=classes)
    X, dev, t = [], [], []
    pipe = AgentPipeline(AgentConfig(), None, on_rows=lambda r: (X.append(r.X), dev.append(r.devices), t.append(np.full(len(r), r.tick_end))))
    for batch in read_capture(out / "traffic.pcap"):
        pipe.process(batch)
    pipe.finish()
    (out / "traffic.pcap").unlink()  # rows are all the simulation needs; captures are large
    if not X:
        return GatewayRows(np.zeros((0, 0), np.float32), np.zeros(0, dtype=object), devices, duration)
    names = np.array([pipe.book.name(int(k)) for k in np.concatenate(dev)], dtype=object)
    times = np.concatenate(t)
    y = np.full(len(names), BENIGN, dtype=object)
    keep = np.ones(len(names), dtype=bool)
    for step in gt.steps:
        for addr in step.attackers or [step.attacker]:
            mine = names == addr
            during = mine & (times >= step.start) & (times <= step.end + TAIL_S + 1.0)
            y[during] = step.kind
            keep &= ~(mine & ~during)
    return GatewayRows(np.concatenate(X)[keep], y[keep], devices, duration)
