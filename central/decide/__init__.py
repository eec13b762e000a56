"""Decide: from a (merged) incident to the responses the hub will dispatch.

A `Policy` proposes `Decision`s; the `shield` then applies the hub's safety invariants to
whatever any policy proposed (the playbook today, a learned responder later), so no policy can
break them:

- an allowlisted address, network or MQTT identity is never targeted;
- a life-safety device is never quarantined or cut off from its broker without a human's
  approval; an action its profile lists under `needs_fallback` waits for a human too (who puts
  the fallback in place), and one its profile does not list at all is never taken;
- a decision that does not fit the rule vocabulary the gateways accept becomes no action, with
  the reason recorded, instead of a rule every gateway would refuse.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atlas.link.incidents import Incident
from atlas.link.rules import ACTIONS, Allowlist, Rule, RuleRejected, validate_rule
from atlas.central.decide.inventory import CRITICALITIES, DeviceEntry
from atlas.central.store import CampaignRecord, DecisionRecord, HubIncident

if TYPE_CHECKING:
    from atlas.central.events import Event

NO_ACTION = "none"
# How much each action disrupts the device it targets; the shield and the playbook step down
# this ladder when an action is not allowed.
DISRUPTION = {NO_ACTION: 0, "rate_limit": 1, "filter": 2, "revoke_mqtt": 3, "quarantine": 4}
assert set(DISRUPTION) == set(ACTIONS) | {NO_ACTION}
# Attacker classes: the device criticalities, plus hosts that are not in the inventory.
OUTSIDE = "outside"
ATTACKER_CLASSES = (OUTSIDE,) + CRITICALITIES
# Actions a life-safety device never gets without a human's approval.
NEEDS_APPROVAL_FOR_LIFE_SAFETY = ("quarantine", "revoke_mqtt")
MAX_TTL = 7 * 86400.0


@dataclass
class Decision:
    """A response a policy proposes for one incident."""

    action: str  # one of ACTIONS, or "none" (record only)
    target: str  # an address, or the MQTT identity for revoke_mqtt
    ttl: float  # seconds, counted from when the rules are issued
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    requires_approval: bool = False
    shadow: bool = False
    # The hub sends the rules to every gateway where the attacker was seen, and to any gateway
    # that reports it later while the decision lasts.
    suppressed: bool = False  # set by the shield: proposed, but not allowed


@dataclass
class DecisionContext:
    now: float
    gateways: list[str]  # where the attacker was seen, first reporter first
    attacker: DeviceEntry | None  # the attacker's inventory entry; None = an outside host
    victim: DeviceEntry | None
    allowlist: Allowlist
    previous: list[DecisionRecord] = field(default_factory=list)  # earlier, same incident
    report: Incident | None = None  # the agent report that led here
    # the campaign the correlator put this incident in (its other incidents, links and why)
    campaign: CampaignRecord | None = None

    @property
    def attacker_class(self) -> str:
        return self.attacker.criticality if self.attacker else OUTSIDE


class Policy(abc.ABC):
    """Maps an incident to decisions. Must be pure: no I/O, no clock but context.now."""

    name: str = "policy"

    @abc.abstractmethod
    def decide(self, incident: HubIncident, context: DecisionContext) -> list[Decision]: ...

    def observe(self, event: "Event") -> None:
        """An outcome (atlas.central.events.OUTCOME_KINDS: rule acked/refused/expired/revoked,
        decision approved/rejected, incident closed), after it is committed, in the event
        bus's thread. A learning policy updates itself here; the default ignores it."""


def _identities(incident: HubIncident, context: DecisionContext) -> set[str]:
    ids = {incident.src_ip, incident.device}
    if context.attacker is not None:
        ids |= {context.attacker.address, context.attacker.client_id}
    return {i for i in ids if i}


def shield(decision: Decision, incident: HubIncident, context: DecisionContext) -> Decision:
    """The decision as the hub may carry it out: same, needing approval, or suppressed."""
    if decision.action == NO_ACTION:
        return decision
    notes = []
    attacker_ids = _identities(incident, context)
    # The target may be any identity of the attacker: protect all of them, so allowlisting a
    # device's MQTT id also protects its address, and the other way round.
    hit = {decision.target} | (attacker_ids if decision.target in attacker_ids else set())
    listed = sorted(i for i in hit if context.allowlist.matches(i))
    if listed:
        return _suppress(decision, f"allowlisted ({', '.join(listed)})")
    problem = rule_problem(decision, context.now)
    if problem:
        return _suppress(decision, problem)
    entry = context.attacker if decision.target in attacker_ids else None
    if entry is not None:
        verdict = profile_verdict(entry, decision.action)
        if verdict == "never":
            return _suppress(decision, f"{decision.action} is never applied to profile "
                                       f"{entry.profile!r}")
        if verdict == "after_fallback":
            # said even when the policy already asked for approval: the approver must know
            notes.append(f"{decision.action} of a {entry.profile} only after its fallback is "
                         f"in place: {entry.fallback or '(none given)'}")
        elif (not decision.requires_approval and entry.criticality == "life_safety"
              and decision.action in NEEDS_APPROVAL_FOR_LIFE_SAFETY):
            notes.append(f"{decision.action} of a life-safety device needs approval")
    if notes:
        return dataclasses.replace(decision, requires_approval=True,
                                   reason=f"{decision.reason}; shield: {'; '.join(notes)}")
    return decision


def profile_verdict(entry: DeviceEntry, action: str) -> str:
    """"ok" (may be applied at once), "after_fallback" (only with a human's approval, once
    the profile's fallback is in place) or "never", from the device's profile."""
    if entry.acceptable is None or action in entry.acceptable:
        return "ok"
    if action in entry.needs_fallback:
        return "after_fallback"
    return "never"


def _suppress(decision: Decision, why: str) -> Decision:
    return dataclasses.replace(decision, suppressed=True,
                               reason=f"{decision.reason}; shield: suppressed, {why}")


def rule_problem(decision: Decision, now: float) -> str | None:
    """Why the gateways would refuse rules for this decision, or None if they would accept."""
    if not (isinstance(decision.ttl, (int, float)) and 0 < decision.ttl <= MAX_TTL):
        return f"ttl {decision.ttl!r} is not in (0, {MAX_TTL:g}] seconds"
    probe = Rule(id="r-probe", action=decision.action, target=decision.target,
                 expires_at=now + decision.ttl, reason=decision.reason[:1024],
                 decision_id="d-probe", shadow=decision.shadow, params=dict(decision.params))
    try:
        validate_rule(probe, now=now)
    except RuleRejected as exc:
        return f"{exc.field}: {exc.problem}"
    return None
