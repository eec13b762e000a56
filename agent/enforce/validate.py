"""Validate a Rule before anything is installed, and map it to the element a backend installs.

Rules arrive signature-verified by the uplink; this is the second, local check (closed
vocabulary, typed and bounded fields, the gateway's own allowlist). Every error names the
field, in the form the wire's RuleAck documents ("expires_at: expired 3.2 s ago").
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from atlas.agent.enforce import ACTIONS, Rule
from atlas.agent.enforce.backend import Element

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

RULE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MQTT_USERNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
PROTOS = ("tcp", "udp")
MAX_PPS = 1_000_000
MAX_TEXT = 1024  # reason / decision_id: stored and shown, never interpreted
DEFAULT_MAX_TTL = 7 * 86400.0
# Addresses a rule may never name: blocking them breaks the gateway itself or whole segments.
_NEVER = ("is_unspecified", "is_loopback", "is_multicast")

# Each action's parameters: name -> (type, check, description)
PARAMS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "quarantine": {},
    "filter": {
        "port": (int, lambda v: 1 <= v <= 65535, "an integer in [1, 65535]"),
        "proto": (str, lambda v: v in PROTOS, f"one of {', '.join(PROTOS)}"),
    },
    "rate_limit": {"pps": (int, lambda v: 1 <= v <= MAX_PPS, f"an integer in [1, {MAX_PPS}]")},
    "revoke_mqtt": {},
}


class RuleRejected(ValueError):
    """The rule is not acceptable; the message names the field."""


@dataclass(frozen=True)
class Allowlist:
    """Peers that are never blocked: the hub, the gateway's management addresses, configured
    devices (networks), and MQTT accounts that are never revoked (the enforcer's own admin)."""

    networks: tuple[IPNetwork, ...] = ()
    usernames: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(cls, addresses: Iterable[str] = (), usernames: Iterable[str] = (), where: str = "allowlist") -> "Allowlist":
        nets: list[IPNetwork] = []
        for entry in addresses:
            try:
                nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{where}: {entry!r} is not an IP address or network ({exc})") from None
        names = frozenset(str(u) for u in usernames)
        for name in names:
            if not MQTT_USERNAME.fullmatch(name):
                raise ValueError(f"{where}: {name!r} is not a valid MQTT username")
        return cls(tuple(nets), names)

    def covering(self, address: IPAddress) -> IPNetwork | None:
        for net in self.networks:
            if net.version == address.version and address in net:
                return net
        return None

    def collapsed(self, version: int) -> list[IPNetwork]:
        """The allowlisted networks of one IP version, merged (nft interval sets refuse overlaps)."""
        return list(ipaddress.collapse_addresses(n for n in self.networks if n.version == version))


def parse_address(target: str) -> IPAddress:
    try:
        return ipaddress.ip_address(target)
    except ValueError:
        raise RuleRejected(f"target: {target!r} is not an IPv4 or IPv6 address") from None


def validate_rule(rule: Rule, now: float, allowlist: Allowlist = Allowlist(), max_ttl: float = DEFAULT_MAX_TTL) -> Element:
    """Check every field of `rule`; return the element it maps to, or raise RuleRejected."""
    if not isinstance(rule.id, str) or not RULE_ID.fullmatch(rule.id):
        raise RuleRejected(f"id: {rule.id!r} must be 1-128 of letters, digits, . _ : -")
    if rule.action not in ACTIONS:
        raise RuleRejected(f"action: {rule.action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(rule.shadow, bool):
        raise RuleRejected(f"shadow: expected a boolean, got {type(rule.shadow).__name__}")
    for name in ("reason", "decision_id"):
        value = getattr(rule, name)
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise RuleRejected(f"{name}: expected text of at most {MAX_TEXT} characters")
    _check_expiry(rule.expires_at, now, max_ttl)
    params = _check_params(rule.action, rule.params)
    if not isinstance(rule.target, str):
        raise RuleRejected(f"target: expected text, got {type(rule.target).__name__}")
    if rule.action == "revoke_mqtt":
        if not MQTT_USERNAME.fullmatch(rule.target):
            raise RuleRejected(f"target: {rule.target!r} is not a safe MQTT username ([A-Za-z0-9_.:@-], 1-128)")
        if rule.target in allowlist.usernames:
            raise RuleRejected(f"target: MQTT user {rule.target!r} is allowlisted and is never revoked")
        return Element("revoke_mqtt", rule.target)
    address = parse_address(rule.target)
    if getattr(address, "scope_id", None):
        raise RuleRejected(f"target: {rule.target!r} has a scope id; give the bare address")
    for attr in _NEVER:
        if getattr(address, attr):
            raise RuleRejected(f"target: {address} is a {attr[3:]} address and is never blocked")
    if address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"):
        raise RuleRejected("target: 255.255.255.255 is the broadcast address and is never blocked")
    net = allowlist.covering(address)
    if net is not None:
        raise RuleRejected(f"target: {address} is allowlisted ({net}) and is never blocked")
    target = address.compressed
    if rule.action == "filter":
        return Element("filter", target, proto=params["proto"], port=params["port"])
    if rule.action == "rate_limit":
        return Element("rate_limit", target, pps=params["pps"])
    return Element("quarantine", target)


def _check_expiry(expires_at: Any, now: float, max_ttl: float) -> None:
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)) or not math.isfinite(expires_at):
        raise RuleRejected(f"expires_at: expected finite epoch seconds, got {expires_at!r}")
    if expires_at <= now:
        raise RuleRejected(f"expires_at: expired {now - expires_at:.1f} s ago")
    if expires_at - now > max_ttl:
        raise RuleRejected(f"expires_at: TTL {expires_at - now:.0f} s exceeds the maximum {max_ttl:.0f} s")


def _check_params(action: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise RuleRejected(f"params: expected a mapping, got {type(params).__name__}")
    spec = PARAMS[action]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise RuleRejected(f"params.{unknown[0]}: not a parameter of {action} (allowed: {allowed})")
    for name, (kind, ok, desc) in spec.items():
        if name not in params:
            raise RuleRejected(f"params.{name}: required for {action} ({desc})")
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
            raise RuleRejected(f"params.{name}: must be {desc}, got {value!r}")
    return dict(params)
