"""Device profiles: how each class of city device behaves on the network (TOML, one per class).

The agent, the simulator and the hub's ontology read the same files through
`load_device_profiles()`, which needs only the base install (tomllib, or tomli on 3.10).

A profile says what a device class is (domain, criticality, hardware), what it sends and
receives over MQTT (topics with rates, payload fields with physically plausible ranges), which
other protocols and ports it uses with which peers, and which responses ATLAS may apply to it.
Where natural the fields follow the Manufacturer Usage Description (MUD, RFC 8520): a
`[[protocols]]` entry is a MUD ACE (protocol, port, direction-initiated, the peer as a named
controller), `mud_url` keeps the MUD file's URL, and `atlas.firmware_profiles.mud` imports a MUD
file as a profile (`atlas-sim profiles import-mud FILE.json`).

Validation is strict: unknown keys are rejected and every error names the file and the key,
e.g. ``traffic_signal_controller.toml: mqtt.topics[1].fields.phase.max: must be >= min``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from atlas.link.rules import ACTIONS

DEVICES_DIR = Path(__file__).resolve().parent / "devices"

DOMAINS = ("transportation", "energy", "public_safety")
# The first segment of every topic after "city/{district}/", per domain: lets a domain's
# back-end subscribe to one filter and lets the hub tell domains apart from a topic alone.
DOMAIN_TOPIC_ROOT = {"transportation": "transport", "energy": "energy", "public_safety": "safety"}
CRITICALITIES = ("life_safety", "essential", "ordinary")
HARDWARE_CLASSES = ("mcu", "embedded_linux", "industrial_pc", "camera_soc", "plc")
LINKS = ("ethernet", "fiber", "wifi", "lte", "nbiot")
MQTT_VERSIONS = {"3.1": 3, "3.1.1": 4, "5.0": 5}
FIELD_TYPES = ("int", "float", "bool", "enum", "counter", "timestamp", "device_id", "const")
TOPIC_PLACEHOLDERS = ("{district}", "{id}")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of a JSON payload.

    Values of `int`/`float` fields are drawn around a per-device base taken from `typical`,
    with per-message noise `sd`, and clipped to the physical limits [`min`, `max`]. A value
    outside [`min`, `max`] is physically impossible (false data injection uses that).
    """

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    typical: tuple[float, float] | None = None
    sd: float = 0.0
    decimals: int = 0
    values: tuple[str, ...] = ()  # enum
    weights: tuple[float, ...] = ()  # enum, same length as values
    p: float = 0.5  # bool: probability of true
    start: tuple[float, float] | None = None  # counter: initial value range per device
    step: tuple[float, float] | None = None  # counter: increment per message
    unit: str = ""
    value: Any = None  # const


@dataclass(frozen=True)
class TopicSpec:
    """An MQTT topic the device publishes to, or subscribes to for commands."""

    name: str
    topic: str  # template with {district} and {id}
    direction: str  # "publish": device -> broker; "subscribe": commands from the back-end
    timing: str  # "periodic" | "poisson"
    interval: float  # mean seconds between messages (per device)
    jitter: float = 0.0  # periodic: standard deviation of each send time, fraction of interval
    qos: int = 0
    retain: bool = False
    peak_factor: float = 1.0  # rate multiplier at rush hour (event-driven topics)
    format: str = "json"  # "json" | "binary"
    size: tuple[int, int] | None = None  # binary: payload size range in bytes
    fields: tuple[FieldSpec, ...] = ()

    @property
    def rate(self) -> float:
        """Mean messages per second per device."""
        return 1.0 / self.interval


@dataclass(frozen=True)
class MqttSpec:
    client_prefix: str
    keepalive: int  # seconds
    clean_session: bool
    versions: dict[str, float]  # "3.1.1" / "5.0" -> share of devices of this class
    topics: tuple[TopicSpec, ...]


@dataclass(frozen=True)
class ProtocolSpec:
    """Another protocol the device speaks (a MUD access-control entry)."""

    name: str
    transport: str  # "tcp" | "udp"
    port: int
    direction: str  # "inbound": the device listens; "outbound": the device connects to `peer`
    peer: str
    note: str = ""


@dataclass(frozen=True)
class HardwareSpec:
    cls: str  # one of HARDWARE_CLASSES (key `class` in the file)
    cpu: str
    ram_mb: int
    link: str
    rtt_ms: tuple[float, float]  # round trip between the device and its gateway


@dataclass(frozen=True)
class ResponsePolicy:
    """Which enforcement actions (atlas.link.rules.ACTIONS) fit this device.

    `acceptable` may be applied directly; `needs_fallback` only once the `fallback` is in place
    (e.g. a traffic signal in all-red flash before it is quarantined). Actions in neither list
    are never applied.
    """

    acceptable: tuple[str, ...]
    needs_fallback: tuple[str, ...]
    fallback: str
    note: str = ""

    def allows(self, action: str, *, fallback_ready: bool = False) -> bool:
        return action in self.acceptable or (fallback_ready and action in self.needs_fallback)


@dataclass(frozen=True)
class DeviceProfile:
    name: str  # the device class, equal to the file's stem
    domain: str
    criticality: str
    description: str
    weight: float  # relative share of this class in a district's fleet (the simulator)
    hardware: HardwareSpec
    mqtt: MqttSpec
    protocols: tuple[ProtocolSpec, ...]
    peers: tuple[str, ...]
    responses: ResponsePolicy
    path: str = ""
    mud_url: str = ""  # the MUD file this profile was imported from (RFC 8520 mud-url), if any

    @property
    def open_tcp_ports(self) -> tuple[int, ...]:
        """TCP ports the device listens on (answered with SYN-ACK by a scan)."""
        return tuple(sorted({p.port for p in self.protocols if p.transport == "tcp" and p.direction == "inbound"}))


def load_device_profiles(dir: str | Path | None = None) -> dict[str, DeviceProfile]:
    """Load and validate every `*.toml` in `dir` (default: the packaged devices/ folder).

    Returns profiles by class name, sorted by name. Raises `ProfileError` naming the file and
    the key on the first invalid profile.
    """
    files = toml_files(Path(dir) if dir is not None else DEVICES_DIR, "device profiles")
    profiles: dict[str, DeviceProfile] = {}
    prefixes: dict[str, str] = {}
    for path in files:
        prof = load_device_profile(path)
        other = prefixes.setdefault(prof.mqtt.client_prefix, prof.name)
        if other != prof.name:
            raise ProfileError(f"{path.name}: mqtt.client_prefix: {prof.mqtt.client_prefix!r} is already used by {other}.toml")
        profiles[prof.name] = prof
    return profiles


def toml_files(folder: Path, what: str, error: type[ProfileError] = ProfileError) -> list[Path]:
    """The `*.toml` files of a declarations folder, sorted; `error` names the folder and `what`
    when it is not a folder or holds none."""
    if not folder.is_dir():
        raise error(f"{folder}: not a directory of {what}")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise error(f"{folder}: no *.toml {what}")
    return files


def profile_of_client_id(profiles: dict[str, DeviceProfile], client_id: str) -> DeviceProfile | None:
    """The profile whose `client_prefix` starts this MQTT client id (`<prefix>-...`), if any."""
    head = client_id.split("-", 1)[0]
    for p in profiles.values():
        if p.mqtt.client_prefix == head:
            return p
    return None


def load_device_profile(path: str | Path) -> DeviceProfile:
    """Load and validate one profile file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path.name}: not valid TOML: {e}") from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    return _Parser(path).profile(data)


class _Parser:
    """Walks one profile's TOML tree; every check reports `file: dotted.key: problem`."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.path.name}: {key}: {msg}" if key else f"{self.path.name}: {msg}")

    # -- generic checks ---------------------------------------------------------------
    def table(self, data: Any, key: str, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            where = f"{key}.{unknown[0]}" if key else unknown[0]
            raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for req in sorted(required):
            if req not in data:
                raise self.fail(f"{key}.{req}" if key else req, "missing required key")
        return data

    def str_(self, data: dict, key: str, name: str, default: str | None = None, choices=None) -> str:
        full = f"{key}.{name}" if key else name
        if name not in data:
            if default is None:
                raise self.fail(full, "missing required key")
            return default
        v = data[name]
        if not isinstance(v, str):
            raise self.fail(full, f"must be a string, got {type(v).__name__}")
        if choices is not None and v not in choices:
            raise self.fail(full, f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def num(self, data: dict, key: str, name: str, default: float | None = None, lo=None, hi=None, integer=False):
        full = f"{key}.{name}" if key else name
        if name not in data:
            if default is None:
                raise self.fail(full, "missing required key")
            return default
        v = data[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise self.fail(full, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if not math.isfinite(v):
            raise self.fail(full, f"must be finite, got {v!r}")
        if lo is not None and v < lo:
            raise self.fail(full, f"must be >= {lo} (got {v})")
        if hi is not None and v > hi:
            raise self.fail(full, f"must be <= {hi} (got {v})")
        return v

    def bool_(self, data: dict, key: str, name: str, default: bool) -> bool:
        v = data.get(name, default)
        if not isinstance(v, bool):
            raise self.fail(f"{key}.{name}" if key else name, f"must be true or false, got {v!r}")
        return v

    def pair(self, data: dict, key: str, name: str, lo=None, integer=False) -> tuple | None:
        full = f"{key}.{name}"
        if name not in data:
            return None
        v = data[name]
        ok = isinstance(v, list) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and (not integer or isinstance(x, int)) for x in v
        )
        if not ok:
            raise self.fail(full, f"must be a pair of {'integers' if integer else 'numbers'} [low, high], got {v!r}")
        if v[0] > v[1]:
            raise self.fail(full, f"low must be <= high (got {v})")
        if lo is not None and v[0] < lo:
            raise self.fail(full, f"must be >= {lo} (got {v})")
        return (v[0], v[1])

    def str_list(self, data: dict, key: str, name: str, choices=None) -> tuple[str, ...]:
        full = f"{key}.{name}" if key else name
        v = data.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(full, f"must be a list of strings, got {v!r}")
        if len(set(v)) != len(v):
            raise self.fail(full, f"duplicate entries in {v}")
        if choices is not None:
            for x in v:
                if x not in choices:
                    raise self.fail(full, f"{x!r} is not one of {', '.join(choices)}")
        return tuple(v)

    # -- sections ---------------------------------------------------------------------
    def profile(self, data: dict) -> DeviceProfile:
        top = {"class", "domain", "criticality", "description", "weight", "hardware", "mqtt", "protocols", "peers", "responses", "mud_url"}
        self.table(data, "", top, {"class", "domain", "criticality", "hardware", "mqtt", "responses"})
        name = self.str_(data, "", "class")
        if name != self.path.stem:
            raise self.fail("class", f"must equal the file name {self.path.stem!r} (got {name!r})")
        domain = self.str_(data, "", "domain", choices=DOMAINS)
        criticality = self.str_(data, "", "criticality", choices=CRITICALITIES)
        peers = self.str_list(data, "", "peers")
        if "broker" not in peers:
            raise self.fail("peers", "must include 'broker' (every profiled device speaks MQTT)")
        protocols = self.protocols(data.get("protocols", []), peers)
        responses = self.responses(data["responses"], criticality)
        return DeviceProfile(
            name=name,
            domain=domain,
            criticality=criticality,
            description=self.str_(data, "", "description", default=""),
            weight=float(self.num(data, "", "weight", default=1.0, lo=0)),
            hardware=self.hardware(data["hardware"]),
            mqtt=self.mqtt(data["mqtt"], domain),
            protocols=protocols,
            peers=peers,
            responses=responses,
            path=str(self.path),
            mud_url=self.str_(data, "", "mud_url", default=""),
        )

    def hardware(self, data: Any) -> HardwareSpec:
        k = "hardware"
        self.table(data, k, {"class", "cpu", "ram_mb", "link", "rtt_ms"}, {"class", "link", "rtt_ms"})
        rtt = self.pair(data, k, "rtt_ms", lo=0)
        if rtt[0] <= 0:
            raise self.fail(f"{k}.rtt_ms", "must be > 0")
        return HardwareSpec(
            cls=self.str_(data, k, "class", choices=HARDWARE_CLASSES),
            cpu=self.str_(data, k, "cpu", default=""),
            ram_mb=int(self.num(data, k, "ram_mb", default=0, lo=0, integer=True)),
            link=self.str_(data, k, "link", choices=LINKS),
            rtt_ms=(float(rtt[0]), float(rtt[1])),
        )

    def mqtt(self, data: Any, domain: str) -> MqttSpec:
        k = "mqtt"
        self.table(data, k, {"client_prefix", "keepalive", "clean_session", "versions", "topics"}, {"client_prefix", "keepalive", "versions", "topics"})
        prefix = self.str_(data, k, "client_prefix")
        if not prefix or not all(c.isalnum() or c in "-_" for c in prefix):
            raise self.fail(f"{k}.client_prefix", f"must be letters, digits, '-' or '_' (got {prefix!r})")
        versions = data["versions"]
        if not isinstance(versions, dict) or not versions:
            raise self.fail(f"{k}.versions", "must be a table like { \"3.1.1\" = 0.8, \"5.0\" = 0.2 }")
        for ver in versions:
            if ver not in MQTT_VERSIONS:
                raise self.fail(f"{k}.versions.{ver}", f"unknown MQTT version (allowed: {', '.join(MQTT_VERSIONS)})")
            self.num(versions, f"{k}.versions", ver, lo=0, hi=1)
        if abs(sum(versions.values()) - 1.0) > 1e-6:
            raise self.fail(f"{k}.versions", f"shares must sum to 1 (got {sum(versions.values()):g})")
        topics_raw = data["topics"]
        if not isinstance(topics_raw, list) or not topics_raw:
            raise self.fail(f"{k}.topics", "must be a non-empty array of tables ([[mqtt.topics]])")
        topics = tuple(self.topic(t, f"{k}.topics[{i}]", domain) for i, t in enumerate(topics_raw))
        names = [t.name for t in topics]
        if len(set(names)) != len(names):
            raise self.fail(f"{k}.topics", f"topic names must be unique (got {names})")
        if not any(t.direction == "publish" for t in topics):
            raise self.fail(f"{k}.topics", "at least one topic must have direction = \"publish\"")
        return MqttSpec(
            client_prefix=prefix,
            keepalive=int(self.num(data, k, "keepalive", lo=1, hi=65535, integer=True)),
            clean_session=self.bool_(data, k, "clean_session", True),
            versions={v: float(s) for v, s in versions.items()},
            topics=topics,
        )

    def topic(self, data: Any, k: str, domain: str) -> TopicSpec:
        allowed = {"name", "topic", "direction", "timing", "interval", "jitter", "qos", "retain", "peak_factor", "format", "size", "fields"}
        self.table(data, k, allowed, {"name", "topic", "direction", "timing", "interval"})
        topic = self.str_(data, k, "topic")
        root = f"city/{{district}}/{DOMAIN_TOPIC_ROOT[domain]}/"
        if not topic.startswith(root):
            raise self.fail(f"{k}.topic", f"must start with {root!r} for domain {domain} (got {topic!r})")
        if "{id}" not in topic:
            raise self.fail(f"{k}.topic", "must contain {id} (one topic per device)")
        stripped = topic
        for ph in TOPIC_PLACEHOLDERS:
            stripped = stripped.replace(ph, "")
        if any(c in stripped for c in "{}#+\0"):
            raise self.fail(f"{k}.topic", f"only the placeholders {', '.join(TOPIC_PLACEHOLDERS)} are allowed, no wildcards (got {topic!r})")
        fmt = self.str_(data, k, "format", default="json", choices=("json", "binary"))
        size = self.pair(data, k, "size", lo=1, integer=True)
        fields_raw = data.get("fields", {})
        if fmt == "binary":
            if size is None:
                raise self.fail(f"{k}.size", "required for format = \"binary\"")
            if size[1] > 256 * 1024 * 1024 - 1024:
                raise self.fail(f"{k}.size", "exceeds the MQTT maximum message size")
            if fields_raw:
                raise self.fail(f"{k}.fields", "binary payloads have no fields")
        elif size is not None:
            raise self.fail(f"{k}.size", "only for format = \"binary\" (JSON size follows from the fields)")
        if not isinstance(fields_raw, dict):
            raise self.fail(f"{k}.fields", "must be a table of field specs")
        if fmt == "json" and not fields_raw:
            raise self.fail(f"{k}.fields", "a JSON topic needs at least one field")
        fields = tuple(self.field(name, spec, f"{k}.fields.{name}") for name, spec in fields_raw.items())
        timing = self.str_(data, k, "timing", choices=("periodic", "poisson"))
        jitter = float(self.num(data, k, "jitter", default=0.0, lo=0, hi=0.5))
        if timing == "poisson" and "jitter" in data:
            raise self.fail(f"{k}.jitter", "only for timing = \"periodic\"")
        return TopicSpec(
            name=self.str_(data, k, "name"),
            topic=topic,
            direction=self.str_(data, k, "direction", choices=("publish", "subscribe")),
            timing=timing,
            interval=float(self.num(data, k, "interval", lo=0.01, hi=30 * 86400)),
            jitter=jitter,
            qos=int(self.num(data, k, "qos", default=0, lo=0, hi=1, integer=True)),
            retain=self.bool_(data, k, "retain", False),
            peak_factor=float(self.num(data, k, "peak_factor", default=1.0, lo=1.0, hi=100.0)),
            format=fmt,
            size=size,
            fields=fields,
        )

    def field(self, name: str, data: Any, k: str) -> FieldSpec:
        if not name.isidentifier():
            raise self.fail(k, "field names must be identifiers (letters, digits, '_')")
        if not isinstance(data, dict):
            raise self.fail(k, "must be an inline table like { type = \"float\", min = 0, max = 1 }")
        ftype = self.str_(data, k, "type", choices=FIELD_TYPES)
        common = {"type", "unit"}
        per_type = {
            "int": {"min", "max", "typical", "sd"},
            "float": {"min", "max", "typical", "sd", "decimals"},
            "bool": {"p"},
            "enum": {"values", "weights"},
            "counter": {"start", "step", "decimals", "max"},
            "timestamp": set(),
            "device_id": set(),
            "const": {"value"},
        }[ftype]
        self.table(data, k, common | per_type, set())
        unit = self.str_(data, k, "unit", default="")
        if ftype == "timestamp" and unit not in ("", "s", "ms"):
            raise self.fail(f"{k}.unit", "a timestamp's unit is \"s\" or \"ms\"")
        if ftype in ("int", "float"):
            integer = ftype == "int"
            lo = self.num(data, k, "min", integer=integer)
            hi = self.num(data, k, "max", integer=integer)
            if hi < lo:
                raise self.fail(f"{k}.max", f"must be >= min (got {hi} < {lo})")
            typical = self.pair(data, k, "typical") or (lo, hi)
            if typical[0] < lo or typical[1] > hi:
                raise self.fail(f"{k}.typical", f"must lie within [min, max] = [{lo}, {hi}] (got {list(typical)})")
            sd = float(self.num(data, k, "sd", default=0.0, lo=0))
            decimals = int(self.num(data, k, "decimals", default=0 if integer else 1, lo=0, hi=6, integer=True))
            return FieldSpec(name, ftype, float(lo), float(hi), (float(typical[0]), float(typical[1])), sd, decimals, unit=unit)
        if ftype == "bool":
            return FieldSpec(name, ftype, p=float(self.num(data, k, "p", default=0.5, lo=0, hi=1)), unit=unit)
        if ftype == "enum":
            values = self.str_list(data, k, "values")
            if not values:
                raise self.fail(f"{k}.values", "an enum needs at least one value")
            for v in values:
                if any(c in v for c in '"\\') or any(ord(c) < 0x20 for c in v):
                    raise self.fail(f"{k}.values", f"{v!r}: quotes, backslashes and control characters are not allowed")
            weights = data.get("weights", [1.0] * len(values))
            if (not isinstance(weights, list) or len(weights) != len(values)
                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
                    or sum(weights) <= 0):
                raise self.fail(f"{k}.weights", f"must be {len(values)} non-negative numbers, not all zero (got {weights!r})")
            return FieldSpec(name, ftype, values=values, weights=tuple(float(w) for w in weights), unit=unit)
        if ftype == "counter":
            start = self.pair(data, k, "start", lo=0)
            step = self.pair(data, k, "step", lo=0)
            if start is None or step is None:
                raise self.fail(f"{k}.{'start' if start is None else 'step'}", "a counter needs start = [lo, hi] and step = [lo, hi]")
            decimals = int(self.num(data, k, "decimals", default=0, lo=0, hi=6, integer=True))
            hi = float(self.num(data, k, "max", default=1e12, lo=0))
            return FieldSpec(name, ftype, min=0.0, max=hi, start=(float(start[0]), float(start[1])),
                             step=(float(step[0]), float(step[1])), decimals=decimals, unit=unit)
        if ftype == "const":
            if "value" not in data:
                raise self.fail(f"{k}.value", "missing required key")
            v = data["value"]
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str) and any(c in v for c in '"\\')):
                raise self.fail(f"{k}.value", f"must be a number, boolean or plain string, got {v!r}")
            return FieldSpec(name, ftype, value=v, unit=unit)
        return FieldSpec(name, ftype, unit=unit)  # timestamp, device_id

    def protocols(self, data: Any, peers: tuple[str, ...]) -> tuple[ProtocolSpec, ...]:
        if not isinstance(data, list):
            raise self.fail("protocols", "must be an array of tables ([[protocols]])")
        out = []
        for i, p in enumerate(data):
            k = f"protocols[{i}]"
            self.table(p, k, {"name", "transport", "port", "direction", "peer", "note"}, {"name", "transport", "port", "direction", "peer"})
            peer = self.str_(p, k, "peer")
            if peer not in peers:
                raise self.fail(f"{k}.peer", f"{peer!r} is not listed in peers {list(peers)}")
            out.append(ProtocolSpec(
                name=self.str_(p, k, "name"),
                transport=self.str_(p, k, "transport", choices=("tcp", "udp")),
                port=int(self.num(p, k, "port", lo=1, hi=65535, integer=True)),
                direction=self.str_(p, k, "direction", choices=("inbound", "outbound")),
                peer=peer,
                note=self.str_(p, k, "note", default=""),
            ))
        return tuple(out)

    def responses(self, data: Any, criticality: str) -> ResponsePolicy:
        k = "responses"
        self.table(data, k, {"acceptable", "needs_fallback", "fallback", "note"}, {"acceptable"})
        acceptable = self.str_list(data, k, "acceptable", choices=ACTIONS)
        needs = self.str_list(data, k, "needs_fallback", choices=ACTIONS)
        both = sorted(set(acceptable) & set(needs))
        if both:
            raise self.fail(f"{k}.needs_fallback", f"{both[0]!r} is also in acceptable")
        fallback = self.str_(data, k, "fallback", default="")
        if needs and not fallback:
            raise self.fail(f"{k}.fallback", "required when needs_fallback is not empty: say what keeps the service safe")
        # Cutting a life-safety device off must never happen without its safe fallback.
        if criticality == "life_safety" and "quarantine" in acceptable:
            raise self.fail(f"{k}.acceptable", "a life_safety device cannot list quarantine as acceptable without a fallback; move it to needs_fallback")
        return ResponsePolicy(acceptable, needs, fallback, self.str_(data, k, "note", default=""))


__all__ = [
    "CRITICALITIES", "DEVICES_DIR", "DOMAINS", "DOMAIN_TOPIC_ROOT", "DeviceProfile", "FieldSpec", "HardwareSpec",
    "MQTT_VERSIONS", "MqttSpec", "ProfileError", "ProtocolSpec", "ResponsePolicy", "TopicSpec",
    "load_device_profile", "load_device_profiles", "profile_of_client_id",
]
