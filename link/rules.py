"""Rules: the closed vocabulary of responses the hub may ask a gateway for, and its one checker.

A `Rule` travels the wire (protos/), is signed by the hub, verified by the agent, and applied by
an enforcement backend. It never carries shell text. `validate_rule` is the only rule checker
in ATLAS: the hub's shield calls it before a decision becomes rules, the agent's uplink before
it accepts a pushed rule, and the enforcer before it installs one, so a rule one of them would
refuse is refused by all three. A refusal is a `RuleRejected` that names the field.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

# quarantine: drop all traffic from/to the address (except allowlisted peers)
# filter: drop the address's traffic to one destination port/protocol (params: port, proto)
# rate_limit: cap the address's packets per second (params: pps)
# revoke_mqtt: disable an MQTT client/user in the broker's dynamic-security plugin
ACTIONS = ("quarantine", "filter", "rate_limit", "revoke_mqtt")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Ids and usernames end up in nftables comments, audit rows and broker commands: keep them to
# characters that need no quoting anywhere.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MQTT_USERNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
MAX_REASON_CHARS = 1024  # reason / decision_id: stored and shown, never interpreted
PROTOCOLS = ("tcp", "udp")
MAX_PPS = 1_000_000
DEFAULT_MAX_TTL = 7 * 86400.0
# Addresses a rule may never name: blocking them breaks the gateway itself, whole segments, or
# nothing at all (a rule that names no single device is a mistake or an attack).
NEVER_TARGETED = ("is_unspecified", "is_loopback", "is_multicast", "is_link_local")

# Which params each action takes: name -> (type, check, description); every one is required.
ACTION_PARAMS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "quarantine": {},
    "filter": {
        "port": (int, lambda v: 1 <= v <= 65535, "an integer in [1, 65535]"),
        "proto": (str, lambda v: v in PROTOCOLS, f"one of {', '.join(PROTOCOLS)}"),
    },
    "rate_limit": {"pps": (int, lambda v: 1 <= v <= MAX_PPS, f"an integer in [1, {MAX_PPS}]")},
    "revoke_mqtt": {},
}
assert set(ACTION_PARAMS) == set(ACTIONS)


@dataclass
class Rule:
    id: str
    action: str  # one of ACTIONS
    target: str  # IPv4/IPv6 address, or the MQTT username for revoke_mqtt
    expires_at: float  # epoch seconds; the rule is removed then (its TTL)
    reason: str  # human text for operators, never interpreted
    decision_id: str  # the hub decision that issued it
    shadow: bool = False  # recorded and reported, not enforced
    params: dict[str, Any] = field(default_factory=dict)


class RuleRejected(ValueError):
    """A rule nobody will use. `field` names what is wrong ("signature", "target", ...);
    str() is "field: problem", the form a RuleAck carries back to the hub."""

    def __init__(self, rule_id: str, field: str, problem: str):
        self.rule_id = rule_id
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Allowlist:
    """What no rule may ever target: addresses and networks (the hub, a gateway's own and
    management addresses, configured devices) and identities (MQTT accounts such as the
    enforcer's own admin, device ids an operator protects)."""

    networks: tuple[IPNetwork, ...] = ()
    usernames: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not all(isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for n in self.networks):
            raise TypeError("Allowlist networks must be ip_network objects: use Allowlist.build() or Allowlist.parse()")

    @classmethod
    def build(cls, addresses: Iterable[str] = (), usernames: Iterable[str] = (), where: str = "allowlist") -> "Allowlist":
        """Addresses/networks and MQTT usernames, each checked; errors name `where` and the entry."""
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

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "Allowlist":
        """Mixed entries, as an operator writes them: what parses as an address or network is
        one, anything else is an identity (an MQTT client id or username)."""
        nets: list[IPNetwork] = []
        names: set[str] = set()
        for entry in entries:
            entry = str(entry).strip()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry)
        return cls(tuple(nets), frozenset(names))

    def covering(self, address: IPAddress) -> IPNetwork | None:
        for net in self.networks:
            if net.version == address.version and address in net:
                return net
        return None

    def matches(self, identity: str) -> bool:
        """True if `identity` (an address or a name) is allowlisted."""
        if not identity:
            return False
        if identity in self.usernames:
            return True
        try:
            address = ipaddress.ip_address(identity)
        except ValueError:
            return False
        return self.covering(address) is not None

    def collapsed(self, version: int) -> list[IPNetwork]:
        """The allowlisted networks of one IP version, merged (nft interval sets refuse overlaps)."""
        return list(ipaddress.collapse_addresses(n for n in self.networks if n.version == version))

    def __or__(self, other: "Allowlist") -> "Allowlist":
        return Allowlist(self.networks + other.networks, self.usernames | other.usernames)

    def __bool__(self) -> bool:
        return bool(self.networks or self.usernames)


def validate_rule(rule: Rule, now: float, allowlist: Allowlist = Allowlist(),
                  max_ttl: float = DEFAULT_MAX_TTL) -> None:
    """Raise RuleRejected unless `rule` fits the vocabulary, names one device that `allowlist`
    does not protect, and is neither expired at `now` nor longer than `max_ttl`."""
    if not isinstance(rule, Rule):
        raise RuleRejected("?", "rule", f"expected a Rule, got {type(rule).__name__}")
    rid = rule.id if isinstance(rule.id, str) else repr(rule.id)
    _check_safe(rid, "id", rule.id, SAFE_ID)
    if rule.action not in ACTIONS:
        raise RuleRejected(rid, "action", f"{rule.action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(rule.shadow, bool):
        raise RuleRejected(rid, "shadow", f"expected a boolean, got {type(rule.shadow).__name__}")
    if not isinstance(rule.reason, str) or len(rule.reason) > MAX_REASON_CHARS:
        raise RuleRejected(rid, "reason", f"expected text of at most {MAX_REASON_CHARS} characters")
    _check_safe(rid, "decision_id", rule.decision_id, SAFE_ID)
    _check_expiry(rid, rule.expires_at, now, max_ttl)
    _check_params(rid, rule.action, rule.params)
    _check_target(rid, rule.action, rule.target, allowlist)


def target_address(rule: Rule) -> IPAddress:
    """The address a validated address rule names (not for revoke_mqtt)."""
    return ipaddress.ip_address(rule.target)


def _check_safe(rid: str, field: str, value: Any, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RuleRejected(rid, field, f"{value!r} must be 1-128 of letters, digits, . _ : -")


def _check_expiry(rid: str, expires_at: Any, now: float, max_ttl: float) -> None:
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)) or not math.isfinite(expires_at):
        raise RuleRejected(rid, "expires_at", f"expected finite epoch seconds, got {expires_at!r}")
    if expires_at <= now:
        raise RuleRejected(rid, "expires_at", f"expired {now - expires_at:.1f} s ago")
    if expires_at - now > max_ttl:
        raise RuleRejected(rid, "expires_at", f"TTL {expires_at - now:.0f} s exceeds the maximum {max_ttl:.0f} s")


def _check_params(rid: str, action: str, params: Any) -> None:
    if not isinstance(params, dict):
        raise RuleRejected(rid, "params", f"expected a mapping, got {type(params).__name__}")
    spec = ACTION_PARAMS[action]
    unknown = sorted(map(str, set(params) - set(spec)))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise RuleRejected(rid, f"params.{unknown[0]}", f"not a parameter of {action} (allowed: {allowed})")
    for name, (kind, ok, desc) in spec.items():
        if name not in params:
            raise RuleRejected(rid, f"params.{name}", f"required for {action} ({desc})")
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
            raise RuleRejected(rid, f"params.{name}", f"must be {desc}, got {value!r}")


def _check_target(rid: str, action: str, target: Any, allowlist: Allowlist) -> None:
    if not isinstance(target, str):
        raise RuleRejected(rid, "target", f"expected text, got {type(target).__name__}")
    if action == "revoke_mqtt":
        if not MQTT_USERNAME.fullmatch(target):
            raise RuleRejected(rid, "target", f"{target!r} is not a safe MQTT username ([A-Za-z0-9_.:@-], 1-128)")
        if target in allowlist.usernames:
            raise RuleRejected(rid, "target", f"MQTT user {target!r} is allowlisted and is never revoked")
        return
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        raise RuleRejected(rid, "target", f"{target!r} is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None):
        raise RuleRejected(rid, "target", f"{target!r} has a scope id; give the bare address")
    for attr in NEVER_TARGETED:
        if getattr(address, attr):
            raise RuleRejected(rid, "target", f"{address} is a {attr[3:].replace('_', '-')} address and is never blocked")
    if address == ipaddress.IPv4Address("255.255.255.255"):
        raise RuleRejected(rid, "target", "255.255.255.255 is the broadcast address and is never blocked")
    if address.version == 6 and address.ipv4_mapped is not None:
        raise RuleRejected(rid, "target", f"{target!r} is an IPv4-mapped address; give the IPv4 address")
    net = allowlist.covering(address)
    if net is not None:
        raise RuleRejected(rid, "target", f"{address} is allowlisted ({net}) and is never blocked")
