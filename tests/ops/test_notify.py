"""sd_notify against a real AF_UNIX datagram socket playing systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atlas.link import notify


def _listener(path: Path | str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path) if not str(path).startswith("@") else "\0" + str(path)[1:])
    return sock


def _receive(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """Every datagram that arrives within `seconds`, with its arrival time."""
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            break
        got.append((time.monotonic(), data.decode()))
    return got


def test_ready_status_stopping_arrive_as_systemd_reads_them(short_tmp):
    sock = _listener(short_tmp / "notify")
    n = notify.Notifier(str(short_tmp / "notify"))
    assert n.ready("capturing on eth0") and n.status("12000 pkt/s,\n cpu 3.1%")
    assert n.stopping() and n.extend_timeout(2.5) and n.watchdog_ping()
    messages = [m for _, m in _receive(sock, 0.5)]
    assert messages == [
        "READY=1\nSTATUS=capturing on eth0",
        "STATUS=12000 pkt/s, cpu 3.1%",  # a status is one line, whatever the caller passed
        "STOPPING=1",
        "EXTEND_TIMEOUT_USEC=2500000",
        "WATCHDOG=1",
    ]
    n.close()
    sock.close()


def test_abstract_namespace_address(short_tmp):
    name = f"@atlas-notify-test-{os.getpid()}"
    sock = _listener(name)
    assert notify.Notifier.from_env({"NOTIFY_SOCKET": name}).ready()
    assert [m for _, m in _receive(sock, 0.5)] == ["READY=1"]
    sock.close()


def test_without_notify_socket_everything_is_a_quiet_no_op():
    n = notify.Notifier.from_env({})
    assert not n.enabled
    assert n.ready("x") is False and n.status("x") is False and n.watchdog_ping() is False
    wd = notify.Watchdog.from_env(n, {"WATCHDOG_USEC": "1000000"})
    assert not wd.enabled and wd.tick() is False


def test_a_vanished_systemd_is_reported_not_raised(short_tmp):
    n = notify.Notifier(str(short_tmp / "gone"))
    assert n.enabled and n.status("still here") is False


def test_bad_assignment_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="KEY=value"):
        notify.Notifier("/nonexistent").send("READY")


def test_watchdog_interval_is_half_of_watchdog_usec_and_honours_watchdog_pid(short_tmp):
    n = notify.Notifier(str(short_tmp / "n"))
    assert notify.Watchdog.from_env(n, {"WATCHDOG_USEC": "30000000"}).interval == 15.0
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.Watchdog.from_env(n, mine).enabled
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert not notify.Watchdog.from_env(n, other).enabled
    assert not notify.Watchdog.from_env(n, {"WATCHDOG_USEC": "soon"}).enabled


def test_tick_pings_at_most_once_per_interval(short_tmp):
    sock = _listener(short_tmp / "n")
    now = [100.0]
    wd = notify.Watchdog(notify.Notifier(str(short_tmp / "n")), 5.0, clock=lambda: now[0])
    sent = []
    for step in range(40):  # 40 loop iterations, 0.5 s of fake time apart = 20 s
        sent.append(wd.tick())
        now[0] += 0.5
    assert sum(sent) == 4 and sent[0] and sent[10] and sent[20] and sent[30]
    assert [m for _, m in _receive(sock, 0.3)] == ["WATCHDOG=1"] * 4
    sock.close()


# A daemon main loop as atlas-agent runs it: work, then tick the watchdog. When the file
# `hang` appears the loop gets stuck inside its work (as a deadlocked capture read would).
DAEMON = textwrap.dedent("""
    import os, sys, time
    from atlas.link import notify
    hang = sys.argv[1]
    notify.ready("test daemon up")
    wd = notify.watchdog()
    assert wd.enabled, "watchdog should be armed from WATCHDOG_USEC"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.01)            # one batch of work
        while os.path.exists(hang): # stuck: no progress, so no ping
            time.sleep(0.01)
            if time.monotonic() > deadline:
                break
        wd.tick()
""")


def test_pings_stop_when_the_main_loop_hangs(short_tmp):
    sock = _listener(short_tmp / "notify")
    hang = short_tmp / "hang"
    env = dict(os.environ, NOTIFY_SOCKET=str(short_tmp / "notify"), WATCHDOG_USEC="200000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(hang)], env=env)
    try:
        # READY first; then pings every 0.1 s (half of 200 ms) while the loop makes progress.
        healthy = _receive(sock, 4.0)
        assert healthy and healthy[0][1].startswith("READY=1"), healthy[:3]
        pings = [t for t, m in healthy if m == "WATCHDOG=1"]
        assert len(pings) >= 10, f"only {len(pings)} pings in 4 s of a healthy loop"
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert min(gaps) >= 0.09, "pinged more often than half the watchdog period"

        hang.touch()
        _receive(sock, 0.3)  # a ping already under way may still arrive
        stuck = _receive(sock, 1.5)  # 7.5 watchdog periods: systemd would have killed it
        assert proc.poll() is None, "the daemon should be hung, not dead"
        assert [m for _, m in stuck if m == "WATCHDOG=1"] == []

        hang.unlink()  # the loop recovers and pings resume
        resumed = _receive(sock, 1.0)
        assert any(m == "WATCHDOG=1" for _, m in resumed)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        sock.close()
