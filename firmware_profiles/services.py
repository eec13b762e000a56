"""Critical services: what the city must keep running, and what each one depends on (TOML, one per service).

A service is fed by devices and carried by the gateways and brokers between them and the
back-end. Its declaration says how many of its devices must stay up and how long it may be
degraded before people are harmed, so that a response (or an attack) can be priced in lost
service rather than in devices:

    service = "traffic_control"        # equal to the file's stem
    label = "Traffic signal control"
    domain = "transportation"          # one of DOMAINS
    criticality = "life_safety"        # one of CRITICALITIES
    scope = "district"                 # "district": one instance per district; "city": one
    deadline_s = 2                     # seconds it may be degraded before harm
    description = "..."

    [[depends_on]]                     # exactly one of class, device, gateway, broker, service
    class = "traffic_signal_controller"    # the scope's devices of this profile feed it ...
    min_up = 1.0                       # ... and this share of them must stay up (0 < share <= 1)

    [[depends_on]]
    service = "time_sync"              # another service: dependencies are transitive
    [[depends_on]]
    device = "tsc-d01-0001"            # one device (MQTT client id or address) must stay up
    [[depends_on]]
    gateway = "gw-d01-tra"             # a gateway (and so every device behind it)
    [[depends_on]]
    broker = "10.1.0.1"                # a broker (and so every device that publishes to it)

A device feeds a service only while its gateway and its broker are up. Profiles and other
services are checked here; devices, gateways and brokers exist only in a city's inventory, so
the hub's SHACL shapes check those (atlas.central.ontology.shapes).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from atlas.firmware_profiles import (CRITICALITIES, DOMAINS, DeviceProfile, ProfileError, load_device_profiles,
                                     toml_files)

SERVICES_DIR = Path(__file__).resolve().parent / "services"
SCOPES = ("district", "city")
DEPENDENCY_KINDS = ("class", "device", "gateway", "broker", "service")
_TOP_KEYS = {"service", "label", "domain", "criticality", "scope", "deadline_s", "description", "depends_on"}


class ServiceError(ProfileError):
    """A service declaration that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Dependency:
    kind: str  # one of DEPENDENCY_KINDS
    name: str  # the profile, device, gateway, broker or service it names
    min_up: float = 1.0  # class: the share of the scope's devices that must stay up


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    label: str
    domain: str
    criticality: str
    scope: str
    deadline_s: float
    depends_on: tuple[Dependency, ...]
    description: str = ""
    path: str = ""

    def of_kind(self, kind: str) -> tuple[Dependency, ...]:
        return tuple(d for d in self.depends_on if d.kind == kind)


def load_services(dir: str | Path | None = None,
                  profiles: Mapping[str, DeviceProfile] | None = None) -> dict[str, ServiceSpec]:
    """Load and validate every `*.toml` in `dir` (default: the packaged services/ folder).

    Device classes must be known profiles (`profiles`, default: the packaged ones) and service
    dependencies must name declared services without a cycle. Raises `ServiceError`.
    """
    files = toml_files(Path(dir) if dir is not None else SERVICES_DIR, "service declarations", ServiceError)
    profiles = load_device_profiles() if profiles is None else profiles
    services = {s.name: s for s in (load_service(p, profiles) for p in files)}
    for s in services.values():
        for i, d in enumerate(s.depends_on):
            if d.kind == "service" and d.name not in services:
                raise ServiceError(f"{Path(s.path).name}: depends_on[{i}].service: {d.name!r} is not a declared "
                                   f"service (known: {', '.join(sorted(services))})")
    _check_acyclic(services)
    return services


def load_service(path: str | Path, profiles: Mapping[str, DeviceProfile]) -> ServiceSpec:
    """Load and validate one declaration (its service dependencies are checked by load_services)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ServiceError(f"{path.name}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ServiceError(f"{path}: cannot read: {e}") from None
    return _Reader(path).service(data, profiles)


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str) -> ServiceError:
        return ServiceError(f"{self.path.name}: {key}: {msg}")

    def text(self, data: dict, key: str, name: str, choices: tuple[str, ...] | None = None,
             default: str | None = None) -> str:
        full = f"{key}.{name}" if key else name
        if name not in data:
            if default is None:
                raise self.fail(full, "missing required key")
            return default
        v = data[name]
        if not isinstance(v, str) or (default is None and not v.strip()):
            raise self.fail(full, f"must be a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(full, f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def number(self, data: dict, key: str, lo: float, hi: float, lo_open: bool = False) -> float:
        v = data[key.rsplit(".", 1)[-1]]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo):
            raise self.fail(key, f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g} (got {v})")
        return float(v)

    def service(self, data: dict[str, Any], profiles: Mapping[str, DeviceProfile]) -> ServiceSpec:
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
        name = self.text(data, "", "service")
        if name != self.path.stem:
            raise self.fail("service", f"must equal the file name {self.path.stem!r} (got {name!r})")
        if "deadline_s" not in data:
            raise self.fail("deadline_s", "missing required key")
        deps = data.get("depends_on")
        if not isinstance(deps, list) or not deps:
            raise self.fail("depends_on", "needs at least one [[depends_on]] table")
        return ServiceSpec(
            name=name,
            label=self.text(data, "", "label", default=name),
            domain=self.text(data, "", "domain", choices=DOMAINS),
            criticality=self.text(data, "", "criticality", choices=CRITICALITIES),
            scope=self.text(data, "", "scope", choices=SCOPES, default="city"),
            deadline_s=self.number(data, "deadline_s", 0, 30 * 86400, lo_open=True),
            depends_on=tuple(self.dependency(d, f"depends_on[{i}]", profiles, name) for i, d in enumerate(deps)),
            description=self.text(data, "", "description", default=""),
            path=str(self.path),
        )

    def dependency(self, data: Any, key: str, profiles: Mapping[str, DeviceProfile], own: str) -> Dependency:
        if not isinstance(data, dict):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(data) - set(DEPENDENCY_KINDS) - {"min_up"})
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(DEPENDENCY_KINDS)}, min_up)")
        kinds = [k for k in DEPENDENCY_KINDS if k in data]
        if len(kinds) != 1:
            raise self.fail(key, f"needs exactly one of {', '.join(DEPENDENCY_KINDS)} (got {kinds or 'none'})")
        kind = kinds[0]
        target = self.text(data, key, kind)
        if kind == "class" and target not in profiles:
            raise self.fail(f"{key}.class", f"{target!r} is not a device profile (known: {', '.join(sorted(profiles))})")
        if kind == "service" and target == own:
            raise self.fail(f"{key}.service", "a service cannot depend on itself")
        if "min_up" in data and kind != "class":
            raise self.fail(f"{key}.min_up", "only for a class dependency (a share of its devices)")
        min_up = self.number(data, f"{key}.min_up", 0, 1, lo_open=True) if "min_up" in data else 1.0
        return Dependency(kind, target, min_up)


def _check_acyclic(services: Mapping[str, ServiceSpec]) -> None:
    """Depth-first search; a cycle would make 'transitively depends on' meaningless."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise ServiceError(f"{Path(services[name].path).name}: depends_on: cycle {' -> '.join(cycle)}")
        state[name] = 1
        for d in services[name].of_kind("service"):
            visit(d.name, trail + [name])
        state[name] = 2

    for name in sorted(services):
        visit(name, [])


__all__ = ["DEPENDENCY_KINDS", "Dependency", "SCOPES", "SERVICES_DIR", "ServiceError", "ServiceSpec",
           "load_service", "load_services"]
