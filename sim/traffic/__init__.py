"""Traffic generation: the devices behind one gateway, their MQTT sessions over TCP, benign
look-alikes and attacks, written as pcap with ground truth.

Stages (one module each): population (who is on the network) -> schedule (when) -> payloads
(what) -> session / benign / lookalikes (MQTT conversations) -> wire (TCP/IP numbering,
ACKs, checksums, frames). atlas.sim.capture puts them together with the attacks (pcap and
ground truth).

    from atlas.sim.capture import generate_capture
    from atlas.sim.attacks import AttackSpec
    gt = generate_capture("cap.pcap", devices=200, duration=600, seed=1,
                          attacks=[AttackSpec("mqtt_flood", start=120, duration=30)])
    gt.write("outdir")   # ground_truth.jsonl, benign_events.jsonl, gateway.json, inventory.json, agent.toml
"""
from __future__ import annotations

from atlas.sim.traffic.benign import BenignOptions
from atlas.sim.traffic.lookalikes import LOOKALIKE_KINDS, BenignEvent, LookalikeSpec

__all__ = [
    "BenignEvent", "BenignOptions", "LOOKALIKE_KINDS", "LookalikeSpec",
]
