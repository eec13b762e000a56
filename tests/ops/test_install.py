"""`atlas-agent install` into a throwaway root: user, config, unit, state dir, enablement."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from atlas.agent import board, install as inst

BIN = "/opt/atlas/venv/bin/atlas-agent"


def _passwd(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def _mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.fixture
def pi4():
    return board.detect_board("raspberry_pi_4")


@pytest.mark.parametrize("tool", ["sysusers", "files"])
def test_install_creates_everything_in_a_throwaway_root(tmp_path, pi4, tool):
    if tool == "sysusers" and shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers missing (Debian package systemd)")
    # The root already has other users, as a real one would.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                         "mosquitto:x:999:999::/var/lib/mosquitto:/usr/sbin/nologin\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nmosquitto:x:999:\n")
    report = inst.install(tmp_path, exec_path=BIN, interface="eth1", profile=pi4, users_tool=tool)

    user = _passwd(tmp_path, "atlas")
    assert user is not None, "user atlas not created"
    uid, gid = int(user[2]), int(user[3])
    assert 100 <= uid < 1000 and uid != 999, "a free system uid, not mosquitto's"
    assert user[5] == "/var/lib/atlas" and user[6] == "/usr/sbin/nologin"
    assert any(l.startswith("atlas:") for l in (tmp_path / "etc/shadow").read_text().splitlines())
    assert _passwd(tmp_path, "mosquitto") is not None, "existing users kept"

    assert _mode(tmp_path / "etc/atlas") == (0o750, 0, gid)
    assert _mode(tmp_path / "var/lib/atlas") == (0o750, uid, gid)
    config = tmp_path / "etc/atlas/agent.toml"
    assert _mode(config) == (0o640, 0, gid)

    unit = (tmp_path / "etc/systemd/system/atlas-agent.service").read_text()
    assert f"ExecStart={BIN} run --config /etc/atlas/agent.toml\n" in unit
    dropin = (tmp_path / "etc/systemd/system/atlas-agent.service.d/10-board.conf").read_text()
    assert "CPUQuota=58%" in dropin and "MemoryMax=256M" in dropin
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/atlas-agent.service"
    assert link.is_symlink() and os.readlink(link) == "/etc/systemd/system/atlas-agent.service"
    assert not report.warnings[1:], report.warnings  # only "binary does not exist yet"
    assert "created" in report.as_text() and report.changed


def test_config_from_the_template_is_what_the_agent_accepts(tmp_path, pi4):
    from atlas.agent.config import load_config

    inst.install(tmp_path, exec_path=BIN, interface="eth1", profile=pi4)
    path = tmp_path / "etc/atlas/agent.toml"
    cfg = load_config(path)
    assert cfg.agent.interface == "eth1"
    assert cfg.agent.capture_backend == pi4.capture_backend == "ring"
    assert cfg.budget.cpu_percent == pi4.cpu_budget_percent
    assert cfg.detect.batch == pi4.inference_batch
    assert cfg.agent.state_dir == "/var/lib/atlas"  # the unit's StateDirectory
    assert cfg.agent.control_socket.startswith("/run/atlas/agent/")  # the unit's RuntimeDirectory
    assert path.read_text().startswith("# Installed for board profile raspberry_pi_4")


def test_installed_config_passes_the_units_start_check(tmp_path, pi4):
    """What ExecStartPre runs: `atlas-agent run --config ... --check`."""
    from importlib import resources

    if not resources.files("atlas.agent.detect").joinpath("models/meta.json").is_file():
        pytest.skip("no trained models in the package yet: --check loads them")
    inst.install(tmp_path, exec_path=BIN, interface="lo", profile=pi4)
    out = subprocess.run([sys.executable, "-m", "atlas.agent.cli", "run", "--config",
                          str(tmp_path / "etc/atlas/agent.toml"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_second_run_changes_nothing_and_keeps_the_operators_config(tmp_path, pi4):
    inst.install(tmp_path, exec_path=BIN, profile=pi4)
    config = tmp_path / "etc/atlas/agent.toml"
    config.write_text(config.read_text().replace('gateway_id = "gateway"', 'gateway_id = "junction-7"'))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if not p.is_symlink()}
    report = inst.install(tmp_path, exec_path=BIN, profile=pi4)
    assert not report.changed, report.as_text()
    assert {a for _, a in report.steps} <= {"unchanged", "kept"}
    assert 'gateway_id = "junction-7"' in config.read_text()
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if not p.is_symlink()}
    assert after == before
    assert sum(1 for l in (tmp_path / "etc/passwd").read_text().splitlines()
               if l.startswith("atlas:")) == 1


def test_reinstall_repairs_permissions_and_a_new_binary_path(tmp_path, pi4):
    inst.install(tmp_path, exec_path=BIN, profile=pi4)
    os.chmod(tmp_path / "var/lib/atlas", 0o777)
    report = inst.install(tmp_path, exec_path="/usr/local/bin/atlas-agent", profile=pi4)
    assert _mode(tmp_path / "var/lib/atlas")[0] == 0o750
    assert ("/etc/systemd/system/atlas-agent.service", "updated") in report.steps
    unit = (tmp_path / "etc/systemd/system/atlas-agent.service").read_text()
    assert "ExecStartPre=/usr/local/bin/atlas-agent run --config" in unit and BIN not in unit


def test_the_installed_unit_passes_verify_in_that_root(tmp_path, pi4):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (Debian package systemd)")
    inst.install(tmp_path, exec_path=BIN, profile=pi4)
    binary = tmp_path / BIN.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    # The standard targets come from the distribution's unit folder, as on a real gateway.
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    out = subprocess.run(["systemd-analyze", "verify", f"--root={tmp_path}", "--man=no",
                          "--generators=no", "atlas-agent.service"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stderr
    # The board drop-in was part of what verify loaded: spoil it and verify names it.
    dropin = tmp_path / "etc/systemd/system/atlas-agent.service.d/10-board.conf"
    dropin.write_text(dropin.read_text().replace("CPUQuota=58%", "CPUQuota=lots"))
    out = subprocess.run(["systemd-analyze", "verify", f"--root={tmp_path}", "--man=no",
                          "--generators=no", "atlas-agent.service"],
                         capture_output=True, text=True, timeout=120)
    assert "10-board.conf" in out.stderr and "lots" in out.stderr, out.stderr


def test_central_role_installs_the_hub_unit_without_board_dropin(tmp_path):
    report = inst.install(tmp_path, role="central", exec_path="/opt/atlas/venv/bin/atlas-central")
    unit = (tmp_path / "etc/systemd/system/atlas-central.service").read_text()
    assert "ExecStart=/opt/atlas/venv/bin/atlas-central serve --config /etc/atlas/central.toml" in unit
    assert (tmp_path / "etc/atlas/central.toml").is_file()
    assert not (tmp_path / "etc/systemd/system/atlas-central.service.d").exists()
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/atlas-central.service").is_symlink()
    assert report.profile is None


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(inst.InstallError, match="unknown role 'gateway'"):
        inst.install(tmp_path, role="gateway")
    with pytest.raises(inst.InstallError, match="must be absolute"):
        inst.install(tmp_path, exec_path="venv/bin/atlas-agent")
    with pytest.raises(inst.InstallError, match="is not a directory"):
        inst.install(tmp_path / "nope")


def test_binary_under_home_is_warned_about(tmp_path, pi4):
    report = inst.install(tmp_path, exec_path="/home/pi/venv/bin/atlas-agent", profile=pi4)
    assert any("ProtectHome" in w for w in report.warnings)


def test_render_config_replaces_values_and_refuses_unknown_keys():
    template = '[agent]\ninterface = "eth0"   # facing the devices\n[budget]\ncpu_percent = 7.3\n'
    out = inst.render_config(template, {"agent.interface": 'wl"an0', "budget.cpu_percent": 5.0})
    assert out == '[agent]\ninterface = "wl\\"an0" # facing the devices\n[budget]\ncpu_percent = 5.0\n'
    with pytest.raises(inst.InstallError, match="no key 'agent.colour'"):
        inst.render_config(template, {"agent.colour": "red"})


def test_default_interface_reads_the_default_route(tmp_path):
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\n"
                     "wlan0\t0001A8C0\t00000000\t0001\n"
                     "eth0\t00000000\t0101A8C0\t0003\n")
    assert inst.default_interface(table) == "eth0"
    assert inst.default_interface(tmp_path / "missing") is None
