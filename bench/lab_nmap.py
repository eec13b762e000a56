"""A real nmap run in a lab (network namespaces, a mosquitto on the gateway), replayed through the agent.

    sudo .venv/bin/python bench/lab_nmap.py -- -sV -p 1-1000,1883
    sudo .venv/bin/python bench/lab_nmap.py -- -A -p 80,1883

Creates a gateway namespace with mosquitto on 1883 and an attacker namespace (tests/lab.py),
runs nmap with the given arguments against the gateway (bounded to 120 s), captures the bridge
with tcpdump and prints the incidents the agent raises on that capture, with their evidence's
nearest kinds. Everything is removed afterwards; traffic stays inside the lab's namespaces.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import lab  # noqa: E402

from atlas.agent.config import AgentConfig  # noqa: E402
from atlas.agent.detect import Detector  # noqa: E402
from atlas.agent.pipeline import replay  # noqa: E402


def main(argv: list[str]) -> int:
    reason = lab.netns_unavailable_reason() or lab.mosquitto_unavailable_reason()
    if reason:
        print(f"lab_nmap: {reason}", file=sys.stderr)
        return 2
    nmap_args = argv[1:] if argv[:1] == ["--"] else argv
    with tempfile.TemporaryDirectory() as tmp, lab.Lab(subnet="10.81.0.0/24", subnet6="fd81::/64") as L:
        att = L.add_device("nmap")
        L.start_mosquitto(bind="0.0.0.0")
        pcap = Path(tmp) / "bridge.pcap"
        dump = L.popen(L.gw, ["tcpdump", "-i", L.bridge, "-w", str(pcap), "-U"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            r = L.run(att.netns, ["nmap", "-n", "-Pn", "--max-rtt-timeout", "200ms", *nmap_args, L.gw_ip], timeout=120)
            print(f"nmap {' '.join(nmap_args)}: exit {r.returncode}")
        except subprocess.TimeoutExpired:
            print(f"nmap {' '.join(nmap_args)}: stopped after 120 s")
        time.sleep(0.5)
        dump.terminate()
        dump.communicate(timeout=10)
        print(f"attacker {att.ip}, gateway/broker {L.gw_ip}")
        for inc in replay([pcap], AgentConfig(), Detector()):
            print(f"{inc.kind:<16} {inc.src_ip} -> {inc.dst_ip}  score {inc.score:.2f}  nearest {inc.evidence.get('nearest_kinds', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
