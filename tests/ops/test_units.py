"""The systemd units: `systemd-analyze verify` and the exposure score of `security --offline`.

`verify` wants the ExecStart binaries to exist and the standard targets (sysinit.target,
multi-user.target) to be loadable. So each unit is verified inside a throwaway root
(`systemd-analyze verify --root=DIR`) that holds the unit, a copy of this machine's
/usr/lib/systemd/system, and an executable at the path ExecStart names: the same layout a
gateway has after `atlas-agent install`. systemd itself need not be running.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from atlas import systemd as units

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing (Debian package systemd)")

UNITS_DIR = Path(units.__file__).parent
AGENT, CENTRAL = "atlas-agent.service", "atlas-central.service"
AGENT_GOAL, HUB_GOAL = 2.0, 2.0  # the hub must also score below the agent


def _analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _unit(name: str) -> configparser.ConfigParser:
    """A unit file as sections of (possibly repeated) keys; repeated keys are joined by newline."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                       empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive

    class _Multi(dict):
        def __setitem__(self, key, value):
            if key in self and isinstance(value, list):
                self[key].extend(value)
            else:
                super().__setitem__(key, value)

    parser._dict = _Multi  # noqa: SLF001 - keep repeated keys such as SystemCallFilter
    parser.read_string((UNITS_DIR / name).read_text())
    return parser


def _exec_binaries(text: str) -> set[str]:
    return set(re.findall(r"^ExecStart(?:Pre)?=[-@:+!]*(\S+)", text, re.M))


def _verify_root(tmp_path: Path, name: str, text: str) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system" / name).write_text(text)
    for binary in _exec_binaries(text):
        path = root / binary.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return root


@pytest.mark.parametrize("name", [AGENT, CENTRAL])
def test_unit_passes_systemd_analyze_verify(tmp_path, name):
    text = (UNITS_DIR / name).read_text()
    root = _verify_root(tmp_path, name, text)
    out = _analyze("verify", f"--root={root}", "--man=no", "--generators=no", name)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    """The check above can fail: a typo and a missing binary are reported."""
    text = (UNITS_DIR / AGENT).read_text().replace("Restart=on-failure", "Restart=sometimes")
    root = _verify_root(tmp_path, AGENT, text)
    out = _analyze("verify", f"--root={root}", "--man=no", "--generators=no", AGENT)
    assert "Failed to parse service restart specifier" in out.stderr
    (root / "opt/atlas/venv/bin/atlas-agent").unlink()
    out = _analyze("verify", f"--root={root}", "--man=no", "--generators=no", AGENT)
    assert out.returncode != 0 and "is not executable" in out.stderr


def _exposure(name: str, cwd: Path) -> float:
    out = _analyze("security", "--offline=true", str(UNITS_DIR / name), cwd=cwd)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


def test_exposure_scores(tmp_path):
    agent = _exposure(AGENT, tmp_path)
    hub = _exposure(CENTRAL, tmp_path)
    print(f"\nexposure: {AGENT} {agent}, {CENTRAL} {hub}")
    assert agent <= AGENT_GOAL, f"{AGENT} exposure {agent} > {AGENT_GOAL}"
    assert hub < agent, f"the hub ({hub}) must be more confined than the agent ({agent})"
    # --threshold works on the 0-100 scale: 20 = 2.0. The same verdict from systemd itself.
    out = _analyze("security", "--offline=true", f"--threshold={int(AGENT_GOAL * 10)}",
                   str(UNITS_DIR / AGENT), cwd=tmp_path)
    assert out.returncode == 0


def test_agent_keeps_exactly_the_two_capabilities_and_no_root():
    s = _unit(AGENT)["Service"]
    assert s["User"] == "atlas" and s["Group"] == "atlas"
    assert set(s["CapabilityBoundingSet"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(s["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(s["RestrictAddressFamilies"].split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}


def test_hub_keeps_no_capability():
    s = _unit(CENTRAL)["Service"]
    assert s["User"] == "atlas"
    assert s["CapabilityBoundingSet"].strip() == "" and s["AmbientCapabilities"].strip() == ""
    assert "AF_PACKET" not in s["RestrictAddressFamilies"]
    assert "AF_NETLINK" not in s["RestrictAddressFamilies"]


@pytest.mark.parametrize("name,daemon", [(AGENT, "atlas-agent"), (CENTRAL, "atlas-central")])
def test_service_lifecycle_settings(name, daemon):
    unit = _unit(name)
    u, s = unit["Unit"], unit["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert int(s["WatchdogSec"]) > 0
    assert s["Restart"] == "on-failure"
    assert int(u["StartLimitBurst"]) > 0 and int(u["StartLimitIntervalSec"]) > 0
    assert s["ExecStartPre"].endswith("--check") and f"/{daemon} " in s["ExecStartPre"]
    assert "--config /etc/atlas/" in s["ExecStart"]
    assert s["StateDirectory"] == "atlas" and s["ConfigurationDirectory"] == "atlas"
    assert s["StandardOutput"] == "journal" and s["StandardError"] == "journal"
    for key, value in {"ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes"}.items():
        assert s[key] == value, key
    assert "@system-service" in s["SystemCallFilter"]
    assert "MemoryMax" in s
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_agent_cpu_quota_is_a_backstop_above_the_default_budget():
    quota = float(_unit(AGENT)["Service"]["CPUQuota"].rstrip("%"))
    # The governor's default budget is 7.3 % of the machine = 29.2 % of one core on a 4-core Pi.
    assert quota > 7.3 * 4


def _syscalls(group: str, seen: set[str] | None = None) -> set[str]:
    """Expand a systemd syscall group (with nested @groups) into syscall names."""
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    out = _analyze("syscall-filter", group)
    names: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= _syscalls(item, seen) if item.startswith("@") else {item}
    return names


def test_syscall_filter_leaves_what_capture_and_nftables_need():
    """The allow list minus the deny list still has every call of the capture path."""
    filters = _unit(AGENT)["Service"]["SystemCallFilter"].split("\n")
    allowed: set[str] = set()
    denied: set[str] = set()
    for line in filters:
        deny = line.startswith("~")
        for group in line.lstrip("~").split():
            (denied if deny else allowed).update(_syscalls(group) if group.startswith("@") else {group})
    effective = allowed - denied
    # AF_PACKET socket with a BPF filter and a batch receive, the mmap ring, interface ioctls,
    # netlink to nftables, poll, and what Python's threads need.
    needed = {"socket", "bind", "setsockopt", "getsockopt", "recvfrom", "recvmsg", "recvmmsg",
              "sendto", "sendmsg", "mmap", "munmap", "poll", "ppoll", "ioctl", "fcntl",
              "clone", "futex", "epoll_wait"}
    assert needed <= effective, sorted(needed - effective)
    # ... while the dangerous groups are really gone.
    for forbidden in ("bpf", "mount", "setuid", "init_module", "reboot", "ptrace", "kexec_load"):
        assert forbidden not in effective, forbidden
