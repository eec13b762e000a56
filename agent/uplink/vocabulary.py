"""The closed vocabulary a gateway accepts from the hub: which actions, targets and params.

The agent checks every rule here (after its signature) before anything enforces it. A rule
that does not fit is refused with a `RuleRejected` naming the field, and counted; nothing in a
rule is ever run as text.
"""
from __future__ import annotations

import ipaddress
import math
import re
import time
from typing import Any

from atlas.agent.enforce import ACTIONS, Rule

# Ids and usernames end up in nftables comments, audit rows and broker commands: keep them to
# characters that need no quoting anywhere.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MQTT_USERNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")  # as agent/enforce/validate.py
MAX_REASON_CHARS = 1024
PROTOCOLS = ("tcp", "udp")
MAX_PPS = 1_000_000

# Which params each action takes; every one listed is required, nothing else is allowed.
ACTION_PARAMS: dict[str, tuple[str, ...]] = {
    "quarantine": (),
    "filter": ("port", "proto"),
    "rate_limit": ("pps",),
    "revoke_mqtt": (),
}
assert set(ACTION_PARAMS) == set(ACTIONS)


class RuleRejected(ValueError):
    """A rule the agent will not use. `field` names what is wrong ("signature", "target", ...)."""

    def __init__(self, rule_id: str, field: str, problem: str):
        self.rule_id = rule_id
        self.field = field
        self.problem = problem
        super().__init__(f"rule {rule_id!r}: {field}: {problem}")


def validate_rule(rule: Rule, now: float | None = None) -> None:
    """Raise RuleRejected unless `rule` is within the vocabulary and not expired at `now`."""
    now = time.time() if now is None else now
    rid = rule.id if isinstance(rule.id, str) else repr(rule.id)
    _check_safe(rid, "id", rule.id, SAFE_ID)
    if rule.action not in ACTIONS:
        raise RuleRejected(rid, "action", f"unknown action {rule.action!r}; known: {', '.join(ACTIONS)}")
    _check_target(rid, rule.action, rule.target)
    if not isinstance(rule.expires_at, (int, float)) or not math.isfinite(rule.expires_at):
        raise RuleRejected(rid, "expires_at", f"not a finite time: {rule.expires_at!r}")
    if rule.expires_at <= now:
        raise RuleRejected(rid, "expires_at", f"expired {now - rule.expires_at:.1f} s ago")
    if not isinstance(rule.reason, str) or len(rule.reason) > MAX_REASON_CHARS:
        raise RuleRejected(rid, "reason", f"must be text of at most {MAX_REASON_CHARS} characters")
    _check_safe(rid, "decision_id", rule.decision_id, SAFE_ID)
    if not isinstance(rule.shadow, bool):
        raise RuleRejected(rid, "shadow", f"must be true or false, got {rule.shadow!r}")
    _check_params(rid, rule.action, rule.params)


def _check_safe(rid: str, field: str, value: Any, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RuleRejected(rid, field, f"{value!r} is not 1..128 of letters, digits, . _ : -")


def _check_target(rid: str, action: str, target: Any) -> None:
    if not isinstance(target, str):
        raise RuleRejected(rid, "target", f"must be text, got {type(target).__name__}")
    if action == "revoke_mqtt":
        if not MQTT_USERNAME.fullmatch(target):
            raise RuleRejected(rid, "target", f"{target!r} is not an MQTT username of 1..128 safe characters (letters, digits, . _ : @ -)")
        return
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        raise RuleRejected(rid, "target", f"{target!r} is not an IPv4 or IPv6 address") from None
    # These never name one device: blocking them would hit everything or nothing.
    if address.is_unspecified or address.is_multicast or target == "255.255.255.255":
        raise RuleRejected(rid, "target", f"{target} does not name a single device")


def _check_params(rid: str, action: str, params: Any) -> None:
    if not isinstance(params, dict):
        raise RuleRejected(rid, "params", f"must be a mapping, got {type(params).__name__}")
    wanted = ACTION_PARAMS[action]
    extra = sorted(set(params) - set(wanted))
    missing = [k for k in wanted if k not in params]
    if extra:
        raise RuleRejected(rid, "params", f"{action} takes no {', '.join(map(str, extra))}")
    if missing:
        raise RuleRejected(rid, "params", f"{action} needs {', '.join(missing)}")
    if "port" in params:
        _check_int(rid, "params.port", params["port"], 1, 65535)
    if "proto" in params and params["proto"] not in PROTOCOLS:
        raise RuleRejected(rid, "params.proto", f"{params['proto']!r} is not one of {', '.join(PROTOCOLS)}")
    if "pps" in params:
        _check_int(rid, "params.pps", params["pps"], 1, MAX_PPS)


def _check_int(rid: str, field: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RuleRejected(rid, field, f"{value!r} is not an integer in {low}..{high}")
