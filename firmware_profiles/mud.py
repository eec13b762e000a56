"""Import a Manufacturer Usage Description (MUD, RFC 8520) file as a device profile.

A MUD file (JSON, YANG-modelled) names its ACLs in `ietf-mud:mud.from-device-policy` and
`to-device-policy`; the ACLs live in `ietf-access-control-list:acls`. Each accepting ACE becomes
a `[[protocols]]` entry of the profile:

- transport from `ipv4/ipv6.protocol` (6 TCP, 17 UDP) or the `tcp`/`udp` match;
- the port of the side that serves (the remote's port when the device initiates, the device's
  own port when it listens), from `source-port`/`destination-port` with operator `eq`, or a
  `lower-port`/`upper-port` range of one port;
- direction from `ietf-mud:direction-initiated` (`from-device` -> outbound, `to-device` ->
  inbound); without it (UDP, or TCP that omits it) from which side's port is given;
- the peer from `ietf-acldns:dst-dnsname`/`src-dnsname` (the host name), or from the
  `ietf-mud:mud` match: `controller` (RFC 8520's `urn:ietf:params:mud:ntp`/`dns` become `ntp`/
  `dns`, other URIs stay as given), `my-controller`, `local-networks`, `same-manufacturer`,
  `manufacturer` (`manufacturer:<authority>`); no peer restriction at all -> `any`.

MQTT (TCP 1883/8883 from the device) is the profile's `[mqtt]` section and its `broker` peer,
not a protocol entry. `systeminfo` becomes the description, `mud-url` the profile's `mud_url`.

What a profile cannot express is dropped, each with a note (returned, and written as comments
into the TOML): `drop`/`reject` ACEs, port operators `lte`/`gte`/`neq`, ranges wider than one
port, protocols other than TCP/UDP (ICMP...), ACEs matching only addresses or without a port,
`eth` and `ietf-mud:mud.model` matches, ACLs no policy refers to. Malformed input raises
`MudError` naming the JSON path, e.g.
``ietf-access-control-list:acls.acl[2].aces.ace[0].matches.tcp.destination-port.operator: 'range' is not one of eq, lte, gte, neq``.

MUD says nothing about MQTT topics, hardware, rates or responses, but the loader needs them
(every profiled device speaks MQTT; the simulator and the conformance check read its topics).
They come from arguments; without them the importer writes clearly marked placeholders (one
status topic, conservative responses) that load, so an imported file is valid from the start
and an operator edits the marked sections. That keeps the loader's one contract (no profile
without MQTT) instead of teaching every reader of profiles about topic-less devices.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.firmware_profiles import (
    DOMAIN_TOPIC_ROOT,
    ProfileError,
    ProtocolSpec,
    load_device_profile,
)

MUD = "ietf-mud:mud"
ACLS = "ietf-access-control-list:acls"
MQTT_PORTS = (1883, 8883)
OPERATORS = ("eq", "lte", "gte", "neq")
# RFC 8520 section 8: well-known controller classes.
WELL_KNOWN_CONTROLLERS = {"urn:ietf:params:mud:ntp": "ntp", "urn:ietf:params:mud:dns": "dns"}
SERVICE_NAMES = {
    ("tcp", 22): "ssh", ("tcp", 23): "telnet", ("udp", 53): "dns", ("tcp", 53): "dns-tcp", ("udp", 67): "dhcp",
    ("tcp", 80): "http", ("udp", 123): "ntp", ("udp", 161): "snmp", ("tcp", 443): "https", ("udp", 443): "quic",
    ("tcp", 502): "modbus", ("tcp", 554): "rtsp", ("udp", 5060): "sip", ("tcp", 5060): "sip-tcp",
    ("tcp", 1883): "mqtt", ("tcp", 8883): "mqtts", ("udp", 5683): "coap", ("udp", 5684): "coaps", ("tcp", 2404): "iec104", ("tcp", 20000): "dnp3",
}


class MudError(ProfileError):
    """A MUD document that cannot be read; the message names the JSON path."""


@dataclass(frozen=True)
class MudPolicy:
    """What a MUD file says, in the profile's terms."""

    mud_url: str
    systeminfo: str
    protocols: tuple[ProtocolSpec, ...]
    peers: tuple[str, ...]  # "broker" first, then the protocols' peers in order of appearance
    mqtt: tuple[str, ...]  # the MQTT flows seen ("tcp/8883 outbound to my_controller"); empty: none
    notes: tuple[str, ...]  # what was dropped, and why


# ---- reading the JSON ---------------------------------------------------------------------------

def _get(data: Any, path: str, key: str, kind: type | tuple, required: bool = True) -> Any:
    if not isinstance(data, dict):
        raise MudError(f"{path}: must be an object, got {type(data).__name__}")
    full = f"{path}.{key}" if path else key
    if key not in data:
        if required:
            raise MudError(f"{full}: missing")
        return None
    v = data[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MudError(f"{full}: must be {names}, got {v!r}")
    return v


def _list(data: Any, path: str, key: str) -> list:
    return _get(data, path, key, list, required=False) or []


def _strip_prefix(v: str) -> str:
    """YANG identities may come module-qualified ("ietf-access-control-list:accept")."""
    return v.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class _Port:
    port: int | None  # the one port matched, or None
    dropped: str = ""  # why a port match could not be expressed (without the path)


def _port(data: Any, path: str) -> _Port:
    if not isinstance(data, dict):
        raise MudError(f"{path}: must be an object, got {type(data).__name__}")
    if "operator" in data or "port" in data:
        op = _get(data, path, "operator", str, required=False) or "eq"
        if op not in OPERATORS:
            raise MudError(f"{path}.operator: {op!r} is not one of {', '.join(OPERATORS)} (a range is lower-port/upper-port)")
        port = _get(data, path, "port", int)
        if not 0 <= port <= 65535:
            raise MudError(f"{path}.port: must be 0..65535, got {port}")
        if op != "eq":
            return _Port(None, f"operator {op!r} {port} (a profile lists single ports)")
        return _Port(port)
    if "lower-port" in data or "upper-port" in data:
        lo = _get(data, path, "lower-port", int)
        hi = _get(data, path, "upper-port", int)
        for k, v in (("lower-port", lo), ("upper-port", hi)):
            if not 0 <= v <= 65535:
                raise MudError(f"{path}.{k}: must be 0..65535, got {v}")
        if lo > hi:
            raise MudError(f"{path}: lower-port {lo} > upper-port {hi}")
        if lo != hi:
            return _Port(None, f"range {lo}-{hi} (a profile lists single ports)")
        return _Port(lo)
    raise MudError(f"{path}: needs operator/port or lower-port/upper-port")


def _controller_peer(mud: dict, path: str) -> tuple[str | None, str]:
    """(peer name, dropped-why) from an ACE's `ietf-mud:mud` match."""
    known = {"manufacturer", "same-manufacturer", "model", "local-networks", "controller", "my-controller"}
    unknown = sorted(set(mud) - known)
    if unknown:
        raise MudError(f"{path}.{unknown[0]}: unknown MUD match (known: {', '.join(sorted(known))})")
    if len(mud) != 1:
        return None, f"{path}: {len(mud)} MUD matches in one ACE ({', '.join(sorted(mud))}); a profile names one peer"
    (key, v), = mud.items()
    if key in ("controller", "manufacturer"):
        if not isinstance(v, str) or not v:
            raise MudError(f"{path}.{key}: must be a non-empty string, got {v!r}")
        if key == "manufacturer":
            return f"manufacturer:{v}", ""
        return WELL_KNOWN_CONTROLLERS.get(v, v), ""
    if key == "model":
        return None, f"{path}.model: devices of one model are not a peer a profile can name"
    return key.replace("-", "_"), ""  # my-controller, local-networks, same-manufacturer (value [null])


@dataclass(frozen=True)
class _Flow:
    transport: str
    port: int
    direction: str
    peer: str


def _ace(ace: Any, path: str, from_device: bool) -> tuple[_Flow | None, str]:
    """One ACE -> a flow, or (None, why it was dropped)."""
    name = _get(ace, path, "name", str, required=False) or path
    actions = _get(ace, path, "actions", dict)
    fwd = _strip_prefix(_get(actions, f"{path}.actions", "forwarding", str))
    if fwd not in ("accept", "drop", "reject"):
        raise MudError(f"{path}.actions.forwarding: {fwd!r} is not accept, drop or reject")
    if fwd != "accept":
        return None, f"{path} ({name}): action {fwd!r} (a profile lists what a device may do)"
    mp = f"{path}.matches"
    matches = _get(ace, path, "matches", dict)
    known = {"ipv4", "ipv6", "tcp", "udp", "icmp", "eth", MUD}
    unknown = sorted(set(matches) - known)
    if unknown:
        raise MudError(f"{mp}.{unknown[0]}: unknown match (known: {', '.join(sorted(known))})")
    if "eth" in matches or "icmp" in matches:
        return None, f"{path} ({name}): {'eth' if 'eth' in matches else 'icmp'} match (a profile lists TCP and UDP only)"
    l3_keys = [k for k in ("ipv4", "ipv6") if k in matches]
    if len(l3_keys) > 1:
        raise MudError(f"{mp}: both ipv4 and ipv6")
    l3 = matches[l3_keys[0]] if l3_keys else {}
    l3p = f"{mp}.{l3_keys[0]}" if l3_keys else mp
    if not isinstance(l3, dict):
        raise MudError(f"{l3p}: must be an object, got {type(l3).__name__}")
    l4_keys = [k for k in ("tcp", "udp") if k in matches]
    if len(l4_keys) > 1:
        raise MudError(f"{mp}: both tcp and udp")
    proto = _get(l3, l3p, "protocol", int, required=False)
    if proto is not None and proto not in (6, 17):
        return None, f"{path} ({name}): IP protocol {proto} (a profile lists TCP and UDP only)"
    transport = {6: "tcp", 17: "udp"}.get(proto) if proto is not None else (l4_keys[0] if l4_keys else None)
    if l4_keys and transport != l4_keys[0]:
        raise MudError(f"{l3p}.protocol: {proto} contradicts the {l4_keys[0]} match")
    if transport is None:
        return None, f"{path} ({name}): no protocol or port (a profile entry needs both)"
    l4 = matches.get(transport, {})
    l4p = f"{mp}.{transport}"
    if not isinstance(l4, dict):
        raise MudError(f"{l4p}: must be an object, got {type(l4).__name__}")
    initiated = _get(l4, l4p, "ietf-mud:direction-initiated", str, required=False)
    if initiated is not None:
        if transport != "tcp":
            raise MudError(f"{l4p}.ietf-mud:direction-initiated: only defined for tcp (RFC 8520 section 2.1)")
        initiated = _strip_prefix(initiated)
        if initiated not in ("from-device", "to-device"):
            raise MudError(f"{l4p}.ietf-mud:direction-initiated: must be from-device or to-device, got {initiated!r}")
    src = _port(l4["source-port"], f"{l4p}.source-port") if "source-port" in l4 else None
    dst = _port(l4["destination-port"], f"{l4p}.destination-port") if "destination-port" in l4 else None
    for side, p in (("source-port", src), ("destination-port", dst)):
        if p is not None and p.dropped:
            return None, f"{path} ({name}): {transport}.{side} {p.dropped}"
    device_port, remote_port = (src, dst) if from_device else (dst, src)
    if initiated is None:
        # UDP (and TCP without direction-initiated): the side with a fixed port serves.
        if remote_port is not None and device_port is None:
            initiated = "from-device"
        elif device_port is not None and remote_port is None:
            initiated = "to-device"
        elif device_port is None:
            return None, f"{path} ({name}): no port (a profile entry needs one)"
        else:
            return None, f"{path} ({name}): both ports fixed and no direction-initiated: which side serves is unknown"
    serving = remote_port if initiated == "from-device" else device_port
    if serving is None or serving.port is None or serving.port == 0:
        return None, f"{path} ({name}): no port on the serving side"
    direction = "outbound" if initiated == "from-device" else "inbound"
    # The peer: the remote side's name (destination for from-device ACEs, source for to-device).
    dns_key = "ietf-acldns:dst-dnsname" if from_device else "ietf-acldns:src-dnsname"
    dns = _get(l3, l3p, dns_key, str, required=False)
    wrong_side = "ietf-acldns:src-dnsname" if from_device else "ietf-acldns:dst-dnsname"
    if wrong_side in l3:
        return None, f"{path} ({name}): {wrong_side} names the device's own side; a profile names the remote peer"
    mud = _get(matches, mp, MUD, dict, required=False)
    if dns is not None and mud is not None:
        return None, f"{path} ({name}): both a DNS name and a MUD class as the peer; a profile names one"
    if dns is not None:
        peer = dns
    elif mud is not None:
        peer, why = _controller_peer(mud, f"{mp}.{MUD}")
        if peer is None:
            return None, f"{path} ({name}): {why}"
    else:
        nets = [k for k in l3 if "network" in k]
        if nets:
            return None, f"{path} ({name}): peer given only as an address ({l3p}.{nets[0]}); a profile names peers"
        peer = "any"
    return _Flow(transport, serving.port, direction, peer), ""


def read_mud(doc: Mapping[str, Any]) -> MudPolicy:
    """Parse an RFC 8520 MUD document (the parsed JSON) into protocols, peers and notes."""
    if not isinstance(doc, Mapping):
        raise MudError(f"(top): must be a JSON object, got {type(doc).__name__}")
    mud = _get(dict(doc), "", MUD, dict)
    version = _get(mud, MUD, "mud-version", int, required=False)
    if version not in (None, 1):
        raise MudError(f"{MUD}.mud-version: only version 1 is known, got {version}")
    url = _get(mud, MUD, "mud-url", str)
    if not url.startswith("https://"):
        raise MudError(f"{MUD}.mud-url: must be an https:// URL (RFC 8520 section 3.3), got {url!r}")
    systeminfo = _get(mud, MUD, "systeminfo", str, required=False) or ""
    acls_top = _get(dict(doc), "", ACLS, dict)
    acls = {}
    for i, acl in enumerate(_list(acls_top, ACLS, "acl")):
        ap = f"{ACLS}.acl[{i}]"
        name = _get(acl, ap, "name", str)
        if name in acls:
            raise MudError(f"{ap}.name: {name!r} is defined twice")
        acls[name] = (i, acl)
    notes: list[str] = []
    flows: list[_Flow] = []
    used: set[str] = set()
    for policy, from_device in (("from-device-policy", True), ("to-device-policy", False)):
        pp = f"{MUD}.{policy}"
        pol = _get(mud, MUD, policy, dict, required=False)
        if pol is None:
            continue
        lists = _get(pol, pp, "access-lists", dict)
        for j, ref in enumerate(_list(lists, f"{pp}.access-lists", "access-list")):
            rp = f"{pp}.access-lists.access-list[{j}]"
            ref_name = _get(ref, rp, "name", str)
            if ref_name not in acls:
                raise MudError(f"{rp}.name: no ACL named {ref_name!r} in {ACLS}")
            used.add(ref_name)
            i, acl = acls[ref_name]
            ap = f"{ACLS}.acl[{i}]"
            aces = _get(acl, ap, "aces", dict, required=False) or {}
            for k, ace in enumerate(_list(aces, f"{ap}.aces", "ace")):
                flow, why = _ace(ace, f"{ap}.aces.ace[{k}]", from_device)
                if flow is None:
                    notes.append(why)
                elif flow not in flows:  # MUD lists each flow twice (both policies): keep one
                    flows.append(flow)
    for name in acls:
        if name not in used:
            notes.append(f"{ACLS}.acl[{acls[name][0]}] ({name}): no policy refers to it")
    mqtt = [f for f in flows if f.transport == "tcp" and f.port in MQTT_PORTS and f.direction == "outbound"]
    protocols = tuple(
        ProtocolSpec(name=SERVICE_NAMES.get((f.transport, f.port), f"{f.transport}-{f.port}"), transport=f.transport,
                     port=f.port, direction=f.direction, peer=f.peer)
        for f in flows if f not in mqtt)
    peers = ["broker"]
    for p in protocols:
        if p.peer not in peers:
            peers.append(p.peer)
    return MudPolicy(url, systeminfo, protocols, tuple(peers),
                     tuple(f"{f.transport}/{f.port} {f.direction} to {f.peer}" for f in mqtt), tuple(notes))


def load_mud_file(path: str | Path) -> dict:
    """Read a MUD JSON file; errors name the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MudError(f"{path}: cannot read: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MudError(f"{path.name}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise MudError(f"{path.name}: must hold a JSON object with {MUD!r}")
    return doc


# ---- writing the profile ------------------------------------------------------------------------

def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _str(k)


def _str(s: str) -> str:
    # JSON string syntax is TOML basic-string syntax once non-ASCII stays literal.
    return json.dumps(s, ensure_ascii=False)


def _comment(s: str) -> str:
    """Text from the MUD file on one comment line (a newline in an ACE name must not end it)."""
    return "".join(c if c.isprintable() else " " for c in s)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _table(lines: list[str], header: str, table: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    lines.append(header)
    for k, v in table.items():
        if k not in skip:
            lines.append(f"{_key(k)} = {_value(v)}")


def placeholder_mqtt(cls: str, domain: str, *, client_prefix: str | None = None, interval: float = 60.0) -> dict:
    """The `[mqtt]` section written when none is given: one status topic, marked as a guess."""
    return {
        "client_prefix": client_prefix or re.sub(r"[^A-Za-z0-9_]", "_", cls),
        "keepalive": 60,
        "clean_session": True,
        "versions": {"3.1.1": 1.0},
        "topics": [{
            "name": "status", "topic": f"city/{{district}}/{DOMAIN_TOPIC_ROOT[domain]}/{cls}/{{id}}/status",
            "direction": "publish", "timing": "periodic", "interval": float(interval), "qos": 0,
            "fields": {"ts": {"type": "timestamp", "unit": "s"}},
        }],
    }


DEFAULT_HARDWARE = {"class": "embedded_linux", "link": "ethernet", "rtt_ms": [1.0, 10.0]}
# Without a stated fallback nothing that cuts the device off is allowed (quarantine).
DEFAULT_RESPONSES = {"acceptable": ["rate_limit", "filter", "revoke_mqtt"]}


def profile_from_mud(doc: Mapping[str, Any], *, cls: str, domain: str, criticality: str, description: str | None = None,
                     weight: float = 1.0, hardware: Mapping[str, Any] | None = None, mqtt: Mapping[str, Any] | None = None,
                     responses: Mapping[str, Any] | None = None, client_prefix: str | None = None, source: str = "") -> str:
    """The TOML text of a device profile for the MUD document `doc` (see the module docstring).

    `hardware`, `mqtt` and `responses` are the profile's tables (as dicts, e.g. `placeholder_mqtt`'s
    shape); left out, marked placeholders are written (`client_prefix` goes into the placeholder
    `[mqtt]`; default: the class). The text loads with `load_device_profile`
    once saved as `<cls>.toml`.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", cls):
        raise MudError(f"class: {cls!r} must be lower-case letters, digits and '_' (it is the file name)")
    if domain not in DOMAIN_TOPIC_ROOT:
        raise MudError(f"domain: must be one of {', '.join(DOMAIN_TOPIC_ROOT)} (got {domain!r})")
    pol = read_mud(doc)
    L: list[str] = [f"# Imported from the MUD file {_comment(source or pol.mud_url)} (RFC 8520) by atlas.firmware_profiles.mud."]
    L.append("# From MUD: description (systeminfo), mud_url, peers, [[protocols]], the broker peer (MQTT flows).")
    L.append("# Not in MUD, from the importer's arguments" + ("" if hardware and mqtt and responses else " or marked placeholders")
             + ": domain, criticality, weight, [hardware], [mqtt], [responses].")
    if pol.notes:
        L.append("# Dropped from the MUD file (a profile cannot express it):")
        L.extend(f"#   {_comment(n)}" for n in pol.notes)
    if pol.mqtt:
        L.append(f"# MQTT in the MUD file (-> peer \"broker\" and [mqtt]): {_comment('; '.join(pol.mqtt))}")
    else:
        L.append("# The MUD file lists no MQTT flow (TCP 1883/8883 from the device); \"broker\" is listed because every")
        L.append("# profiled device speaks MQTT.")
    L += [f"class = {_str(cls)}", f"domain = {_str(domain)}", f"criticality = {_str(criticality)}",
          f"description = {_str(description if description is not None else pol.systeminfo)}",
          f"weight = {_value(float(weight))}", f"mud_url = {_str(pol.mud_url)}", f"peers = {_value(list(pol.peers))}", ""]
    if hardware is None:
        L.append("# PLACEHOLDER: MUD does not describe the hardware; set class, link and rtt_ms.")
    _table(L, "[hardware]", hardware or DEFAULT_HARDWARE)
    L.append("")
    if mqtt is None:
        L.append("# PLACEHOLDER: MUD does not describe MQTT topics; replace with the device's real topics, rates and fields")
        L.append("# (the simulator publishes them and the conformance check compares traffic with them).")
    m = dict(mqtt or placeholder_mqtt(cls, domain, client_prefix=client_prefix))
    _table(L, "[mqtt]", m, skip=("topics",))
    for t in m.get("topics", []):
        L.append("")
        _table(L, "[[mqtt.topics]]", t)
    for p in pol.protocols:
        L.append("")
        _table(L, "[[protocols]]", {"name": p.name, "transport": p.transport, "port": p.port,
                                    "direction": p.direction, "peer": p.peer})
    L.append("")
    if responses is None:
        L.append("# PLACEHOLDER: MUD does not say which responses fit; quarantine is left out until a fallback is stated.")
    _table(L, "[responses]", responses or DEFAULT_RESPONSES)
    return "\n".join(L) + "\n"


def import_mud_file(path: str | Path, out_dir: str | Path, *, cls: str, domain: str, criticality: str,
                    overwrite: bool = False, **kw: Any) -> tuple[Path, MudPolicy]:
    """Write `<out_dir>/<cls>.toml` from the MUD file at `path`, check that it loads, return it and the policy."""
    path = Path(path)
    doc = load_mud_file(path)
    try:
        text = profile_from_mud(doc, cls=cls, domain=domain, criticality=criticality, source=path.name, **kw)
        pol = read_mud(doc)
    except MudError as e:
        raise MudError(f"{path.name}: {e}") from None
    out = Path(out_dir) / f"{cls}.toml"
    if out.exists() and not overwrite:
        raise MudError(f"{out}: already exists (pass overwrite=True, or --force, to replace it)")
    prefix = _check(text, cls)  # never write a profile the loader refuses
    # load_device_profiles() refuses a folder where two classes share a client prefix.
    for other in sorted(Path(out_dir).glob("*.toml")) if Path(out_dir).is_dir() else ():
        if other.name != out.name and _client_prefix(other) == prefix:
            raise MudError(f"mqtt.client_prefix: {prefix!r} is already used by {other.name} in {out_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out, pol


def _check(text: str, cls: str) -> str:
    """Load the text under its final name (the loader checks class == file stem); its client prefix."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / f"{cls}.toml"
        probe.write_text(text, encoding="utf-8")
        return load_device_profile(probe).mqtt.client_prefix


def _client_prefix(path: Path) -> str | None:
    try:
        return load_device_profile(path).mqtt.client_prefix
    except ProfileError:
        return None  # not ours to judge here: `atlas-sim profiles` names it


__all__ = ["MudError", "MudPolicy", "import_mud_file", "load_mud_file", "placeholder_mqtt", "profile_from_mud", "read_mud"]
