"""The decide stage at the hub: an incident with new evidence -> the policy's proposals -> the
shield -> decisions recorded (with their audit rows) and rules issued through dispatch, all in
the caller's store transaction."""
from __future__ import annotations

import dataclasses
import logging

from atlas.link.incidents import Incident
from atlas.central.audit import AuditLog
from atlas.central.decide import (NO_ACTION, Allowlist, Decision, DecisionContext, Policy,
                                  decision_context, no_graph, respond)
from atlas.central.decide.inventory import Inventory
from atlas.central.dispatch import RULE_LIVE, Dispatcher
from atlas.central.ontology.knowledge import CityKnowledge, risk_words
from atlas.central.outbox import Outbox, new_id
from atlas.central.store import DecisionRecord, HubIncident, Store

log = logging.getLogger("atlas.central.decide")

# Decision states in which a decision still stands (its rules live, or it waits for a human).
LIVE_DECISIONS = ("active", "shadow", "pending_approval")
# Decision states that never change again without an operator, so a policy proposing the same
# response again is not recorded again.
SETTLED_DECISIONS = ("none", "suppressed", "rejected")


class Decider:
    def __init__(self, store: Store, policy: Policy, audit: AuditLog, dispatch: Dispatcher,
                 inventory: Inventory, allowlist: Allowlist, counters: dict[str, int],
                 knowledge: CityKnowledge | None = None):
        """knowledge: the city graph (its cost of each response goes into the policy's
        context and each decision's reason); None, or not ready yet: decide without it."""
        self.store = store
        self.knowledge = knowledge
        self.policy = policy
        self.audit = audit
        self.dispatch = dispatch
        self.inventory = inventory
        self.allowlist = allowlist
        self.counters = counters

    def extend(self, incident: HubIncident, gateway_id: str, now: float, outbox: Outbox) -> None:
        """The attacker now shows up behind another gateway: standing decisions cover it too."""
        for decision in self.store.decisions_for_incident(incident.id):
            if decision.state not in LIVE_DECISIONS or gateway_id in decision.gateways:
                continue
            decision.gateways = decision.gateways + [gateway_id]
            self.store.put_decision(decision)
            if decision.state in RULE_LIVE and (decision.expires_at or 0) > now:
                self.dispatch.issue(decision, gateway_id, now, outbox)

    def context(self, incident: HubIncident, report: Incident | None, now: float,
                previous: list[DecisionRecord]) -> DecisionContext:
        return decision_context(self.inventory, incident, now, self.allowlist, previous, report,
                                campaign=self.store.campaign_of(incident.id),
                                blast_radius=self._cost_for(incident))

    def _cost_for(self, incident: HubIncident):
        knowledge = self.knowledge
        if knowledge is None or knowledge.query is None:
            return no_graph
        gateway = incident.gateways[0] if incident.gateways else ""
        return lambda action, target: knowledge.blast_radius(action, target, gateway)

    def decide(self, incident: HubIncident, report: Incident | None, now: float,
               outbox: Outbox) -> None:
        previous = self.store.decisions_for_incident(incident.id)
        if any(d.state == "revoked" for d in previous):
            return  # an operator overruled the policy on this incident
        context = self.context(incident, report, now, previous)
        try:
            decisions = respond(self.policy, incident, context)
        except Exception:  # noqa: BLE001 - a policy bug must not lose the telemetry batch
            log.exception("policy %s failed on incident %s", self.policy.name, incident.id)
            return
        campaign = context.campaign.id if context.campaign is not None else ""
        for decision in decisions:
            if already_decided(decision, previous):
                continue
            self.record(with_cost(decision, context), incident, campaign, now, outbox)

    def record(self, proposal: Decision, incident: HubIncident, campaign: str, now: float,
               outbox: Outbox) -> DecisionRecord:
        state = _state_of(proposal)
        decision = DecisionRecord(
            id=new_id("d"), incident=incident.id, policy=self.policy.name,
            action=proposal.action, target=proposal.target, params=dict(proposal.params),
            ttl=float(proposal.ttl), reason=proposal.reason, gateways=list(incident.gateways),
            requires_approval=proposal.requires_approval, shadow=proposal.shadow, state=state,
            created_at=now, expires_at=now + proposal.ttl if state in RULE_LIVE else None,
            campaign=campaign)
        self.store.put_decision(decision)
        self.audit.append("decision", decision.to_dict(), now)
        self.counters["decisions"] += 1
        outbox.event("decision_made", now, decision=decision.id, incident=incident.id,
                     policy=decision.policy, action=decision.action, target=decision.target,
                     state=state, campaign=campaign, gateways=list(decision.gateways))
        if state in RULE_LIVE:
            for gateway in decision.gateways:
                self.dispatch.issue(decision, gateway, now, outbox)
        if state == "pending_approval":
            log.warning("decision %s waits for approval: %s %s (%s)", decision.id,
                        decision.action, decision.target, decision.reason)
        return decision


def with_cost(decision: Decision, context: DecisionContext) -> Decision:
    """The decision with the graph's cost of its action named in its reason (the services it
    would fail or degrade). Only recorded: the action stays what the shield let through."""
    if decision.action == NO_ACTION:
        return decision
    radius = context.blast_radius(decision.action, decision.target)
    if radius is None:
        return decision
    return dataclasses.replace(decision, reason=f"{decision.reason}; {risk_words(radius)}")


def already_decided(decision: Decision, previous: list[DecisionRecord]) -> bool:
    # The same response that still stands (or was settled) is not decided twice; one that
    # has expired is, if the attack goes on.
    for d in previous:
        if d.action == decision.action and d.target == decision.target and (
                d.state in LIVE_DECISIONS or d.state in SETTLED_DECISIONS):
            return True
    return False


def _state_of(proposal: Decision) -> str:
    if proposal.suppressed:
        return "suppressed"
    if proposal.action == NO_ACTION:
        return "none"
    if proposal.requires_approval:
        return "pending_approval"
    return "shadow" if proposal.shadow else "active"

