"""Decide: the playbook table, the safety shield, the allowlist, the inventory, shadow mode."""
from __future__ import annotations

import json

import pytest

from atlas.link.incidents import KINDS
from atlas.central.config import ConfigError, parse_config
from atlas.central.decide import (ATTACKER_CLASSES, NO_ACTION, Allowlist, Decision,
                                  DecisionContext, shield)
from atlas.central.decide.inventory import (DeviceEntry, InventoryError,
                                            ProfileInfo, default_profiles, load_inventory)
from atlas.central.decide.playbook import DEFAULT_CELLS, Playbook, PlaybookError, parse_cells
from atlas.central.store import HubIncident

ATTACKER = "10.0.0.66"


def incident(kind="mqtt_flood", src=ATTACKER, device=None) -> HubIncident:
    return HubIncident(id="i-1", kind=kind, src_ip=src, device=device or src, dst_ip="10.0.0.2",
                       first_seen=1.0, last_seen=2.0, score=0.9, packets=10, state="open",
                       created_at=2.0, gateways=["gw1"])


def entry(criticality="ordinary", profile="smart_meter", client_id="", address=ATTACKER,
          acceptable=None, needs_fallback=(), fallback="") -> DeviceEntry:
    return DeviceEntry(address=address, client_id=client_id, gateway="gw1", profile=profile,
                       criticality=criticality, acceptable=acceptable,
                       needs_fallback=needs_fallback, fallback=fallback)


def context(attacker=None, allow=(), now=1000.0) -> DecisionContext:
    return DecisionContext(now=now, gateways=["gw1"], attacker=attacker, victim=None,
                           allowlist=Allowlist.parse(allow))


def decide(policy, inc, ctx):
    """What the hub would do: the policy's proposals after the shield."""
    return [shield(d, inc, ctx) for d in policy.decide(inc, ctx)]


def summary(decisions):
    return [(d.action, d.target, d.requires_approval, d.suppressed) for d in decisions]


# ---- the table ---------------------------------------------------------------------------------

def test_outside_host_is_quarantined_at_once():
    out = decide(Playbook(), incident(), context(attacker=None))
    assert summary(out) == [("quarantine", ATTACKER, False, False)]
    assert out[0].ttl == DEFAULT_CELLS["default"]["outside"]["ttl"]
    assert "outside host" in out[0].reason


def test_ordinary_device_is_quarantined_essential_is_rate_limited_with_approval_request():
    ordinary = decide(Playbook(), incident(), context(entry("ordinary")))
    assert summary(ordinary) == [("quarantine", ATTACKER, False, False)]
    essential = decide(Playbook(), incident(), context(entry("essential", "bus_tracker")))
    assert summary(essential) == [("rate_limit", ATTACKER, False, False),
                                  ("quarantine", ATTACKER, True, False)]
    assert essential[0].params == {"pps": 50}


def test_life_safety_device_gets_the_gentlest_action_and_a_request_for_approval():
    ecb = entry("life_safety", "emergency_call_box", acceptable=("rate_limit", "filter"),
                needs_fallback=("quarantine", "revoke_mqtt"), fallback="cellular backup line")
    out = decide(Playbook(), incident(), context(ecb))
    assert summary(out) == [("rate_limit", ATTACKER, False, False),
                            ("quarantine", ATTACKER, True, False)]
    assert out[0].params == {"pps": 20}
    assert "cellular backup line" in out[1].reason  # the approver learns the fallback


@pytest.mark.parametrize("kind", KINDS + ("not_a_known_kind",))
def test_no_kind_ever_cuts_off_a_life_safety_device_without_approval(kind):
    for profile in (None, entry("life_safety", "traffic_signal_controller")):
        attacker = profile or entry("life_safety", "unprofiled")
        for d in decide(Playbook(), incident(kind), context(attacker)):
            if d.action in ("quarantine", "revoke_mqtt") and not d.suppressed:
                assert d.requires_approval, (kind, d)


def test_every_built_in_cell_is_valid_and_every_kind_and_class_has_an_answer():
    pb = Playbook()
    for kind in KINDS:
        for cls in ATTACKER_CLASSES:
            assert pb.cell(kind, cls).action  # falls back to the default row
    assert pb.cell("mqtt_bruteforce", "ordinary").action == "revoke_mqtt"
    assert pb.cell("mqtt_bruteforce", "outside").action == "quarantine"  # default row


def test_bruteforce_revokes_the_mqtt_identity_or_falls_back():
    known = decide(Playbook(), incident("mqtt_bruteforce"),
                   context(entry("ordinary", client_id="meter-0042")))
    assert summary(known) == [("revoke_mqtt", "meter-0042", False, False)]
    # an id the device presents but the inventory does not give it is a claim: never revoked
    # (it may be any other account on the broker); its address is what it controls
    decoded = decide(Playbook(), incident("mqtt_bruteforce", device="meter-7"),
                     context(entry("ordinary")))
    assert summary(decoded) == [("quarantine", ATTACKER, False, False)]
    unknown = decide(Playbook(), incident("mqtt_bruteforce"), context(entry("ordinary")))
    assert summary(unknown) == [("quarantine", ATTACKER, False, False)]
    assert "fallback quarantine" in unknown[0].reason


def test_anomaly_on_life_safety_records_and_asks():
    out = decide(Playbook(), incident("anomaly"), context(entry("life_safety", "x")))
    assert summary(out) == [(NO_ACTION, ATTACKER, False, False),
                            ("rate_limit", ATTACKER, True, False)]


def test_config_overrides_single_cells_default_row_and_kind_rows():
    pb = Playbook({"default": {"outside": {"action": "rate_limit", "ttl": 30,
                                           "params": {"pps": 5}}},
                   "port_scan": {"outside": {"action": "filter", "ttl": 60,
                                             "params": {"port": 1883, "proto": "tcp"}}}})
    assert summary(decide(pb, incident("mqtt_flood"), context())) == [
        ("rate_limit", ATTACKER, False, False)]
    scan = decide(pb, incident("port_scan"), context())
    assert summary(scan) == [("filter", ATTACKER, False, False)]
    assert (scan[0].ttl, scan[0].params) == (60.0, {"port": 1883, "proto": "tcp"})
    # untouched cells keep the built-in answer
    assert pb.cell("port_scan", "ordinary").action == "quarantine"


@pytest.mark.parametrize("table, message", [
    ({"port_scna": {}}, "port_scna: unknown incident kind"),
    ({"default": {"outsider": {"action": "none"}}}, "default.outsider: unknown attacker class"),
    ({"default": {"outside": {"action": "ban", "ttl": 5}}}, "default.outside.action: expected one of"),
    ({"default": {"outside": {"action": "quarantine"}}}, "default.outside.ttl: expected seconds"),
    ({"default": {"outside": {"action": "quarantine", "ttl": -1}}}, "default.outside.ttl"),
    ({"default": {"outside": {"action": "quarantine", "ttl": True}}}, "default.outside.ttl"),
    ({"default": {"outside": {"action": "quarantine", "ttl": 5, "tll": 5}}},
     "default.outside.tll: unknown key"),
    ({"default": {"outside": {"action": "rate_limit", "ttl": 5}}},
     "default.outside.params.pps: rate_limit needs it"),
    ({"default": {"outside": {"action": "rate_limit", "ttl": 5, "params": {"pps": 0}}}},
     "default.outside.params.pps: expected an integer"),
    ({"default": {"outside": {"action": "quarantine", "ttl": 5, "params": {"pps": 3}}}},
     "default.outside.params.pps: quarantine takes no such parameter"),
    ({"default": {"outside": {"action": "filter", "ttl": 5,
                              "params": {"port": 70000, "proto": "tcp"}}}},
     "default.outside.params.port"),
    ({"anomaly": {"life_safety": {"action": "quarantine", "ttl": 5}}},
     "anomaly.life_safety.action: quarantine of a life-safety device needs a human's approval"),
    ({"default": {"ordinary": {"action": "quarantine", "ttl": 5, "escalate": "rate_limit"}}},
     "default.ordinary.escalate: rate_limit is not stronger than quarantine"),
    ({"default": {"ordinary": {"action": "revoke_mqtt", "ttl": 5}}},
     "default.ordinary.fallback: required with revoke_mqtt"),
    ({"default": {"ordinary": {"action": "none", "shadow": "yes"}}},
     "default.ordinary.shadow: expected true or false"),
])
def test_bad_cells_are_refused_naming_the_key(table, message):
    with pytest.raises(PlaybookError) as err:
        parse_cells(table)
    assert message in str(err.value)


def test_config_file_errors_name_the_full_key(tmp_path):
    data = {"hub": {"database": "hub.db"},
            "decide": {"playbook": {"default": {"life_safety": {"action": "quarantine",
                                                                "ttl": 60}}}}}
    with pytest.raises(ConfigError, match=r"central.toml: decide\.playbook\.default\."
                                          r"life_safety\.action: quarantine"):
        parse_config(data, source="central.toml", base=tmp_path)


# ---- shield ------------------------------------------------------------------------------------

def test_allowlisted_address_network_and_identity_are_never_targeted():
    inc = incident()
    for allow in (["10.0.0.66"], ["10.0.0.0/24"], ["meter-0042"]):
        ctx = context(entry("ordinary", client_id="meter-0042"), allow=allow)
        out = decide(Playbook(), inc, ctx)
        assert all(d.suppressed for d in out), allow
        assert "allowlisted" in out[0].reason
    # an unrelated allowlist entry changes nothing
    out = decide(Playbook(), inc, context(allow=["10.0.1.0/24", "::1", "other"]))
    assert summary(out) == [("quarantine", ATTACKER, False, False)]


def test_allowlist_ipv6_and_version_mismatch():
    allow = Allowlist.parse(["2001:db8::/32", "10.0.0.0/8"])
    assert allow.matches("2001:db8::7")
    assert not allow.matches("2001:db9::7")
    assert allow.matches("10.1.2.3") and not allow.matches("11.1.2.3")
    assert not allow.matches("")


def test_shield_makes_a_policy_bug_safe():
    # a (future) policy proposing to quarantine a life-safety device at once
    ls = entry("life_safety", "traffic_signal_controller")
    bad = Decision(action="quarantine", target=ATTACKER, ttl=60, reason="learned")
    vetted = shield(bad, incident(), context(ls))
    assert vetted.requires_approval and not vetted.suppressed
    assert "life-safety" in vetted.reason


@pytest.mark.parametrize("decision, problem", [
    (Decision("quarantine", "not-an-ip", 60, "r"), "target"),
    (Decision("quarantine", "0.0.0.0", 60, "r"), "target"),
    (Decision("rate_limit", ATTACKER, 60, "r", params={}), "params"),
    (Decision("revoke_mqtt", "bad user; rm -rf", 60, "r"), "target"),
    (Decision("quarantine", ATTACKER, 0, "r"), "expires_at"),
    (Decision("quarantine", ATTACKER, 30 * 86400, "r"), "expires_at"),
    (Decision("quarantine", ATTACKER, "600", "r"), "expires_at"),
])
def test_decisions_the_gateways_would_refuse_are_suppressed(decision, problem):
    vetted = shield(decision, incident(), context())
    assert vetted.suppressed
    assert problem in vetted.reason


def test_profile_restrictions_step_down_and_ask():
    # an essential device whose profile takes quarantine only after its fallback
    flood = entry("essential", "flood_level_sensor",
                  acceptable=("rate_limit", "filter", "revoke_mqtt"),
                  needs_fallback=("quarantine",), fallback="manual gauge readings")
    pb = Playbook({"default": {"essential": {"action": "quarantine", "ttl": 60}}})
    out = decide(pb, incident(), context(flood))
    assert summary(out) == [("rate_limit", ATTACKER, False, False),
                            ("quarantine", ATTACKER, True, False)]
    assert "manual gauge readings" in out[1].reason
    # an action the profile lists nowhere is never taken, not even with approval
    odd = entry("ordinary", "odd", acceptable=("rate_limit",), needs_fallback=())
    out = decide(Playbook(), incident(), context(odd))
    assert summary(out) == [("rate_limit", ATTACKER, False, False),
                            ("quarantine", ATTACKER, True, True)]
    # nothing gentler is acceptable: record only
    none = entry("ordinary", "none", acceptable=(), needs_fallback=("quarantine",))
    out = decide(Playbook(), incident(), context(none))
    assert summary(out) == [(NO_ACTION, ATTACKER, False, False),
                            ("quarantine", ATTACKER, True, False)]


# ---- shadow ------------------------------------------------------------------------------------

def test_shadow_playbook_and_shadow_cells_mark_their_decisions():
    assert all(d.shadow for d in Playbook(shadow=True).decide(incident(), context()))
    pb = Playbook({"port_scan": {"outside": {"action": "quarantine", "ttl": 60,
                                             "shadow": True}}})
    assert [d.shadow for d in pb.decide(incident("port_scan"), context())] == [True]
    assert [d.shadow for d in pb.decide(incident("mqtt_flood"), context())] == [False]


# ---- inventory ---------------------------------------------------------------------------------

def test_inventory_toml_with_real_profiles(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_text("""
[[device]]
address = "10.0.1.5"
client_id = "ecb-0001"
gateway = "gw-north"
profile = "emergency_call_box"

[[device]]
address = "10.0.1.5"
gateway = "gw-south"
profile = "smart_meter"

[[device]]
address = "10.0.9.9"
profile = "mystery_box"
criticality = "essential"
""")
    inv = load_inventory(path)
    assert len(inv) == 3
    north = inv.lookup("10.0.1.5", gateway="gw-north")
    assert (north.profile, north.criticality) == ("emergency_call_box", "life_safety")
    assert "quarantine" in north.needs_fallback and "quarantine" not in north.acceptable
    # the same private address behind another gateway is another device
    assert inv.lookup("10.0.1.5", gateway="gw-south").criticality == "ordinary"
    assert inv.lookup("10.0.1.5", gateway="gw-east") is None
    assert inv.lookup(client_id="ecb-0001").address == "10.0.1.5"
    assert inv.lookup("10.0.9.9", gateway="anywhere").criticality == "essential"
    # seen behind both gateways: the gentlest treatment wins
    assert inv.lookup_any("10.0.1.5", "", ["gw-south", "gw-north"]).criticality == "life_safety"


def test_inventory_json_list(tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps([{"client_id": "cam-1", "profile": "cctv_camera"}]))
    assert load_inventory(path).lookup(client_id="cam-1").criticality == "essential"


@pytest.mark.parametrize("text, message", [
    ('[[device]]\naddress = "10.0.0.1"\nprofile = "smart_meter"\ncolour = "red"\n',
     "device[0].colour: unknown key"),
    ('[[device]]\nprofile = "smart_meter"\n', "device[0]: needs an address or a client_id"),
    ('[[device]]\naddress = "10.0.0.300"\nprofile = "smart_meter"\n',
     "device[0].address: '10.0.0.300' is not an IP address"),
    ('[[device]]\naddress = "10.0.0.1"\nprofile = "toaster"\n',
     "device[0].profile: unknown profile 'toaster'"),
    ('[[device]]\naddress = "10.0.0.1"\nprofile = "x"\ncriticality = "vital"\n',
     "device[0].criticality: 'vital' is not one of"),
    ('[[device]]\naddress = "10.0.0.1"\n', "device[0].profile: missing"),
    ('[[devices]]\naddress = "10.0.0.1"\n', "devices: unknown key"),
    ('[[device]\n', "cannot parse"),
])
def test_inventory_errors_name_file_entry_and_key(tmp_path, text, message):
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_profiles_are_read_from_firmware_profiles():
    profiles = default_profiles()
    assert profiles["traffic_signal_controller"].criticality == "life_safety"
    assert profiles["smart_meter"].criticality == "ordinary"


def test_profile_info_reads_mappings_of_the_profile_shape():
    from atlas.central.decide.inventory import profile_info

    info = profile_info("p", {"criticality": "essential",
                              "responses": {"acceptable": ["rate_limit"],
                                            "needs_fallback": ["quarantine"], "fallback": "fb"}})
    assert info == ProfileInfo("p", "essential", ("rate_limit",), ("quarantine",), "fb")
    unrestricted = profile_info("q", {"criticality": "ordinary"})
    assert unrestricted.acceptable is None
    device = DeviceEntry("10.0.0.1", "", "", "q", "ordinary", unrestricted.acceptable)
    ctx = context(device)
    out = decide(Playbook(), incident(src="10.0.0.1"), ctx)
    assert summary(out) == [("quarantine", "10.0.0.1", False, False)]
