"""A small city built from `generate_capture` per gateway, in the layout `atlas-sim city`
writes (see atlas.sim.evaluate.city). For tests of the harness and for `make demo` when the
city command is not available; `atlas-sim city` is the real thing.

Gateways: one per (district, domain), ids `gw-<district>-<tra|ene|pub>`, gateway k on
10.<k+1>.0.0/16 with its broker on .0.1. Attacks: every registered kind once, spread over the
gateways, plus one cross-domain campaign (recon on a transportation gateway -> credential
attack on an energy gateway -> tampering on a public-safety gateway, from one address).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.capture import DEFAULT_START, write_ground_truth

DOMAINS = ("transportation", "energy", "public_safety")
ABBREV = {"transportation": "tra", "energy": "ene", "public_safety": "pub"}
CAMPAIGN_ATTACKER = "198.51.100.23"  # documentation range: outside every gateway's subnet
# The campaign's stages, by domain; a later-stage kind falls back when it is not registered yet.
CAMPAIGN = (("transportation", ("mirai_scan", "port_scan")),
            ("energy", ("mqtt_bruteforce",)),
            ("public_safety", ("false_data", "mqtt_flood")))


def gateway_plan(gateways: int, devices: int) -> list[dict]:
    """(id, district, domain, subnet, broker, devices) per gateway: domains round-robin."""
    if gateways < 1 or devices < gateways:
        raise ValueError(f"a city needs >= 1 gateway and >= 1 device per gateway (got {gateways} gateways, {devices} devices)")
    per, extra = divmod(devices, gateways)
    out = []
    for k in range(gateways):
        domain = DOMAINS[k % 3]
        district = f"d{k // 3 + 1:02d}"
        out.append({"id": f"gw-{district}-{ABBREV[domain]}", "district": district, "domain": domain,
                    "subnet": f"10.{k + 1}.0.0/16", "broker": f"10.{k + 1}.0.1", "devices": per + (k < extra)})
    return out


def build_city(out: str | Path, *, devices: int = 60, gateways: int = 3, duration: float = 240.0, seed: int = 1,
               kinds: Sequence[str] | None = None, campaign: bool = True, lookalikes: bool = True,
               start_time: float = DEFAULT_START, progress: bool = False) -> Path:
    """Write a city folder (city.json, gateways/<id>/traffic.pcap, ground_truth.jsonl,
    benign_events.jsonl) and return its path. Same arguments: same bytes."""
    from atlas.sim.attacks import ATTACKS, AttackSpec
    from atlas.sim.traffic import BenignOptions, LookalikeSpec
    from atlas.sim.capture import generate_capture
    from atlas.sim.traffic.lookalikes import LOOKALIKE_KINDS

    out = Path(out)
    plan = gateway_plan(gateways, devices)
    profiles = load_device_profiles()
    rng = np.random.default_rng([seed, 0xC17])
    kinds = sorted(ATTACKS) if kinds is None else list(kinds)
    # Single steps: kind i on gateway i mod G, in slots that leave room for the campaign.
    per_gw: dict[str, list] = {g["id"]: [] for g in plan}
    for i, kind in enumerate(kinds):
        g = plan[i % len(plan)]["id"]
        per_gw[g].append(kind)
    specs: dict[str, list] = {g: [] for g in per_gw}
    warmup = min(40.0, 0.15 * duration)
    for g, ks in per_gw.items():
        slot = (duration - warmup) / max(len(ks), 1)
        for j, kind in enumerate(ks):
            length = float(rng.uniform(0.35, 0.6)) * slot
            start = warmup + j * slot + float(rng.uniform(0, slot - length))
            specs[g].append(AttackSpec(kind, start=round(start, 1), duration=round(length, 1), id=f"{g}/{kind}/{j + 1}"))
    if campaign:
        for stage, (domain, choices) in enumerate(CAMPAIGN, 1):
            gw = next((g for g in plan if g["domain"] == domain), None)
            kind = next((k for k in choices if k in ATTACKS), None)
            if gw is None or kind is None:
                continue
            start = duration * (0.15 + 0.25 * (stage - 1)) + float(rng.uniform(0, 5))
            specs[gw["id"]].append(AttackSpec(kind, start=round(start, 1), duration=round(min(45.0, 0.15 * duration), 1),
                                              attacker=CAMPAIGN_ATTACKER, campaign="c1", stage=stage,
                                              id=f"c1/{stage}/{kind}"))
    steps, events, dev_rows, gw_rows = [], [], [], []
    for g in plan:
        gdir = out / "gateways" / g["id"]
        gdir.mkdir(parents=True, exist_ok=True)
        classes = [name for name, p in profiles.items() if p.domain == g["domain"]]
        looks = ([LookalikeSpec(k, start=float(rng.uniform(0.2, 0.7) * duration)) for k in LOOKALIKE_KINDS]
                 if lookalikes else [])
        gt = generate_capture(gdir / "traffic.pcap", devices=g["devices"], duration=duration, attacks=specs[g["id"]],
                              seed=seed * 1000 + len(gw_rows), start_time=start_time, broker=g["broker"],
                              subnet=g["subnet"], gateway=g["id"], district=g["district"], lookalikes=looks,
                              classes=classes, options=BenignOptions())
        gt.write(gdir)  # the gateway's own ground truth, gateway.json, inventory.json and agent.toml, as `city` keeps them
        steps += gt.steps
        events += gt.benign_events
        gw_rows.append({**{k: g[k] for k in ("id", "district", "domain", "subnet", "broker", "devices")},
                        "pcap": f"gateways/{g['id']}/traffic.pcap", "packets": gt.packets})
        for d in gt.inventory.devices:
            dev_rows.append({"id": d.client_id, "ip": d.ip, "class": d.cls, "domain": d.domain,
                             "criticality": profiles[d.cls].criticality, "gateway": g["id"], "district": g["district"],
                             "client_id": d.client_id, "username": d.username})
        if progress:
            print(f"  {g['id']}: {g['devices']} devices, {gt.packets} packets, {len(gt.steps)} attack steps", file=sys.stderr)
    meta = {"seed": seed, "start": start_time, "end": start_time + duration, "duration": duration,
            "devices_total": len(dev_rows),
            "command": f"atlas.sim.evaluate.fixture.build_city(devices={devices}, gateways={gateways}, duration={duration:g}, seed={seed})",
            "districts": sorted({g["district"] for g in plan}), "gateways": gw_rows, "devices": dev_rows, "backends": []}
    (out / "city.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_ground_truth(steps, out / "ground_truth.jsonl")
    with open(out / "benign_events.jsonl", "w") as f:
        for ev in events:
            f.write(json.dumps(ev.to_dict(), sort_keys=True) + "\n")
    return out
