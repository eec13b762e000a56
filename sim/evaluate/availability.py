"""Every response policy scored on the same city: availability of critical services and
containment of the attacks, with the attacks' effects and the policies' rules in the traffic.

    scores = score_policies(city, agent.incidents(), ["none", "static", "playbook"])
    scores["policies"]["none"]["availability_critical"]      # share of critical service-slots met

For each gateway, its capture is decoded once; for each policy, its rules (atlas.sim.evaluate
.respond) give every packet and message a delivered share from the moment the rule is active
on the gateway (incident raised + dispatch) until its TTL (baselines.playbook.Delivery); the
effects of the attacks are then computed on what is left (atlas.sim.evaluate.effects), so a
blocked flood stops loading the broker and a quarantined device stops feeding its services;
the service instances (atlas.sim.evaluate.services) meet their function or not, slot by slot.

Containment: a step is contained when the policy's rules removed at least CONTAINED_SHARE of
its attacker's packets. A step's goal (the scanned ports, the guessed password, the broker
brought down, the readings forged) grows with the packets it sends, so removing most of them
is what stopping it before its goal means here; `none` contains nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from atlas.firmware_profiles.services import ServiceSpec
from atlas.sim.evaluate.baselines.decoded import DecodedCapture, decode_capture
from atlas.sim.evaluate.baselines.playbook import Delivery, Response, address_key
from atlas.sim.evaluate.effects import DEFAULT_MODEL, BrokerModel, device_states
from atlas.sim.evaluate.respond import policy_key, responses
from atlas.sim.evaluate.services import availability, instances, met

CONTAINED_SHARE = 0.5
POLICIES = ("none", "static", "playbook")


def score_policies(city: Any, incidents: Mapping[str, Iterable[Any]], names: Sequence[str] = POLICIES, *,
                   model: BrokerModel = DEFAULT_MODEL, specs: Mapping[str, ServiceSpec] | None = None,
                   captures: Mapping[str, DecodedCapture] | None = None) -> dict[str, Any]:
    """{"model": the effect model's parameters, "policies": {key: scores}} (see the module doc).
    `captures`: already decoded gateways (the rest are decoded here, one at a time)."""
    incidents = {gw: list(v) for gw, v in incidents.items()}
    rules = {policy_key(n): responses(n, city, incidents) for n in dict.fromkeys(names)}
    return score_rules(city, rules, model=model, specs=specs, captures=captures)


def score_rules(city: Any, rules: Mapping[str, Sequence[Response]], *, model: BrokerModel = DEFAULT_MODEL,
                specs: Mapping[str, ServiceSpec] | None = None,
                captures: Mapping[str, DecodedCapture] | None = None) -> dict[str, Any]:
    """score_policies for rules already made, per policy key."""
    insts = instances(city, specs)
    deadlines = sorted({i.spec.deadline_s for i in insts.values()})
    slots = max(1, math.ceil(city.duration / model.slot_s))
    by_client = {str(d.get("client_id")): str(d.get("ip")) for d in city.devices if d.get("client_id")}
    up: dict[str, dict[float, dict[str, np.ndarray]]] = {k: {d: {} for d in deadlines} for k in rules}
    broker: dict[str, dict[float, dict[str, np.ndarray]]] = {k: {d: {} for d in deadlines} for k in rules}
    steps: dict[str, list[dict[str, Any]]] = {k: [] for k in rules}
    for gw in city.gateway_ids:
        cap = captures.get(gw) if captures else None
        cap = cap if cap is not None else decode_capture(city.pcap(gw), gw)
        devices = [str(d["ip"]) for d in city.devices if d.get("gateway") == gw]
        for key, rs in rules.items():
            delivery = Delivery(cap, [r for r in rs if r.gateway == gw], by_client)
            fx = device_states(cap, delivery.packets, delivery.mqtt, devices, city.steps_of(gw), deadlines,
                               city.start, city.duration, model)
            for d in deadlines:
                up[key][d].update(fx.devices[d])
                broker[key][d][gw] = fx.broker[d]
            steps[key] += contained(cap, delivery.packets, city.steps_of(gw), [r for r in rs if r.gateway == gw])
        del cap
    out = {}
    for key, rs in rules.items():
        met_slots = met(insts, up[key], broker[key], slots)
        crit = availability(insts, met_slots)
        every = availability(insts, met_slots, only=("life_safety", "essential", "ordinary"))
        n_cont = sum(s["contained"] for s in steps[key])
        actions: dict[str, int] = {}
        for r in rs:
            actions[r.action] = actions.get(r.action, 0) + 1
        out[key] = {"availability_critical": crit["availability"], "availability_all": every["availability"],
                    "containment": n_cont / len(steps[key]) if steps[key] else None,
                    "steps_contained": n_cont, "steps": len(steps[key]), "rules": len(rs), "actions": actions,
                    "services": crit["instances"], "failed_spans": failed_spans(met_slots, city.start, model.slot_s),
                    "by_step": steps[key]}
    return {"model": asdict(model), "slot_s": model.slot_s, "slots": slots, "contained_share": CONTAINED_SHARE,
            "instances": {k: {"criticality": i.spec.criticality, "label": i.spec.label, "deadline_s": i.spec.deadline_s,
                              "devices": len(i.addresses()), "depends_on": i.services} for k, i in sorted(insts.items())},
            "policies": out}


def contained(cap: DecodedCapture, packet_share: np.ndarray, steps: Iterable[Any],
              rules: Sequence[Response] = ()) -> list[dict[str, Any]]:
    """Per step: the attacker's packets in the step, the share the rules removed, and the first
    rule against one of its attackers (action, epoch seconds it took effect)."""
    p = cap.packets
    out = []
    for s in steps:
        attackers = set(s.attackers or [s.attacker])
        first = min((r for r in rules if r.source in attackers or r.target in attackers), key=lambda r: r.start,
                    default=None)
        keys = [k for k in (address_key(cap, a) for a in s.attackers or [s.attacker]) if k is not None]
        mine = np.isin(p["src"], np.array(keys, dtype=np.uint64)) & (p["ts"] >= s.start) & (p["ts"] <= s.end)
        total = int(mine.sum())
        removed = float((1.0 - packet_share[mine]).sum()) / total if total else 0.0
        out.append({"id": s.id, "kind": s.kind, "gateway": s.gateway, "start": s.start, "end": s.end, "packets": total,
                    "removed": removed, "contained": bool(total) and removed >= CONTAINED_SHARE,
                    "first_rule": {"action": first.action, "at": first.start} if first else None})
    return out


def failed_spans(met_slots: Mapping[str, np.ndarray], origin: float, slot_s: float) -> dict[str, list[list[float]]]:
    """Per instance that failed at all: [start, end] epoch seconds of each run of failed slots."""
    out = {}
    for key, ok in sorted(met_slots.items()):
        bad = np.flatnonzero(~ok)
        if not len(bad):
            continue
        runs = np.split(bad, np.flatnonzero(np.diff(bad) > 1) + 1)
        out[key] = [[float(origin + r[0] * slot_s), float(origin + (r[-1] + 1) * slot_s)] for r in runs]
    return out



__all__ = ["CONTAINED_SHARE", "POLICIES", "contained", "failed_spans", "score_policies", "score_rules"]
