"""`atlas-agent` as an operator runs it: replay with --json, bench, install, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.sim.attacks import AttackSpec
from atlas.sim.capture import generate_capture


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atlas.agent.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def attacked_capture(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("replay") / "gw.pcap"
    truth = generate_capture(
        out,
        devices=20,
        duration=120,
        seed=5,
        attacks=[AttackSpec("port_scan", start=20, duration=20), AttackSpec("mqtt_bruteforce", start=60, duration=30)],
    )
    return out, truth.steps


def test_replay_json_is_one_incident_object_per_line(attacked_capture):
    pcap, steps = attacked_capture
    r = cli("replay", str(pcap), "--json")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    incidents = [json.loads(line) for line in lines]  # every line is exactly one JSON object
    assert incidents and all({"time", "src_ip", "kind", "score"} <= set(i) for i in incidents)
    for step in steps:
        mine = [i for i in incidents if i["src_ip"] == step.attacker]
        assert mine, f"no incident for the {step.kind} attacker {step.attacker}"
        assert step.start - 1 <= min(i["time"] for i in mine) <= step.end  # time of a triggering packet
    assert len({i["id"] for i in incidents}) == len(incidents)


def test_replay_human_output_names_attackers(attacked_capture):
    pcap, steps = attacked_capture
    r = cli("replay", str(pcap))
    assert r.returncode == 0, r.stderr
    assert all(s.attacker in r.stdout for s in steps)


def test_replay_of_a_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all")
    r = cli("replay", str(bad))
    assert r.returncode == 2 and "bad.pcap" in r.stderr and "Traceback" not in r.stderr
    r = cli("replay", str(tmp_path / "missing.pcap"))
    assert r.returncode == 2 and "no such capture file" in r.stderr


def test_replay_rejects_a_bad_config(tmp_path, attacked_capture):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[detect]\ntick_seconds = -1\n")
    r = cli("replay", str(attacked_capture[0]), "--config", str(cfg))
    assert r.returncode == 2 and "detect.tick_seconds" in r.stderr


def test_bench_summary(tmp_path):
    r = cli("bench", "--json", "--devices", "30", "--seconds", "20")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["replay_packets"] > 1000 and b["packets_per_cpu_s"] > 0 and b["inference_us_per_batch"] > 0
    assert b["packets_per_s_within_budget"] < b["packets_per_cpu_s"] * b["cores"]
    human = cli("bench", "--devices", "30", "--seconds", "20")
    assert "packets per CPU-second" in human.stdout and "within the CPU budget" in human.stdout


def test_install_into_a_throwaway_root(tmp_path):
    r = cli("install", "--root", str(tmp_path), "--interface", "eth9", "--no-enable")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "etc/systemd/system/atlas-agent.service").is_file()
    assert 'interface = "eth9"' in (tmp_path / "etc/atlas/agent.toml").read_text()
    r = cli("install", "--root", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_run_check_validates_config_and_models(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ninterface = "lo"\n')
    r = cli("run", "--config", str(cfg), "--check")
    assert r.returncode == 0 and "OK" in r.stdout
    cfg.write_text("[agent]\n")
    r = cli("run", "--config", str(cfg), "--check")
    assert r.returncode == 2 and "agent.interface" in r.stderr
