"""Rules and models are signed by the hub and verified by the agent; the vocabulary is closed."""
from __future__ import annotations

import dataclasses
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.link.rules import ACTIONS, Rule
from atlas.link.wire import SignedRule
from atlas.link.signing import RuleSigner, RuleVerifier, model_canonical_bytes, rule_canonical_bytes
from atlas.link.rules import RuleRejected, validate_rule

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys():
    key = Ed25519PrivateKey.generate()
    return RuleSigner(key), RuleVerifier(key.public_key())


def rule(**changes) -> Rule:
    base = Rule(id="r-1a2b", action="filter", target="10.0.0.9", expires_at=NOW + 300, reason="mqtt flood",
                decision_id="d-77", shadow=False, params={"port": 1883, "proto": "tcp"})
    return dataclasses.replace(base, **changes)


def test_signed_rule_verifies(keys):
    signer, verifier = keys
    signed = signer.sign_rule(rule())
    assert len(signed.signature) == 64
    verifier.verify_rule(signed)


@pytest.mark.parametrize("change", [
    {"id": "r-other"}, {"action": "quarantine", "params": {}}, {"target": "10.0.0.10"},
    {"expires_at": NOW + 301}, {"reason": "mqtt flood!"}, {"decision_id": "d-78"}, {"shadow": True},
    {"params": {"port": 1884, "proto": "tcp"}}, {"params": {"port": 1883, "proto": "udp"}},
])
def test_any_change_to_a_signed_rule_breaks_the_signature(keys, change):
    signer, verifier = keys
    signed = signer.sign_rule(rule())
    tampered = SignedRule(rule=dataclasses.replace(signed.rule, **change), signature=signed.signature)
    with pytest.raises(RuleRejected, match="signature: does not match"):
        verifier.verify_rule(tampered)


def test_another_hubs_key_and_unsigned_rules_are_refused(keys):
    _, verifier = keys
    other = RuleSigner(Ed25519PrivateKey.generate()).sign_rule(rule())
    with pytest.raises(RuleRejected, match="signature: does not match"):
        verifier.verify_rule(other)
    with pytest.raises(RuleRejected, match="signature: missing"):
        verifier.verify_rule(SignedRule(rule(), b""))
    with pytest.raises(RuleRejected, match="63 bytes"):
        verifier.verify_rule(SignedRule(rule(), b"x" * 63))


def test_canonical_bytes_are_fixed_and_unambiguous():
    # The encoding is a contract with other implementations: pin it.
    data = rule_canonical_bytes(Rule("a", "quarantine", "1.2.3.4", 1.5, "", "d", params={}))
    assert data == (b"atlas.v1.Rule\x00" + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x0aquarantine"
                    + b"\x00\x00\x00\x071.2.3.4" + b"\x3f\xf8\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
                    + b"\x00\x00\x00\x01d" + b"\x00" + b"\x00\x00\x00\x00")
    # Length prefixes: moving a character between fields changes the bytes.
    assert rule_canonical_bytes(rule(reason="ab", decision_id="c")) != rule_canonical_bytes(rule(reason="a", decision_id="bc"))
    # Param order does not matter, types do.
    assert rule_canonical_bytes(rule(params={"proto": "tcp", "port": 1883})) == rule_canonical_bytes(rule())
    assert rule_canonical_bytes(rule(params={"port": "1883", "proto": "tcp"})) != rule_canonical_bytes(rule())
    # A rule signature never verifies as a model's.
    assert model_canonical_bytes("a", "1", b"") [:21] == b"atlas.v1.ModelUpdate\x00"


def test_models_are_signed_over_their_content(keys):
    signer, verifier = keys
    update = signer.sign_model("anomaly", "2026.1", b"TFL3" + bytes(1000))
    verifier.verify_model(update)
    with pytest.raises(ValueError, match="signature does not match"):
        verifier.verify_model(dataclasses.replace(update, content=update.content + b"\x00"))
    with pytest.raises(ValueError, match="signature does not match"):
        verifier.verify_model(dataclasses.replace(update, version="2026.2"))


def test_keys_load_from_pki_files(tmp_path):
    from atlas.central.pki import init_pki

    pki = init_pki(tmp_path / "pki")
    signed = RuleSigner.from_pem_file(pki.signing_key).sign_rule(rule())
    RuleVerifier.from_pem_file(pki.signing_pub).verify_rule(signed)
    with pytest.raises(ValueError, match="ca.crt: not a PEM public key"):
        RuleVerifier.from_pem_file(pki.ca_cert)
    with pytest.raises(ValueError, match="hub.key: not an Ed25519 private key"):
        RuleSigner.from_pem_file(pki.hub_tls().key)  # ECDSA, the TLS key


# --- the closed vocabulary ------------------------------------------------------------------

VALID_OF_EACH_ACTION = [
    rule(),
    rule(action="quarantine", target="2001:db8::7", params={}),
    rule(action="rate_limit", params={"pps": 50}),
    rule(action="revoke_mqtt", target="sensor-42@city", params={}),
]


def test_valid_rules_of_every_action_pass():
    assert {r.action for r in VALID_OF_EACH_ACTION} == set(ACTIONS)  # a new action needs a valid example here
    for r in VALID_OF_EACH_ACTION:
        validate_rule(r, NOW)  # raises RuleRejected on any problem


@pytest.mark.parametrize("change, field, words", [
    ({"action": "shell"}, "action", "'shell' is not one of"),
    ({"action": "unknown(99)"}, "action", "is not one of"),
    ({"target": "10.0.0.9; rm -rf /"}, "target", "not an IPv4 or IPv6 address"),
    ({"target": "0.0.0.0", "action": "quarantine", "params": {}}, "target", "unspecified address"),
    ({"target": "224.0.0.1", "action": "quarantine", "params": {}}, "target", "multicast address"),
    ({"target": "$(reboot)", "action": "revoke_mqtt", "params": {}}, "target", "MQTT username"),
    ({"expires_at": NOW - 3.2}, "expires_at", "expired 3.2 s ago"),
    ({"expires_at": float("nan")}, "expires_at", "finite"),
    ({"id": "r 1"}, "id", "must be 1-128"),
    ({"decision_id": ""}, "decision_id", "must be 1-128"),
    ({"reason": "x" * 1025}, "reason", "1024"),
    ({"params": {"port": 1883}}, "params.proto", "required for filter"),
    ({"params": {"port": 1883, "proto": "tcp", "cmd": "x"}}, "params.cmd", "not a parameter of filter"),
    ({"params": {"port": 0, "proto": "tcp"}}, "params.port", "[1, 65535]"),
    ({"params": {"port": True, "proto": "tcp"}}, "params.port", "integer"),
    ({"params": {"port": 80, "proto": "icmp"}}, "params.proto", "tcp, udp"),
    ({"action": "rate_limit", "params": {"pps": 0}}, "params.pps", "[1, 1000000]"),
    ({"action": "quarantine", "params": {"pps": 5}}, "params.pps", "not a parameter of quarantine"),
])
def test_outside_the_vocabulary_is_refused_naming_the_field(change, field, words):
    with pytest.raises(RuleRejected) as err:
        validate_rule(rule(**change), NOW)
    assert err.value.field == field
    assert words in str(err.value)


def test_expiry_is_checked_against_the_clock():
    validate_rule(rule(expires_at=time.time() + 5), time.time())
    with pytest.raises(RuleRejected, match="expired"):
        validate_rule(rule(expires_at=time.time() - 1), time.time())
