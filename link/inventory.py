"""The device inventory file, read the same way by the agent and the hub.

One file format serves the hub's decisions (atlas.central.decide.inventory: criticality,
tolerated responses) and each gateway's profile-conformance check
(atlas.agent.detect.conformance: profile, address, client id). This module reads the file and
validates what every entry has in common; each side then looks the profile up its own way
(the hub accepts an unknown profile with an explicit `criticality`, the agent cannot check a
profile it does not have). It is part of the contract package because both sides read it.

    [[device]]
    address = "10.20.1.5"        # IPv4/IPv6; optional if client_id is given
    client_id = "sm-d01-0001"    # MQTT client id; optional if address is given
    gateway = "gw-d01"           # optional: the gateway the device sits behind
    profile = "smart_meter"      # a device profile (firmware_profiles/devices/<profile>.toml)
    criticality = "ordinary"     # optional, read by the hub only

JSON: {"device": [{...}, ...]} or just the list.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.link.textfile import TextFileError, read_json, read_toml

ENTRY_KEYS = ("address", "client_id", "gateway", "profile", "criticality")


class InventoryError(ValueError):
    """A bad inventory file; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class EntryFields:
    """What every inventory entry has, validated; `where` names it in later error messages."""

    where: str  # "<file>: device[<i>]"
    address: str  # normalized ("" if not given)
    client_id: str
    gateway: str
    profile: str  # never empty
    criticality: str  # as written ("" if not given); only the hub reads it


def read_inventory(path: str | Path) -> list[EntryFields]:
    """Read and validate an inventory file's entries, in file order."""
    path = Path(path)
    try:
        data = read_json(path, "inventory file") if path.suffix.lower() == ".json" else read_toml(path, "inventory file")
    except TextFileError as exc:
        raise InventoryError(str(exc)) from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"device"})
        if extra:
            raise InventoryError(f"{path}: {extra[0]}: unknown key (the file holds [[device]] entries)")
        data = data.get("device", [])
    if not isinstance(data, list):
        raise InventoryError(f"{path}: expected a list of devices")
    return [entry_fields(item, f"{path}: device[{i}]") for i, item in enumerate(data)]


def entry_fields(item: Any, where: str) -> EntryFields:
    """Validate one entry (a table): known keys, strings, an address or a client id, a profile."""
    if not isinstance(item, dict):
        raise InventoryError(f"{where}: expected a table of {', '.join(ENTRY_KEYS)}")
    unknown = sorted(set(item) - set(ENTRY_KEYS))
    if unknown:
        raise InventoryError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(ENTRY_KEYS)})")
    for key in ENTRY_KEYS:
        if key in item and not isinstance(item[key], str):
            raise InventoryError(f"{where}.{key}: expected a string, got {item[key]!r}")
    address, client_id = item.get("address", "").strip(), item.get("client_id", "").strip()
    if not address and not client_id:
        raise InventoryError(f"{where}: needs an address or a client_id")
    if address:
        normal = normal_address(address)
        if normal is None:
            raise InventoryError(f"{where}.address: {address!r} is not an IP address")
        address = normal
    profile = item.get("profile", "").strip()
    if not profile:
        raise InventoryError(f"{where}.profile: missing")
    return EntryFields(where, address, client_id, item.get("gateway", "").strip(), profile,
                       item.get("criticality", "").strip())


def normal_address(text: str) -> str | None:
    """The address in its canonical text form, or None if `text` is not an IP address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
