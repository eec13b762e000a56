"""atlas-sim: argument parsing, the files `generate` writes, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.sim.cli import main, parse_event

GT_KEYS = {"id", "kind", "campaign", "stage", "attacker", "victims", "gateway", "start", "end"}


def test_parse_event():
    assert parse_event("port_scan") == ("port_scan", None, None, {})
    assert parse_event("mqtt_flood@60") == ("mqtt_flood", 60.0, None, {})
    assert parse_event("mqtt_flood@60:30,rate=3000,qos=1,topic=a/b,harvest=false,size_max=1.5") == (
        "mqtt_flood", 60.0, 30.0, {"rate": 3000, "qos": 1, "topic": "a/b", "harvest": False, "size_max": 1.5})
    assert parse_event("slowite@:40") == ("slowite", None, 40.0, {})
    with pytest.raises(ValueError, match="START and DURATION must be seconds"):
        parse_event("slowite@soon")
    with pytest.raises(ValueError, match="must be key=value"):
        parse_event("slowite,fast")


def test_generate_writes_capture_and_ground_truth(tmp_path, capsys):
    out = tmp_path / "g"
    rc = main(["generate", "--devices", "15", "--duration", "60", "--seed", "3", "--out", str(out),
               "--attack", "mqtt_bruteforce@10:10,rate=5", "--attack", "port_scan@30:5,ports=50",
               "--lookalike", "power_cut@45:3"])
    assert rc == 0
    assert "2 attack steps" in capsys.readouterr().out
    pcap = (out / "traffic.pcap").read_bytes()
    assert pcap[:4] == b"\x4d\x3c\xb2\xa1" and len(pcap) > 10_000  # nanosecond pcap
    steps = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]
    assert [s["kind"] for s in steps] == ["mqtt_bruteforce", "port_scan"]
    for s in steps:
        assert GT_KEYS <= set(s)
        assert s["gateway"] == "gw-d01" and s["victims"] and s["start"] <= s["end"]
    inv = json.loads((out / "gateway.json").read_text())
    assert len(inv["devices"]) == 15 and inv["seed"] == 3
    devices = json.loads((out / "inventory.json").read_text())["device"]  # the format the agent reads
    assert [d["address"] for d in devices] == [d["ip"] for d in inv["devices"]]
    assert (out / "agent.toml").read_text().count('inventory = "inventory.json"') == 1
    events = [json.loads(line) for line in (out / "benign_events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["power_cut"] and events[0]["benign"] is True


@pytest.mark.parametrize("extra,words", [
    (["--attack", "ddos"], "attack kind 'ddos': must be one of"),
    (["--attack", "mqtt_flood,speed=3"], "unknown parameter 'speed'"),
    (["--lookalike", "earthquake"], "look-alike kind 'earthquake'"),
    (["--attack", "mqtt_flood@x"], "START and DURATION must be seconds"),
    (["--broker", "10.20.0.0"], "is a network address"),
])
def test_generate_errors_are_clear(tmp_path, capsys, extra, words):
    rc = main(["generate", "--devices", "5", "--duration", "10", "--seed", "1", "--out", str(tmp_path / "x")] + extra)
    assert rc == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_duration_must_be_finite(tmp_path, value):
    r = subprocess.run([str(Path(sys.executable).parent / "atlas-sim"), "generate", "--devices", "5", "--duration", value,
                        "--seed", "1", "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if "error:" in line] == [
        f"atlas-sim generate: error: argument --duration: {value} is not a finite number"]
    assert not (tmp_path / "x").exists()


def test_profiles_and_attacks_listings(tmp_path, capsys):
    assert main(["profiles"]) == 0
    assert "15 profiles valid" in capsys.readouterr().out
    (tmp_path / "bad.toml").write_text('class = "bad"\n')
    assert main(["profiles", "--dir", str(tmp_path)]) == 2
    assert "bad.toml: criticality: missing required key" in capsys.readouterr().err
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    for kind in ("port_scan", "mqtt_bruteforce", "mqtt_flood", "connection_dos", "slowite", "malformed", "topic_scan", "power_cut"):
        assert kind in out


def test_city_needs_a_gateway_per_domain(tmp_path, capsys):
    # The city itself is tested in tests/sim/test_city*.py.
    assert main(["city", "--devices", "50", "--gateways", "2", "--duration", "10", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "at least one gateway per domain" in capsys.readouterr().err


def test_module_runs_as_a_program():
    r = subprocess.run([sys.executable, "-m", "atlas.sim.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "generate" in r.stdout and "city" in r.stdout


def test_all_attacks_and_lookalikes_in_disjoint_slots(tmp_path):
    from atlas.link.incidents import KNOWN_KINDS

    out = tmp_path / "all"
    assert main(["generate", "--devices", "8", "--duration", "240", "--seed", "5", "--out", str(out),
                 "--all-attacks", "--all-lookalikes", "--no-backends"]) == 0
    steps = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text().splitlines()]
    assert sorted(s["kind"] for s in steps) == sorted(KNOWN_KINDS)
    spans = sorted((s["start"], s["end"]) for s in steps)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # no two steps overlap
    events = [json.loads(line) for line in (out / "benign_events.jsonl").read_text().splitlines()]
    assert sorted(e["kind"] for e in events) == ["firmware_update", "power_cut", "rush_hour"]
