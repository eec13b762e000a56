"""Inventory: which device is at which address behind which gateway, and how critical it is.

The city's inventory file (`[hub] inventory` in central.toml) lists devices, TOML or JSON:

    [[device]]
    address = "10.0.1.5"          # IPv4/IPv6; optional if client_id is given
    client_id = "signal-0001"     # MQTT client id / username; optional if address is given
    gateway = "gw-north"          # optional: the gateway the device sits behind
    profile = "traffic_signal"    # a device profile (firmware_profiles/devices/*.toml)
    criticality = "life_safety"   # optional: overrides the profile's

JSON: {"device": [{...}, ...]} or just the list. The profile (firmware_profiles/devices) gives the
criticality (life_safety | essential | ordinary) and the responses the device tolerates
(`[responses] acceptable / needs_fallback / fallback`); `criticality` in
an entry overrides the profile's, and is required when the profile is not known.

Private addresses repeat behind different gateways, so an entry with a gateway is matched only
for incidents from that gateway; an entry without one matches anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

# The file format and the checks every entry needs are shared with the agent (a gateway must
# not import the hub, so they live there); InventoryError and ENTRY_KEYS are re-exported.
from atlas.link.inventory import ENTRY_KEYS, EntryFields, InventoryError, normal_address, read_inventory  # noqa: F401

CRITICALITIES = ("life_safety", "essential", "ordinary")
_RANK = {c: i for i, c in enumerate(reversed(CRITICALITIES))}  # ordinary 0 .. life_safety 2

@dataclass(frozen=True)
class ProfileInfo:
    """What the hub needs from a device profile (atlas.firmware_profiles.DeviceProfile)."""

    name: str
    criticality: str
    # None: the profile does not restrict responses. Otherwise `acceptable` may be applied at
    # once, `needs_fallback` only after a human has put `fallback` in place, others never.
    acceptable: tuple[str, ...] | None = None
    needs_fallback: tuple[str, ...] = ()
    fallback: str = ""


@dataclass(frozen=True)
class DeviceEntry:
    address: str
    client_id: str
    gateway: str
    profile: str
    criticality: str
    acceptable: tuple[str, ...] | None = None
    needs_fallback: tuple[str, ...] = ()
    fallback: str = ""


def more_critical(a: DeviceEntry | None, b: DeviceEntry | None) -> DeviceEntry | None:
    if a is None or b is None:
        return a or b
    return a if _RANK[a.criticality] >= _RANK[b.criticality] else b


class Inventory:
    def __init__(self, entries: Iterable[DeviceEntry] = ()):
        self.entries = list(entries)
        self._by_gw_address: dict[tuple[str, str], DeviceEntry] = {}
        self._by_address: dict[str, DeviceEntry] = {}
        self._by_client: dict[str, DeviceEntry] = {}
        for e in self.entries:
            if e.address:
                if e.gateway:
                    self._by_gw_address[(e.gateway, e.address)] = e
                else:
                    self._by_address[e.address] = e
            if e.client_id:
                self._by_client[e.client_id] = e

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, address: str = "", client_id: str = "", gateway: str = "") -> DeviceEntry | None:
        """The device with this client id, else at this address behind this gateway. Decisions
        find an attacker by address only (targeting.find_attacker): a client id on the wire is
        a claim."""
        if client_id and client_id in self._by_client:
            return self._by_client[client_id]
        if address:
            address = normal_address(address) or address
            hit = self._by_gw_address.get((gateway, address))
            if hit is not None:
                return hit
            return self._by_address.get(address)
        return None

    def by_client_id(self, client_id: str) -> DeviceEntry | None:
        """The device the inventory gives this MQTT client id, if any."""
        return self._by_client.get(client_id) if client_id else None

    def lookup_any(self, address: str, client_id: str, gateways: Iterable[str]) -> DeviceEntry | None:
        """Over several gateways, the most critical match: when unsure, be gentlest."""
        best = None
        for gw in list(gateways) or [""]:
            best = more_critical(best, self.lookup(address, client_id, gw))
        return best


def profile_info(name: str, profile: Any) -> ProfileInfo:
    """Criticality and responses of a firmware profile (a DeviceProfile, or a mapping of the
    same shape: {"criticality": ..., "responses": {"acceptable": [...], ...}})."""
    def get(obj: Any, key: str) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(key)
        return getattr(obj, key, None)

    responses = get(profile, "responses")
    acceptable = get(responses, "acceptable") if responses is not None else None
    return ProfileInfo(
        name=name, criticality=str(get(profile, "criticality") or ""),
        acceptable=tuple(str(a) for a in acceptable) if acceptable is not None else None,
        needs_fallback=tuple(str(a) for a in (get(responses, "needs_fallback") or ()))
        if responses is not None else (),
        fallback=str(get(responses, "fallback") or "") if responses is not None else "")


def default_profiles() -> dict[str, ProfileInfo]:
    """The device profiles shipped in firmware_profiles, or {} if there is no loader yet."""
    try:
        from atlas.firmware_profiles import load_device_profiles  # type: ignore[attr-defined]
    except ImportError:
        return {}
    try:
        profiles = load_device_profiles()
    except ValueError as exc:  # ProfileError: names the profile file and key
        raise InventoryError(f"device profiles: {exc}") from None
    items = profiles.items() if isinstance(profiles, Mapping) else (
        (getattr(p, "name", None) or p["name"], p) for p in profiles)
    return {name: profile_info(name, p) for name, p in items}


def load_inventory(path: str | Path,
                   profiles: Mapping[str, ProfileInfo] | None = None) -> Inventory:
    """Read and validate an inventory file (the format the agent reads too:
    atlas.link.inventory); every problem names the file, entry and key."""
    entries = read_inventory(path)
    profiles = default_profiles() if profiles is None else profiles
    return Inventory(_entry(e, profiles) for e in entries)


def _entry(e: EntryFields, profiles: Mapping[str, ProfileInfo]) -> DeviceEntry:
    profile = profiles.get(e.profile)
    criticality = e.criticality or (profile.criticality if profile else "")
    if not criticality:
        known = ", ".join(sorted(profiles)) or "none loaded"
        raise InventoryError(f"{e.where}.profile: unknown profile {e.profile!r} (known: {known}); "
                             "give `criticality` to use it anyway")
    if criticality not in CRITICALITIES:
        raise InventoryError(f"{e.where}.criticality: {criticality!r} is not one of "
                             f"{', '.join(CRITICALITIES)}")
    return DeviceEntry(address=e.address, client_id=e.client_id, gateway=e.gateway,
                       profile=e.profile, criticality=criticality,
                       acceptable=profile.acceptable if profile else None,
                       needs_fallback=profile.needs_fallback if profile else (),
                       fallback=profile.fallback if profile else "")
