"""Gateway profiles (firmware_profiles/gateways/*.toml) and detection of the board we run on.

A profile says what a supported board is (architecture, cores, memory) and how the agent
should run there (recommended CPU budget, capture backend, detectors, batch sizes, memory
backstop). `detect_board()` reads the device tree model (Raspberry Pi, Jetson), then the
`Model` line of /proc/cpuinfo, and falls back to the generic profile of the architecture;
the profile it returns says how it was chosen (`source`), which `atlas-agent status` shows.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["BoardError", "Hardware", "GatewayProfile", "list_profiles", "load_profile",
           "read_hardware", "detect_board", "CAPTURE_BACKENDS", "DETECTORS"]

CAPTURE_BACKENDS = ("ring", "socket")
DETECTORS = ("anomaly", "classifier")
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


class BoardError(ValueError):
    """A profile file is invalid or names no known board; the message names file and key."""


@dataclass(frozen=True)
class Hardware:
    """What the machine actually has."""

    architecture: str
    cores: int
    memory_mb: int
    model: str = ""  # device tree or cpuinfo model string, "" when the machine has none


@dataclass(frozen=True)
class GatewayProfile:
    name: str
    display_name: str
    architecture: str
    cpu: str
    cores: int
    memory_mb: int
    cpu_budget_percent: float
    capture_backend: str
    detectors: tuple[str, ...]
    capture_batch: int
    inference_batch: int
    memory_max_mb: int
    match: tuple[str, ...] = ()
    source: str = "profile file"  # how this profile was chosen, for `status`
    hardware: Hardware | None = field(default=None, compare=False)

    @property
    def generic(self) -> bool:
        return not self.match

    def cpu_quota_percent(self, headroom: float = 2.0) -> int:
        """systemd CPUQuota (100 % = one core) as a backstop `headroom` times the budget."""
        cores = self.cores or (self.hardware.cores if self.hardware else 1)
        return max(10, round(self.cpu_budget_percent * cores * headroom))

_FILE_KEYS = {f.name for f in dataclasses.fields(GatewayProfile)} - {"source", "hardware"}


def _profiles_dir():
    return resources.files("atlas.firmware_profiles").joinpath("gateways")


def list_profiles() -> list[str]:
    """Names of the shipped gateway profiles."""
    return sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | os.PathLike) -> GatewayProfile:
    """A shipped profile by name (``raspberry_pi_4``) or a profile file by path."""
    text_path = str(name_or_path)
    if text_path.endswith(".toml") or os.sep in text_path:
        path = Path(text_path)
        label = str(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise BoardError(f"cannot read gateway profile {path}: {err.strerror}") from None
    else:
        entry = _profiles_dir().joinpath(f"{text_path}.toml")
        label = f"firmware_profiles/gateways/{text_path}.toml"
        if not entry.is_file():
            raise BoardError(f"unknown gateway profile {text_path!r}; "
                             f"known: {', '.join(list_profiles())}")
        raw = entry.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BoardError(f"{label}: not valid TOML: {err}") from None
    return _validate(data, label)


def _validate(data: dict[str, Any], label: str) -> GatewayProfile:
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise BoardError(f"{label}: unknown key {unknown[0]!r}")
    missing = sorted(_FILE_KEYS - set(data) - {"match"})
    if missing:
        raise BoardError(f"{label}: missing key {missing[0]!r}")

    def typed(key: str, kind: type | tuple[type, ...]) -> Any:
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BoardError(f"{label}: {key} must be {getattr(kind, '__name__', 'a number')}, "
                             f"not {value!r}")
        return value

    for key in ("name", "display_name", "architecture", "cpu", "capture_backend"):
        typed(key, str)
    for key in ("cores", "memory_mb", "capture_batch", "inference_batch", "memory_max_mb"):
        if typed(key, int) < 0:
            raise BoardError(f"{label}: {key} must not be negative")
    budget = float(typed("cpu_budget_percent", (int, float)))
    if not 0 < budget <= 100:
        raise BoardError(f"{label}: cpu_budget_percent must be in (0, 100], not {budget}")
    if data["capture_backend"] not in CAPTURE_BACKENDS:
        raise BoardError(f"{label}: capture_backend must be one of {CAPTURE_BACKENDS}, "
                         f"not {data['capture_backend']!r}")
    detectors = data["detectors"]
    if not isinstance(detectors, list) or not detectors or any(d not in DETECTORS for d in detectors):
        raise BoardError(f"{label}: detectors must be a non-empty list from {DETECTORS}, "
                         f"not {detectors!r}")
    match = data.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise BoardError(f"{label}: match must be a list of model strings")
    for key in ("capture_batch", "inference_batch", "memory_max_mb"):
        if data[key] == 0:
            raise BoardError(f"{label}: {key} must be positive")
    return GatewayProfile(
        name=data["name"], display_name=data["display_name"],
        architecture=_ARCH_ALIASES.get(data["architecture"], data["architecture"]),
        cpu=data["cpu"], cores=data["cores"], memory_mb=data["memory_mb"],
        cpu_budget_percent=budget, capture_backend=data["capture_backend"],
        detectors=tuple(detectors), capture_batch=data["capture_batch"],
        inference_batch=data["inference_batch"], memory_max_mb=data["memory_max_mb"],
        match=tuple(match), source=f"profile {label}",
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"").decode(errors="replace").strip()
    except OSError:
        return ""


def read_hardware(root: Path = Path("/"), machine: str | None = None) -> Hardware:
    """Architecture, cores, memory and board model of this machine.

    `root` and `machine` describe another machine (a gateway's /proc and /sys copied into a
    folder, and its `uname -m`): that is how the board profiles are tested off the board.
    """
    model = _read_text(root / "proc/device-tree/model") or \
        _read_text(root / "sys/firmware/devicetree/base/model")
    cpuinfo = _read_text(root / "proc/cpuinfo")
    if not model:
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model" and value.strip():  # Raspberry Pi kernels add this line
                model = value.strip()
                break
    if root == Path("/"):
        cores = os.cpu_count() or 1
    else:
        cores = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")) or 1
    arch = machine or platform.machine()
    memory_mb = 0
    for line in _read_text(root / "proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory_mb = int(line.split()[1]) // 1024
            break
    if not memory_mb and root == Path("/"):
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    arch = _ARCH_ALIASES.get(arch.lower(), arch.lower())
    return Hardware(architecture=arch, cores=cores, memory_mb=memory_mb, model=model)


def detect_board(override: str | None = None, root: Path = Path("/"),
                 machine: str | None = None) -> GatewayProfile:
    """The profile for this machine, with `source` saying how it was chosen.

    `override` is the config's board setting: a profile name or file, or None/"auto" to detect.
    """
    hw = read_hardware(root, machine)
    if override and override != "auto":
        profile = load_profile(override)
        if profile.architecture != hw.architecture:
            source = (f"config (board = {override!r}; note: profile is for "
                      f"{profile.architecture}, this machine is {hw.architecture})")
        else:
            source = f"config (board = {override!r})"
        return _with_hardware(profile, hw, source)
    if hw.model:
        needle = hw.model.lower()
        for name in list_profiles():
            profile = load_profile(name)
            if any(m.lower() in needle for m in profile.match):
                return _with_hardware(profile, hw, f"detected: board model {hw.model!r}")
    generic = next((p for p in map(load_profile, list_profiles())
                    if p.generic and p.architecture == hw.architecture), None)
    if generic is None:
        raise BoardError(f"no gateway profile for architecture {hw.architecture!r} "
                         f"(supported: aarch64, x86_64; LiteRT has no 32-bit ARM wheels); "
                         f"set board = NAME in the config to force one of "
                         f"{', '.join(list_profiles())}")
    why = f"no known board model ({hw.model!r})" if hw.model else "no board model found"
    return _with_hardware(generic, hw,
                          f"fallback: {why}, generic {hw.architecture} profile "
                          f"({hw.cores} cores, {hw.memory_mb} MB)")


def _with_hardware(profile: GatewayProfile, hw: Hardware, source: str) -> GatewayProfile:
    # A generic profile takes the machine's own size; a board profile keeps its nominal one
    # and carries the measured hardware beside it.
    cores = profile.cores or hw.cores
    memory = profile.memory_mb or hw.memory_mb
    return dataclasses.replace(profile, cores=cores, memory_mb=memory, source=source, hardware=hw)
