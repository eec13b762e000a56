"""Test helpers for the wire: an in-memory hub and a throwaway PKI.

`MemoryHub` implements the seven methods the servicer calls (the contract of
atlas.central.hub.Hub) with plain dicts. Tests of the wire and the bench use it where the real
hub is not the subject, and to pin down what the servicer relies on: telemetry is idempotent
by seq, watch() feeds see every change pushed after they were made.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from atlas.link.wire import GatewayInfo, ModelAck, ModelUpdate, RuleAck, RuleChange, SignedRule, TelemetryBatch
from atlas.central.pki import PkiDir, init_pki, issue_gateway


@dataclass
class MemoryStore:
    """What survives a hub restart in tests (the real hub keeps it in SQLite)."""

    batches: dict[str, list[TelemetryBatch]] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)
    acks: dict[str, list[RuleAck]] = field(default_factory=dict)
    model_acks: dict[str, list[ModelAck]] = field(default_factory=dict)
    desired: dict[str, dict[str, SignedRule]] = field(default_factory=dict)

    def incidents(self, gateway_id: str) -> list:
        return [i for b in self.batches.get(gateway_id, []) for i in b.incidents]


class MemoryFeed:
    def __init__(self, hub: "MemoryHub", gateway_id: str):
        self.hub = hub
        self.gateway_id = gateway_id
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.snapshot_due = True  # like the hub's RuleFeed: the first get() is the whole set

    def get(self, timeout: float) -> RuleChange | ModelUpdate | None:
        if self.snapshot_due:
            self.snapshot_due = False
            return RuleChange(kind="snapshot", rules=self.hub.desired_rules(self.gateway_id))
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        with self.hub.lock:
            feeds = self.hub.feeds.get(self.gateway_id, [])
            if self in feeds:
                feeds.remove(self)


class MemoryHub:
    def __init__(self, store: MemoryStore | None = None, count_only: bool = False):
        self.store = store or MemoryStore()
        self.count_only = count_only  # bench: count records, keep nothing
        self.records = 0
        self.lock = threading.Lock()
        self.feeds: dict[str, list[MemoryFeed]] = {}
        self.hellos: list[GatewayInfo] = []
        self.connected: set[str] = set()
        self.disconnects = 0

    def hello(self, gateway_id: str, info: GatewayInfo) -> None:
        with self.lock:
            self.hellos.append(info)
            self.connected.add(gateway_id)

    def telemetry(self, gateway_id: str, batch: TelemetryBatch) -> int:
        with self.lock:
            highest = self.store.highest.get(gateway_id, 0)
            if batch.seq <= highest:  # resent after a lost ack: already stored
                return highest
            self.store.highest[gateway_id] = batch.seq
            self.records += len(batch.incidents) + len(batch.devices)
            if not self.count_only:
                self.store.batches.setdefault(gateway_id, []).append(batch)
            return batch.seq

    def rule_ack(self, gateway_id: str, ack: RuleAck) -> None:
        with self.lock:
            self.store.acks.setdefault(gateway_id, []).append(ack)

    def model_ack(self, gateway_id: str, ack: ModelAck) -> None:
        with self.lock:
            self.store.model_acks.setdefault(gateway_id, []).append(ack)

    def desired_rules(self, gateway_id: str) -> list[SignedRule]:
        with self.lock:
            return list(self.store.desired.get(gateway_id, {}).values())

    def watch(self, gateway_id: str) -> MemoryFeed:
        feed = MemoryFeed(self, gateway_id)
        with self.lock:
            self.feeds.setdefault(gateway_id, []).append(feed)
        return feed

    def disconnected(self, gateway_id: str) -> None:
        with self.lock:
            self.connected.discard(gateway_id)
            self.disconnects += 1

    # --- driving it from a test ---------------------------------------------------------

    def push(self, gateway_id: str, change: RuleChange | ModelUpdate) -> int:
        """Record a change in the desired set and send it to the gateway's open streams."""
        with self.lock:
            desired = self.store.desired.setdefault(gateway_id, {})
            if isinstance(change, RuleChange):
                for signed in change.rules:
                    desired[signed.rule.id] = signed
                for rule_id in change.withdrawn:
                    desired.pop(rule_id, None)
            feeds = list(self.feeds.get(gateway_id, []))
        for feed in feeds:
            feed.queue.put(change)
        return len(feeds)


def make_pki(directory: str | Path, gateways: list[str] = ()) -> PkiDir:
    """A CA, hub certificate, signing key and one certificate per gateway, in `directory`."""
    pki = init_pki(directory)
    for gateway_id in gateways:
        issue_gateway(directory, gateway_id)
    return pki
