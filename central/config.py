"""The hub's configuration (central.toml), validated completely at load.

Every key is known: an unknown key, a wrong type or a bad value raises `ConfigError` naming
the file and the dotted key, so the operator sees what to fix instead of a stack trace.
Relative paths are resolved against the configuration file's folder, so a config and its
PKI/inventory can move together.

Example::

    [hub]
    listen = "0.0.0.0:7443"
    database = "central.db"            # SQLite file (one file; created and migrated at start)
    pki = "pki"                        # folder made by `atlas-central pki init`: gives
                                       # tls.* and signing_key unless they are set
    signing_key = "pki/rule-signing.key"   # Ed25519 private key (PEM) that signs every rule
    inventory = "inventory.toml"       # devices -> profiles (see atlas.central.decide.inventory)
    operator_poll = 0.2                # seconds between checks of the operator-command queue
    sync = "full"                      # "full": fsync each commit (survives power loss);
                                       # "normal": survives a hub crash, faster
    telemetry_retention = 86400        # seconds of per-device summaries kept; 0 = forever
    control_socket = "/run/atlas/central/control.sock"   # `atlas-central status` asks the hub here
    metrics_port = 9732                # Prometheus metrics on 127.0.0.1; 0 = off

    [tls]                              # optional with [hub] pki
    ca = "pki/ca.crt"
    cert = "pki/hub.crt"
    key = "pki/hub.key"

    [ingest]                           # the gateways' streams (gRPC); limits refuse clearly, logged
    max_gateways = 2048                # gateways connected at once
    max_streams_per_gateway = 4        # streams one certificate may hold open (an agent uses 1)
    hello_timeout = 5                  # seconds a new stream has to say hello
    workers = 16                       # threads calling into the hub (fixed: not per gateway)

    [incidents]
    merge_window = 300                 # same attacker+kind within this many seconds = one incident

    [correlate]
    engine = "rules"                   # links incidents into campaigns (registry: rules)
    window = 3600                      # seconds: how far apart two linked incidents may be

    [gateways.gw-d01-ene]              # where a gateway stands (else what its hello says)
    domain = "energy"
    district = "d01"
    subnet = "10.2.0.0/16"             # the devices' network behind it

    [decide]
    policy = "playbook"                # the response policy (registry: playbook)
    shadow = false                     # true: record and report every decision, enforce none
    allowlist = ["10.0.0.1", "10.9.0.0/24", "ops-console"]   # addresses, networks, MQTT ids

    [decide.playbook.default]          # every kind; per-kind tables override single cells
    outside = { action = "quarantine", ttl = 900 }
    life_safety = { action = "rate_limit", ttl = 300, params = { pps = 20 }, escalate = "quarantine" }

    [decide.playbook.mqtt_bruteforce]
    ordinary = { action = "revoke_mqtt", ttl = 600, fallback = "quarantine" }
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.link.textfile import TextFileError, read_toml

DEFAULT_CONFIG_PATH = Path("/etc/atlas/central.toml")


class ConfigError(ValueError):
    """An operator mistake in the configuration; the message names the file and the key."""


@dataclass(frozen=True)
class TlsConfig:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class CorrelateConfig:
    engine: str = "rules"  # a name in atlas.central.correlate.registry.ENGINES
    window: float = 3600.0


@dataclass(frozen=True)
class GatewayPlaceConfig:
    domain: str = ""
    district: str = ""
    subnet: str = ""


@dataclass(frozen=True)
class DecideConfig:
    policy: str = "playbook"  # a name in atlas.central.decide.registry.POLICIES
    shadow: bool = False
    allowlist: tuple[str, ...] = ()
    # (kind or "default", attacker class) -> cell table as written; the playbook parses and
    # validates it (atlas.central.decide.playbook.parse_cells), config only checks the shape.
    playbook: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestConfig:
    max_gateways: int = 2048
    max_streams_per_gateway: int = 4
    hello_timeout: float = 5.0
    workers: int = 16


@dataclass(frozen=True)
class HubConfig:
    path: Path | None
    database: Path
    listen: str = "127.0.0.1:7443"
    signing_key: Path | None = None
    inventory: Path | None = None
    operator_poll: float = 0.2
    sync: str = "full"
    telemetry_retention: float = 86400.0
    merge_window: float = 300.0
    tls: TlsConfig | None = None
    decide: DecideConfig = field(default_factory=DecideConfig)
    control_socket: Path | None = None  # `atlas-central status` asks the running hub here
    metrics_port: int = 0  # Prometheus exporter on 127.0.0.1; 0 = off
    correlate: CorrelateConfig = field(default_factory=CorrelateConfig)
    gateways: dict[str, GatewayPlaceConfig] = field(default_factory=dict)  # id -> place
    ingest: IngestConfig = field(default_factory=IngestConfig)


class _Table:
    """One TOML table being read: remembers which keys were used, so leftovers are errors."""

    def __init__(self, data: Any, where: str, source: str, asked: dict[str, set[str]] | None = None):
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {where}: expected a table, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.source = source
        self.used: set[str] = set()
        # every key the loader asked for, by table, shared by a document's tables: what the
        # loader accepts, for the test that the template documents every key
        self.asked = {} if asked is None else asked
        self.asked.setdefault(where, self.used)

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {message}")

    def get(self, name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        # bool is an int in Python; never accept true where a number is meant
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise self.error(name, f"expected {_type_names(types)}, got a boolean")
        if not isinstance(value, types):
            raise self.error(name, f"expected {_type_names(types)}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value!r}")
        return value

    def table(self, name: str) -> _Table | None:
        self.used.add(name)
        if name not in self.data:
            return None
        return _Table(self.data[name], self.key(name), self.source, self.asked)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key" + _suggest(unknown[0], self.used))


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(sorted({names.get(t, t.__name__) for t in _as_tuple(types)}))


def _suggest(name: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _path(table: _Table, name: str, base: Path, required: bool = False) -> Path | None:
    value = table.get(name, str)
    if value is None:
        if required:
            raise table.error(name, "missing (a file path)")
        return None
    if not value:
        raise table.error(name, "empty path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _positive(table: _Table, name: str, default: float, upper: float) -> float:
    value = table.get(name, (int, float), default)
    if not 0 < value <= upper:
        raise table.error(name, f"must be > 0 and <= {upper:g}, got {value!r}")
    return float(value)


def _listen(table: _Table) -> str:
    value = table.get("listen", str, "127.0.0.1:7443")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise table.error("listen", f"expected HOST:PORT (port 0: any free one), got {value!r}")
    return value


def _allowlist(table: _Table) -> tuple[str, ...]:
    items = table.get("allowlist", list, [])
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise table.error(f"allowlist[{i}]", "expected an address, a network or an MQTT id")
        item = item.strip()
        if "/" in item:  # looks like a network: it must parse as one
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise table.error(f"allowlist[{i}]", f"bad network {item!r}: {exc}") from None
        out.append(item)
    return tuple(out)


def _registered(table: _Table, name: str, default: str, known: dict[str, Any],
                what: str) -> str:
    value = table.get(name, str, default)
    if value not in known:
        raise table.error(name, f"unknown {what} {value!r} (known: {', '.join(sorted(known))})")
    return value


def _correlate(table: _Table | None) -> CorrelateConfig:
    from atlas.central.correlate.registry import DEFAULT_ENGINE, ENGINES

    if table is None:
        return CorrelateConfig()
    engine = _registered(table, "engine", DEFAULT_ENGINE, ENGINES, "correlation engine")
    window = _positive(table, "window", 3600.0, 7 * 86400.0)
    table.finish()
    return CorrelateConfig(engine=engine, window=window)


def _gateway_places(table: _Table | None) -> dict[str, GatewayPlaceConfig]:
    from atlas.link.tls import check_gateway_id

    if table is None:
        return {}
    places = {}
    for gateway in table.data:
        try:
            check_gateway_id(gateway)
        except ValueError as exc:
            raise table.error(gateway, str(exc)) from None
        row = table.table(gateway)
        subnet = row.get("subnet", str, "")
        if subnet:
            try:
                subnet = str(ipaddress.ip_network(subnet, strict=False))
            except ValueError as exc:
                raise row.error("subnet", f"bad network {subnet!r}: {exc}") from None
        places[gateway] = GatewayPlaceConfig(domain=row.get("domain", str, ""),
                                             district=row.get("district", str, ""),
                                             subnet=subnet)
        row.finish()
    table.finish()
    return places


def _count(table: _Table, name: str, default: int, upper: int) -> int:
    value = table.get(name, int, default)
    if not 1 <= value <= upper:
        raise table.error(name, f"must be a whole number from 1 to {upper}, got {value!r}")
    return value


def _ingest(table: _Table | None) -> IngestConfig:
    if table is None:
        return IngestConfig()
    ingest = IngestConfig(max_gateways=_count(table, "max_gateways", 2048, 100_000),
                          max_streams_per_gateway=_count(table, "max_streams_per_gateway", 4, 64),
                          hello_timeout=_positive(table, "hello_timeout", 5.0, 300.0),
                          workers=_count(table, "workers", 16, 32))  # TasksMax=64 in the unit
    table.finish()
    return ingest


def _decide(table: _Table | None) -> DecideConfig:
    from atlas.central.decide.registry import DEFAULT_POLICY, POLICIES

    if table is None:
        return DecideConfig()
    policy = _registered(table, "policy", DEFAULT_POLICY, POLICIES, "policy")
    shadow = table.get("shadow", bool, False)
    allowlist = _allowlist(table)
    playbook: dict[str, dict[str, dict[str, Any]]] = {}
    pb = table.table("playbook")
    if pb is not None:
        for kind in pb.data:
            row = pb.table(kind)
            cells = {}
            for cls in row.data:
                cell = row.table(cls)
                cells[cls] = dict(cell.data)
            playbook[kind] = cells
        pb.finish()
    table.finish()
    decide = DecideConfig(policy=policy, shadow=shadow, allowlist=allowlist, playbook=playbook)
    # The playbook owns the meaning of its cells; validate them now so `serve` never starts
    # with a table it would reject later.
    from atlas.central.decide.playbook import PlaybookError, parse_cells

    try:
        parse_cells(playbook)
    except PlaybookError as exc:
        raise ConfigError(f"{table.source}: decide.playbook.{exc}") from None
    return decide


def parse_config(data: dict[str, Any], source: str = "<config>", base: Path | None = None,
                 path: Path | None = None, asked: dict[str, set[str]] | None = None) -> HubConfig:
    """Validate an already-parsed TOML document into a HubConfig. `asked`, if given, is filled
    with the keys the loader asked for in each table it read ("" is the top level)."""
    base = base or Path.cwd()
    root = _Table(data, "", source, asked)
    hub = root.table("hub") or _Table({}, "hub", source)
    database = _path(hub, "database", base, required=True)
    cfg_listen = _listen(hub)
    pki = _path(hub, "pki", base)
    signing_key = _path(hub, "signing_key", base)
    inventory = _path(hub, "inventory", base)
    operator_poll = _positive(hub, "operator_poll", 0.2, 1.0)
    retention = hub.get("telemetry_retention", (int, float), 86400)
    if retention < 0:
        raise hub.error("telemetry_retention", f"must be >= 0 seconds, got {retention!r}")
    sync = hub.get("sync", str, "full")
    if sync not in ("full", "normal"):
        raise hub.error("sync", f"expected \"full\" or \"normal\", got {sync!r}")
    control_socket = _path(hub, "control_socket", base)
    metrics_port = hub.get("metrics_port", int, 0)
    if not 0 <= metrics_port < 65536:
        raise hub.error("metrics_port", f"expected a port number (0: off), got {metrics_port!r}")
    hub.finish()
    if pki is not None and signing_key is None:
        signing_key = pki / "rule-signing.key"

    tls = None
    tls_table = root.table("tls")
    if tls_table is not None:
        required = pki is None
        tls = TlsConfig(ca=_path(tls_table, "ca", base, required) or pki / "ca.crt",
                        cert=_path(tls_table, "cert", base, required) or pki / "hub.crt",
                        key=_path(tls_table, "key", base, required) or pki / "hub.key")
        tls_table.finish()
    elif pki is not None:
        tls = TlsConfig(ca=pki / "ca.crt", cert=pki / "hub.crt", key=pki / "hub.key")

    merge_window = 300.0
    inc = root.table("incidents")
    if inc is not None:
        merge_window = _positive(inc, "merge_window", 300.0, 7 * 86400.0)
        inc.finish()

    decide = _decide(root.table("decide"))
    correlate = _correlate(root.table("correlate"))
    gateways = _gateway_places(root.table("gateways"))
    ingest = _ingest(root.table("ingest"))
    root.finish()
    return HubConfig(path=path, database=database, listen=cfg_listen, signing_key=signing_key,
                     inventory=inventory, operator_poll=operator_poll, sync=sync,
                     telemetry_retention=float(retention),
                     merge_window=merge_window, tls=tls, decide=decide,
                     control_socket=control_socket, metrics_port=metrics_port,
                     correlate=correlate, gateways=gateways, ingest=ingest)


def load_config(path: str | Path) -> HubConfig:
    """Read and validate central.toml; every problem is a ConfigError naming file and key."""
    path = Path(path)
    try:
        data = read_toml(path, "configuration file")
    except TextFileError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(data, source=str(path), base=path.resolve().parent, path=path)


def require_files(config: HubConfig, for_serving: bool = True) -> None:
    """Check that the files the configuration names exist (at `serve` and `check` time)."""
    source = str(config.path or "<config>")
    needed: list[tuple[str, Path | None]] = [("hub.signing_key", config.signing_key),
                                              ("hub.inventory", config.inventory)]
    if for_serving:
        if config.signing_key is None:
            raise ConfigError(f"{source}: hub.signing_key: missing (the hub signs every rule)")
        if config.tls is None:
            raise ConfigError(f"{source}: tls: missing (the hub only serves mutual TLS; set "
                              "[hub] pki or a [tls] table)")
    if config.tls is not None:
        needed += [("tls.ca", config.tls.ca), ("tls.cert", config.tls.cert),
                   ("tls.key", config.tls.key)]
    for key, path in needed:
        if path is not None and path.exists() and not path.is_file():
            raise ConfigError(f"{source}: {key}: {str(path)!r} is not a regular file")
        if path is not None and not path.is_file():
            raise ConfigError(f"{source}: {key}: no such file {str(path)!r}")
    parent = config.database.parent
    if not parent.is_dir():
        raise ConfigError(f"{source}: hub.database: folder {str(parent)!r} does not exist")
