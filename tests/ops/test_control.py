"""The control socket against a running server on a real Unix socket."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import threading
import time

import numpy as np
import pytest

from atlas.link import control


def _status() -> dict:
    return {
        "state": "running",
        "interface": "eth0",
        "packets_per_s": np.float64(12034.5),
        "kernel_drops": np.int64(3),
        "cpu": {"used_percent": 3.2, "budget_percent": 7.3, "shedding_level": 0},
        "models": {"anomaly": "ae-2024.1", "classifier": "clf-2024.1"},
        "incidents": [{"kind": "port_scan", "src_ip": "10.0.0.9", "score": 0.97}],
        "hub": {"state": "connected"},
        "last_errors": [],
    }


def _raw(path, payload: bytes, timeout: float = 5.0) -> list[dict]:
    """Send raw bytes, read every answer line until the server closes or times out."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def server(short_tmp):
    srv = control.serve(short_tmp / "agent.sock", _status)
    yield srv
    srv.close()


def test_status_roundtrip_is_plain_json(server):
    got = control.query(server.path, "status", timeout=5)
    expected = json.loads(json.dumps(_status(), default=float))
    assert got == expected
    assert got["kernel_drops"] == 3 and isinstance(got["kernel_drops"], int)
    # What `atlas-agent status --json` prints must round-trip through json unchanged.
    assert json.loads(json.dumps(got)) == got


def test_builtin_ping_and_commands(server):
    assert control.query(server.path, "ping")["pid"] == os.getpid()
    assert control.query(server.path, "commands") == ["commands", "ping", "status"]


def test_handlers_with_arguments(short_tmp):
    rules = {"r1": {"action": "quarantine"}}
    with control.serve(short_tmp / "c.sock", {
        "status": _status,
        "rule": lambda rule_id: rules[rule_id],
    }) as srv:
        assert control.query(srv.path, "rule", args={"rule_id": "r1"}) == {"action": "quarantine"}
        with pytest.raises(control.ControlError, match="KeyError"):
            control.query(srv.path, "rule", args={"rule_id": "nope"})
        with pytest.raises(control.ControlError, match="bad arguments for 'rule'"):
            control.query(srv.path, "rule", args={"wrong": 1})


def test_clear_error_when_nothing_listens(short_tmp):
    missing = short_tmp / "agent.sock"
    with pytest.raises(control.DaemonNotRunning, match=f"no ATLAS daemon is listening on {missing}"):
        control.query(missing)
    # A socket file left by a daemon that died: refused, same clear error.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(missing))
    stale.close()
    with pytest.raises(control.DaemonNotRunning):
        control.query(missing)
    # ... and a new daemon replaces the stale file instead of failing to start.
    with control.serve(missing, _status):
        assert control.query(missing)["state"] == "running"


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server):
    answers = _raw(server.path, b"".join([
        b"this is not json\n",
        b"[1, 2, 3]\n",
        b'{"command": "status"}\n',
        b'{"cmd": "reboot"}\n',
        b'{"cmd": "status", "args": [1]}\n',
        b"\xff\xfe\n",
        b'{"cmd": "status"}\n',
    ]))
    assert [a["ok"] for a in answers] == [False] * 6 + [True]
    assert "not JSON" in answers[0]["error"]
    assert "JSON object" in answers[1]["error"]
    assert 'no "cmd"' in answers[2]["error"]
    assert "unknown command 'reboot'" in answers[3]["error"] and "status" in answers[3]["error"]
    assert '"args" must be' in answers[4]["error"]
    assert "not JSON" in answers[5]["error"]
    assert server.errors == 6 and server.requests == 7
    assert control.query(server.path)["state"] == "running"


def test_oversized_request_is_refused(server):
    answers = _raw(server.path, b'{"cmd": "' + b"x" * (control.MAX_REQUEST + 10))
    assert answers and not answers[0]["ok"] and "larger than" in answers[0]["error"]
    assert control.query(server.path)["state"] == "running"


def test_failing_or_unserializable_provider_is_an_error_answer(short_tmp):
    def broken():
        raise RuntimeError("capture thread gone")

    with control.serve(short_tmp / "c.sock", {"status": broken, "odd": lambda: object()}) as srv:
        with pytest.raises(control.ControlError, match="capture thread gone"):
            control.query(srv.path, "status")
        with pytest.raises(control.ControlError, match="not JSON"):
            control.query(srv.path, "odd")
        assert control.query(srv.path, "ping")["pong"] is True


def test_hung_daemon_is_reported_as_not_responding(short_tmp):
    release = threading.Event()
    with control.serve(short_tmp / "c.sock", lambda: release.wait(5) or {}) as srv:
        t0 = time.monotonic()
        with pytest.raises(control.DaemonNotResponding, match="did not answer within 0.5 s"):
            control.query(srv.path, timeout=0.5)
        assert time.monotonic() - t0 < 3
        release.set()


def test_a_stalled_client_does_not_block_the_next_one(short_tmp, monkeypatch):
    monkeypatch.setattr(control, "CLIENT_TIMEOUT", 0.3)
    with control.serve(short_tmp / "c.sock", _status) as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
            stalled.connect(str(srv.path))
            stalled.sendall(b'{"cmd": "sta')  # ... and never finishes
            assert control.query(srv.path, timeout=3)["state"] == "running"


def test_socket_is_0660_and_refuses_other_users(short_tmp):
    with control.serve(short_tmp / "c.sock", _status, group=0) as srv:
        st = os.stat(srv.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == 0
        if os.geteuid() != 0:
            pytest.skip("needs root to try the socket as another user")
        nobody = pwd.getpwnam("nobody")
        os.chmod(short_tmp, 0o755)  # let nobody reach the socket file itself
        # A forked child that becomes `nobody` tries the socket (the interpreter lives under
        # /root here, so a fresh `python` could not even start as nobody).
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no pytest machinery, report through the pipe and _exit
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                try:
                    control.query(srv.path, timeout=2)
                    msg = "connected"
                except PermissionError as err:
                    msg = str(err)
                except Exception as err:  # noqa: BLE001 - reported to the parent
                    msg = f"{type(err).__name__}: {err}"
                os.write(write_end, msg.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            msg = pipe.read().decode()
        os.waitpid(pid, 0)
        assert "permission denied" in msg and "member of group 'atlas'" in msg, msg


def test_second_daemon_on_the_same_socket_is_refused(server):
    with pytest.raises(FileExistsError, match="already listens"):
        control.serve(server.path, _status)
    assert control.query(server.path)["state"] == "running"


def test_close_removes_the_socket(short_tmp):
    srv = control.serve(short_tmp / "c.sock", _status)
    srv.close()
    assert not (short_tmp / "c.sock").exists()
    with pytest.raises(control.DaemonNotRunning):
        control.query(short_tmp / "c.sock")


def test_too_long_socket_path_is_named(short_tmp):
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        control.serve(short_tmp / ("x" * 120), _status)


def test_format_human_renders_nested_status():
    text = control.format_human(json.loads(json.dumps(_status(), default=float)))
    assert "state: running" in text
    assert "cpu:\n  used_percent: 3.2\n  budget_percent: 7.3" in text
    assert "- kind: port_scan\n    src_ip: 10.0.0.9" in text
    assert "last_errors: (none)" in text
