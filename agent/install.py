"""`atlas-agent install`: make this machine (or a folder standing for one) run ATLAS as a service.

One call creates, under `root`:
  - the system user and group `atlas` (systemd-sysusers --root, which writes etc/passwd, group,
    shadow and gshadow of that root and never touches the host's; without systemd-sysusers the
    same lines are written directly),
  - /etc/atlas (0750 root:atlas) and the config from the template, filled from the detected
    board profile (never overwritten once there: it is the operator's file),
  - /var/lib/atlas (the unit's StateDirectory, 0750 atlas:atlas),
  - the unit in /etc/systemd/system with ExecStart pointing at the installed binary, and for the
    agent a drop-in with the board's CPUQuota and MemoryMax backstops,
  - the enablement: `systemctl --root=ROOT enable`, which works offline and writes the
    multi-user.target.wants/ symlink (made directly when systemctl is absent).
Every step is idempotent: a second run reports everything unchanged. Only with root "/" and a
running systemd does it also reload systemd (and start the unit when asked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from atlas import systemd as units
from atlas.agent.board import GatewayProfile, detect_board

__all__ = ["InstallError", "InstallReport", "install", "render_config", "default_interface"]

DEFAULT_BINDIR = "/opt/atlas/venv/bin"
USER = "atlas"
ROLES = {
    "agent": ("atlas-agent.service", "agent.toml", "atlas-agent"),
    "central": ("atlas-central.service", "central.toml", "atlas-central"),
}
# Paths the hardened units cannot see (ProtectHome, PrivateTmp) or that vanish at boot.
_HIDDEN_FROM_UNIT = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")


class InstallError(RuntimeError):
    """The install cannot proceed; the message says what and where."""


@dataclass
class InstallReport:
    root: Path
    role: str
    unit: str
    profile: GatewayProfile | None = None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (what, created|updated|unchanged|kept)
    warnings: list[str] = field(default_factory=list)

    def add(self, what: str, action: str) -> None:
        self.steps.append((what, action))

    @property
    def changed(self) -> bool:
        return any(action in ("created", "updated") for _, action in self.steps)

    def as_text(self) -> str:
        lines = [f"atlas {self.role} install into {self.root}"]
        if self.profile is not None:
            lines.append(f"  board: {self.profile.name} ({self.profile.source})")
        lines += [f"  {action:<9} {what}" for what, action in self.steps]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def install(root: Path = Path("/"), *, role: str = "agent", exec_path: str | os.PathLike | None = None,
            interface: str | None = None, profile: GatewayProfile | None = None,
            user: str = USER, enable: bool = True, start: bool = False,
            users_tool: str = "auto") -> InstallReport:
    """Install the `role` daemon ("agent" or "central") as a systemd service under `root`.

    exec_path: the daemon's binary as the unit will run it (default: next to this Python,
        e.g. /opt/atlas/venv/bin/atlas-agent). It is a path inside `root`.
    interface: the capture interface written into a new agent.toml (default: the interface
        of this machine's default route).
    profile: the gateway profile (default: detect_board()).
    users_tool: "auto" (systemd-sysusers when present), "sysusers" or "files".
    """
    if role not in ROLES:
        raise InstallError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    unit_name, config_name, binary = ROLES[role]
    root = Path(root)
    if not root.is_dir():
        raise InstallError(f"install root {root} is not a directory")
    exec_path = str(exec_path or Path(sys.executable).parent / binary)
    if not os.path.isabs(exec_path):
        raise InstallError(f"exec_path must be absolute (as the unit sees it): {exec_path}")
    report = InstallReport(root=root, role=role, unit=unit_name)
    if role == "agent":
        report.profile = profile or detect_board()
    if exec_path.startswith(_HIDDEN_FROM_UNIT):
        report.warnings.append(
            f"{exec_path} is under a folder the hardened unit cannot see (ProtectHome/PrivateTmp); "
            f"install the package into a venv such as {DEFAULT_BINDIR}")
    if not (root / exec_path.lstrip("/")).exists():
        report.warnings.append(f"{exec_path} does not exist under {root} yet")

    uid, gid = _ensure_user(root, user, users_tool, report)
    _ensure_dir(root / "etc/atlas", 0o750, 0, gid, report)
    _ensure_dir(root / "var/lib/atlas", 0o750, uid, gid, report)

    config_path = root / "etc/atlas" / config_name
    if config_path.exists():
        report.add(f"/etc/atlas/{config_name} (the operator's, left as is)", "kept")
    else:
        text = _config_text(role, report.profile, interface)
        _write(config_path, text, 0o640, 0, gid, report)

    unit_dir = root / "etc/systemd/system"
    unit_text = _point_at(units.read(unit_name), binary, exec_path)
    _write(unit_dir / unit_name, unit_text, 0o644, 0, 0, report)
    if report.profile is not None:
        dropin = (f"# Written by atlas-agent install for {report.profile.name}: kernel backstops "
                  f"above the agent's own\n# governor ({report.profile.cpu_budget_percent:g} % of "
                  f"{report.profile.cores} cores, twice over).\n[Service]\n"
                  f"CPUQuota={report.profile.cpu_quota_percent()}%\n"
                  f"MemoryMax={report.profile.memory_max_mb}M\n")
        _write(unit_dir / f"{unit_name}.d/10-board.conf", dropin, 0o644, 0, 0, report)

    if enable:
        _enable(root, unit_name, report)
    if root.resolve() == Path("/") and Path("/run/systemd/system").is_dir():
        _run(["systemctl", "daemon-reload"])
        report.add("systemctl daemon-reload", "updated")
        if start:
            _run(["systemctl", "restart", unit_name])
            report.add(f"systemctl restart {unit_name}", "updated")
    elif start:
        report.warnings.append("not started: systemd is not running this root")
    return report


# ---- user and group ----------------------------------------------------------------------------


def _ensure_user(root: Path, user: str, tool: str, report: InstallReport) -> tuple[int, int]:
    before = _lookup(root, user)
    if before is not None:
        report.add(f"user and group {user}", "unchanged")
        return before
    if tool not in ("auto", "sysusers", "files"):
        raise InstallError(f"users_tool must be auto, sysusers or files, not {tool!r}")
    sysusers = shutil.which("systemd-sysusers")
    if tool == "sysusers" and not sysusers:
        raise InstallError("systemd-sysusers is not installed (Debian package systemd)")
    entry = units.read("atlas.sysusers.conf").replace(" atlas ", f" {user} ", 1)
    conf = root / "etc/sysusers.d/atlas.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(entry)
    if sysusers and tool != "files":
        # sysusers writes the root's passwd/group/shadow/gshadow, picking a free system id there.
        _run([sysusers, f"--root={root}", str(conf)])
    else:
        _append_user_lines(root, user)
    after = _lookup(root, user)
    if after is None:
        raise InstallError(f"user {user} was not created in {root}/etc/passwd")
    report.add(f"user and group {user} (uid {after[0]}, gid {after[1]})", "created")
    return after


def _lookup(root: Path, user: str) -> tuple[int, int] | None:
    uid = gid = None
    for line in _read_lines(root / "etc/passwd"):
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == user:
            uid = int(parts[2])
    for line in _read_lines(root / "etc/group"):
        parts = line.split(":")
        if len(parts) >= 3 and parts[0] == user:
            gid = int(parts[2])
    return (uid, gid) if uid is not None and gid is not None else None


def _append_user_lines(root: Path, user: str) -> None:
    """What sysusers does, for roots without it: a free system id (999 down), four files."""
    used = set()
    for name in ("passwd", "group"):
        for line in _read_lines(root / "etc" / name):
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit():
                used.add(int(parts[2]))
    ident = next((i for i in range(999, 99, -1) if i not in used), None)
    if ident is None:
        raise InstallError(f"no free system uid/gid in 100-999 under {root}/etc")
    days = int(__import__("time").time() // 86400)
    lines = {
        "passwd": (f"{user}:x:{ident}:{ident}:ATLAS IoT security daemons:/var/lib/atlas:"
                   "/usr/sbin/nologin", 0o644),
        "group": (f"{user}:x:{ident}:", 0o644),
        "shadow": (f"{user}:!*:{days}::::::", 0o640),
        "gshadow": (f"{user}:!*::", 0o640),
    }
    for name, (line, mode) in lines.items():
        path = root / "etc" / name
        existing = path.read_text() if path.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        path.write_text(existing + line + "\n")
        os.chmod(path, mode)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# ---- files -----------------------------------------------------------------------------------


def _ensure_dir(path: Path, mode: int, uid: int, gid: int, report: InstallReport) -> None:
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    changed = (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (mode, uid, gid)
    if changed:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    label = "/" + str(path.relative_to(report.root))
    report.add(f"{label}/ ({oct(mode)[2:]} {uid}:{gid})",
               "created" if not existed else ("updated" if changed else "unchanged"))


def _write(path: Path, text: str, mode: int, uid: int, gid: int, report: InstallReport) -> None:
    label = "/" + str(path.relative_to(report.root))
    old = path.read_text() if path.exists() else None
    if old != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".atlas-new")
        tmp.write_text(text)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)  # never a half-written unit or config
        report.add(label, "created" if old is None else "updated")
        return
    st = path.stat()
    if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (mode, uid, gid):
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        report.add(f"{label} (permissions)", "updated")
    else:
        report.add(label, "unchanged")


def _point_at(unit_text: str, binary: str, exec_path: str) -> str:
    """Point ExecStart/ExecStartPre at the installed binary instead of the default venv."""
    default = f"{DEFAULT_BINDIR}/{binary}"
    return unit_text.replace(f"={default} ", f"={exec_path} ")


def _config_text(role: str, profile: GatewayProfile | None, interface: str | None) -> str:
    template = units.read(ROLES[role][1])
    if role != "agent":
        return template
    assert profile is not None
    values: dict[str, Any] = {
        "agent.interface": interface or default_interface() or "eth0",
        "agent.capture_backend": profile.capture_backend,
        "budget.cpu_percent": profile.cpu_budget_percent,
        "detect.batch": profile.inference_batch,
    }
    header = (f"# Installed for board profile {profile.name}: {profile.source}.\n")
    return header + render_config(template, values)


def render_config(template: str, values: Mapping[str, Any]) -> str:
    """Replace `key = value` lines of a TOML template, keyed "section.key"; comments are kept.

    Every key asked for must be in the template: a template that drifted from the code is an
    error here, not a config silently missing a setting.
    """
    section = ""
    todo = dict(values)
    out = []
    for line in template.splitlines(keepends=True):
        m = re.match(r"\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if m:
            section = m.group(1).strip()
        else:
            m = re.match(r"(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(\"[^\"]*\"|[^#\s]+)(.*)$", line.rstrip("\n"))
            if m and f"{section}.{m.group(2)}" in todo:
                new = _toml_value(todo.pop(f"{section}.{m.group(2)}"))
                rest = m.group(5)
                if rest.strip():  # keep the trailing comment in its column where it fits
                    width = len(m.group(4)) + len(rest) - len(rest.lstrip())
                    rest = " " * max(1, width - len(new)) + rest.lstrip()
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{new}{rest}\n"
        out.append(line)
    if todo:
        raise InstallError(f"config template has no key {sorted(todo)[0]!r}")
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise InstallError(f"cannot write {type(value).__name__} into a TOML config")


def default_interface(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The interface of the IPv4 default route, which on a gateway faces the devices' network."""
    for line in _read_lines(route_table)[1:]:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            return parts[0]
    return None


# ---- enablement --------------------------------------------------------------------------------


def _enable(root: Path, unit_name: str, report: InstallReport) -> None:
    link = root / "etc/systemd/system/multi-user.target.wants" / unit_name
    target = f"/etc/systemd/system/{unit_name}"
    if link.is_symlink() and os.readlink(link) == target:
        report.add(f"enabled ({link.relative_to(root)})", "unchanged")
        return
    systemctl = shutil.which("systemctl")
    if systemctl:
        # --root never talks to a running systemd: it edits the root's unit folders, exactly
        # what `systemctl enable` does on the live system.
        _run([systemctl, f"--root={root}", "enable", unit_name])
    else:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    if not (link.is_symlink() and os.readlink(link) == target):
        raise InstallError(f"enabling {unit_name} did not create {link}")
    report.add(f"enabled ({link.relative_to(root)})", "created")


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
