"""Decide: from a (merged) incident to the responses the hub will dispatch.

A `Policy` proposes `Decision`s; the `shield` then applies the hub's safety invariants to
whatever any policy proposed (the playbook today, a learned responder later), so no policy can
break them:

- an allowlisted address, network or MQTT identity is never targeted;
- a life-safety device is never quarantined or cut off from its broker without a human's
  approval; an action its profile lists under `needs_fallback` waits for a human too (who puts
  the fallback in place), and one its profile does not list at all is never taken;
- a response targets only what the attacker controls (its address, the identity the inventory
  gives that address, a presented identity only once shown compromised: see `targeting`);
- a decision that does not fit the rule vocabulary the gateways accept becomes no action, with
  the reason recorded, instead of a rule every gateway would refuse; so does any decision on an
  incident kind the contract does not know.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from atlas.link.incidents import KINDS, Incident
from atlas.link.rules import ACTIONS, Allowlist, Rule, RuleRejected, validate_rule
from atlas.central.decide.inventory import CRITICALITIES, DeviceEntry, Inventory
from atlas.central.decide.targeting import (Claim, controlled_targets, find_attacker,
                                            find_claim)
from atlas.central.store import CampaignRecord, DecisionRecord, HubIncident

if TYPE_CHECKING:
    from atlas.central.events import Event
    from atlas.central.ontology.query import BlastRadius

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


def no_graph(action: str, target: str) -> "BlastRadius | None":
    """The cost of a response when the hub has no city graph (yet): unknown."""
    return None


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
    # an MQTT identity the attacker presented that is not its own (see targeting.Claim)
    claim: Claim | None = None
    # the campaign the correlator put this incident in (its other incidents, links and why)
    campaign: CampaignRecord | None = None
    # blast_radius(action, target): what the response costs the city's critical services
    # (atlas.central.ontology.query.BlastRadius: the services failed or degraded, a cost), or
    # None while the hub has no city graph or the graph does not know the target
    blast_radius: Callable[[str, str], "BlastRadius | None"] = no_graph

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


def decision_context(inventory: Inventory, incident: HubIncident, now: float,
                     allowlist: Allowlist, previous: list[DecisionRecord] | None = None,
                     report: Incident | None = None, **extra: Any) -> DecisionContext:
    """The context a policy decides in: the attacker found by its address, never by the
    identity it presents (see targeting)."""
    attacker = find_attacker(inventory, incident)
    victim = (inventory.lookup_any(incident.dst_ip, "", incident.gateways)
              if incident.dst_ip else None)
    return DecisionContext(now=now, gateways=list(incident.gateways), attacker=attacker,
                           victim=victim, allowlist=allowlist, previous=list(previous or []),
                           report=report, claim=find_claim(inventory, incident, attacker, report),
                           **extra)


def respond(policy: Policy, incident: HubIncident, context: DecisionContext) -> list[Decision]:
    """The policy's proposals after the shield; for an incident kind the contract does not
    know, one "none" decision saying so (no policy is asked: nothing vetted it)."""
    if incident.kind not in KINDS:
        return [Decision(action=NO_ACTION, target=incident.src_ip, ttl=0.0,
                         reason=f"unknown incident kind {incident.kind[:64]!r}: recorded, "
                                "no rules (known kinds: atlas.link.incidents.KINDS)")]
    return [shield(p, incident, context) for p in policy.decide(incident, context)]


def shield(decision: Decision, incident: HubIncident, context: DecisionContext) -> Decision:
    """The decision as the hub may carry it out: same, needing approval, or suppressed."""
    if decision.action == NO_ACTION:
        return decision
    notes = []
    targets = controlled_targets(incident, context.attacker, context.claim)
    if decision.target not in targets:
        return _suppress(decision, f"target: {decision.target} is not what the attacker controls "
                                   f"(its address {incident.src_ip}"
                                   + (", its own MQTT id" if len(targets) > 1 else "") + ")")
    entry = targets[decision.target]
    # Protect every identity of the device the target hits, so allowlisting a device's MQTT
    # id also protects its address, and the other way round. Only facts count here: an
    # allowlisted identity the attacker merely presents protects nobody.
    hit = {decision.target} | ({entry.address, entry.client_id} - {""} if entry else set())
    listed = sorted(i for i in hit if context.allowlist.matches(i))
    if listed:
        return _suppress(decision, f"allowlisted ({', '.join(listed)})")
    problem = rule_problem(decision, context.now, context.allowlist)
    if problem:
        return _suppress(decision, problem)
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


def rule_problem(decision: Decision, now: float, allowlist: Allowlist = Allowlist()) -> str | None:
    """Why the gateways would refuse rules for this decision, or None if they would accept:
    the contract's one checker (validate_rule), with the hub's allowlist (gateways, brokers,
    the hub itself: every address no rule may name)."""
    if isinstance(decision.ttl, bool) or not isinstance(decision.ttl, (int, float)):
        return f"expires_at: ttl {decision.ttl!r} is not a number of seconds"
    probe = Rule(id="r-probe", action=decision.action, target=decision.target,
                 expires_at=now + decision.ttl, reason=decision.reason[:1024],
                 decision_id="d-probe", shadow=decision.shadow, params=dict(decision.params))
    try:
        validate_rule(probe, now=now, allowlist=allowlist, max_ttl=MAX_TTL)
    except RuleRejected as exc:
        return f"{exc.field}: {exc.problem}"
    return None
