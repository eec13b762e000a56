"""The gateway's real mosquitto broker: password authentication from the devices' credentials."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from atlas.sim.live.netns import Netns, in_netns

BROKER_PORT = 1883


def mosquitto_unavailable_reason() -> str:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (Debian: mosquitto, mosquitto-clients)"
    return ""


def write_password_file(path: Path, accounts: dict[str, str]) -> None:
    """A mosquitto password file for `accounts` (username -> password), hashed by mosquitto_passwd."""
    for user in accounts:
        if ":" in user or not user:
            raise ValueError(f"MQTT username {user!r}: must be non-empty without ':'")
    path.write_text("".join(f"{u}:{p}\n" for u, p in accounts.items()))
    path.chmod(0o600)
    proc = subprocess.run(["mosquitto_passwd", "-U", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mosquitto_passwd -U {path}: {proc.stderr.strip() or proc.stdout.strip()}")


def start_broker(ns: Netns, netns: str, bind: str, workdir: Path, accounts: dict[str, str], *, timeout: float = 10.0) -> subprocess.Popen:
    """mosquitto in `netns` listening on `bind`:1883, no anonymous access; returns once it accepts."""
    workdir.mkdir(parents=True, exist_ok=True)
    passwd = workdir / "passwd"
    write_password_file(passwd, accounts)
    log = workdir / "mosquitto.log"
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "user root\n"  # started as root it would drop to `mosquitto`, who cannot read these files
        f"listener {BROKER_PORT} {bind}\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        "persistence false\n"
        "max_keepalive 65535\n"
        f"log_dest file {log}\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
    )
    proc = ns.popen(netns, ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {err.strip()} {log.read_text() if log.exists() else ''}")
        if _accepts(netns, bind):
            return proc
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto in {netns} did not accept connections on {bind}:{BROKER_PORT} within {timeout:g} s")


def _accepts(netns: str, host: str) -> bool:
    with in_netns(netns):
        sock = socket.socket()
    try:
        sock.settimeout(0.5)
        sock.connect((host, BROKER_PORT))
        return True
    except OSError:
        return False
    finally:
        sock.close()
