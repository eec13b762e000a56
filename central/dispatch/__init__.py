"""Dispatch: from decisions to signed rules on the gateways' streams, and back (acks, expiry).

Every operation collects what it will send in an `Outbox` (atlas.central.outbox); the hub
hands the outbox to
`Dispatcher.publish` (and its events to the event bus) only after the store transaction has
committed, so a gateway never holds a rule the hub would forget in a restart.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import Callable, Iterable, Protocol

from atlas.link.rules import Rule
from atlas.link.wire import ModelUpdate, RuleAck, RuleChange, SignedRule
from atlas.central.audit import AuditLog
from atlas.central.outbox import Outbox, new_id
from atlas.central.store import RULE_SENT, RULE_UNENDED, DecisionRecord, RuleRecord, Store

log = logging.getLogger("atlas.central.dispatch")

RULE_LIVE = ("active", "shadow")
FEED_MAX_PENDING = 256  # changes a slow gateway may owe before it gets one fresh snapshot


class Signer(Protocol):
    """What signs the hub's rules and model bundles (atlas.link.signing.RuleSigner, Ed25519)."""

    def sign_rule(self, rule: Rule) -> SignedRule: ...

    def sign_model(self, name: str, version: str, content: bytes) -> ModelUpdate: ...


class RuleFeed:
    """One gateway stream's view of its rules: a snapshot first, then changes, in order.

    The first get() returns the whole desired set (kind "snapshot"), computed at that moment,
    so nothing issued between watch() and the first get() can be missed. If a gateway falls
    more than FEED_MAX_PENDING changes behind, its queue is replaced by one fresh snapshot.
    """

    def __init__(self, gateway_id: str, snapshot: Callable[["RuleFeed"], RuleChange],
                 unwatch: Callable[["RuleFeed"], None], max_pending: int = FEED_MAX_PENDING):
        self.gateway_id = gateway_id
        self._snapshot = snapshot
        self._unwatch = unwatch
        self._max = max_pending
        self._cond = threading.Condition()
        self._items: deque[RuleChange | ModelUpdate] = deque()
        self._resync = True  # the first get() is a snapshot
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> RuleChange | ModelUpdate | None:
        """The next change, or None after `timeout` seconds without one (or once closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._resync and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._closed:
                return None
            if not self._resync:
                return self._items.popleft()
        return self._snapshot(self)

    def close(self) -> None:
        self._unwatch(self)
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    # called by the dispatcher, under the hub's lock
    def push(self, change: RuleChange) -> None:
        with self._cond:
            if self._closed or self._resync:
                return  # the coming snapshot will include it
            if len(self._items) >= self._max:
                self._items.clear()
                self._resync = True
            else:
                self._items.append(change)
            self._cond.notify_all()

    def push_model(self, update: ModelUpdate) -> None:
        with self._cond:
            if self._closed or self._resync:
                return  # the coming snapshot brings the gateway's due model too
            self._items.append(update)
            self._cond.notify_all()

    def take_snapshot(self, change: RuleChange, then: Iterable[ModelUpdate] = ()) -> RuleChange:
        with self._cond:
            self._items.clear()
            self._items.extend(then)
            self._resync = False
        return change


class Dispatcher:
    """Signs and stores rules, keeps each gateway's feeds, records acks and expiries.

    Callers hold the hub's lock and an open store transaction where a method says so."""

    def __init__(self, store: Store, signer: Signer, audit: AuditLog,
                 counters: dict[str, int]):
        self.store = store
        self.signer = signer
        self.audit = audit
        self.counters = counters
        self._feeds: dict[str, set[RuleFeed]] = {}

    # -- feeds ---------------------------------------------------------------------------
    def add_feed(self, feed: RuleFeed) -> None:
        self._feeds.setdefault(feed.gateway_id, set()).add(feed)

    def remove_feed(self, feed: RuleFeed) -> None:
        group = self._feeds.get(feed.gateway_id)
        if group is not None:
            group.discard(feed)
            if not group:
                del self._feeds[feed.gateway_id]

    def feeds_of(self, gateway_id: str) -> set[RuleFeed]:
        return self._feeds.get(gateway_id, set())

    def watched_gateways(self) -> list[str]:
        return list(self._feeds)

    def all_feeds(self) -> list[RuleFeed]:
        return [f for group in self._feeds.values() for f in group]

    def publish(self, outbox: Outbox) -> None:
        """After commit, under the hub's lock: feeds see changes in commit order."""
        for gateway, rules in outbox.upserts.items():
            for feed in self.feeds_of(gateway):
                feed.push(RuleChange(kind="upsert", rules=list(rules)))
        for gateway, ids in outbox.withdrawn.items():
            for feed in self.feeds_of(gateway):
                feed.push(RuleChange(kind="withdraw", withdrawn=list(ids)))

    def desired_rules(self, gateway_id: str, now: float) -> list[SignedRule]:
        """The rules this gateway should enforce now: unexpired, not shadow, not withdrawn."""
        return [SignedRule(rule=r.rule, signature=r.signature)
                for r in self.store.rules_for_gateway(gateway_id, RULE_SENT)
                if r.rule.expires_at > now]

    # -- rules (in a transaction) --------------------------------------------------------
    def issue(self, decision: DecisionRecord, gateway_id: str, now: float,
              outbox: Outbox) -> RuleRecord:
        rule = Rule(id=new_id("r"), action=decision.action, target=decision.target,
                    expires_at=float(decision.expires_at), reason=decision.reason[:1024],
                    decision_id=decision.id, shadow=decision.shadow,
                    params=dict(decision.params))
        signed = self.signer.sign_rule(rule)
        record = RuleRecord(rule=rule, gateway=gateway_id,
                            state="shadow" if rule.shadow else "active",
                            signature=signed.signature, created_at=now)
        self.store.put_rule(record)
        self.audit.append("rule", {"rule": dataclasses.asdict(rule), "gateway": gateway_id,
                                   "state": record.state}, now)
        self.counters["rules_issued"] += 1
        if not rule.shadow:
            outbox.upsert(gateway_id, signed)
        outbox.event("rule_issued", now, rule=rule.id, gateway=gateway_id,
                     decision=decision.id, incident=decision.incident, action=rule.action,
                     target=rule.target, state=record.state, expires_at=rule.expires_at)
        return record

    def settle_decision(self, decision_id: str, state: str) -> None:
        """Mark a decision expired/revoked once none of its rules is live any more."""
        decision = self.store.get_decision(decision_id)
        if decision is None or decision.state not in RULE_LIVE:
            return
        if any(r.state in RULE_UNENDED for r in self.store.rules_for_decision(decision_id)):
            return
        decision.state = state
        self.store.put_decision(decision)

    def ack(self, gateway_id: str, ack: RuleAck, now: float, outbox: Outbox) -> bool:
        """Record a gateway's ack of one of its rules; False if it does not hold that rule."""
        record = self.store.get_rule(ack.rule_id)
        if record is None or record.gateway != gateway_id:
            log.warning("gateway %s acknowledged rule %r it does not hold", gateway_id,
                        ack.rule_id)
            return False
        self.store.set_rule_ack(ack.rule_id, ack.applied, ack.error, now)
        self.audit.append("rule_ack", {"rule": ack.rule_id, "gateway": gateway_id,
                                       "applied": ack.applied, "error": ack.error}, now)
        outbox.event("rule_acked" if ack.applied else "rule_refused", now, rule=ack.rule_id,
                     gateway=gateway_id, decision=record.rule.decision_id,
                     action=record.rule.action, target=record.rule.target, error=ack.error)
        if not ack.applied:
            log.warning("gateway %s could not apply rule %s: %s", gateway_id, ack.rule_id,
                        ack.error)
        return True

    def revoke(self, record: RuleRecord, operator: str, now: float, outbox: Outbox) -> None:
        was = record.state
        record.state, record.ended_at = "revoked", now
        self.store.put_rule(record)
        self.audit.append("revocation", {"rule": record.rule.id, "gateway": record.gateway,
                                         "decision": record.rule.decision_id,
                                         "operator": operator}, now)
        self.settle_decision(record.rule.decision_id, "revoked")
        if was in RULE_SENT:
            outbox.withdraw(record.gateway, record.rule.id)
        outbox.event("rule_revoked", now, rule=record.rule.id, gateway=record.gateway,
                     decision=record.rule.decision_id, operator=operator)

    def expire(self, due: list[RuleRecord], now: float, outbox: Outbox) -> None:
        for record in due:
            was = record.state
            record.state, record.ended_at = "expired", now
            self.store.put_rule(record)
            self.audit.append("expiry", {"rule": record.rule.id, "gateway": record.gateway,
                                         "decision": record.rule.decision_id}, now)
            if was in RULE_SENT:
                outbox.withdraw(record.gateway, record.rule.id)
            outbox.event("rule_expired", now, rule=record.rule.id, gateway=record.gateway,
                         decision=record.rule.decision_id)
        for decision_id in {r.rule.decision_id for r in due}:
            self.settle_decision(decision_id, "expired")
        self.counters["rules_expired"] += len(due)
