"""Gateway profiles and board detection.

This machine is detected for real; the boards we do not have (Pi, Jetson) are described by
the files their kernels expose (/proc/device-tree/model, /proc/cpuinfo, /proc/meminfo), written
into a folder that stands for their root.
"""

from __future__ import annotations

import os
import platform

import pytest

from atlas.agent import board

BOARDS = {"raspberry_pi_4", "raspberry_pi_5", "raspberry_pi_zero_2w", "jetson_orin_nano"}


def _machine(tmp_path, model: str | None, cores: int = 4, mem_kb: int = 3884108,
             cpuinfo_model: str | None = None):
    (tmp_path / "proc").mkdir()
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir()
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    cpuinfo = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\n"
                      for i in range(cores))
    if cpuinfo_model:
        cpuinfo += f"Revision\t: c03114\nModel\t\t: {cpuinfo_model}\n"
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree: 1 kB\n")
    return tmp_path


def test_every_shipped_profile_is_valid_and_named_after_its_file():
    names = set(board.list_profiles())
    assert BOARDS | {"generic_x86_64", "generic_arm64"} <= names
    for name in names:
        p = board.load_profile(name)
        assert p.name == name
        assert p.capture_backend in board.CAPTURE_BACKENDS
        assert set(p.detectors) <= set(board.DETECTORS)
        assert 0 < p.cpu_budget_percent <= 100
        if name in BOARDS:
            assert p.architecture == "aarch64" and p.cores > 0 and p.memory_mb > 0 and p.match
        # The memory backstop must leave the 100 MB goal for the agent's RSS some room.
        assert p.memory_max_mb >= 128


def test_this_machine_falls_back_to_its_generic_profile_and_says_so():
    p = board.detect_board()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    assert p.name == {"aarch64": "generic_arm64"}.get(arch, f"generic_{arch}")
    assert p.source.startswith("fallback:") and arch in p.source
    assert p.cores == os.cpu_count() and p.hardware.cores == os.cpu_count()
    assert p.memory_mb > 0


@pytest.mark.parametrize("model,expected,cores", [
    ("Raspberry Pi 4 Model B Rev 1.4", "raspberry_pi_4", 4),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "raspberry_pi_4", 4),
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry_pi_5", 4),
    ("Raspberry Pi Zero 2 W Rev 1.0", "raspberry_pi_zero_2w", 4),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson_orin_nano", 6),
])
def test_boards_are_recognised_from_the_device_tree_model(tmp_path, model, expected, cores):
    p = board.detect_board(root=_machine(tmp_path, model, cores=cores), machine="aarch64")
    assert p.name == expected
    assert p.source == f"detected: board model {model!r}"
    assert p.hardware.model == model and p.hardware.cores == cores
    assert p.hardware.memory_mb == 3884108 // 1024


def test_raspberry_pi_kernel_model_line_in_cpuinfo_is_enough(tmp_path):
    root = _machine(tmp_path, None, cpuinfo_model="Raspberry Pi 4 Model B Rev 1.5")
    assert board.detect_board(root=root, machine="aarch64").name == "raspberry_pi_4"


def test_unknown_arm_board_gets_the_generic_profile_sized_to_the_machine(tmp_path):
    root = _machine(tmp_path, "Pine64 RockPro64 v2.1", cores=6, mem_kb=4 * 1024 * 1024)
    p = board.detect_board(root=root, machine="arm64")
    assert p.name == "generic_arm64" and p.capture_backend == "socket"
    assert "Pine64 RockPro64" in p.source and p.source.startswith("fallback:")
    assert (p.cores, p.memory_mb) == (6, 4096)


def test_32_bit_arm_is_refused_with_the_reason(tmp_path):
    root = _machine(tmp_path, "Raspberry Pi Zero W Rev 1.1", cores=1)
    with pytest.raises(board.BoardError, match="'armv6l'.*no 32-bit ARM wheels"):
        board.detect_board(root=root, machine="armv6l")


def test_config_override_wins_and_notes_an_architecture_mismatch(tmp_path):
    p = board.detect_board("raspberry_pi_5", root=_machine(tmp_path, "Raspberry Pi 4 Model B"),
                           machine="aarch64")
    assert p.name == "raspberry_pi_5" and p.source == "config (board = 'raspberry_pi_5')"
    on_x86 = board.detect_board("jetson_orin_nano")
    assert "profile is for aarch64" in on_x86.source or platform.machine() == "aarch64"
    assert board.detect_board("auto").name.startswith("generic_")


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(board.BoardError, match="unknown gateway profile 'pi9'.*raspberry_pi_4"):
        board.load_profile("pi9")


@pytest.mark.parametrize("edit,message", [
    ({"capture_backend": "dpdk"}, "capture_backend must be one of"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"cores": "four"}, "cores must be int"),
    ({"cpu_budget_percent": 0}, "cpu_budget_percent must be in"),
    ({"detectors": ["anomaly", "oracle"]}, "detectors must be"),
    ({"inference_batch": 0}, "inference_batch must be positive"),
])
def test_bad_profile_files_name_file_and_key(tmp_path, edit, message):
    src = (board._profiles_dir() / "raspberry_pi_4.toml").read_text()  # noqa: SLF001
    lines = [line for line in src.splitlines() if line.split("=")[0].strip() not in edit]
    for key, value in edit.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = tmp_path / "custom.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(board.BoardError, match=message) as err:
        board.load_profile(path)
    assert str(path) in str(err.value)


def test_cpu_quota_backstop_is_above_the_budget():
    pi4 = board.load_profile("raspberry_pi_4")
    # 7.3 % of 4 cores = 29.2 % of one core; the backstop is twice that.
    assert pi4.cpu_quota_percent() == 58
    assert pi4.cpu_quota_percent() > pi4.cpu_budget_percent * pi4.cores
