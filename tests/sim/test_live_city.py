"""The simulator's live mode: a small city run for real in namespaces (mosquitto, paho devices,
nmap / paho attacks, tcpdump, the live agent), then checked like a generated city: the agent
names the attackers, the ground truth's windows hold the attacker's packets, and nothing of
the run is left behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atlas.sim.attacks import AttackSpec
from atlas.sim.live import LiveOptions, prerequisites, run_live
from atlas.sim.live.netns import existing, reap_stale

pytestmark = [pytest.mark.netns, pytest.mark.slow]
HAVE_NMAP = shutil.which("nmap") is not None
REPO = Path(__file__).resolve().parents[2]


def _skip_unless_live() -> None:
    reason = prerequisites()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 20 s run of 12 devices: a flood, a brute force and (with nmap) a port scan, with the
    live agent on the bridge."""
    _skip_unless_live()
    out = tmp_path_factory.mktemp("live")
    attacks = [(AttackSpec("mqtt_flood", start=7, duration=5, params={"rate": 600.0}), None),
               (AttackSpec("mqtt_bruteforce", start=11, duration=7), None)]
    if HAVE_NMAP:
        attacks.append((AttackSpec("port_scan", start=3, duration=3, params={"hosts": 3, "ports": 200}), None))
    t = time.monotonic()
    result = run_live(LiveOptions(out=out, devices=12, duration=20, seed=5, attacks=attacks, agent=True, log=lambda m: None))
    result.seconds = time.monotonic() - t
    return result


def test_agent_names_each_attacker_in_the_capture(run):
    from atlas.agent.config import AgentConfig
    from atlas.agent.detect import Detector
    from atlas.agent.pipeline import replay

    pcap = run.out / run.gateways[0]["pcap"]
    incidents = list(replay([pcap], AgentConfig(), Detector(None)))
    by_src = {}
    for inc in incidents:
        by_src.setdefault(inc.src_ip, set()).add(inc.kind)
    for step in run.steps:
        assert step.attacker in by_src, f"no incident names the {step.kind} attacker {step.attacker}: {by_src}"
    flood = next(s for s in run.steps if s.kind == "mqtt_flood")
    brute = next(s for s in run.steps if s.kind == "mqtt_bruteforce")
    assert by_src[flood.attacker] & {"mqtt_flood", "volumetric"}
    assert "mqtt_bruteforce" in by_src[brute.attacker]
    if HAVE_NMAP:
        scan = next(s for s in run.steps if s.kind == "port_scan")
        assert "port_scan" in by_src[scan.attacker]


def test_live_agent_raised_the_same_attackers(run):
    found = run.incidents[run.gateways[0]["id"]]
    saved = [json.loads(line) for line in (run.out / "gateways" / run.gateways[0]["id"] / "agent_incidents.jsonl").read_text().splitlines()]
    assert saved == found
    srcs = {i["src_ip"] for i in found}
    assert {s.attacker for s in run.steps} <= srcs, (srcs, [s.attacker for s in run.steps])


def test_ground_truth_windows_hold_the_attacker_packets(run):
    """Read back independently with Scapy: every attacker packet near the step lies in
    [start, end], the first and last are its ends, and the tool's own times agree."""
    from scapy.all import IP, PcapReader

    from atlas.sim.capture import read_ground_truth

    steps = read_ground_truth(run.out / "ground_truth.jsonl")
    assert sorted(s.kind for s in steps) == sorted(s.kind for s in run.steps)
    times = {s.attacker: [] for s in steps}
    with PcapReader(str(run.out / run.gateways[0]["pcap"])) as reader:
        for pkt in reader:
            if IP in pkt and pkt[IP].src in times:
                times[pkt[IP].src].append(float(pkt.time))
    for s in steps:
        ts = times[s.attacker]  # rogue addresses: every packet they sent belongs to their step
        assert len(ts) == s.attacker_packets > 0, s.kind
        assert min(ts) == pytest.approx(s.start, abs=1e-5) and max(ts) == pytest.approx(s.end, abs=1e-5)
        assert s.params["pcap_within_tool_run"], s.params
        # the tool ran when the capture says it sent
        assert s.params["tool_started"] - 0.5 <= s.start and s.end <= s.params["tool_ended"] + 2.0
        assert run.start + s.params["start_offset"] - 1.0 <= s.start <= run.start + s.params["start_offset"] + 3.0
    flood = next(s for s in steps if s.kind == "mqtt_flood")
    assert flood.params["tool_report"]["sent"] >= 0.8 * 600 * 5  # paced at its rate, bounded by its count
    brute = next(s for s in steps if s.kind == "mqtt_bruteforce")
    assert brute.params["tool_report"]["sent"] >= 40 and "0" not in brute.params["tool_report"]["codes"]  # every guess refused


def test_city_json_is_a_city_the_evaluator_loads(run):
    from atlas.sim.evaluate.city import load_city

    city = load_city(run.out)
    meta = json.loads((run.out / "city.json").read_text())
    assert meta["devices_total"] == 12 and len(city.devices) == 12
    g = meta["gateways"][0]
    assert g["id"] == "gw-d01-tra" and g["subnet"] == "10.1.0.0/16" and g["broker"] == "10.1.0.1"
    assert g["packets"] > 1000 and (run.out / g["pcap"]).stat().st_size > 0
    assert meta["end"] - meta["start"] == pytest.approx(20)
    fleet = run.fleet["gw-d01-tra"]
    assert fleet["connected"] == 12 + len(meta["backends"]) and fleet["published"] > 0 and not fleet["refused"]


def test_nothing_left_behind(run):
    assert run.namespaces and all(n.startswith("atlsim-" + run.run_id) for n in run.namespaces)
    assert not existing("atlsim-" + run.run_id)
    for pid in run.pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie_or_other(pid), pid
    assert run.seconds < 60


def _zombie_or_other(pid: int) -> bool:
    """A pid reused by an unrelated process since (not one in our namespaces)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"atlas.sim.live" not in cmd and b"mosquitto" not in cmd and b"tcpdump" not in cmd


def test_ctrl_c_removes_namespaces_and_processes(tmp_path):
    _skip_unless_live()
    before = set(existing())
    proc = subprocess.Popen([sys.executable, "-m", "atlas.sim.cli", "live", "--devices", "6", "--duration", "30", "--seed", "1",
                             "--out", str(tmp_path / "out"), "--attack", "mqtt_bruteforce@2:20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        mine: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not mine:
            mine = set(existing()) - before
            time.sleep(0.1)
        assert mine, "the run made no namespaces"
        pids: set[int] = set()
        deadline = time.monotonic() + 30  # broker, capture and devices come up (slowly on a loaded machine)
        while time.monotonic() < deadline and len(pids) < 2:
            time.sleep(0.5)
            mine = set(existing()) - before
            pids = set()
            for name in mine:
                out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
                pids |= {int(p) for p in out.split()}
        assert pids, "nothing ran inside the namespaces"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # it did not stop: kill it, then clean up as the next run would
            proc.kill()
            proc.wait()
            reap_stale()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (set(existing()) & mine)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie_or_other(pid), pid


def test_a_killed_run_takes_its_processes_along_and_is_reaped(tmp_path):
    """SIGKILL leaves no chance to clean up: the run's processes die with it (parent-death
    signal) and the next run (here: reap_stale) removes its namespaces; a live run's are kept."""
    _skip_unless_live()
    before = set(existing())
    proc = subprocess.Popen([sys.executable, "-m", "atlas.sim.cli", "live", "--devices", "4", "--duration", "30", "--seed", "2",
                             "--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def running_inside():
            mine = set(existing()) - before
            pids = set()
            for name in mine:
                out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
                pids |= {int(p) for p in out.split()}
            return (mine, pids) if len(mine) == 3 and len(pids) >= 2 else None

        deadline = time.monotonic() + 30
        got = None
        while time.monotonic() < deadline and not got:
            got = running_inside()
            time.sleep(0.2)
        assert got, "the run never had its namespaces and processes up"
        mine, pids = got
        assert not set(reap_stale()) & mine and set(existing()) >= mine  # its owner is alive: untouched
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie_or_other(p) for p in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() and not _zombie_or_other(p) for p in pids), "processes outlived the killed run"
    assert mine <= set(reap_stale())
    assert not set(existing()) & mine


def test_bad_arguments_are_clear_errors_before_anything_starts(tmp_path):
    before = set(existing())
    with pytest.raises(ValueError, match="exfiltration: parameter 'dest' 8.8.8.8: the live mode keeps traffic in its namespaces"):
        run_live(LiveOptions(out=tmp_path, devices=5, duration=10, attacks=[(AttackSpec("exfiltration", params={"dest": "8.8.8.8"}), None)]))
    with pytest.raises(ValueError, match="gateway 'gw-x'"):
        run_live(LiveOptions(out=tmp_path, devices=5, duration=10, attacks=[(AttackSpec("mqtt_flood"), "gw-x")]))
    with pytest.raises(ValueError, match="too late"):
        run_live(LiveOptions(out=tmp_path, devices=5, duration=10, attacks=[(AttackSpec("mqtt_flood", start=9.5), None)]))
    with pytest.raises(ValueError, match="duration"):
        run_live(LiveOptions(out=tmp_path, devices=5, duration=0))
    assert set(existing()) == before
    r = subprocess.run([sys.executable, "-m", "atlas.sim.cli", "live", "--out", str(tmp_path), "--attack", "nope"],
                       capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_a_failure_midway_removes_everything(tmp_path, monkeypatch):
    """tcpdump failing after the namespaces, the broker and the devices are up: the error
    reaches the caller and the run leaves nothing behind. (The failure is injected; nmap is
    made to look absent, so the scan is skipped with a reason instead of failing the run.)"""
    _skip_unless_live()
    import atlas.sim.live.run as live_run

    made: list = []
    real_which = live_run.shutil.which
    monkeypatch.setattr(live_run.shutil, "which", lambda name: None if name == "nmap" else real_which(name))

    def broken_tcpdump(ns, node):
        made.append((list(ns.namespaces), [p.pid for p in ns.procs]))
        raise RuntimeError("tcpdump on br0 did not start: injected")

    monkeypatch.setattr(live_run, "_start_tcpdump", broken_tcpdump)
    said: list[str] = []
    with pytest.raises(RuntimeError, match="injected"):
        run_live(LiveOptions(out=tmp_path, devices=4, duration=10, attacks=[(AttackSpec("port_scan", start=2), None)], log=said.append))
    assert any("port_scan" in m and "skipped" in m and "nmap" in m for m in said), said
    namespaces, pids = made[0]
    assert len(namespaces) == 3 and len(pids) == 2  # gateway, devices, attackers; mosquitto and the device worker
    assert not set(existing()) & set(namespaces)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie_or_other(pid), pid
