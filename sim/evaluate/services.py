"""The city's critical services, instantiated from their declarations, and their availability.

A declaration (atlas.firmware_profiles.services) becomes one instance per district (scope
"district") or one for the city; its class dependencies take the scope's devices of that
class as members, its service dependencies the instance of the same district (or the city's).
An instance with no member device in the city is not instantiated, and a dependency on a
service that has no instance is dropped, as the hub's city graph does.

Availability of an instance = the share of time slots in which it met its function: for each
class, at least ceil(min_up x members) of its devices fed it on time with intact readings
(atlas.sim.evaluate.effects), each named device did, the named gateways' brokers delivered on
time, and every service it depends on met its function too.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from atlas.firmware_profiles.services import ServiceSpec, load_services

CRITICAL = ("life_safety", "essential")


@dataclass
class ServiceInstance:
    key: str  # "traffic_control/d01", "flood_warning/city"
    spec: ServiceSpec
    district: str  # "" for a city-wide instance
    members: list[tuple[str, float, list[str]]] = field(default_factory=list)  # class, min_up, device addresses
    devices: list[str] = field(default_factory=list)  # named device dependencies (addresses)
    gateways: list[str] = field(default_factory=list)  # named gateway or broker dependencies (gateway ids)
    services: list[str] = field(default_factory=list)  # instance keys it depends on

    @property
    def critical(self) -> bool:
        return self.spec.criticality in CRITICAL

    def addresses(self) -> set[str]:
        return {a for _, _, ms in self.members for a in ms} | set(self.devices)


def instances(city: Any, specs: Mapping[str, ServiceSpec] | None = None) -> dict[str, ServiceInstance]:
    """The service instances of a city (city.json's devices and gateways)."""
    specs = load_services() if specs is None else specs
    devices = list(city.devices)
    districts = sorted({str(d.get("district", "")) for d in devices if d.get("district")})
    by_name = {str(d.get(k)): str(d["ip"]) for d in devices for k in ("id", "client_id", "ip") if d.get(k)}
    gw_by_broker = {str(g.get("broker")): str(g["id"]) for g in city.gateways if g.get("broker")}
    out: dict[str, ServiceInstance] = {}
    for spec in specs.values():
        for district in (districts if spec.scope == "district" else [""]):
            inst = ServiceInstance(f"{spec.name}/{district or 'city'}", spec, district)
            for dep in spec.depends_on:
                if dep.kind == "class":
                    ms = sorted(str(d["ip"]) for d in devices if d.get("class") == dep.name
                                and (not district or d.get("district") == district))
                    if ms:
                        inst.members.append((dep.name, dep.min_up, ms))
                elif dep.kind == "device" and dep.name in by_name:
                    inst.devices.append(by_name[dep.name])
                elif dep.kind in ("gateway", "broker"):
                    gw = dep.name if dep.kind == "gateway" else gw_by_broker.get(dep.name, "")
                    if gw:
                        inst.gateways.append(gw)
            if inst.members or inst.devices:
                out[inst.key] = inst
    for inst in out.values():
        for dep in inst.spec.of_kind("service"):
            target = specs[dep.name]
            key = f"{dep.name}/{(inst.district or 'city') if target.scope == 'district' else 'city'}"
            if key in out:
                inst.services.append(key)
    return out


def needed(members: int, min_up: float) -> int:
    """Devices that must stay up: min_up of the members, rounded up (1e-9: 0.5 x 4 is 2, not 3)."""
    return math.ceil(min_up * members - 1e-9)


def met(insts: Mapping[str, ServiceInstance], up: Mapping[float, Mapping[str, np.ndarray]],
        broker_ok: Mapping[float, Mapping[str, np.ndarray]], slots: int) -> dict[str, np.ndarray]:
    """Per instance: a bool per slot, True when it met its function. `up[deadline][address]`
    is the device's state (effects.device_states), `broker_ok[deadline][gateway]` the broker's."""
    out: dict[str, np.ndarray] = {}

    def visit(key: str) -> np.ndarray:
        if key in out:
            return out[key]
        inst = insts[key]
        states = up[inst.spec.deadline_s]
        ok = np.ones(slots, dtype=bool)
        for _cls, min_up, ms in inst.members:
            count = np.sum([states[a] for a in ms], axis=0)
            ok &= count >= needed(len(ms), min_up)
        for a in inst.devices:
            ok &= states[a]
        for gw in inst.gateways:
            ok &= broker_ok[inst.spec.deadline_s][gw]
        for dep in inst.services:  # declarations are acyclic (atlas.firmware_profiles.services)
            ok &= visit(dep)
        out[key] = ok
        return ok

    for key in insts:
        visit(key)
    return out


def availability(insts: Mapping[str, ServiceInstance], met_slots: Mapping[str, np.ndarray],
                 only: Sequence[str] = CRITICAL) -> dict[str, Any]:
    """Share of slots met, over the instances of the given criticalities, and per instance."""
    chosen = [k for k, i in insts.items() if i.spec.criticality in only]
    slots = sum(len(met_slots[k]) for k in chosen)
    ok = sum(int(met_slots[k].sum()) for k in chosen)
    return {"availability": ok / slots if slots else None, "slots_met": ok, "slots": slots,
            "instances": {k: {"availability": float(met_slots[k].mean()), "criticality": insts[k].spec.criticality,
                              "slots_failed": int((~met_slots[k]).sum())} for k in sorted(chosen)}}


__all__ = ["CRITICAL", "ServiceInstance", "availability", "instances", "met", "needed"]
