"""Signatures on what the hub sends: rules and models, Ed25519 over canonical bytes.

The hub signs with its rule-signing key (made by `atlas-central pki init`); the agent holds
only the public key and refuses anything whose signature does not verify. Signatures cover a
canonical byte encoding defined here, not protobuf bytes, so re-encoding a message (another
protobuf version, field order) can never change what was signed.

Canonical bytes of a Rule (all integers big-endian):
    b"atlas.v1.Rule\\x00"
    str(id) str(action) str(target) f64(expires_at) str(reason) str(decision_id) u8(shadow)
    u32(number of params), then for each param in sorted key order: str(key) value
  where str(s) = u32(len(utf8)) + utf8 bytes, f64 = IEEE-754 double,
  value = b"i" + i64 | b"s" + str | b"b" + u8 | b"f" + f64   (int, text, bool, float).

Canonical bytes of a model update:
    b"atlas.v1.ModelUpdate\\x00" str(name) str(version) u64(len(content)) sha256(content)

The leading domain tags keep a rule signature from ever verifying as a model's, and back.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from atlas.link.rules import Rule
from atlas.link.wire import ModelUpdate, SignedRule
from atlas.link.rules import RuleRejected

RULE_TAG = b"atlas.v1.Rule\x00"
MODEL_TAG = b"atlas.v1.ModelUpdate\x00"
SIGNATURE_BYTES = 64


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def _param_value(value: Any) -> bytes:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return b"b" + struct.pack(">B", value)
    if isinstance(value, int):
        return b"i" + struct.pack(">q", value)
    if isinstance(value, str):
        return b"s" + _str(value)
    if isinstance(value, float):
        return b"f" + struct.pack(">d", value)
    raise ValueError(f"rule param of type {type(value).__name__} has no canonical encoding")


def rule_canonical_bytes(rule: Rule) -> bytes:
    """The bytes a rule's signature covers (see the module docstring)."""
    parts = [
        RULE_TAG,
        _str(rule.id),
        _str(rule.action),
        _str(rule.target),
        struct.pack(">d", float(rule.expires_at)),
        _str(rule.reason),
        _str(rule.decision_id),
        struct.pack(">B", bool(rule.shadow)),
        struct.pack(">I", len(rule.params)),
    ]
    for key in sorted(rule.params):
        parts.append(_str(str(key)) + _param_value(rule.params[key]))
    return b"".join(parts)


def model_canonical_bytes(name: str, version: str, content: bytes) -> bytes:
    """The bytes a model update's signature covers (see the module docstring)."""
    return MODEL_TAG + _str(name) + _str(version) + struct.pack(">Q", len(content)) + hashlib.sha256(content).digest()


class RuleSigner:
    """The hub's side: signs rules and models with the private rule-signing key."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key

    @classmethod
    def from_pem_file(cls, path: str | Path) -> "RuleSigner":
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except ValueError as err:
            raise ValueError(f"{path}: not a PEM private key ({err})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def sign_rule(self, rule: Rule) -> SignedRule:
        return SignedRule(rule=rule, signature=self._key.sign(rule_canonical_bytes(rule)))

    def sign_model(self, name: str, version: str, content: bytes) -> ModelUpdate:
        signature = self._key.sign(model_canonical_bytes(name, version, content))
        return ModelUpdate(name=name, version=version, content=content, signature=signature)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class RuleVerifier:
    """The agent's side: checks signatures with the hub's public rule-signing key."""

    def __init__(self, public_key: Ed25519PublicKey):
        self._key = public_key

    @classmethod
    def from_pem_file(cls, path: str | Path) -> "RuleVerifier":
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except ValueError as err:
            raise ValueError(f"{path}: not a PEM public key ({err})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key")
        return cls(key)

    def verify_rule(self, signed: SignedRule) -> None:
        """Raise RuleRejected(field="signature") unless the hub signed exactly this rule."""
        rid = signed.rule.id if isinstance(signed.rule.id, str) else repr(signed.rule.id)
        if not signed.signature:
            raise RuleRejected(rid, "signature", "missing (unsigned rule)")
        if len(signed.signature) != SIGNATURE_BYTES:
            raise RuleRejected(rid, "signature", f"{len(signed.signature)} bytes, an Ed25519 signature has 64")
        try:
            data = rule_canonical_bytes(signed.rule)
        except (ValueError, TypeError, AttributeError, struct.error) as err:
            raise RuleRejected(rid, "signature", f"rule cannot be encoded canonically: {err}") from None
        try:
            self._key.verify(signed.signature, data)
        except InvalidSignature:
            raise RuleRejected(rid, "signature", "does not match the rule (tampered, or not signed by this hub)") from None

    def verify_model(self, update: ModelUpdate) -> None:
        """Raise ValueError unless the hub signed exactly this model."""
        try:
            self._key.verify(update.signature, model_canonical_bytes(update.name, update.version, update.content))
        except InvalidSignature:
            raise ValueError(f"model {update.name!r} {update.version!r}: signature does not match") from None
