"""Network namespaces for a live run: create them, wire them, run processes in them, remove all.

A `Netns` set owns everything it makes: namespaces (unique names `<prefix>-<role>`), veth pairs
(both ends created directly inside their namespaces, so nothing appears in the host's), and
the processes it starts in them (each in its own session, so a Ctrl-C on the terminal reaches
only the orchestrator, which then stops them in order). `close()` kills what is still running
and deletes the namespaces (which removes their veths and bridges); it is idempotent and is
also registered with `atexit` as a backstop. Against SIGKILL of the orchestrator: its children
die with it (PR_SET_PDEATHSIG), and the next run reaps namespaces whose owner is gone
(`reap_stale`, by the owner file /run/atlsim/<run id>).

Namespaces have no route out of the run's own subnets: traffic stays inside them.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NETNS_DIR = "/run/netns"
OWNERS_DIR = "/run/atlsim"  # <run id>: "<pid> <start time>" of the process that owns the run's namespaces
PREFIX = "atlsim"  # every namespace a live run makes starts with this (tests look for leftovers)
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace operation failed; the message has the command and the kernel's answer."""


def unavailable_reason() -> str:
    """Why namespaces cannot be made here ('' if they can), for a clear skip or error."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (Debian: iproute2)"
    probe = f"{PREFIX}-probe-{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "cannot create network namespaces here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def netns_cmd(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def existing(prefix: str = PREFIX) -> list[str]:
    """Names of the namespaces that start with `prefix` (leftovers, when nothing runs)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def _start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat): tells a reused pid apart."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def reap_stale(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces of runs whose owner is gone (killed with SIGKILL, or a crash that
    skipped the cleanup): kill what still runs inside them, delete them. Returns their names.
    A run whose owner is alive is never touched."""
    runs: dict[str, list[str]] = {}
    for name in existing(prefix + "-"):
        parts = name.split("-")
        if len(parts) == 3:
            runs.setdefault(parts[1], []).append(name)
    reaped = []
    for run_id, names in runs.items():
        owner = Path(OWNERS_DIR) / run_id
        try:
            pid, start = owner.read_text().split()
            alive = _start_time(int(pid)) == start
        except (OSError, ValueError):
            alive = False
        if alive:
            continue
        for name in names:
            Netns._kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            reaped.append(name)
        with contextlib.suppress(OSError):
            owner.unlink()
    return reaped


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the orchestrator dies, even by SIGKILL (nothing
    of a run outlives it; its namespaces are then reaped by the next run)."""
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # nothing else here: runs between fork and exec


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Switch the calling thread into namespace `name` for the block (sockets made inside keep it)."""
    if not name:
        yield
        return
    libc = _libc
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into {name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(here, CLONE_NEWNET) != 0:  # pragma: no cover - would strand the thread
                err = ctypes.get_errno()
                raise NetnsError(f"setns back: {os.strerror(err)}")
    finally:
        os.close(here)
        os.close(there)


class Netns:
    """The namespaces, links and processes of one live run; `close()` removes them all."""

    def __init__(self, run_id: str | None = None) -> None:
        self.id = run_id or uuid.uuid4().hex[:6]
        self.prefix = f"{PREFIX}-{self.id}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self._links = 0
        self._owner = Path(OWNERS_DIR) / self.id
        self._owner.parent.mkdir(parents=True, exist_ok=True)
        self._owner.write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        atexit.register(self.close)

    # ---- topology ---------------------------------------------------------------------------

    def add(self, role: str) -> str:
        """A new namespace `<prefix>-<role>` with loopback up."""
        name = f"{self.prefix}-{role}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def bridge(self, netns: str, name: str, cidr: str) -> None:
        """A bridge in `netns` holding the address `cidr` (the gateway's side of the LAN)."""
        ip("-n", netns, "link", "add", name, "type", "bridge")
        ip("-n", netns, "addr", "add", cidr, "dev", name)
        ip("-n", netns, "link", "set", name, "up")

    def plug(self, netns: str, bridge_netns: str, bridge: str) -> str:
        """Wire `netns` to `bridge` (in `bridge_netns`) with a veth pair; returns the interface
        name inside `netns` (addresses are the caller's: `address()`)."""
        k = self._links
        self._links += 1
        inner, outer = f"v{self.id}{k:02d}d", f"v{self.id}{k:02d}b"  # <= 15 characters
        ip("link", "add", outer, "netns", bridge_netns, "type", "veth", "peer", "name", inner, "netns", netns)
        ip("-n", bridge_netns, "link", "set", outer, "master", bridge)
        ip("-n", bridge_netns, "link", "set", outer, "up")
        ip("-n", netns, "link", "set", inner, "up")
        return inner

    def address(self, netns: str, dev: str, cidrs: Sequence[str]) -> None:
        """Add addresses to `dev` in one `ip -batch` call (a device namespace holds hundreds)."""
        if not cidrs:
            return
        script = "".join(f"addr add {c} dev {dev}\n" for c in cidrs)
        proc = subprocess.run(["ip", "-n", netns, "-batch", "-"], input=script, capture_output=True, text=True)
        if proc.returncode != 0:
            raise NetnsError(f"ip -n {netns} addr add ... dev {dev}: {proc.stderr.strip()}")

    def route(self, netns: str, dest: str, dev: str) -> None:
        ip("-n", netns, "route", "add", dest, "dev", dev)

    def route_via(self, netns: str, dest: str, gateway: str, dev: str) -> None:
        ip("-n", netns, "route", "add", dest, "via", gateway, "dev", dev)

    # ---- processes ----------------------------------------------------------------------------

    def popen(self, netns: str | None, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """A process in `netns`, in its own session (so it and its children can be stopped as a
        group, and a terminal's Ctrl-C does not hit it before the orchestrator decides)."""
        kw.setdefault("start_new_session", True)
        kw.setdefault("preexec_fn", _die_with_parent)
        proc = subprocess.Popen(netns_cmd(netns, argv), **kw)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Signal the process group of `proc` (one of ours), then kill it if it lingers."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
        return proc.poll()

    def close(self) -> None:
        """Stop every process still running, then delete the namespaces (idempotent)."""
        for proc in self.procs:
            self.stop(proc, signal.SIGKILL, timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for name in reversed(self.namespaces):
            self._kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()
        with contextlib.suppress(OSError):
            self._owner.unlink()
        atexit.unregister(self.close)

    @staticmethod
    def _kill_inside(name: str) -> None:
        """Processes still inside one of our namespaces (children a tool left behind) are ours."""
        out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in (int(p) for p in out.split() if p.isdigit()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Netns", "NetnsError", "PREFIX", "existing", "in_netns", "ip", "netns_cmd", "reap_stale", "unavailable_reason"]
