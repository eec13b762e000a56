"""`atlas-central status` and metrics against a running hub (subprocess, its own socket)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from atlas.central.pki import init_pki

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def central(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atlas.central.cli", *args], capture_output=True, text=True, timeout=30)


def test_status_and_metrics_come_from_the_running_hub(tmp_path):
    init_pki(tmp_path / "pki")
    metrics_port = free_port()
    config = tmp_path / "central.toml"
    config.write_text(
        f'[hub]\nlisten = "127.0.0.1:0"\ndatabase = "central.db"\npki = "pki"\n'
        f'control_socket = "{tmp_path / "central.sock"}"\nmetrics_port = {metrics_port}\n'
    )
    hub = subprocess.Popen([sys.executable, "-m", "atlas.central.cli", "serve", "--config", str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "central.sock").exists():
            assert hub.poll() is None and time.monotonic() < deadline, hub.stdout.read() if hub.poll() is not None else "no socket"
            time.sleep(0.1)
        r = central("status", "--json", "--config", str(config))
        assert r.returncode == 0, r.stderr
        status = json.loads(r.stdout)
        assert status["running"] is True and status["hub"]["pid"] == hub.pid
        assert "wire" in status  # only the running hub knows its live wire counters
        human = central("status", "--config", str(config))
        assert human.returncode == 0 and "hub: running" in human.stdout
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "atlas_central_telemetry_messages_total" in body and 'atlas_central_gateway_streams{state="connected"} 0.0' in body
    finally:
        hub.terminate()
        assert hub.wait(timeout=20) == 0
    r = central("status", "--config", str(config))  # no hub: the database's account, said plainly
    assert r.returncode == 0 and "hub: stopped" in r.stdout


def test_bad_metrics_port_names_the_key(tmp_path):
    config = tmp_path / "central.toml"
    config.write_text('[hub]\ndatabase = "c.db"\nmetrics_port = 70000\n')
    r = central("check", "--config", str(config))
    assert r.returncode == 2 and "hub.metrics_port" in r.stderr and "Traceback" not in r.stderr
