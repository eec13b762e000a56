"""A city's gateway folder holds one device inventory, and `atlas-agent replay --config` on the
files the simulator wrote reproduces the incidents `atlas-sim evaluate` reported for it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # a tiny city and its evaluation: about 10 s
GATEWAY_FILES = {"traffic.pcap", "gateway.json", "inventory.json", "agent.toml"}


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def key(inc: dict) -> tuple:
    return (inc["gateway"], inc["kind"], inc["src_ip"], inc.get("dst_ip", ""), inc["device"], round(inc["time"], 3),
            round(inc["last_seen"], 3), inc["packets"], round(inc["score"], 3), inc["state"])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("demo")
    city, report = out / "city", out / "report"
    run("atlas-sim", "city", "--devices", "40", "--gateways", "3", "--duration", "60", "--seed", "7", "--out", str(city),
        "--workers", "1")
    run("atlas-sim", "evaluate", str(city), "--out", str(report), "--no-baselines", "--workers", "1")
    return city, report


def test_one_inventory_file_per_gateway(demo):
    city, report = demo
    gateways = json.loads((city / "city.json").read_text())["gateways"]
    assert len(gateways) == 3
    for g in gateways:
        gdir = (city / g["pcap"]).parent
        assert {p.name for p in gdir.iterdir()} == GATEWAY_FILES
        inv = json.loads((gdir / "inventory.json").read_text())["device"]
        assert len(inv) == g["devices"] and {d["gateway"] for d in inv} == {g["id"]}
    assert not (report / "inventory").exists()  # the evaluation used the gateways' own files


def test_replay_with_the_gateways_config_reproduces_the_evaluations_incidents(demo):
    city, report = demo
    total = 0
    for g in json.loads((city / "city.json").read_text())["gateways"]:
        gdir = (city / g["pcap"]).parent
        r = run("atlas-agent", "replay", str(gdir / "traffic.pcap"), "--config", str(gdir / "agent.toml"), "--json")
        replayed = sorted(key(json.loads(line)) for line in r.stdout.splitlines())
        evaluated = sorted(key(json.loads(line)) for line in (report / "incidents" / f"{g['id']}.jsonl").read_text().splitlines())
        assert replayed == evaluated, g["id"]
        assert f"{len(replayed)} incidents" in r.stderr  # the summary line
        total += len(replayed)
    assert total > 0  # the city has attacks: something to reproduce
