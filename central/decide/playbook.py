"""Playbook: a table, incident kind x attacker class -> action and TTL.

The attacker class is the attacking device's criticality from the inventory (life_safety,
essential, ordinary), or `outside` for a host that is not an inventory device. Each cell:

    action     quarantine | filter | rate_limit | revoke_mqtt | none      (required)
    ttl        seconds the rules live (required unless action = "none")
    params     the action's parameters: rate_limit {pps}, filter {port, proto}
    escalate   a stronger action proposed as a second decision that waits for a human's approval
    escalate_params   its parameters, if it takes any
    fallback   quarantine | none: used instead of revoke_mqtt when the attacker has no MQTT
               identity (required when action or escalate is revoke_mqtt)
    shadow     true: record and report this cell's decisions, never enforce them

Built-in cells (DEFAULT_CELLS) cover every kind; central.toml overrides single cells, either
for every kind (`[decide.playbook.default]`) or for one (`[decide.playbook.mqtt_bruteforce]`).
A life-safety cell may not quarantine or revoke at once: that is what `escalate` is for.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from atlas.link.incidents import KINDS
from atlas.link.rules import ACTIONS
from atlas.link.rules import ACTION_PARAMS, MAX_PPS, PROTOCOLS
from atlas.central.decide import (ATTACKER_CLASSES, DISRUPTION, MAX_TTL,
                                  NEEDS_APPROVAL_FOR_LIFE_SAFETY, NO_ACTION, Decision,
                                  DecisionContext, Policy, profile_verdict)
from atlas.central.decide.inventory import DeviceEntry
from atlas.central.store import HubIncident

DEFAULT_ROW = "default"
CELL_KEYS = ("action", "ttl", "params", "escalate", "escalate_params", "fallback", "shadow")
FALLBACKS = ("quarantine", NO_ACTION)
STEP_DOWN_PPS = 50  # rate limit used when a profile refuses the cell's action
STOLEN_TTL = 900.0  # revocation of a stolen credential when the cell gives no TTL


class PlaybookError(ValueError):
    """A bad playbook cell; str() starts with the dotted key below `decide.playbook`."""


@dataclass(frozen=True)
class Cell:
    action: str
    ttl: float = 0.0
    params: Mapping[str, Any] = field(default_factory=dict)
    escalate: str = ""
    escalate_params: Mapping[str, Any] = field(default_factory=dict)
    fallback: str = ""
    shadow: bool = False


def _q(ttl: float) -> dict[str, Any]:
    return {"action": "quarantine", "ttl": ttl}


# Outside hosts are cut off; ordinary devices too (they are many and cheap to lose for minutes);
# essential and life-safety devices are slowed down and a human is asked about more. The
# anomaly detector flags what no class describes, so it gets gentler first steps.
DEFAULT_CELLS: dict[str, dict[str, dict[str, Any]]] = {
    DEFAULT_ROW: {
        "outside": _q(900),
        "ordinary": _q(600),
        "essential": {"action": "rate_limit", "ttl": 600, "params": {"pps": 50},
                      "escalate": "quarantine"},
        "life_safety": {"action": "rate_limit", "ttl": 300, "params": {"pps": 20},
                        "escalate": "quarantine"},
    },
    "mqtt_bruteforce": {
        "ordinary": {"action": "revoke_mqtt", "ttl": 900, "fallback": "quarantine"},
        "essential": {"action": "rate_limit", "ttl": 600, "params": {"pps": 20},
                      "escalate": "revoke_mqtt", "fallback": "none"},
    },
    "anomaly": {
        "outside": {"action": "rate_limit", "ttl": 300, "params": {"pps": 100},
                    "escalate": "quarantine"},
        "ordinary": {"action": "rate_limit", "ttl": 300, "params": {"pps": 100},
                     "escalate": "quarantine"},
        "essential": {"action": "none", "ttl": 300, "escalate": "rate_limit",
                      "escalate_params": {"pps": 50}},
        "life_safety": {"action": "none", "ttl": 300, "escalate": "rate_limit",
                        "escalate_params": {"pps": 20}},
    },
    # Forged readings: the publisher's MQTT identity is what forges them. Revoking it also cuts
    # the genuine device when the credentials are its own, so only ordinary devices lose it at
    # once; an essential or life-safety device keeps publishing (its data flagged) until a
    # human decides. An outside host (a spoofer) is cut off.
    "false_data": {
        "outside": _q(900),
        "ordinary": {"action": "revoke_mqtt", "ttl": 900, "fallback": "quarantine"},
        "essential": {"action": "none", "ttl": 600, "escalate": "revoke_mqtt", "fallback": "none"},
        "life_safety": {"action": "none", "ttl": 300, "escalate": "revoke_mqtt", "fallback": "none"},
    },
    # A device talking where its profile forbids (Mirai scanning, exfiltration): compromised.
    # Ordinary devices are isolated; critical ones are slowed to a trickle (their own MQTT
    # traffic still fits) while a human is asked about isolation.
    "profile_violation": {
        "outside": _q(900),
        "ordinary": _q(900),
        "essential": {"action": "rate_limit", "ttl": 600, "params": {"pps": 20},
                      "escalate": "quarantine"},
        "life_safety": {"action": "rate_limit", "ttl": 300, "params": {"pps": 20},
                        "escalate": "quarantine"},
    },
}


def _params(action: str, value: Any, key: str) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise PlaybookError(f"{key}: expected a table")
    wanted = ACTION_PARAMS.get(action, ())
    extra = sorted(set(value) - set(wanted))
    if extra:
        raise PlaybookError(f"{key}.{extra[0]}: {action} takes no such parameter"
                            + (f" (it takes {', '.join(wanted)})" if wanted else ""))
    missing = [k for k in wanted if k not in value]
    if missing:
        raise PlaybookError(f"{key}.{missing[0]}: {action} needs it")
    out = dict(value)
    if "pps" in out and not _int_in(out["pps"], 1, MAX_PPS):
        raise PlaybookError(f"{key}.pps: expected an integer in 1..{MAX_PPS}")
    if "port" in out and not _int_in(out["port"], 1, 65535):
        raise PlaybookError(f"{key}.port: expected an integer in 1..65535")
    if "proto" in out and out["proto"] not in PROTOCOLS:
        raise PlaybookError(f"{key}.proto: expected one of {', '.join(PROTOCOLS)}")
    return out


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_cell(raw: Any, key: str, attacker_class: str) -> Cell:
    """Validate one cell table; `key` is its dotted name for error messages."""
    if not isinstance(raw, Mapping):
        raise PlaybookError(f"{key}: expected a table with {', '.join(CELL_KEYS)}")
    unknown = sorted(set(raw) - set(CELL_KEYS))
    if unknown:
        raise PlaybookError(f"{key}.{unknown[0]}: unknown key (known: {', '.join(CELL_KEYS)})")
    choices = ACTIONS + (NO_ACTION,)
    action = raw.get("action")
    if action not in choices:
        raise PlaybookError(f"{key}.action: expected one of {', '.join(choices)}, got {action!r}")
    ttl = raw.get("ttl", 0)
    if action != NO_ACTION or raw.get("escalate"):
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
            raise PlaybookError(f"{key}.ttl: expected seconds in (0, {MAX_TTL:g}], got {ttl!r}")
    params = _params(action, raw.get("params"), f"{key}.params") if action != NO_ACTION else {}
    if action == NO_ACTION and raw.get("params"):
        raise PlaybookError(f"{key}.params: action \"none\" takes no parameters")
    escalate = raw.get("escalate", "")
    escalate_params: dict[str, Any] = {}
    if escalate:
        if escalate not in ACTIONS:
            raise PlaybookError(f"{key}.escalate: expected one of {', '.join(ACTIONS)}, "
                                f"got {escalate!r}")
        if DISRUPTION[escalate] <= DISRUPTION[action]:
            raise PlaybookError(f"{key}.escalate: {escalate} is not stronger than {action}")
        escalate_params = _params(escalate, raw.get("escalate_params"), f"{key}.escalate_params")
    elif raw.get("escalate_params"):
        raise PlaybookError(f"{key}.escalate_params: given without escalate")
    fallback = raw.get("fallback", "")
    if fallback and fallback not in FALLBACKS:
        raise PlaybookError(f"{key}.fallback: expected one of {', '.join(FALLBACKS)}")
    if "revoke_mqtt" in (action, escalate) and not fallback:
        raise PlaybookError(f"{key}.fallback: required with revoke_mqtt (what to do when the "
                            "attacker has no MQTT identity): quarantine or none")
    shadow = raw.get("shadow", False)
    if not isinstance(shadow, bool):
        raise PlaybookError(f"{key}.shadow: expected true or false")
    if attacker_class == "life_safety":
        for name, chosen in (("action", action), ("fallback", fallback)):
            if chosen in NEEDS_APPROVAL_FOR_LIFE_SAFETY:
                raise PlaybookError(f"{key}.{name}: {chosen} of a life-safety device needs a "
                                    f"human's approval; use escalate = \"{chosen}\" and a "
                                    "gentler action")
    return Cell(action=action, ttl=float(ttl), params=params, escalate=escalate,
                escalate_params=escalate_params, fallback=fallback, shadow=shadow)


def parse_cells(table: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], Cell]:
    """Validate a playbook table {row: {attacker class: cell}} into {(row, class): Cell}."""
    rows = (DEFAULT_ROW,) + KINDS
    out = {}
    if not isinstance(table, Mapping):
        raise PlaybookError("expected a table of incident kinds")
    for row, cells in table.items():
        if row not in rows:
            raise PlaybookError(f"{row}: unknown incident kind (known: {', '.join(rows)})")
        if not isinstance(cells, Mapping):
            raise PlaybookError(f"{row}: expected a table of attacker classes")
        for cls, raw in cells.items():
            if cls not in ATTACKER_CLASSES:
                raise PlaybookError(f"{row}.{cls}: unknown attacker class (known: "
                                    f"{', '.join(ATTACKER_CLASSES)})")
            out[(row, cls)] = parse_cell(raw, f"{row}.{cls}", cls)
    return out


class Playbook(Policy):
    name = "playbook"

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 shadow: bool = False):
        self.cells = parse_cells(DEFAULT_CELLS)
        self.cells.update(parse_cells(overrides or {}))
        self.shadow = shadow
        missing = [c for c in ATTACKER_CLASSES if (DEFAULT_ROW, c) not in self.cells]
        assert not missing, f"built-in playbook lacks default cells {missing}"

    def cell(self, kind: str, attacker_class: str) -> Cell:
        return self.cells.get((kind, attacker_class)) or self.cells[(DEFAULT_ROW, attacker_class)]

    def table(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The effective table, for `atlas-central check` and docs."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in (DEFAULT_ROW,) + KINDS:
            out[kind] = {cls: dataclasses.asdict(self.cell(kind, cls)) for cls in ATTACKER_CLASSES}
        return out

    def decide(self, incident: HubIncident, context: DecisionContext) -> list[Decision]:
        cls = context.attacker_class
        cell = self.cell(incident.kind, cls)
        where = f"playbook {incident.kind}/{cls}"
        shadow = self.shadow or cell.shadow
        who = f"{incident.src_ip}" + (f" ({context.attacker.profile})" if context.attacker else
                                      " (outside host)")
        if context.claim is not None:
            who += f", which {context.claim.note(incident.src_ip)}"
        first = self._decision(cell.action, cell.params, cell, incident, context,
                               f"{incident.kind} from {who}: {where}", shadow)
        later = []
        if cell.escalate:
            later.append(dataclasses.replace(
                self._decision(cell.escalate, cell.escalate_params, cell, incident, context,
                               f"{incident.kind} from {who}: {where} escalation", shadow),
                requires_approval=True))
        if context.attacker is not None and first.action != NO_ACTION and \
                profile_verdict(context.attacker, first.action) != "ok":
            # The device's profile does not take this action at once: act with the strongest
            # gentler action it takes, and ask a human about the original.
            if not any(d.action == first.action for d in later):
                later.insert(0, dataclasses.replace(first, requires_approval=True))
            first = self._step_down(first, context.attacker, cell, incident.src_ip)
        out = [first] + [d for d in later if d.action != NO_ACTION]
        stolen = self._revoke_stolen(cell, incident, context, where, shadow)
        if stolen is not None and not any(d.action == "revoke_mqtt" and d.target == stolen.target
                                           for d in out):
            out.append(stolen)
        return out

    def _revoke_stolen(self, cell: Cell, incident: HubIncident, context: DecisionContext,
                       where: str, shadow: bool) -> Decision | None:
        """A presented identity whose login the broker accepted from the attacker's address is
        a stolen credential: revoke it too (the shield asks a human when its owner is
        life-safety or its profile says so)."""
        claim = context.claim
        if claim is None or not claim.compromised:
            return None
        ttl = cell.ttl or self.cell(DEFAULT_ROW, context.attacker_class).ttl or STOLEN_TTL
        return Decision(action="revoke_mqtt", target=claim.identity, ttl=ttl, shadow=shadow,
                        reason=f"{incident.kind} from {incident.src_ip}, which "
                               f"{claim.note(incident.src_ip)}: {where}")

    @staticmethod
    def _step_down(decision: Decision, entry: DeviceEntry, cell: Cell, address: str) -> Decision:
        reason = f"{decision.reason}; profile {entry.profile} does not take {decision.action}"
        if profile_verdict(entry, "rate_limit") == "ok" and \
                DISRUPTION["rate_limit"] < DISRUPTION[decision.action]:
            pps = cell.params.get("pps", STEP_DOWN_PPS)
            return dataclasses.replace(decision, action="rate_limit", params={"pps": pps},
                                       target=address,
                                       reason=reason + ", rate_limit instead")
        return dataclasses.replace(decision, action=NO_ACTION, params={}, ttl=0.0,
                                   reason=reason + ", no gentler action it takes")

    def _decision(self, action: str, params: Mapping[str, Any], cell: Cell,
                  incident: HubIncident, context: DecisionContext, reason: str,
                  shadow: bool) -> Decision:
        target = incident.src_ip
        if action == "revoke_mqtt":
            identity = _mqtt_identity(incident, context)
            if identity:
                target = identity
            else:
                action, params = cell.fallback, {}
                reason += f"; no MQTT identity, fallback {cell.fallback}"
        if action == NO_ACTION:
            return Decision(action=NO_ACTION, target=target, ttl=0.0, reason=reason,
                            shadow=shadow)
        return Decision(action=action, target=target, ttl=cell.ttl, reason=reason,
                        params=dict(params), shadow=shadow)


def _mqtt_identity(incident: HubIncident, context: DecisionContext) -> str:
    """The attacker's own MQTT account: the one the inventory gives its address. What it
    presents on the wire is a claim (another device's, or an account the inventory does not
    list) and is revoked only as a stolen credential (_revoke_stolen)."""
    if context.attacker is not None and context.attacker.client_id:
        return context.attacker.client_id
    return ""
