"""The enforcer's own check of a rule: closed vocabulary, typed and bounded params, allowlist."""
from __future__ import annotations

import pytest

from atlas.link.rules import Rule
from atlas.agent.enforce.backend import Element
from atlas.link.rules import Allowlist, RuleRejected
from atlas.agent.enforce.validate import rule_element

NOW = 1_000_000.0
ALLOW = Allowlist.build(["10.77.0.1", "192.0.2.0/24", "fd00::1"], ["atlas-admin"])


def rule(**kw) -> Rule:
    base = dict(id="r-1", action="quarantine", target="10.77.0.66", expires_at=NOW + 60, reason="flood", decision_id="d-1")
    base.update(kw)
    return Rule(**base)


@pytest.mark.parametrize(
    "kw, element",
    [
        ({}, Element("quarantine", "10.77.0.66")),
        ({"target": "2001:DB8:0:0::66"}, Element("quarantine", "2001:db8::66")),
        ({"action": "filter", "params": {"port": 1883, "proto": "tcp"}}, Element("filter", "10.77.0.66", proto="tcp", port=1883)),
        ({"action": "rate_limit", "params": {"pps": 50}}, Element("rate_limit", "10.77.0.66", pps=50)),
        ({"action": "revoke_mqtt", "target": "meter-17@district.4"}, Element("revoke_mqtt", "meter-17@district.4")),
    ],
)
def test_valid_rules_map_to_normalized_elements(kw, element):
    assert rule_element(rule(**kw), NOW, ALLOW) == element


@pytest.mark.parametrize(
    "kw, field, words",
    [
        ({"id": "r 1; rm -rf /"}, "id:", "letters"),
        ({"id": ""}, "id:", "letters"),
        ({"action": "reboot"}, "action:", "not one of"),
        ({"target": "10.77.0.66; nft flush ruleset"}, "target:", "not an IPv4 or IPv6"),
        ({"target": "10.77.0.0/24"}, "target:", "not an IPv4 or IPv6"),
        ({"target": "fe80::1%eth0"}, "target:", "scope id"),
        ({"target": "127.0.0.1"}, "target:", "loopback"),
        ({"target": "0.0.0.0"}, "target:", "unspecified"),
        ({"target": "224.0.0.1"}, "target:", "multicast"),
        ({"target": "255.255.255.255"}, "target:", "broadcast"),
        ({"expires_at": NOW - 3.2}, "expires_at:", "expired 3.2 s ago"),
        ({"expires_at": float("nan")}, "expires_at:", "finite"),
        ({"expires_at": NOW + 30 * 86400}, "expires_at:", "exceeds the maximum"),
        ({"shadow": "yes"}, "shadow:", "boolean"),
        ({"reason": "x" * 2000}, "reason:", "at most"),
        ({"params": {"port": 22}}, "params.port:", "not a parameter of quarantine"),
        ({"params": []}, "params:", "mapping"),
        ({"action": "filter", "params": {"port": 1883}}, "params.proto:", "required"),
        ({"action": "filter", "params": {"port": 0, "proto": "tcp"}}, "params.port:", "[1, 65535]"),
        ({"action": "filter", "params": {"port": "1883", "proto": "tcp"}}, "params.port:", "integer"),
        ({"action": "filter", "params": {"port": True, "proto": "tcp"}}, "params.port:", "integer"),
        ({"action": "filter", "params": {"port": 1883, "proto": "icmp"}}, "params.proto:", "tcp, udp"),
        ({"action": "rate_limit", "params": {"pps": 0}}, "params.pps:", "[1, 1000000]"),
        ({"action": "rate_limit", "params": {"pps": 2.5}}, "params.pps:", "integer"),
        ({"action": "revoke_mqtt", "target": "dev1 $(reboot)"}, "target:", "safe MQTT username"),
        ({"action": "revoke_mqtt", "target": "u" * 129}, "target:", "safe MQTT username"),
    ],
)
def test_bad_rules_are_rejected_naming_the_field(kw, field, words):
    with pytest.raises(RuleRejected) as exc:
        rule_element(rule(**kw), NOW, ALLOW)
    assert str(exc.value).startswith(field)
    assert words in str(exc.value)


@pytest.mark.parametrize("target", ["10.77.0.1", "192.0.2.77", "fd00::1"])
def test_allowlisted_addresses_are_never_blocked(target):
    for action, params in (("quarantine", {}), ("filter", {"port": 80, "proto": "tcp"}), ("rate_limit", {"pps": 5})):
        with pytest.raises(RuleRejected, match="allowlisted"):
            rule_element(rule(action=action, target=target, params=params), NOW, ALLOW)


def test_allowlisted_mqtt_user_is_never_revoked():
    with pytest.raises(RuleRejected, match="allowlisted"):
        rule_element(rule(action="revoke_mqtt", target="atlas-admin"), NOW, ALLOW)


def test_allowlist_entries_are_checked():
    with pytest.raises(ValueError, match="'10.0.0.300' is not an IP address"):
        Allowlist.build(["10.0.0.300"], where="enforce.allowlist")
    with pytest.raises(ValueError, match="not a valid MQTT username"):
        Allowlist.build([], ["bad name"])
    merged = Allowlist.build(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5"]).collapsed(4)
    assert [str(n) for n in merged] == ["10.0.0.0/24"]
