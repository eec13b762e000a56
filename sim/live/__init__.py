"""The simulator's live mode: a small city run for real in network namespaces it creates and
removes (mosquitto per gateway, paho-mqtt devices, nmap/paho/Scapy attacks, tcpdump captures,
optionally the real agent), written out like a generated city.

    from atlas.sim.live import LiveOptions, run_live
    result = run_live(LiveOptions(out=Path("out/live"), devices=30, duration=60, seed=3,
                                  attacks=[(AttackSpec("mqtt_flood", start=20, duration=10), None)]))
"""
from __future__ import annotations

from atlas.sim.live.plan import LIVE_TOOLS
from atlas.sim.live.run import LiveOptions, LiveResult, prerequisites, run_live

__all__ = ["LIVE_TOOLS", "LiveOptions", "LiveResult", "prerequisites", "run_live"]
