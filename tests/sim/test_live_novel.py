"""The live mode's novel kinds (not in the agent's classifier): a Mirai-style telnet scan with
nmap, an upload to an "outside" host, forged readings (and a connection DoS from two hosts);
the live agent with the gateway's inventory names each attacker, and "outside" traffic never
goes further than the gateway's namespace."""
from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

import pytest

from atlas.sim.attacks import AttackSpec
from atlas.sim.live import LiveOptions, prerequisites, run_live
from atlas.sim.live.netns import existing
from atlas.sim.live.pcapscan import index_pcap
from atlas.sim.live.plan import OUTSIDE_NETS

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    reason = prerequisites()
    if reason:
        pytest.skip(reason)
    attacks = [(AttackSpec("exfiltration", start=7, duration=5, params={"kbytes_per_s": 50.0}), None),
               (AttackSpec("false_data", start=12, duration=5), None),
               (AttackSpec("connection_dos", start=3, duration=3, params={"hosts": 2, "rate": 30.0}), None)]
    if shutil.which("nmap"):
        attacks.append((AttackSpec("mirai_scan", start=2, duration=4), None))
    return run_live(LiveOptions(out=tmp_path_factory.mktemp("novel"), devices=12, duration=18, seed=8, attacks=attacks, agent=True,
                                log=lambda m: None))


def step(run, kind):
    found = [s for s in run.steps if s.kind == kind]
    if not found:
        pytest.skip(f"{kind} was not run (nmap missing?)")
    return found[0]


def kinds_from(run, ip):
    return {i["kind"] for i in run.incidents[run.gateways[0]["id"]] if i["src_ip"] == ip}


def test_exfiltration_reaches_the_sink_and_is_a_profile_violation(run):
    s = step(run, "exfiltration")
    report = s.params["tool_report"]
    assert report["sent"] == 50 * 1024 * 5 and report["received"] >= report["sent"]  # framing on top
    assert s.victims[0] == s.params["dest"] and any(ipaddress.IPv4Address(s.params["dest"]) in ipaddress.IPv4Network(n) for n in OUTSIDE_NETS)
    assert s.attacker in {d["ip"] for d in json.loads((run.out / "city.json").read_text())["devices"]}  # a compromised device
    assert "profile_violation" in kinds_from(run, s.attacker)


def test_forged_readings_are_false_data(run):
    s = step(run, "false_data")
    assert s.params["mode"] == "spoof" and s.params["tool_report"]["sent"] == s.params["messages"] >= 4
    assert "false_data" in kinds_from(run, s.attacker)


def test_mirai_scan_probes_telnet_inside_and_outside(run):
    s = step(run, "mirai_scan")
    assert s.params["inside_targets"] > 0 and s.params["outside_targets"] > 0
    assert s.attacker_packets >= s.params["inside_targets"] and s.params["pcap_within_tool_run"]
    assert kinds_from(run, s.attacker) & {"port_scan", "profile_violation"}


def test_connection_dos_from_several_hosts(run):
    """(Not a novel kind: it rides along.) Every attacking address is in the ground truth and
    named by an incident."""
    s = step(run, "connection_dos")
    assert len(s.attackers) == 2 and s.attacker == s.attackers[0]
    assert s.params["tool_report"]["sent"] == s.params["connections"] == 90 and s.params["tool_report"]["refused"] == 0
    for ip in s.attackers:
        assert kinds_from(run, ip), f"no incident names DoS host {ip}"


def test_outside_addresses_end_in_the_gateway_namespace(run):
    """Only the exfiltration sink ever answers from an "outside" address: the scan's probes to
    the others were not forwarded anywhere. And nothing of the run is left."""
    idx = index_pcap(run.out / run.gateways[0]["pcap"])
    nets = [ipaddress.IPv4Network(n) for n in OUTSIDE_NETS]
    outside_src = {str(ipaddress.IPv4Address(int(a))) for a in set(idx.src.tolist()) if any(ipaddress.IPv4Address(int(a)) in n for n in nets)}
    assert outside_src <= {step(run, "exfiltration").params["dest"]}
    assert not existing("atlsim-" + run.run_id)
    assert all(not Path(f"/proc/{pid}/cmdline").exists() or b"atlas.sim.live" not in Path(f"/proc/{pid}/cmdline").read_bytes()
               for pid in run.pids)
