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
    return ClosedLoop(city, policy_rules(city, incidents, names), model=model, specs=specs).finish(captures)


def score_rules(city: Any, rules: Mapping[str, Sequence[Response]], *, model: BrokerModel = DEFAULT_MODEL,
                specs: Mapping[str, ServiceSpec] | None = None,
                captures: Mapping[str, DecodedCapture] | None = None) -> dict[str, Any]:
    """score_policies for rules already made, per policy key."""
    return ClosedLoop(city, rules, model=model, specs=specs).finish(captures)


def policy_rules(city: Any, incidents: Mapping[str, Iterable[Any]], names: Sequence[str]) -> dict[str, list[Response]]:
    """Per policy key: the rules the policy puts in force for these incidents."""
    incidents = {gw: list(v) for gw, v in incidents.items()}
    return {policy_key(n): responses(n, city, incidents) for n in dict.fromkeys(names)}


class ClosedLoop:
    """The scoring, one gateway at a time: `add(gw, cap)` with each decoded capture (the
    evaluation's single pass over the captures feeds it, atlas.sim.evaluate.baselines.passes),
    then `finish()` decodes the gateways nobody added and returns the scores."""

    def __init__(self, city: Any, rules: Mapping[str, Sequence[Response]], *, model: BrokerModel = DEFAULT_MODEL,
                 specs: Mapping[str, ServiceSpec] | None = None):
        self.city, self.rules, self.model = city, rules, model
        self.insts = instances(city, specs)
        self.deadlines = sorted({i.spec.deadline_s for i in self.insts.values()})
        self.slots = max(1, math.ceil(city.duration / model.slot_s))
        self.by_client = {str(d.get("client_id")): str(d.get("ip")) for d in city.devices if d.get("client_id")}
        self.up: dict[str, dict[float, dict[str, np.ndarray]]] = {k: {d: {} for d in self.deadlines} for k in rules}
        self.broker: dict[str, dict[float, dict[str, np.ndarray]]] = {k: {d: {} for d in self.deadlines} for k in rules}
        self.steps: dict[str, list[dict[str, Any]]] = {k: [] for k in rules}
        self.done: set[str] = set()

    def add(self, gw: str, cap: DecodedCapture) -> None:
        if gw in self.done:
            return
        city = self.city
        devices = [str(d["ip"]) for d in city.devices if d.get("gateway") == gw]
        for key, rs in self.rules.items():
            mine = [r for r in rs if r.gateway == gw]
            delivery = Delivery(cap, mine, self.by_client)
            fx = device_states(cap, delivery.packets, delivery.mqtt, devices, city.steps_of(gw), self.deadlines,
                               city.start, city.duration, self.model)
            for d in self.deadlines:
                self.up[key][d].update(fx.devices[d])
                self.broker[key][d][gw] = fx.broker[d]
            self.steps[key] += contained(cap, delivery.packets, city.steps_of(gw), mine)
        self.done.add(gw)

    def finish(self, captures: Mapping[str, DecodedCapture] | None = None) -> dict[str, Any]:
        for gw in self.city.gateway_ids:
            if gw not in self.done:
                cap = captures.get(gw) if captures else None
                self.add(gw, cap if cap is not None else decode_capture(self.city.pcap(gw), gw))
        out = {key: self._score(key, rs) for key, rs in self.rules.items()}
        return {"model": asdict(self.model), "slot_s": self.model.slot_s, "slots": self.slots,
                "contained_share": CONTAINED_SHARE,
                "instances": {k: {"criticality": i.spec.criticality, "label": i.spec.label, "deadline_s": i.spec.deadline_s,
                                  "devices": len(i.addresses()), "depends_on": i.services}
                              for k, i in sorted(self.insts.items())},
                "policies": out}

    def _score(self, key: str, rs: Sequence[Response]) -> dict[str, Any]:
        met_slots = met(self.insts, self.up[key], self.broker[key], self.slots)
        crit = availability(self.insts, met_slots)
        every = availability(self.insts, met_slots, only=("life_safety", "essential", "ordinary"))
        steps = self.steps[key]
        n_cont = sum(s["contained"] for s in steps)
        actions: dict[str, int] = {}
        for r in rs:
            actions[r.action] = actions.get(r.action, 0) + 1
        return {"availability_critical": crit["availability"], "availability_all": every["availability"],
                "containment": n_cont / len(steps) if steps else None,
                "steps_contained": n_cont, "steps": len(steps), "rules": len(rs), "actions": actions,
                "services": crit["instances"], "failed_spans": failed_spans(met_slots, self.city.start, self.model.slot_s),
                "by_step": steps}


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



__all__ = ["CONTAINED_SHARE", "POLICIES", "ClosedLoop", "contained", "failed_spans", "policy_rules", "score_policies",
           "score_rules"]
