"""Operator commands at the hub: approve or reject a decision that waits for a human, revoke a
rule, push a model. The CLI queues them in the store (see cli.py for why a queue); the hub's
maintenance loop runs them here through the same committed path as everything else."""
from __future__ import annotations

import json
import logging
from typing import Callable, Iterable, Protocol, TypeVar

from atlas.link.tls import check_gateway_id
from atlas.central.audit import AuditLog
from atlas.central.decide import Allowlist
from atlas.central.dispatch import Dispatcher
from atlas.central.outbox import Outbox
from atlas.central.store import RULE_UNENDED, DecisionRecord, RuleRecord, Store

log = logging.getLogger("atlas.central.operators")

T = TypeVar("T")
Commit = Callable[[Callable[[Outbox, float], T]], T]


class OperatorError(ValueError):
    """An operator asked for something that cannot be done (unknown id, wrong state)."""


class Commandable(Protocol):
    """What carries out queued commands (atlas.central.hub.Hub)."""

    store: Store

    def approve(self, decision_id: str, operator: str) -> DecisionRecord: ...

    def reject(self, decision_id: str, operator: str) -> DecisionRecord: ...

    def revoke(self, rule_id: str, operator: str) -> RuleRecord: ...

    def push_model(self, version: str, gateways: Iterable[str] = (), operator: str = "") -> str: ...


class Operators:
    def __init__(self, store: Store, audit: AuditLog, dispatch: Dispatcher,
                 allowlist: Allowlist, commit: Commit):
        self.store = store
        self.audit = audit
        self.dispatch = dispatch
        self.allowlist = allowlist
        self.commit = commit

    def approve(self, decision_id: str, operator: str) -> DecisionRecord:
        """Carry out a decision that waited for a human; returns it with its new state."""
        def change(outbox: Outbox, now: float) -> DecisionRecord:
            decision = self._pending(decision_id)
            if self.allowlist.matches(decision.target):
                raise OperatorError(f"decision {decision_id}: target {decision.target} is "
                                    "on the allowlist; remove it from the config first")
            incident = self.store.get_incident(decision.incident)
            decision.gateways = incident.gateways if incident else decision.gateways
            decision.approved_by, decision.approved_at = operator, now
            decision.state = "shadow" if decision.shadow else "active"
            decision.expires_at = now + decision.ttl
            self.store.add_approval(decision.id, operator, "approved", now)
            self.store.put_decision(decision)
            self.audit.append("approval", {"decision": decision.id, "operator": operator,
                                           "verdict": "approved", "state": decision.state,
                                           "expires_at": decision.expires_at}, now)
            outbox.event("decision_approved", now, decision=decision.id,
                         incident=decision.incident, operator=operator,
                         action=decision.action, target=decision.target)
            for gateway in decision.gateways:
                self.dispatch.issue(decision, gateway, now, outbox)
            return decision
        return self.commit(change)

    def reject(self, decision_id: str, operator: str) -> DecisionRecord:
        def change(outbox: Outbox, now: float) -> DecisionRecord:
            decision = self._pending(decision_id)
            decision.state = "rejected"
            decision.approved_by, decision.approved_at = operator, now
            self.store.add_approval(decision.id, operator, "rejected", now)
            self.store.put_decision(decision)
            self.audit.append("approval", {"decision": decision.id, "operator": operator,
                                           "verdict": "rejected"}, now)
            outbox.event("decision_rejected", now, decision=decision.id,
                         incident=decision.incident, operator=operator,
                         action=decision.action, target=decision.target)
            return decision
        return self.commit(change)

    def revoke(self, rule_id: str, operator: str) -> RuleRecord:
        """Withdraw one rule now. Its incident is then left to the operator: the hub will not
        decide again on it (an operator who revokes has overruled the policy)."""
        def change(outbox: Outbox, now: float) -> RuleRecord:
            record = self.store.get_rule(rule_id)
            if record is None:
                raise OperatorError(f"no rule {rule_id!r}")
            if record.state not in RULE_UNENDED:
                raise OperatorError(f"rule {rule_id} is already {record.state}")
            self.dispatch.revoke(record, operator, now, outbox)
            return record
        return self.commit(change)

    def _pending(self, decision_id: str) -> DecisionRecord:
        decision = self.store.get_decision(decision_id)
        if decision is None:
            raise OperatorError(f"no decision {decision_id!r}")
        if decision.state != "pending_approval":
            raise OperatorError(f"decision {decision_id} is {decision.state}, not waiting for "
                                "approval")
        return decision


def check_gateways(gateways: list[str]) -> list[str]:
    targets = list(dict.fromkeys(gateways))
    for gateway in targets:
        try:
            check_gateway_id(gateway)
        except ValueError as exc:
            raise OperatorError(str(exc)) from None
    return targets


def run_command(hub: Commandable, kind: str, argument: str, operator: str) -> str:
    """One queued command, as the CLI asked for it; the result line the CLI prints."""
    if kind == "approve":
        decision = hub.approve(argument, operator)
        rules = hub.store.rules_for_decision(decision.id)
        issued = ", ".join(f"{r.rule.id} ({r.gateway})" for r in rules) or "none"
        return f"approved {decision.id}: {decision.action} {decision.target}, rules {issued}"
    if kind == "reject":
        return f"rejected {hub.reject(argument, operator).id}"
    if kind == "model_push":
        try:
            request = json.loads(argument)
            version, gateways = str(request["version"]), list(request.get("gateways", []))
        except (ValueError, KeyError, TypeError):
            raise OperatorError(f"model_push: not a push request: {argument[:200]!r}") from None
        return hub.push_model(version, gateways, operator)
    if kind == "revoke":
        record = hub.revoke(argument, operator)
        return (f"revoked {record.rule.id}: {record.rule.action} {record.rule.target} "
                f"on {record.gateway}")
    raise OperatorError(f"unknown command {kind!r}")
