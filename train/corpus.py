"""The training and test corpus: captures the simulator generates, with randomized attacks.

Each seed gives one capture of one gateway: benign devices from the firmware profiles, benign
look-alikes (firmware update bursts, rush hour, a reconnect storm after a power cut) and every
known attack kind once, at a random time with randomized intensity. Training and test captures
use disjoint seeds, so they share no device, address, timing or attack parameter draw.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from atlas.link.incidents import KNOWN_KINDS
from atlas.train.dataset import AttackLabel, LabeledCapture

# Intensity ranges drawn per capture (uniform in log space between the bounds): from barely
# above benign to blatant, so the models learn the kind rather than one intensity.
PARAM_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "port_scan": {"rate": (20, 800), "ports": (40, 1000), "hosts": (1, 6)},
    "mqtt_bruteforce": {"rate": (1, 20)},
    "mqtt_flood": {"rate": (150, 3000)},
    "connection_dos": {"rate": (10, 100)},
    "slowite": {"connections": (100, 1000), "rate": (20, 300)},
    "malformed": {"count": (10, 80), "rate": (0.5, 5)},
    "topic_scan": {"filters": (10, 80), "rate": (1, 6)},
}
INTEGER_PARAMS = {"ports", "hosts", "connections", "count", "filters"}


# Share of the port scans run from one of the capture's own devices (compromised, as Mirai
# bots scan: its usual traffic goes on after the scan, and its rows from AFTERMATH_S after it
# are benign, train/dataset.py) rather than a rogue host, and share of the connection
# DoS whose clients all publish to one fixed topic (not malaria's per-client topics: the DoS
# must be known by its connection churn). Only port scans come from compromised devices: with
# every kind from them, benign devices' rows after an attack were learned as attack rows (false
# `topic_scan` incidents; bench/RESULTS.md "Detection quality"). The draws are skipped at 0.
COMPROMISED_SHARE = 0.5
COMPROMISED_KINDS: tuple[str, ...] = ("port_scan",)  # the kinds a compromised device runs
FIXED_TOPIC_SHARE = 0.5


def corpus_name() -> str:
    """Prefix of the captures' folders, from the attack plan's settings (cached captures are
    regenerated when any of them changes)."""
    import hashlib

    plan = repr((sorted(PARAM_RANGES.items()), COMPROMISED_SHARE, sorted(COMPROMISED_KINDS), FIXED_TOPIC_SHARE))
    return f"p{hashlib.sha256(plan.encode()).hexdigest()[:8]}-"


def attack_specs(rng: np.random.Generator, duration: float, kinds=KNOWN_KINDS, devices: list[str] | None = None) -> list:
    """One attack of each kind, in random order, in disjoint time slots after a benign warm-up;
    with `devices` (addresses), about COMPROMISED_SHARE of the COMPROMISED_KINDS ones come from one
    of those devices."""
    from atlas.sim.attacks import AttackSpec

    kinds = list(kinds)
    rng.shuffle(kinds)
    warmup = 60.0
    slot = (duration - warmup) / max(len(kinds), 1)
    specs = []
    for i, kind in enumerate(kinds):
        params = {}
        for name, (lo, hi) in PARAM_RANGES.get(kind, {}).items():
            v = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            params[name] = int(round(v)) if name in INTEGER_PARAMS else round(v, 2)
        length = float(rng.uniform(0.3, 0.6) * slot)
        start = warmup + i * slot + float(rng.uniform(0, max(slot - length - 5, 0.0)))
        if kind == "connection_dos" and FIXED_TOPIC_SHARE > 0 and rng.uniform() < FIXED_TOPIC_SHARE:
            params["topic"] = f"city/d01/{rng.choice(['transport', 'energy', 'safety'])}/load-{int(rng.integers(1, 99))}"
        attacker = None
        if devices and COMPROMISED_SHARE > 0 and kind in COMPROMISED_KINDS and rng.uniform() < COMPROMISED_SHARE:
            attacker = devices[int(rng.integers(len(devices)))]
        specs.append(AttackSpec(kind, start=round(start, 1), duration=round(length, 1), params=params, attacker=attacker))
    return specs


def device_addresses(seed: int, devices: int) -> list[str]:
    """The addresses of the devices `generate_capture` builds for this seed (same inventory draw)."""
    from atlas.firmware_profiles import load_device_profiles
    from atlas.sim.traffic.population import build_population
    from atlas.sim.traffic.payloads import topic_rng

    inv = build_population(load_device_profiles(None), devices, topic_rng(seed, "inventory"))
    return [d.ip for d in inv.devices]


def lookalike_specs(rng: np.random.Generator, duration: float) -> list:
    from atlas.sim.traffic.lookalikes import LOOKALIKE_KINDS, LookalikeSpec

    return [LookalikeSpec(k, start=float(rng.uniform(30, duration - 120))) for k in LOOKALIKE_KINDS]


RECONNECT_INTERVAL_S = 1800.0  # devices reconnect now and then: connecting is normal, too


def generate(work: Path, seed: int, *, devices: int = 40, duration: float = 900.0, kinds=KNOWN_KINDS) -> LabeledCapture:
    """Generate (or reuse, if already there) the capture of one seed. Odd seeds start with
    every device booting (connecting inside the capture), even seeds with sessions up."""
    from atlas.sim.traffic.benign import BenignOptions
    from atlas.sim.capture import PCAP_FILE, generate_capture, read_ground_truth

    out = work / f"{corpus_name()}seed-{seed}"  # cached captures: the name changes with the attack plan
    pcap, truth = out / PCAP_FILE, out / "ground_truth.jsonl"
    if not (pcap.exists() and truth.exists()):
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 7331])
        gt = generate_capture(
            pcap,
            devices=devices,
            duration=duration,
            attacks=attack_specs(rng, duration, kinds, devices=device_addresses(seed, devices)),
            lookalikes=lookalike_specs(rng, duration),
            seed=seed,
            options=BenignOptions(preroll=seed % 2 == 0, reconnect_interval=RECONNECT_INTERVAL_S),
        )
        gt.write(out)
    mine = set(device_addresses(seed, devices))
    labels = [
        AttackLabel(addr, s.kind, s.start, s.end, compromised=addr in mine)
        for s in read_ground_truth(truth) for addr in (s.attackers or [s.attacker])
    ]
    events = [json.loads(line) for line in (out / "benign_events.jsonl").read_text().splitlines() if line.strip()]
    return LabeledCapture(pcap, f"generated/seed-{seed}", labels, [(e["start"], e["end"]) for e in events])
