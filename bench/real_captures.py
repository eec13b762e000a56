"""Replay the real captures in ../shared/data/real and MQTTset through the agent, against their truth.

    .venv/bin/python bench/real_captures.py [--real DIR] [--mqttset DIR] [--only SUBSTRING]

Prints one row per capture: capture, truth, incidents, kinds (count per kind), verdict.

Verdicts: benign captures are `ok` with 0 incidents, else `FP`. Attack captures are `ok` when the
attacker (for spoofed/reflected floods: the victim, as source or target) is in an incident with
the right kind or `anomaly`, `wrong kind` when named with another kind, `missed` when not named.
Any MQTT kind on a capture without MQTT adds `MQTT-KIND-ON-NON-MQTT`. MQTTset's captures were
in the models' training (train/dataset.py), so their rows are in-sample.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from atlas.agent.config import AgentConfig
from atlas.agent.detect import Detector
from atlas.agent.pipeline import replay
from atlas.link.incidents import Incident

HERE = Path(__file__).resolve().parent
REAL = HERE.parent / ".." / "shared" / "data" / "real"
MQTTSET = HERE.parent / ".." / "shared" / "data" / "mqttset"

MQTT_KINDS = {"slowite", "topic_scan", "mqtt_flood", "mqtt_bruteforce", "malformed"}
# Real captures that carry MQTT (their README); every other one has none.
REAL_WITH_MQTT = {"plantcube/plantcube_20230617_20230618.pcapng", "ndpi/mqtt.pcap", "ndpi/coap_mqtt.pcap"}
# The right names for each real attack's truth ("anomaly" is always acceptable).
REAL_KINDS = {
    "port scan": {"port_scan"},
    "Mirai-style scan": {"port_scan"},
    "brute force after a version scan": {"port_scan", "connection_dos"},
    "ARP host sweep": {"port_scan", "host_sweep"},
    "ICMP host sweep": {"port_scan", "host_sweep"},
    "SYN flood, spoofed sources": {"syn_flood", "volumetric", "connection_dos"},
    "UDP reflection flood": {"udp_flood", "volumetric"},
}
MQTTSET_TRUTH = {  # file -> (attacker, kind), as train/dataset.py labels them
    "bruteforce-train.pcapng": ("192.168.1.90", "mqtt_bruteforce"),
    "flood-train.pcap": ("192.168.1.100", "mqtt_flood"),
    "malariados-train.pcap": ("192.168.1.90", "connection_dos"),
    "malformed-train.pcap": ("192.168.1.90", "malformed"),
    "slowite-train.pcap": ("10.16.120.44", "slowite"),
}


def cases(real: Path, mqttset: Path) -> list[dict]:
    """Every capture with its truth: benign, or who attacked (or was attacked) and which kinds are right."""
    truth = json.loads((real / "truth.json").read_text())
    out = [{"file": real / f, "name": f, "truth": "benign", "mqtt": f in REAL_WITH_MQTT} for f in truth["benign"]]
    for a in truth["attacks"]:
        who = a.get("attacker") or a["victim"]
        out.append({"file": real / a["file"], "name": a["file"], "truth": f"{a['kind']} ({who})", "mqtt": False,
                    "attacker": a.get("attacker"), "victim": a.get("victim"), "kinds": REAL_KINDS[a["kind"]]})
    out.append({"file": mqttset / "benign-5mb-train.pcap", "name": "mqttset/benign-5mb-train.pcap", "truth": "benign", "mqtt": True})
    for f, (who, kind) in MQTTSET_TRUTH.items():
        out.append({"file": mqttset / f, "name": f"mqttset/{f}", "truth": f"{kind} ({who})", "mqtt": True,
                    "attacker": who, "kinds": {kind}})
    return [c for c in out if c["file"].is_file()]


def verdict(case: dict, incidents: list[Incident]) -> str:
    if case["truth"] == "benign":
        v = "ok" if not incidents else "FP"
    else:
        if case.get("attacker"):
            mine = [i for i in incidents if i.src_ip == case["attacker"]]
        else:  # spoofed or reflected: the victim is what a gateway can name
            mine = [i for i in incidents if case["victim"] in (i.src_ip, i.dst_ip)]
        kinds = {i.kind for i in mine}
        if not mine:
            v = "missed"
        elif kinds & (case["kinds"] | {"anomaly"}):
            v = "ok"
        else:
            v = "wrong kind"
        others = [i for i in incidents if i not in mine]
        if others:
            v += f", {len(others)} other"
    if not case["mqtt"] and any(i.kind in MQTT_KINDS for i in incidents):
        v += ", MQTT-KIND-ON-NON-MQTT"
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, default=REAL)
    p.add_argument("--mqttset", type=Path, default=MQTTSET)
    p.add_argument("--only", default="", help="only captures whose name contains this")
    args = p.parse_args(argv)
    if not (args.real / "truth.json").is_file():
        print(f"{args.real}/truth.json: not found (the real captures live in ../shared/data/real)", file=sys.stderr)
        return 2
    cfg, det = AgentConfig(), Detector()
    print("| capture | truth | incidents | kinds | verdict |")
    print("|---|---|---|---|---|")
    ok = total = 0
    t0 = time.perf_counter()
    for case in cases(args.real, args.mqttset):
        if args.only not in case["name"]:
            continue
        incidents = list(replay([case["file"]], cfg, det))
        kinds = Counter(i.kind for i in incidents)
        v = verdict(case, incidents)
        total += 1
        ok += v == "ok"
        shown = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "-"
        print(f"| {case['name']} | {case['truth']} | {len(incidents)} | {shown} | {v} |", flush=True)
    print(f"\n{ok}/{total} ok ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
