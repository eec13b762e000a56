"""`atlas-central serve` as a daemon (issue 17): an address it cannot listen on is one line and
a non-zero exit, SIGTERM with gateways connected stops it within seconds, and a dead serving
loop stops the watchdog and ends the process with a non-zero code."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atlas.central.config import load_config
from atlas.central.ingest.testing import GatewayLoad, make_pki

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lab import free_port, wait_for  # noqa: E402

GATEWAYS = [f"gw-{i}" for i in range(20)]
HEARTBEAT_SLACK = 1.0  # the loop's last beat may be up to one heartbeat before it stopped


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), GATEWAYS)


def write_config(tmp_path: Path, pki, listen: str, **hub: str) -> Path:
    extra = "".join(f'{key} = "{value}"\n' for key, value in hub.items())
    config = tmp_path / "central.toml"
    config.write_text(f'[hub]\nlisten = "{listen}"\ndatabase = "central.db"\npki = "{pki.root}"\n{extra}'
                      '[ingest]\nhello_timeout = 2\n')
    return config


def serve_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "atlas.central.cli", "serve", "--config", str(config)]


@pytest.mark.parametrize("where", ["in_use", "not_this_hosts", "unresolvable"])
def test_an_address_it_cannot_listen_on_is_one_line_and_exit_1(tmp_path, pki, where):
    holder = socket.socket()
    try:
        if where == "in_use":
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            listen, reason = f"127.0.0.1:{holder.getsockname()[1]}", "Address already in use"
        elif where == "not_this_hosts":
            listen, reason = "192.0.2.1:7443", "Cannot assign requested address"  # TEST-NET-1
        else:
            listen, reason = "no-such-host.invalid:7443", "cannot resolve 'no-such-host.invalid'"
        config = write_config(tmp_path, pki, listen)
        # resolving a name may ask a DNS server: in a network namespace of its own (loopback
        # only, down) the question never leaves this test
        isolate = ["unshare", "--net"] if where == "unresolvable" else []
        run = subprocess.run(isolate + serve_cmd(config), capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"atlas-central: {config}: hub.listen: cannot listen on {listen}: {reason}"), run.stderr


def test_sigterm_with_gateways_connected_stops_within_seconds(tmp_path, pki):
    port = free_port()
    config = write_config(tmp_path, pki, f"127.0.0.1:{port}", control_socket=str(tmp_path / "c.sock"))
    hub = subprocess.Popen(serve_cmd(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (tmp_path / "c.sock").exists() or hub.poll() is not None, timeout=30)
        assert hub.poll() is None
        loads = [GatewayLoad(f"127.0.0.1:{port}", name, pki.gateway_tls(name), interval=0.3) for name in GATEWAYS]
        gateways = threading.Thread(target=_run_all, args=(loads, 30))
        gateways.start()
        wait_for(lambda: all(x.acked >= 2 for x in loads), timeout=30)
        sent = time.monotonic()
        hub.send_signal(signal.SIGTERM)
        code = hub.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
    output = hub.stdout.read()
    hub.stdout.close()
    gateways.join(60)
    assert code == 0 and took < 5.0, (code, took, output[-2000:])
    assert "Traceback" not in output
    assert all(x.error for x in loads)  # every stream was ended by the stop (how the client words it varies)


def _run_all(loads: list[GatewayLoad], seconds: float) -> None:
    async def main():
        await asyncio.gather(*(x.run(seconds) for x in loads))

    asyncio.run(main())


@pytest.mark.parametrize("how", ["dead", "wedged"])
def test_a_dead_serving_loop_stops_the_watchdog_and_exits_1(tmp_path, pki, monkeypatch, how):
    from atlas.central import daemon
    from atlas.central.ingest import server as ingest_server
    from atlas.link import notify

    servers = []
    real_serve = ingest_server.serve

    def serve_and_keep(*args, **kwargs):
        servers.append(real_serve(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(ingest_server, "serve", serve_and_keep)
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify.sock"))
    systemd.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s while healthy
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(notify, "_default", None)
    monkeypatch.setattr(ingest_server, "LOOP_STALL_S", 1.5)
    config = load_config(write_config(tmp_path, pki, "127.0.0.1:0"))
    result: list[int] = []
    hub = threading.Thread(target=lambda: result.append(daemon.serve(config)))
    hub.start()
    messages: list[tuple[float, str]] = []  # (arrival, datagram), read as they come
    listening = threading.Event()
    listening.set()

    def receive() -> None:
        while listening.is_set():
            try:
                messages.append((time.monotonic(), systemd.recv(4096).decode()))
            except socket.timeout:
                pass

    receiver = threading.Thread(target=receive)
    receiver.start()
    try:
        time.sleep(2.0)
        assert sum("WATCHDOG=1" in m for _, m in messages) >= 3  # fed while serving (every 0.5 s)
        killed = time.monotonic()
        if how == "dead":
            servers[0].loop.call_soon_threadsafe(servers[0].loop.stop)
        else:  # stuck in a call that never yields (for longer than the stall allowance)
            servers[0].loop.call_soon_threadsafe(time.sleep, 4.0)
        hub.join(20)
        time.sleep(0.3)
    finally:
        listening.clear()
        receiver.join()
        systemd.close()
    assert result == [1]
    # no ping once the loop is known dead (at once) or wedged (past the stall allowance; the main
    # loop looks every 0.5 s), then a clean stop
    noticed = 0.6 if how == "dead" else 1.5 + HEARTBEAT_SLACK + 0.6
    assert all(at < killed + noticed for at, m in messages if "WATCHDOG=1" in m), [round(at - killed, 2) for at, m in messages]
    stopping = [at for at, m in messages if "STOPPING=1" in m]
    assert stopping and stopping[0] < killed + noticed + 0.2  # noticed while still wedged


def test_an_inventory_the_shapes_refuse_stops_the_start_in_one_line(tmp_path, pki):
    pytest.importorskip("pyshacl", reason="the ontology extra (make test installs it)")
    inventory = tmp_path / "inventory.toml"
    # a life-safety device with no fallback: the SHACL shapes refuse it, the reader alone does not
    inventory.write_text('[[device]]\naddress = "10.2.1.1"\nclient_id = "aq-1"\ngateway = "gw-b"\n'
                         'profile = "air_quality_sensor"\ncriticality = "life_safety"\n')
    config = write_config(tmp_path, pki, "127.0.0.1:0", inventory=str(inventory))
    run = subprocess.run(serve_cmd(config), capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "hub.inventory: graph check:" in run.stderr and "aq-1" in run.stderr and "fallback" in run.stderr
