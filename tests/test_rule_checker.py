"""One rule checker, three doors: every bad rule in one table is refused by the hub's shield,
by the agent's uplink (real rules, signed by a real hub key, through the wire's protobuf) and
by the enforcer (dry-run backends), each naming the same field. The checker is the contract's
`atlas.link.rules.validate_rule`; this table is what keeps the three from drifting apart."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from atlas.agent.enforce.dryrun import DryRunBackend
from atlas.agent.enforce.enforcer import Enforcer
from atlas.agent.uplink.client import Uplink
from atlas.central.decide import Allowlist, Decision, decision_context, rule_problem, shield
from atlas.central.decide.inventory import DeviceEntry, Inventory
from atlas.central.ingest.testing import make_pki
from atlas.central.store import HubIncident
from atlas.link import serde
from atlas.link.rules import DEFAULT_MAX_TTL, MAX_PPS, Rule, validate_rule
from atlas.link.signing import RuleSigner, RuleVerifier
from atlas.link.wire import RuleAck, RuleChange, SignedRule
from atlas.v1 import rules_pb2

GATEWAY_IP = "10.0.0.1"  # the gateway's own address, which is also its broker's
HUB_IP = "10.9.0.2"
ADMIN = "atlas-admin"  # the enforcer's own broker account
# What a gateway is configured with, and what the hub's config lists for it: the same entries.
PROTECTED = [GATEWAY_IP, HUB_IP, ADMIN]
NOW = time.time()
TTL = 600.0


@dataclass(frozen=True)
class Bad:
    name: str
    field: str  # the field every door must name
    action: str = "quarantine"
    target: str = "10.0.0.66"
    ttl: float = TTL
    params: dict[str, Any] = field(default_factory=dict)


BAD_RULES = [
    Bad("loopback", "target", target="127.0.0.1"),
    Bad("loopback v6", "target", target="::1"),
    Bad("link-local", "target", target="169.254.10.20"),
    Bad("link-local v6", "target", target="fe80::1"),
    Bad("multicast", "target", target="224.0.0.251"),
    Bad("multicast v6", "target", target="ff02::fb"),
    Bad("unspecified", "target", target="0.0.0.0"),
    Bad("broadcast", "target", target="255.255.255.255"),
    Bad("the gateway's own address", "target", target=GATEWAY_IP),
    Bad("the hub's address", "target", target=HUB_IP),
    Bad("a CIDR, not one device", "target", target="10.0.0.0/24"),
    Bad("garbage target", "target", target="not-an-ip"),
    Bad("shell in the target", "target", target="10.0.0.9; nft flush ruleset"),
    Bad("empty target", "target", target=""),
    Bad("IPv4-mapped IPv6", "target", target="::ffff:10.0.0.66"),
    Bad("unsafe MQTT username", "target", action="revoke_mqtt", target="bad user; rm -rf"),
    Bad("the enforcer's own broker account", "target", action="revoke_mqtt", target=ADMIN),
    Bad("unknown action", "action", action="unknown(99)"),
    Bad("expired (TTL 0)", "expires_at", ttl=0.0),
    Bad("negative TTL", "expires_at", ttl=-60.0),
    Bad("TTL beyond the maximum", "expires_at", ttl=DEFAULT_MAX_TTL + 3600),
    Bad("NaN TTL", "expires_at", ttl=math.nan),
    Bad("rate_limit without pps", "params.pps", action="rate_limit"),
    Bad("rate_limit pps 0", "params.pps", action="rate_limit", params={"pps": 0}),
    Bad("rate_limit pps too high", "params.pps", action="rate_limit", params={"pps": MAX_PPS + 1}),
    Bad("filter port 0", "params.port", action="filter", params={"port": 0, "proto": "tcp"}),
    Bad("filter port too high", "params.port", action="filter", params={"port": 70000, "proto": "tcp"}),
    Bad("filter proto icmp", "params.proto", action="filter", params={"port": 1883, "proto": "icmp"}),
    Bad("a parameter the action does not take", "params.port", params={"port": 1883}),
]
IDS = [b.name for b in BAD_RULES]


def rule_of(bad: Bad, rid: str = "r-bad") -> Rule:
    return Rule(id=rid, action=bad.action, target=bad.target, expires_at=NOW + bad.ttl,
                reason="table", decision_id="d-table", params=dict(bad.params))


def test_the_table_is_bad_for_the_contracts_checker_itself():
    from atlas.link.rules import RuleRejected

    for bad in BAD_RULES:
        with pytest.raises(RuleRejected) as err:
            validate_rule(rule_of(bad), NOW, Allowlist.parse(PROTECTED))
        assert err.value.field == bad.field, bad.name


# ---- door 1: the hub's shield ----------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD_RULES, ids=IDS)
def test_the_hubs_shield_refuses(bad):
    allow = Allowlist.parse(PROTECTED)
    decision = Decision(action=bad.action, target=bad.target, ttl=bad.ttl, reason="table",
                        params=dict(bad.params))
    problem = rule_problem(decision, NOW, allow)
    assert problem is not None and bad.field.split(".")[0] in problem, problem
    # and the shield, with the target being exactly what the attacker controls
    revoke = bad.action == "revoke_mqtt"
    attacker = DeviceEntry(address="10.0.0.66", client_id=bad.target, gateway="", profile="x",
                           criticality="ordinary") if revoke else None
    incident = HubIncident(id="i-1", kind="mqtt_flood", src_ip="10.0.0.66" if revoke else bad.target,
                           device="", dst_ip="", first_seen=NOW, last_seen=NOW, score=1.0,
                           packets=1, state="open", created_at=NOW, gateways=["gw1"])
    context = decision_context(Inventory([attacker] if attacker else []), incident, NOW, allow)
    assert shield(decision, incident, context).suppressed


# ---- door 2: the agent's uplink, with rules a real hub key signed ------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["gw-1"])


def wire_rule(bad: Bad, pki: Any) -> rules_pb2.SignedRule:
    """The rule as a hub would put it on the wire, signed over what the agent will decode."""
    rule = rule_of(bad)
    unknown = bad.action.startswith("unknown")
    wired = rules_pb2.SignedRule()
    encodable = Rule(**{**rule.__dict__, "action": "quarantine"}) if unknown else rule
    wired.rule.CopyFrom(serde.rule_to_proto(encodable))
    if unknown:
        wired.rule.action = 99  # an action from a newer or forged hub
    decoded = serde.rule_from_proto(wired.rule)
    wired.signature = RuleSigner.from_pem_file(pki.signing_key).sign_rule(decoded).signature
    # a genuine signature: what the uplink refuses, it refuses for the rule's content
    RuleVerifier.from_pem_file(pki.signing_pub).verify_rule(SignedRule(decoded, wired.signature))
    return wired


def uplink(pki: Any, tmp_path: Any, handed: list) -> Uplink:
    return Uplink("127.0.0.1:9", "gw-1", pki.gateway_tls("gw-1"), tmp_path / "spool",
                  lambda c: handed.append(c) or [RuleAck(s.rule.id, True) for s in c.rules],
                  signing_pub=pki.signing_pub, allowlist=Allowlist.parse(PROTECTED),
                  clock=lambda: NOW)


@pytest.mark.parametrize("bad", BAD_RULES, ids=IDS)
def test_the_agents_uplink_refuses(bad, pki, tmp_path):
    handed: list = []
    up = uplink(pki, tmp_path, handed)
    try:
        [ack] = up.apply_rule_change(rules_pb2.RuleChange(
            kind=rules_pb2.RuleChange.KIND_UPSERT, rules=[wire_rule(bad, pki)]))
    finally:
        up.spool.close()
    assert not ack.applied and ack.error.startswith(bad.field + ":"), ack.error
    assert not handed  # nothing reached enforcement
    assert up.counters[f"rules_refused_{bad.field.split('.')[0]}"] == 1


# ---- door 3: the enforcer ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD_RULES, ids=IDS)
def test_the_enforcer_refuses(bad, tmp_path):
    backend = DryRunBackend(name="net", actions=("quarantine", "filter", "rate_limit", "revoke_mqtt"))
    enforcer = Enforcer([backend], tmp_path / "enforce.json",
                        Allowlist.build([GATEWAY_IP, HUB_IP], [ADMIN]), clock=lambda: NOW)
    [ack] = enforcer.apply(RuleChange("upsert", [SignedRule(rule_of(bad), b"s" * 64)]))
    assert not ack.applied and ack.error.startswith(bad.field + ":"), ack.error
    assert enforcer.rules() == [] and backend.view == {}


def test_a_good_rule_passes_all_three_doors(pki, tmp_path):
    """The table's rows differ from this rule in one field each: the refusals are theirs."""
    good = Bad("good", "", target="10.0.0.66")
    assert rule_problem(Decision("quarantine", good.target, TTL, "ok"), NOW,
                        Allowlist.parse(PROTECTED)) is None
    handed: list = []
    up = uplink(pki, tmp_path, handed)
    try:
        acks = up.apply_rule_change(rules_pb2.RuleChange(
            kind=rules_pb2.RuleChange.KIND_UPSERT, rules=[wire_rule(good, pki)]))
    finally:
        up.spool.close()
    assert acks == [RuleAck("r-bad", True, "")] and len(handed[0].rules) == 1
    enforcer = Enforcer([DryRunBackend(name="net")], tmp_path / "e.json",
                        Allowlist.build([GATEWAY_IP, HUB_IP], [ADMIN]), clock=lambda: NOW)
    assert enforcer.apply(handed[0]) == [RuleAck("r-bad", True, "")]
