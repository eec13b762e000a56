"""What one committed operation will publish: rule changes per gateway and events.

Every stage writes into the operation's `Outbox` inside the store transaction; the hub
publishes it (rule changes to the gateways' feeds, events to the bus) only once that
transaction has committed, and drops it if it rolled back.
"""
from __future__ import annotations

import secrets
from typing import Any

from atlas.link.wire import SignedRule
from atlas.central.events import Event


def new_id(prefix: str) -> str:
    """Short, unguessable, safe in nftables comments and on a command line: d-1f2e3d4c5b."""
    return f"{prefix}-{secrets.token_hex(5)}"


class Outbox:
    """What one operation will publish once its transaction has committed: rule changes per
    gateway, and events."""

    def __init__(self) -> None:
        self.upserts: dict[str, list[SignedRule]] = {}
        self.withdrawn: dict[str, list[str]] = {}
        self.events: list[Event] = []

    def merge(self, other: "Outbox") -> None:
        for gateway, rules in other.upserts.items():
            self.upserts.setdefault(gateway, []).extend(rules)
        for gateway, ids in other.withdrawn.items():
            self.withdrawn.setdefault(gateway, []).extend(ids)
        self.events.extend(other.events)

    def upsert(self, gateway: str, signed: SignedRule) -> None:
        self.upserts.setdefault(gateway, []).append(signed)

    def withdraw(self, gateway: str, rule_id: str) -> None:
        self.withdrawn.setdefault(gateway, []).append(rule_id)

    def event(self, kind: str, now: float, /, **payload: Any) -> None:
        self.events.append(Event(kind, now, payload))
