"""One gateway's capture: benign traffic, look-alikes and attacks, written as pcap with ground truth.

`generate_capture()` is the entry point. Every random choice derives from `seed` (through
names, not call order where it matters), so the same arguments give a byte-identical pcap.
Ground truth is computed from the packets actually written: an attack step's `start`/`end`
are the times of the first/last packet *sent by the attacker* inside the capture.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.traffic.benign import BenignOptions, generate_benign
from atlas.sim.traffic.population import Population, build_population, ip_int, ip_str
from atlas.sim.traffic.lookalikes import BenignEvent, LookalikeSpec
from atlas.sim.traffic.payloads import topic_rng
from atlas.sim.traffic.schedule import NS
from atlas.sim.traffic.wire import Segments, Wire, write_frames

# 2026-01-01 08:00:00 UTC: a fixed default keeps captures reproducible.
DEFAULT_START = 1767254400.0
# What every generated gateway folder holds (`generate`, each gateway of `city` and `live`):
PCAP_FILE = "traffic.pcap"  # the gateway's traffic
GATEWAY_FILE = "gateway.json"  # the simulator's record: devices with credentials, back-ends, seed, times
INVENTORY_FILE = "inventory.json"  # the gateway's device inventory, as the agent and the hub read it
AGENT_CONFIG_FILE = "agent.toml"  # the agent's config as `atlas-sim evaluate` runs it on this gateway
LOOKALIKE_OWNER0 = 100_000  # owner tags: 0 benign, 1.. attack steps, 100000.. look-alikes


@dataclass
class AttackStep:
    """Ground truth of one attack step (one line of ground_truth.jsonl)."""

    id: str
    kind: str
    campaign: str
    stage: int
    attacker: str  # the (first) attacking address
    victims: list[str]
    gateway: str
    start: float  # epoch seconds of the first packet sent by the attacker
    end: float  # epoch seconds of the last packet sent by the attacker
    packets: int = 0  # packets of the step in the capture (both directions)
    attacker_packets: int = 0
    attackers: list[str] = field(default_factory=list)  # every attacking address (several for DoS from many hosts)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GroundTruth:
    steps: list[AttackStep]
    benign_events: list[BenignEvent]
    inventory: Population
    seed: int
    start: float
    end: float
    packets: int
    pcap: str = ""

    def write(self, out_dir: str | Path) -> None:
        """ground_truth.jsonl (attack steps), benign_events.jsonl (look-alikes), and the
        gateway's files (`write_gateway_files`)."""
        out = Path(out_dir)
        write_ground_truth(self.steps, out / "ground_truth.jsonl")
        with open(out / "benign_events.jsonl", "w") as f:
            for ev in self.benign_events:
                f.write(json.dumps(ev.to_dict(), sort_keys=True) + "\n")
        write_gateway_files(out, self.inventory, {"seed": self.seed, "start": self.start, "end": self.end, "packets": self.packets})


def write_gateway_files(out_dir: str | Path, population: Population, meta: dict[str, Any]) -> None:
    """gateway.json (the population's record and `meta`), inventory.json (its devices in the
    inventory format of atlas.link.inventory) and agent.toml, so that

        atlas-agent replay traffic.pcap --config agent.toml

    in the folder runs the agent exactly as `atlas-sim evaluate` does on this gateway."""
    from atlas.agent.detect.conformance import write_device_inventory

    out = Path(out_dir)
    (out / GATEWAY_FILE).write_text(json.dumps(population.to_dict() | meta, indent=1, sort_keys=True) + "\n")
    devices = [{"ip": d.ip, "class": d.cls, "client_id": d.client_id, "criticality": population.profiles[d.cls].criticality}
               for d in population.devices]
    write_device_inventory(out / INVENTORY_FILE, devices, gateway=population.gateway)
    (out / AGENT_CONFIG_FILE).write_text(
        "# The agent as `atlas-sim evaluate` runs it on this gateway's traffic (`--no-conformance`: without\n"
        f"# [detect] inventory):  atlas-agent replay {PCAP_FILE} --config {AGENT_CONFIG_FILE}\n"
        f'[agent]\ngateway_id = "{population.gateway}"\n\n[detect]\ninventory = "{INVENTORY_FILE}"   # relative to this file\n')


def write_ground_truth(steps: Sequence[AttackStep], path: str | Path) -> None:
    """One JSON object per attack step and line."""
    with open(path, "w") as f:
        for s in steps:
            f.write(json.dumps(s.to_dict(), sort_keys=True) + "\n")


def read_ground_truth(path: str | Path) -> list[AttackStep]:
    with open(path) as f:
        return [AttackStep(**json.loads(line)) for line in f if line.strip()]


def generate_capture(
    out_pcap: str | Path,
    *,
    devices: int,
    duration: float,
    attacks: Sequence[Any] = (),
    seed: int,
    start_time: float = DEFAULT_START,
    broker: str = "10.20.0.1",
    subnet: str = "10.20.0.0/16",
    gateway: str = "gw-d01",
    district: str = "d01",
    lookalikes: Sequence[LookalikeSpec] = (),
    profiles_dir: str | Path | None = None,
    classes: list[str] | None = None,
    options: BenignOptions | None = None,
    counts: dict[str, int] | None = None,
) -> GroundTruth:
    """Write the traffic of `devices` devices behind one gateway for `duration` seconds from
    `start_time`, with `attacks` (AttackSpec) and benign `lookalikes`, to `out_pcap`.
    `classes` restricts the device classes (split by profile weight); `counts` fixes the
    devices per class instead (a city gateway's share)."""
    from atlas.sim.attacks import AttackContext, run_attack  # attacks build on this package

    if duration <= 0:
        raise ValueError("duration: must be > 0 seconds")
    if ip_int(broker) & 0xFF == 0:
        raise ValueError(f"broker: {broker} is a network address")
    profiles = load_device_profiles(profiles_dir)
    inv = build_population(profiles, devices, topic_rng(seed, "inventory"), subnet=subnet, broker=broker,
                          district=district, gateway=gateway, classes=classes, counts=counts)
    t0 = int(round(start_time * NS))
    t1 = t0 + int(round(duration * NS))
    wire = Wire(topic_rng(seed, "wire"))
    looks = [(spec, LOOKALIKE_OWNER0 + j) for j, spec in enumerate(lookalikes)]
    benign = generate_benign(wire, inv, t0, t1, seed, lookalikes=looks, options=options)
    ctx = AttackContext(wire, inv, benign, t0, t1, gateway)
    planned = []
    for i, spec in enumerate(attacks):
        wire.owner = i + 1
        planned.append(run_attack(ctx, spec, topic_rng(seed, "attack", str(i), spec.kind), index=i))
    wire.owner = 0
    seg = wire.build()
    seg = seg.take(np.flatnonzero((seg.ts >= t0) & (seg.ts < t1)))
    n = _write(wire, seg, out_pcap)
    src = _src_ip(wire, seg)
    steps = [_truth(plan, seg, src, i + 1, gateway, t0) for i, plan in enumerate(planned)]
    events = [_event_truth(ev, seg, owner, t1) for ev, owner in benign.events]
    return GroundTruth(steps, events, inv, seed, t0 / NS, t1 / NS, n, str(out_pcap))


def _write(wire: Wire, seg: Segments, out_pcap) -> int:
    with open(out_pcap, "wb") as f:
        return write_frames(f, (batch for batch, _ in wire.frames(seg)))


def _src_ip(wire: Wire, seg: Segments) -> np.ndarray:
    h = np.where(seg.dir == 0, wire.conn_array("ch")[seg.conn], wire.conn_array("sh")[seg.conn])
    return wire.hosts_array("ip")[h]


def _truth(plan, seg: Segments, src: np.ndarray, owner: int, gateway: str, t0: int) -> AttackStep:
    mine = seg.owner == owner
    attackers = [ip_int(a) for a in plan.attackers]
    sent = mine & np.isin(src, attackers)
    ts = seg.ts[sent]
    if ts.size:
        start, end = float(ts.min() / NS), float(ts.max() / NS)
    else:  # nothing of it fell inside the capture: its planned start, zero length
        start = end = t0 / NS + float(plan.params["start_offset"])
    return AttackStep(
        id=plan.id, kind=plan.kind, campaign=plan.campaign, stage=plan.stage, attacker=plan.attackers[0],
        victims=list(plan.victims), gateway=gateway, start=start, end=end, packets=int(mine.sum()),
        attacker_packets=int(sent.sum()), attackers=list(plan.attackers), params=plan.params,
    )


def _event_truth(ev: BenignEvent, seg: Segments, owner: int, t1: int) -> BenignEvent:
    """firmware_update: its first/last packet; power_cut: from the cut to the last packet of
    the reconnect storm; rush_hour: the period (within the capture)."""
    mine = seg.owner == owner
    if mine.any() and ev.kind == "firmware_update":
        ev.start = seg.ts[mine].min() / NS
    if mine.any() and ev.kind != "rush_hour":
        ev.end = seg.ts[mine].max() / NS
    ev.end = min(ev.end, t1 / NS)
    ev.packets = int(mine.sum())
    return ev


__all__ = ["AttackStep", "DEFAULT_START", "GroundTruth", "generate_capture", "ip_str", "read_ground_truth", "write_ground_truth"]
