"""What the city graph is built from, gathered into plain data (no rdflib here).

The hub knows its devices from the inventory file (atlas.link.inventory format), the device
classes from the profiles, the critical services from their declarations, and the gateways'
places (district, domain, subnet, broker) from a city description: the simulator's
`city.json`, or the same shape written by hand for a real city:

    {"gateways": [{"id": "gw-d01-tra", "district": "d01", "domain": "transportation",
                   "subnet": "10.1.0.0/16", "broker": "10.1.0.1"}, ...],
     "devices": [{"id": "tsc-d01-0001", "ip": "10.1.0.10", "class": "traffic_signal_controller",
                  "gateway": "gw-d01-tra", "client_id": "...", "username": "..."}, ...]}

`version` is a digest of everything the graph depends on: the query layer caches per version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from atlas.firmware_profiles import DeviceProfile, ProfileError, load_device_profiles
from atlas.firmware_profiles.services import ServiceSpec, load_services
from atlas.link.inventory import EntryFields, InventoryError, normal_address, read_inventory


class FactsError(ValueError):
    """A city description that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class GatewayFacts:
    id: str
    district: str = ""
    domain: str = ""
    subnet: str = ""
    broker: str = ""  # the broker's address ("" if unknown)


@dataclass(frozen=True)
class DeviceFacts:
    address: str  # normalized, "" if unknown
    client_id: str  # MQTT client id, "" if unknown
    gateway: str  # "" if not behind a known gateway
    profile: str
    criticality: str = ""  # the inventory's override, "" = the profile's
    credential: str = ""  # the MQTT user name it logs in with ("" = its client id)
    where: str = ""  # where the entry was read ("inventory.toml: device[3]"), for messages

    @property
    def key(self) -> str:
        """How operators and the hub name the device: its client id, else gateway/address."""
        if self.client_id:
            return self.client_id
        return f"{self.gateway}/{self.address}" if self.gateway else self.address

    @property
    def login(self) -> str:
        return self.credential or self.client_id


@dataclass
class CityFacts:
    profiles: Mapping[str, DeviceProfile]
    services: Mapping[str, ServiceSpec]
    devices: list[DeviceFacts]
    gateways: list[GatewayFacts]
    sources: dict[str, str] = field(default_factory=dict)  # role -> file it came from

    @property
    def version(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.profiles):
            p = self.profiles[name]
            h.update(repr((p.name, p.domain, p.criticality, p.responses)).encode())
        for name in sorted(self.services):
            h.update(repr(self.services[name]).encode())
        for g in self.gateways:
            h.update(repr(g).encode())
        for d in self.devices:
            h.update(repr((d.address, d.client_id, d.gateway, d.profile, d.criticality, d.credential)).encode())
        return h.hexdigest()[:16]

    def gateway(self, gateway_id: str) -> GatewayFacts | None:
        return next((g for g in self.gateways if g.id == gateway_id), None)


def load_facts(*, inventory: str | Path | None = None, city: str | Path | None = None,
               services_dir: str | Path | None = None, profiles_dir: str | Path | None = None,
               gateway_ids: Iterable[str] = ()) -> CityFacts:
    """Profiles and services (packaged, or the given folders), devices from the inventory file
    and/or the city description, gateways from the city description plus `gateway_ids` (the
    hub's store knows gateways by id only). Raises FactsError with one line."""
    try:
        profiles = load_device_profiles(profiles_dir)
        services = load_services(services_dir, profiles)
    except ProfileError as exc:  # ServiceError too
        raise FactsError(str(exc)) from None
    sources = {"profiles": str(profiles_dir or "firmware_profiles/devices"),
               "services": str(services_dir or "firmware_profiles/services")}
    gateways: dict[str, GatewayFacts] = {}
    devices: list[DeviceFacts] = []
    if city is not None:
        data = _read_city(Path(city))
        for g in _gateways_of(data, str(city)):
            gateways[g.id] = g
        if inventory is None:
            devices = list(_devices_of(data, str(city)))
        sources["city"] = str(city)
    if inventory is not None:
        try:
            devices = [device_of_entry(e) for e in read_inventory(inventory)]
        except InventoryError as exc:
            raise FactsError(str(exc)) from None
        sources["inventory"] = str(inventory)
    for gid in list(gateway_ids) + [d.gateway for d in devices]:
        if gid and gid not in gateways:
            gateways[gid] = GatewayFacts(gid)
    return CityFacts(profiles, services, devices, sorted(gateways.values(), key=lambda g: g.id), sources)


def device_of_entry(e: EntryFields) -> DeviceFacts:
    return DeviceFacts(e.address, e.client_id, e.gateway, e.profile, e.criticality, "", e.where)


def _read_city(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FactsError(f"{path}: no such city description") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FactsError(f"{path}: cannot read the city description: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("gateways", []), list):
        raise FactsError(f"{path}: expected an object with a list of gateways")
    return data


def _text(item: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    v = item.get(key, "")
    if not isinstance(v, str) or (required and not v):
        raise FactsError(f"{where}.{key}: expected {'a non-empty' if required else 'a'} string, got {v!r}")
    return v


def _gateways_of(data: Mapping[str, Any], source: str) -> Iterable[GatewayFacts]:
    for i, g in enumerate(data.get("gateways", [])):
        where = f"{source}: gateways[{i}]"
        if not isinstance(g, dict):
            raise FactsError(f"{where}: expected an object")
        broker = _text(g, "broker", where)
        if broker and normal_address(broker) is None:
            raise FactsError(f"{where}.broker: {broker!r} is not an IP address")
        yield GatewayFacts(_text(g, "id", where, True), _text(g, "district", where), _text(g, "domain", where),
                           _text(g, "subnet", where), normal_address(broker) or "")


def _devices_of(data: Mapping[str, Any], source: str) -> Iterable[DeviceFacts]:
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        raise FactsError(f"{source}: devices: expected a list")
    for i, d in enumerate(devices):
        where = f"{source}: devices[{i}]"
        if not isinstance(d, dict):
            raise FactsError(f"{where}: expected an object")
        ip = _text(d, "ip", where)
        if ip and normal_address(ip) is None:
            raise FactsError(f"{where}.ip: {ip!r} is not an IP address")
        yield DeviceFacts(normal_address(ip) or "", _text(d, "client_id", where) or _text(d, "id", where),
                          _text(d, "gateway", where), _text(d, "class", where, True), "",
                          _text(d, "username", where), where)
