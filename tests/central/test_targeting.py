"""Targeting an attacker cannot steer: the attacker is who its address is; an identity it
presents is a claim, revoked only when a login with it was accepted; unknown kinds and
targets the contract's checker refuses never become rules."""
from __future__ import annotations

import pytest

from atlas.link.incidents import LOGINS_ACCEPTED, Incident
from atlas.central.decide import (NO_ACTION, Allowlist, Decision, Policy, decision_context,
                                  respond, rule_problem, shield)
from atlas.central.decide.inventory import DeviceEntry, Inventory
from atlas.central.decide.playbook import Playbook
from atlas.central.store import HubIncident

OUTSIDER = "10.0.0.66"  # not in the inventory
METER, METER_ID = "10.0.2.7", "meter-7"
OTHER_METER, OTHER_ID = "10.0.2.8", "meter-8"
CALLBOX, CALLBOX_ID = "10.0.1.5", "ecb-0001"

INVENTORY = Inventory([
    DeviceEntry(address=CALLBOX, client_id=CALLBOX_ID, gateway="", profile="emergency_call_box",
                criticality="life_safety", acceptable=("rate_limit", "filter"),
                needs_fallback=("quarantine", "revoke_mqtt"), fallback="cellular line"),
    DeviceEntry(address=METER, client_id=METER_ID, gateway="", profile="smart_meter",
                criticality="ordinary"),
    DeviceEntry(address=OTHER_METER, client_id=OTHER_ID, gateway="", profile="smart_meter",
                criticality="ordinary"),
])


def incident(src=OUTSIDER, device="", kind="mqtt_bruteforce") -> HubIncident:
    return HubIncident(id="i-1", kind=kind, src_ip=src, device=device or src, dst_ip="10.0.0.2",
                       first_seen=1.0, last_seen=2.0, score=0.9, packets=10, state="open",
                       created_at=2.0, gateways=["gw1"])


def report(inc: HubIncident, accepted: dict | None = None) -> Incident:
    return Incident(id="gw1/x", kind=inc.kind, src_ip=inc.src_ip, dst_ip=inc.dst_ip,
                    device=inc.device, gateway="gw1", time=1.0, last_seen=2.0, score=0.9,
                    model_version="m", evidence={LOGINS_ACCEPTED: accepted} if accepted else {})


def hub_decisions(inc, accepted=None, allow=(), policy=None):
    ctx = decision_context(INVENTORY, inc, 1000.0, Allowlist.parse(allow),
                           report=report(inc, accepted))
    return ctx, respond(policy or Playbook(), inc, ctx)


def live(decisions):
    """What would become rules at once."""
    return sorted((d.action, d.target) for d in decisions
                  if d.action != NO_ACTION and not d.suppressed and not d.requires_approval)


def touched(decisions):
    """Every target any decision names, rules or approvals to come."""
    return {d.target for d in decisions if d.action != NO_ACTION and not d.suppressed}


def test_outside_host_presenting_a_real_devices_id_is_cut_off_by_address():
    ctx, out = hub_decisions(incident(device=METER_ID))
    assert ctx.attacker is None and ctx.claim.owner.address == METER  # looked up by address
    assert live(out) == [("quarantine", OUTSIDER)]
    assert touched(out) == {OUTSIDER}  # the real meter: no rule, no revocation
    assert "spoofed" in out[0].reason and METER_ID in out[0].reason


def test_spoofing_a_life_safety_id_does_not_downgrade_the_response():
    _, out = hub_decisions(incident(device=CALLBOX_ID, kind="mqtt_flood"))
    assert live(out) == [("quarantine", OUTSIDER)]  # not the call box's gentle rate limit
    assert not any(d.requires_approval for d in out)
    assert touched(out) == {OUTSIDER}
    assert "emergency_call_box" in out[0].reason


def test_an_unlisted_presented_identity_is_never_revoked():
    # an account the inventory does not list (a backend, the collector...) is a claim too
    _, out = hub_decisions(incident(device="collector"))
    assert touched(out) == {OUTSIDER}


def test_a_device_at_its_own_address_presenting_another_id_loses_its_own_account():
    _, out = hub_decisions(incident(src=METER, device=OTHER_ID))
    assert live(out) == [("revoke_mqtt", METER_ID)]
    assert touched(out) == {METER_ID}
    assert OTHER_ID in out[0].reason and "spoofed" in out[0].reason


def test_an_accepted_login_is_a_stolen_credential_and_is_revoked_with_the_address():
    _, out = hub_decisions(incident(device=METER_ID), accepted={METER_ID: 1})
    assert live(out) == [("quarantine", OUTSIDER), ("revoke_mqtt", METER_ID)]
    assert "credential compromised" in out[-1].reason
    # a login accepted under ANOTHER id is no evidence about this one
    _, out = hub_decisions(incident(device=METER_ID), accepted={"someone-else": 3})
    assert touched(out) == {OUTSIDER}


def test_a_stolen_life_safety_credential_is_revoked_only_with_approval():
    _, out = hub_decisions(incident(device=CALLBOX_ID), accepted={CALLBOX_ID: 2})
    assert live(out) == [("quarantine", OUTSIDER)]
    [revoke] = [d for d in out if d.action == "revoke_mqtt"]
    assert revoke.target == CALLBOX_ID and revoke.requires_approval and not revoke.suppressed
    assert "cellular line" in revoke.reason  # its fallback, for the approver


@pytest.mark.parametrize("evidence", [{METER_ID: 0}, {METER_ID: True}, {METER_ID: "1"}, [METER_ID]])
def test_malformed_login_evidence_proves_nothing(evidence):
    inc = incident(device=METER_ID)
    bad = report(inc)
    bad.evidence = {LOGINS_ACCEPTED: evidence}
    ctx = decision_context(INVENTORY, inc, 1000.0, Allowlist(), report=bad)
    assert not ctx.claim.compromised


class Steered(Policy):
    """A (future, learned) policy that targets whatever the incident names."""

    name = "steered"

    def __init__(self, action, target):
        self.action, self.target = action, target

    def decide(self, incident, context):
        return [Decision(self.action, self.target, 60, "learned")]


@pytest.mark.parametrize("action, target", [
    ("revoke_mqtt", METER_ID),  # the presented identity, no evidence
    ("quarantine", METER),  # the address of the device whose id was presented
    ("quarantine", "10.0.0.2"),  # the victim
])
def test_the_shield_refuses_any_target_the_attacker_does_not_control(action, target):
    _, [out] = hub_decisions(incident(device=METER_ID), policy=Steered(action, target))
    assert out.suppressed and "not what the attacker controls" in out.reason


def test_an_allowlisted_identity_presented_by_the_attacker_protects_nobody():
    _, out = hub_decisions(incident(device="ops-console"), allow=["ops-console"])
    assert live(out) == [("quarantine", OUTSIDER)]


@pytest.mark.parametrize("kind", ["not_a_kind", "", "QUARANTINE_ME"])
def test_unknown_incident_kinds_are_recorded_as_none_with_the_reason(kind):
    _, [out] = hub_decisions(incident(kind=kind))
    assert out.action == NO_ACTION and not out.suppressed
    assert "unknown incident kind" in out.reason


@pytest.mark.parametrize("src, allow, why", [
    ("127.0.0.1", (), "loopback"),
    ("169.254.3.4", (), "link-local"),
    ("224.0.0.251", (), "multicast"),
    ("10.0.0.1", ("10.0.0.1",), "allowlisted"),  # the gateway / broker, from the config
    ("10.0.9.20", ("10.0.9.0/24",), "allowlisted"),
])
def test_targets_the_contracts_checker_refuses_are_never_rules(src, allow, why):
    _, out = hub_decisions(incident(src=src, kind="mqtt_flood"), allow=allow)
    assert out and all(d.suppressed for d in out), out
    assert why in out[0].reason
    assert why in (rule_problem(Decision("quarantine", src, 60, "r"), 1000.0,
                                Allowlist.parse(allow)) or "allowlisted")


def test_the_shield_names_the_checkers_field():
    inc = incident(src="127.0.0.1", kind="mqtt_flood")
    ctx = decision_context(INVENTORY, inc, 1000.0, Allowlist())
    out = shield(Decision("quarantine", "127.0.0.1", 60, "r"), inc, ctx)
    assert out.suppressed and "target: 127.0.0.1 is a loopback address" in out.reason


def test_a_presented_id_is_quoted_and_cut_in_the_reason():
    _, out = hub_decisions(incident(device="x" * 5000 + "\n; drop"))
    assert len(out[0].reason) < 400 and "\n" not in out[0].reason
