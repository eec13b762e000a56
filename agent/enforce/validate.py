"""From a rule to the element a backend installs, after the contract's one rule check.

Rules arrive signature-verified by the uplink; the enforcer checks them again here with the
gateway's own allowlist and TTL ceiling (atlas.link.rules.validate_rule, the same checker the
hub's shield and the uplink use) and maps each to a backend `Element`.
"""
from __future__ import annotations

from atlas.agent.enforce.backend import Element
from atlas.link.rules import DEFAULT_MAX_TTL, Allowlist, Rule, target_address, validate_rule


def rule_element(rule: Rule, now: float, allowlist: Allowlist = Allowlist(), max_ttl: float = DEFAULT_MAX_TTL) -> Element:
    """Check every field of `rule`; return the element it maps to, or raise RuleRejected."""
    validate_rule(rule, now, allowlist, max_ttl)
    if rule.action == "revoke_mqtt":
        return Element("revoke_mqtt", rule.target)
    target = target_address(rule).compressed
    if rule.action == "filter":
        return Element("filter", target, proto=rule.params["proto"], port=rule.params["port"])
    if rule.action == "rate_limit":
        return Element("rate_limit", target, pps=rule.params["pps"])
    return Element("quarantine", target)
