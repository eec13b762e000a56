"""Targeting: who the attacker is, from what the attacker cannot choose.

A gateway reports the attacker's address (what completed a TCP handshake through the gateway:
a host cannot choose another device's address and still talk to the broker) and the MQTT
client id the attacker presented in CONNECT. The address is a fact; the client id is a claim,
free text that any host may send. So:

- The attacker is looked up in the inventory by its ADDRESS (behind the reporting gateways),
  never by the identity it presents: claiming a life-safety device's id does not make an
  outside host gentle to respond to.
- Responses target what the attacker controls: its address, or the MQTT identity the
  inventory gives that address (its own account).
- A presented identity is revoked only on evidence that the credential itself is compromised:
  the broker ACCEPTED a login with it from the attacker's address (the report's evidence
  `LOGINS_ACCEPTED`). Failed guesses at a password are no such evidence.
- A presented identity that the inventory gives to another device at another address is
  evidence of spoofing: it is recorded in the decision's reason, and changes no target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from atlas.link.incidents import LOGINS_ACCEPTED, Incident
from atlas.central.decide.inventory import DeviceEntry, Inventory
from atlas.central.store import HubIncident


@dataclass(frozen=True)
class Claim:
    """An MQTT identity the attacker presented that the inventory does not give its address."""

    identity: str
    owner: DeviceEntry | None  # the inventory device that identity belongs to, if any
    compromised: bool  # a login with it was accepted from the attacker's address

    @property
    def spoofed(self) -> bool:
        return self.owner is not None

    def note(self, address: str) -> str:
        """The claim in words, for a decision's reason."""
        # the id is attacker-supplied text: quoted, and cut to what an id may be
        text = f"presents MQTT id {self.identity[:128]!r}"
        if self.owner is not None:
            where = self.owner.address or "another address"
            text += f" of {self.owner.profile} at {where} (spoofed)"
        if self.compromised:
            text += f"; a login with it was accepted from {address}: credential compromised"
        return text


def find_attacker(inventory: Inventory, incident: HubIncident) -> DeviceEntry | None:
    """The inventory device at the attacker's address, behind the gateways that saw it."""
    return inventory.lookup_any(incident.src_ip, "", incident.gateways)


def presented_identity(incident: HubIncident) -> str:
    """The MQTT client id the attacker presented ("" if the gateway decoded none)."""
    return incident.device if incident.device and incident.device != incident.src_ip else ""


def find_claim(inventory: Inventory, incident: HubIncident, attacker: DeviceEntry | None,
               report: Incident | None) -> Claim | None:
    """The identity the attacker presented, unless it is the one its own address holds."""
    identity = presented_identity(incident)
    if not identity or (attacker is not None and identity == attacker.client_id):
        return None
    owner = inventory.by_client_id(identity)
    if owner is not None and attacker is not None and owner == attacker:
        return None
    return Claim(identity, owner, logins_accepted(report, identity) > 0)


def logins_accepted(report: Incident | None, identity: str) -> int:
    """How many logins as `identity` the broker accepted from the attacker, per the report."""
    if report is None or not isinstance(report.evidence, Mapping):
        return 0
    counts: Any = report.evidence.get(LOGINS_ACCEPTED)
    if not isinstance(counts, Mapping):
        return 0
    value = counts.get(identity, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def controlled_targets(incident: HubIncident, attacker: DeviceEntry | None,
                       claim: Claim | None) -> dict[str, DeviceEntry | None]:
    """What a response may target, each with the inventory device it would hit (None: an
    outside host): the attacker's address, its own inventory identity, and a presented
    identity only once it is known to be compromised."""
    out: dict[str, DeviceEntry | None] = {incident.src_ip: attacker}
    if attacker is not None and attacker.client_id:
        out[attacker.client_id] = attacker
    if claim is not None and claim.compromised:
        out[claim.identity] = claim.owner
    return out
