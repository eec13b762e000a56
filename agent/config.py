"""The agent's configuration: TOML, validated at start, errors that name the key.

Unknown sections and keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import ipaddress
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from atlas.agent.enforce.config import EnforceSection, check_enforce
from atlas.link.textfile import TextFileError, read_toml
from atlas.link.tls import check_gateway_id


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


MAX_DEVICES = 1 << 24  # the feature table's arrays grow to this; far beyond any gateway


@dataclass
class AgentSection:
    gateway_id: str = "gateway"
    interface: str = ""  # capture interface for `run`
    bpf: str = ""  # kernel capture filter (tcpdump syntax), empty = everything
    capture_backend: str = "ring"  # ring (TPACKET_V3 mmap) | socket (recv loop)
    # The kernel ring's size in MiB (1 MiB blocks): resident all the time, and the buffer
    # that absorbs the agent's pauses (8 MiB: about 1 s of 50k packets/s of small MQTT frames).
    capture_ring_mb: int = 8
    snaplen: int = 65535
    # Decoded as MQTT; a port also joins when an MQTT CONNECT is sent to it (decode/streams.py).
    mqtt_ports: list[int] = field(default_factory=lambda: [1883, 8883])
    state_dir: str = "/var/lib/atlas"
    control_socket: str = "/run/atlas/agent/control.sock"  # the unit's RuntimeDirectory
    board: str = "auto"  # gateway profile name, or auto-detect
    # Where the gateway stands, said in its hello so the hub can link incidents across
    # domains (the hub's own [gateways.<id>] config wins); all optional.
    domain: str = ""  # e.g. "energy", "transportation"
    district: str = ""
    subnet: str = ""  # the devices' network behind the gateway, e.g. "10.2.0.0/16"


@dataclass
class BudgetSection:
    cpu_percent: float = 7.3  # share of the whole machine, all cores together


@dataclass
class DetectSection:
    models_dir: str = ""  # empty: the models shipped in the package
    tick_seconds: float = 1.0
    batch: int = 256  # inference batch (rows are padded to it)
    max_devices: int = 65536
    # Profile conformance (agent/detect/conformance.py): off without an inventory file.
    inventory: str = ""  # the gateway's devices: [[device]] address, client_id, gateway, profile
    peers: dict = field(default_factory=dict)  # peer name -> addresses/networks, e.g. { broker = ["10.20.0.1"] }
    conformance_interval_s: float = 5.0  # read one PUBLISH payload per publisher per this many seconds
    conformance_max_per_s: float = 50.0  # PUBLISH payloads read per second of traffic, at most (CPU: bench/test_bench_conformance.py)


@dataclass
class AlertsSection:
    confirm_hits: int = 2
    confirm_window_s: float = 10.0
    strong_score: float = 0.99
    strong_anomaly: float = 5.0
    close_after_s: float = 60.0
    # Cheap counters, checked on every tick even when inference is shed (packets/s per device).
    volumetric_pps: float = 5000.0
    volumetric_syn_pps: float = 500.0


@dataclass
class HubSection:
    address: str = ""  # host:port of atlas-central; empty = standalone
    ca: str = ""
    cert: str = ""
    key: str = ""
    signing_key: str = ""  # the hub's Ed25519 public key (PEM): rules must carry its signature
    spool_dir: str = ""  # default: <state_dir>/spool
    spool_max_mb: float = 64.0


@dataclass
class MetricsSection:
    port: int = 0  # Prometheus exporter on 127.0.0.1; 0 = off


@dataclass
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    detect: DetectSection = field(default_factory=DetectSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    hub: HubSection = field(default_factory=HubSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    enforce: EnforceSection = field(default_factory=EnforceSection)
    source: str = "<defaults>"


def load_config(path: str | Path | None) -> AgentConfig:
    """Read and validate a TOML config; `None` gives the defaults."""
    if path is None:
        return AgentConfig()
    try:
        raw = read_toml(path, "config file")
    except TextFileError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "<config>") -> AgentConfig:
    cfg = AgentConfig(source=source)
    sections = {f.name: f for f in fields(AgentConfig) if f.name != "source"}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        setattr(cfg, name, _section(getattr(cfg, name), values, f"{source}: {name}"))
    _check(cfg)
    return cfg


def _section(default: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(default)}
    hints = typing.get_type_hints(type(default))
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
        want = type(getattr(default, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _is(value, want):
            raise ConfigError(f"{where}.{key}: expected {want.__name__}, got {type(value).__name__} {_short(value)}")
        if want is float and not math.isfinite(value):
            raise ConfigError(f"{where}.{key}: must be a finite number, got {value!r}")
        item = typing.get_args(hints[key])[0] if want is list else None  # list[int] -> int
        for i, v in enumerate(value if item else ()):
            if not _is(v, item):
                raise ConfigError(f"{where}.{key}[{i}]: expected {item.__name__}, got {type(v).__name__} {_short(v)}")
        setattr(default, key, value)
    return default


def _is(value: Any, want: type) -> bool:
    """isinstance, except that a boolean is never a number (TOML's true is not 1)."""
    return isinstance(value, want) and isinstance(value, bool) == (want is bool)


def _short(value: Any, limit: int = 60) -> str:
    """A value for an error message: one line, however long the value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _check(cfg: AgentConfig) -> None:
    def bad(key: str, why: str) -> None:
        raise ConfigError(f"{cfg.source}: {key}: {why}")

    try:
        check_gateway_id(cfg.agent.gateway_id)
    except ValueError:
        bad("agent.gateway_id", f"{_short(cfg.agent.gateway_id)}: use 1..63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it names files and the gateway's certificate)")
    if not 0 < cfg.budget.cpu_percent <= 100:
        bad("budget.cpu_percent", f"must be in (0, 100], got {cfg.budget.cpu_percent}")
    if cfg.agent.capture_backend not in ("ring", "socket"):
        bad("agent.capture_backend", f"must be 'ring' or 'socket', got {cfg.agent.capture_backend!r}")
    if not isinstance(cfg.agent.capture_ring_mb, int) or not 2 <= cfg.agent.capture_ring_mb <= 1024:
        bad("agent.capture_ring_mb", f"must be an integer in [2, 1024] (MiB), got {cfg.agent.capture_ring_mb!r}")
    if cfg.agent.subnet:
        try:
            ipaddress.ip_network(cfg.agent.subnet, strict=False)
        except ValueError:
            bad("agent.subnet", f"must be a network such as 10.2.0.0/16, got {cfg.agent.subnet!r}")
    if not 64 <= cfg.agent.snaplen <= 262144:
        bad("agent.snaplen", f"must be in [64, 262144], got {cfg.agent.snaplen}")
    if not cfg.agent.mqtt_ports or not all(isinstance(p, int) and 0 < p < 65536 for p in cfg.agent.mqtt_ports):
        bad("agent.mqtt_ports", f"must be a non-empty list of ports, got {cfg.agent.mqtt_ports!r}")
    if not 0.05 <= cfg.detect.tick_seconds <= 60:
        bad("detect.tick_seconds", f"must be in [0.05, 60], got {cfg.detect.tick_seconds}")
    if not 1 <= cfg.detect.batch <= 65536:
        bad("detect.batch", f"must be in [1, 65536], got {cfg.detect.batch}")
    if not 16 <= cfg.detect.max_devices <= MAX_DEVICES:
        bad("detect.max_devices", f"must be in [16, {MAX_DEVICES}], got {cfg.detect.max_devices}")
    if cfg.detect.models_dir and not Path(cfg.detect.models_dir).is_dir():
        what = "a file" if Path(cfg.detect.models_dir).exists() else "missing"
        bad("detect.models_dir", f"{cfg.detect.models_dir!r} is {what}; expected the folder with meta.json and the .tflite models")
    _check_conformance(cfg, bad)
    _check_alerts(cfg.alerts, bad)
    if not 0 <= cfg.metrics.port < 65536:
        bad("metrics.port", f"must be a port number, got {cfg.metrics.port}")
    if not 0.01 <= cfg.hub.spool_max_mb <= 1 << 20:
        bad("hub.spool_max_mb", f"must be in [0.01, {1 << 20}] MiB, got {cfg.hub.spool_max_mb}")
    if cfg.hub.address and not (cfg.hub.ca and cfg.hub.cert and cfg.hub.key and cfg.hub.signing_key):
        bad("hub", "address is set, so ca, cert, key (mutual TLS) and signing_key (rule signatures) are required")
    try:
        check_enforce(cfg.enforce, cfg.source)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_alerts(a: AlertsSection, bad) -> None:
    if not 1 <= a.confirm_hits <= 1000:
        bad("alerts.confirm_hits", f"must be in [1, 1000], got {a.confirm_hits}")
    if not 0 < a.strong_score <= 1:
        bad("alerts.strong_score", f"must be in (0, 1] (a classifier probability), got {a.strong_score}")
    for key in ("confirm_window_s", "strong_anomaly", "close_after_s", "volumetric_pps", "volumetric_syn_pps"):
        if not getattr(a, key) > 0:
            bad(f"alerts.{key}", f"must be > 0, got {getattr(a, key)}")


def _check_conformance(cfg: AgentConfig, bad) -> None:
    """[detect] inventory / peers / conformance_*: loaded here once so that a bad file fails
    at start (and `atlas-agent run --check`), naming the key and the file's entry."""
    from atlas.agent.detect.conformance import InventoryError, parse_peers

    d = cfg.detect
    if not 0 < d.conformance_interval_s <= 3600:
        bad("detect.conformance_interval_s", f"must be in (0, 3600] seconds, got {d.conformance_interval_s}")
    if not 1 <= d.conformance_max_per_s <= 1e6:
        bad("detect.conformance_max_per_s", f"must be in [1, 1e6] payloads per second, got {d.conformance_max_per_s}")
    try:
        parse_peers(d.peers)
    except ValueError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None
    if d.peers and not d.inventory:
        bad("detect.peers", "only used by the profile-conformance check: set detect.inventory too")
    if not d.inventory:
        return
    where = Path(cfg.source)
    if not Path(d.inventory).is_absolute() and where.is_file():
        d.inventory = str(where.parent / d.inventory)  # relative to the config file
    from atlas.agent.detect.conformance import from_config
    from atlas.firmware_profiles import ProfileError

    try:
        from_config(d, cfg.agent)
    except (InventoryError, ProfileError) as exc:
        bad("detect.inventory", str(exc))
