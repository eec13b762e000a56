"""The daemon end to end: `atlas-agent run` on a lab gateway's bridge, a real scan from a
device namespace, the incident visible through `atlas-agent status`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab  # noqa: E402
from lab import wait_for  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.slow]
METRICS_PORT = 9731  # in the lab gateway's own namespace

SCAN = """
import socket, sys, time
host, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 10
for port in range(first, last + 1):  # a TCP connect scan: closed ports answer RST at once
    if time.monotonic() > deadline:
        break
    s = socket.socket()
    s.settimeout(0.2)
    s.connect_ex((host, port))
    s.close()
    time.sleep(0.001)
"""


def agent_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atlas.agent.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def gateway(tmp_path):
    reason = lab.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with lab.Lab(subnet="10.78.0.0/24", subnet6="fd78::/64") as the_lab:
        attacker = the_lab.add_device("attacker")
        sock = tmp_path / "agent.sock"
        cfg = tmp_path / "agent.toml"
        cfg.write_text(
            f"""
[agent]
gateway_id = "lab-gw"
interface = "{the_lab.bridge}"
state_dir = "{tmp_path / 'state'}"
control_socket = "{sock}"
[metrics]
port = {METRICS_PORT}
[enforce]
nftables = "off"
"""
        )
        proc = the_lab.popen(
            the_lab.gw, [sys.executable, "-m", "atlas.agent.cli", "run", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        up = wait_for(lambda: agent_cli("status", "--json", "--socket", str(sock)).returncode == 0 or proc.poll() is not None, 30)
        if proc.poll() is not None:
            pytest.fail(f"agent exited: {proc.communicate()[1][-2000:]}")
        assert up, "agent did not answer on its control socket"
        yield the_lab, attacker, sock, proc, cfg


def test_scan_becomes_an_incident_in_status(gateway):
    the_lab, attacker, sock, proc, cfg = gateway
    scan = the_lab.run(attacker.netns, [sys.executable, "-c", SCAN, the_lab.gw_ip, "1", "1500"], timeout=30)
    assert scan.returncode == 0, scan.stderr

    def scanner_incident():
        r = agent_cli("status", "--json", "--socket", str(sock))
        assert r.returncode == 0, r.stderr
        status = json.loads(r.stdout)
        found = [i for i in status["incidents"] if i["src_ip"] == attacker.ip]
        return (status, found) if found else None

    got = wait_for(scanner_incident, 15)
    assert got, "no incident for the scanner"
    status, found = got
    assert {i["kind"] for i in found} & {"port_scan", "anomaly", "volumetric"}
    assert found[0]["dst_ip"] == the_lab.gw_ip and found[0]["gateway"] == "lab-gw"

    def frames():  # the agent hands capture blocks over in batches of up to 0.5 s
        return json.loads(agent_cli("status", "--json", "--socket", str(sock)).stdout)["pipeline"]["frames"]

    assert wait_for(lambda: frames() >= 1500 * 2 * 0.9, 5), frames()  # SYN + RST per port, nearly none lost
    assert status["cpu"]["budget"] == 7.3 and status["models"]
    human = agent_cli("status", "--socket", str(sock))
    assert human.returncode == 0 and attacker.ip in human.stdout and "lab-gw" in human.stdout

    # Prometheus metrics of the running daemon, scraped on its loopback inside the namespace
    # (they are updated once a second, with the daemon's report)
    def scrape():
        r = the_lab.run(the_lab.gw, [sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())"])
        assert r.returncode == 0, r.stderr
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in r.stdout.splitlines() if line and not line.startswith("#")}
        return values if values.get("atlas_agent_packets_total", 0) >= 1500 * 2 * 0.9 else None

    metrics = wait_for(scrape, 10)
    assert metrics, "packets never counted in the metrics"
    assert any(k.startswith("atlas_agent_incidents_total") and v >= 1 for k, v in metrics.items())
    assert metrics["atlas_agent_cpu_budget_ratio"] == pytest.approx(0.073)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_status_without_a_daemon_is_a_clear_error(tmp_path):
    r = agent_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert r.returncode == 2
    assert "no agent is running" in r.stderr and "Traceback" not in r.stderr
