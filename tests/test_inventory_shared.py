"""One reader for the device inventory file: the agent's conformance check and the hub's
decisions validate entries with the same code, so a file one accepts the other accepts, and a
bad entry gets the same message from both."""
from __future__ import annotations

import json

import pytest

from atlas.link import inventory as shared
from atlas.agent.detect.conformance import load_device_inventory
from atlas.firmware_profiles import load_device_profiles

BAD = [
    ({"address": "10.0.0.300", "profile": "smart_meter"}, "device[0].address: '10.0.0.300' is not an IP address"),
    ({"address": "10.0.0.1", "profile": "smart_meter", "colour": "red"}, "device[0].colour: unknown key (known: "),
    ({"address": 5, "profile": "smart_meter"}, "device[0].address: expected a string, got 5"),
    ({"profile": "smart_meter"}, "device[0]: needs an address or a client_id"),
]


def test_hub_and_agent_share_the_parser():
    from atlas.central.decide import inventory as hub

    assert hub.InventoryError is shared.InventoryError and hub.ENTRY_KEYS is shared.ENTRY_KEYS
    assert hub.read_inventory is shared.read_inventory


@pytest.mark.parametrize("entry,needle", BAD)
def test_a_bad_entry_gets_the_same_message_from_hub_and_agent(tmp_path, entry, needle):
    from atlas.central.decide.inventory import load_inventory

    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"device": [entry]}))
    messages = []
    for load in (lambda: load_inventory(path), lambda: load_device_inventory(path, load_device_profiles())):
        with pytest.raises(shared.InventoryError) as err:
            load()
        messages.append(str(err.value))
    assert messages[0] == messages[1] and needle in messages[0], messages


def test_addresses_are_normalized_for_both(tmp_path):
    path = tmp_path / "inv.toml"
    path.write_text('[[device]]\naddress = "2001:DB8::0001"\nprofile = "smart_meter"\ngateway = "gw-a"\n')
    (e,) = shared.read_inventory(path)
    assert (e.address, e.gateway, e.profile, e.criticality) == ("2001:db8::1", "gw-a", "smart_meter", "")
