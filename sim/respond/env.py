"""A city under one multi-stage campaign, as a gymnasium environment for a responder.

How it relates to the evaluation's closed loop (atlas.sim.evaluate: effects, services,
respond, availability): the same city (layout.describe_city), the same service instances and
their availability rule (services.instances / needed: ceil(min_up x members) devices of each
class up, named devices up, service dependencies met), the same campaign templates
(city.schedule.TEMPLATES) and the hub's own inventory, shield and playbook. What differs: no
packets. Time advances in STEP_S ticks; an incident appears DETECT_STEPS after its stage starts
(the detector is not run); a stage reaches its goal after STAGE_STEPS unblocked ticks, and then
the next stage starts (spread). So a policy is cheap to try here (10k steps in seconds) and is
judged for real by the closed loop.

Per episode (seeded): a template from the split (train / validation / report: report
templates never train), a seed-chosen domain order and gateways, a campaign mode (an external
address, or a device taken over behind the first gateway), and benign look-alikes the detector
flags (a firmware push on a device: an `anomaly` incident from a genuine device).

An attacker blocked GIVE_UP_STEPS ticks in a row abandons the campaign.
Stages: recon (port_scan, or mirai_scan from a botnet device), credential (mqtt_bruteforce that
wins the gateway's credentials), tamper (false_data: the gateway's devices' readings are forged
while it runs, so they do not feed their services), exfiltration (data leaves). A rule on the
attacker's address that BLOCKS its stage stops progress; one that SLOWS it halves it. An
external attacker that is blocked moves to a new address with probability SWITCH_P per tick
(a new incident, found DETECT_STEPS later).

Observation (float32, flat, all in [0, 1] or {0, 1}):
    incidents  MAX_INCIDENTS x INCIDENT_FEATURES: present, kind one-hot (link KINDS), score,
               stage / MAX_STAGES, attacker class one-hot (decide.ATTACKER_CLASSES), rule in force
               on its target one-hot (RULE_ACTIONS), rule TTL left / longest TTL, approval pending
    services   MAX_SERVICES: health of each critical service instance (1 = met), 0 padded
    rules      1: rules in force / MAX_INCIDENTS
Action (Discrete): 0 = none; else (slot, verb, ttl) with verb in VERBS (the gateways' rule
vocabulary plus ask_human: an approval request to quarantine, carried out APPROVAL_STEPS later
if the human agrees) and ttl in TTLS_S. action_masks(): an empty slot, revoke_mqtt of a host
with no MQTT identity and a second approval request are masked (MaskablePPO's convention).
The hub's shield (atlas.central.decide.shield) runs on every proposal: suppressed = nothing
happens and a small cost; needs approval = handled as ask_human.
Reward per tick: weighted availability of the critical services (CRIT_WEIGHT) - PROGRESS_W x
stage progress - GOAL_W per stage that reaches its goal (credentials won, data forged or
exfiltrated) - the action's blast-radius cost (RespondEnv.blast_cost: the hub's city graph when
the ontology extra is installed, else the service declarations).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np

from atlas.central.decide import (ATTACKER_CLASSES, NO_ACTION, Decision, DecisionContext,
                                  decision_context, shield)
from atlas.central.decide.inventory import Inventory
from atlas.central.store import HubIncident
from atlas.firmware_profiles import load_device_profiles
from atlas.link.incidents import KINDS
from atlas.link.rules import Allowlist
from atlas.sim.city.layout import describe_city, plan_layout
from atlas.sim.city.schedule import CAMPAIGN_DOMAINS, EXTERNAL_NET, TEMPLATES
from atlas.sim.evaluate.baselines.playbook import city_inventory
from atlas.sim.evaluate.services import CRITICAL, instances, needed

ENV_VERSION = "respond-env/1"
STEP_S = 60.0
EPISODE_STEPS = 60
DETECT_STEPS = 1
STAGE_STEPS = 4
APPROVAL_STEPS = 3
SWITCH_P = 0.3
GIVE_UP_STEPS = 5  # an attacker blocked this many ticks in a row abandons the campaign
LOOKALIKE_P = 0.15  # per tick, a benign device the detector flags
HUMAN_APPROVES = {True: 0.9, False: 0.2}  # a human approves a real attack's isolation, rarely a look-alike's
MAX_INCIDENTS = 4
MAX_SERVICES = 24
MAX_STAGES = 4
VERBS = ("rate_limit", "filter", "revoke_mqtt", "quarantine", "ask_human")
RULE_ACTIONS = (NO_ACTION, "rate_limit", "filter", "revoke_mqtt", "quarantine")
TTLS_S = (300.0, 900.0, 3600.0)
# The parameters the rule vocabulary requires (link.rules.ACTION_PARAMS): the playbook's trickle
# and the broker's port.
PARAMS = {"rate_limit": {"pps": 20}, "filter": {"port": 1883, "proto": "tcp"}}
CRIT_WEIGHT = {"life_safety": 3.0, "essential": 2.0, "ordinary": 1.0}
PROGRESS_W = 0.25
GOAL_W = 1.0
SUPPRESSED_COST = 0.02
ACTION_COST = 0.01  # any rule: operators' attention, gateways' churn
# The report template has every stage role; exfiltration is never seen in training.
SPLITS = {"train": ("three_domains", "domain_then_jump", "credential_tamper"),
          "validation": ("credential_exfiltration",), "report": ("four_stages",)}
STAGE_KIND = {"recon": "port_scan", "credential": "mqtt_bruteforce", "tamper": "false_data",
              "exfiltration": "exfiltration"}
# What a rule on the attacker's address does to a stage of this kind: 1 blocks, 0.5 slows.
BLOCKS = {
    "port_scan": {"quarantine": 1.0, "filter": 1.0, "rate_limit": 0.5},
    "mirai_scan": {"quarantine": 1.0, "filter": 1.0, "rate_limit": 0.5},
    "mqtt_bruteforce": {"quarantine": 1.0, "filter": 1.0, "rate_limit": 0.5, "revoke_mqtt": 0.5},
    "false_data": {"quarantine": 1.0, "revoke_mqtt": 1.0, "filter": 0.5},
    "exfiltration": {"quarantine": 1.0, "filter": 1.0, "rate_limit": 0.5},
}
# What the hub's incident says for an attack kind the contract has no name for: a device talking
# where its profile forbids.
INCIDENT_KIND = {"mirai_scan": "profile_violation", "exfiltration": "profile_violation"}
CUTS_OFF = ("quarantine", "revoke_mqtt")  # the device no longer feeds its services
INCIDENT_FEATURES = 1 + len(KINDS) + 1 + 1 + len(ATTACKER_CLASSES) + len(RULE_ACTIONS) + 1 + 1
N_ACTIONS = 1 + MAX_INCIDENTS * len(VERBS) * len(TTLS_S)


def encode_action(slot: int, verb: str, ttl_s: float) -> int:
    t = min(range(len(TTLS_S)), key=lambda i: abs(TTLS_S[i] - ttl_s))
    return 1 + (slot * len(VERBS) + VERBS.index(verb)) * len(TTLS_S) + t


def decode_action(a: int) -> tuple[int, str, float] | None:
    """(slot, verb, ttl seconds), or None for the no-op."""
    if a == 0:
        return None
    a -= 1
    t, rest = a % len(TTLS_S), a // len(TTLS_S)
    return rest // len(VERBS), VERBS[rest % len(VERBS)], TTLS_S[t]


@dataclass
class City:
    """The fixed part of an episode: devices, inventory, critical service instances."""

    raw: dict[str, Any]
    inventory: Inventory
    allowlist: Allowlist
    address: dict[str, int]  # device address -> index
    instances: list[Any]  # critical ServiceInstances, key order
    members: list[list[tuple[np.ndarray, int]]]  # per instance: (device indexes, needed)
    deps: list[list[int]]  # per instance: indexes of instances it depends on (earlier first)
    weights: np.ndarray
    by_gateway: dict[str, np.ndarray]  # gateway id -> device indexes
    graph: Any = None  # the hub's city graph (atlas.central.ontology.query.CityQuery), if installed


def build_city(devices: int = 90, gateways: int = 9, ontology: bool = True) -> City:
    """The episode's city; with `ontology` and the ontology extra installed, actions are
    priced by the hub's city graph (blast_radius), else from the service declarations."""
    profiles = load_device_profiles()
    raw = describe_city(plan_layout(profiles, devices, gateways), profiles)
    ns = SimpleNamespace(devices=raw["devices"], gateways=raw["gateways"])
    address = {d["ip"]: i for i, d in enumerate(raw["devices"])}
    every = instances(ns)
    order = _dependency_order(every)
    crit = [k for k in order if every[k].spec.criticality in CRITICAL][:MAX_SERVICES]
    members = [[(np.array([address[a] for a in ms]), needed(len(ms), up)) for _c, up, ms in every[k].members]
               + [(np.array([address[a]]), 1) for a in every[k].devices] for k in crit]
    # a critical instance's dependencies: only critical ones are tracked (instances() keeps others
    # out of the critical share too)
    deps = [[crit.index(s) for s in every[k].services if s in crit] for k in crit]
    by_gw: dict[str, list[int]] = {}
    for i, d in enumerate(raw["devices"]):
        by_gw.setdefault(d["gateway"], []).append(i)
    return City(raw=raw, inventory=city_inventory(ns),
                allowlist=Allowlist.parse([g["broker"] for g in raw["gateways"]]), address=address,
                instances=[every[k] for k in crit], members=members, deps=deps,
                weights=np.array([CRIT_WEIGHT[every[k].spec.criticality] for k in crit]),
                by_gateway={g: np.array(v) for g, v in by_gw.items()},
                graph=_city_graph(raw) if ontology else None)


def _city_graph(raw: dict[str, Any]) -> Any:
    from atlas.central.ontology import missing

    if missing():
        return None
    import json
    import tempfile
    from pathlib import Path

    from atlas.central.ontology.facts import load_facts
    from atlas.central.ontology.graph import build_graph
    from atlas.central.ontology.query import CityQuery

    with tempfile.TemporaryDirectory() as tmp:  # the facts loader reads a city.json
        path = Path(tmp) / "city.json"
        path.write_text(json.dumps(raw))
        return CityQuery(build_graph(load_facts(city=path)))


def _dependency_order(insts: dict[str, Any]) -> list[str]:
    done: list[str] = []

    def visit(k: str) -> None:
        if k in done:
            return
        for s in insts[k].services:
            visit(s)
        done.append(k)

    for k in sorted(insts):
        visit(k)
    return done


def health(city: City, up: np.ndarray) -> np.ndarray:
    """Per critical instance: 1.0 when it meets its function with these devices up."""
    out = np.zeros(len(city.instances))
    for i, groups in enumerate(city.members):
        ok = all(int(up[idx].sum()) >= need for idx, need in groups)
        out[i] = float(ok and all(out[j] for j in city.deps[i]))
    return out


@dataclass
class Stage:
    kind: str
    gateway: str
    attacker: str
    started: int = -1  # tick; -1 = not yet
    progress: float = 0.0
    done: bool = False  # reached its goal
    stopped: bool = False  # the attacker gave up (blocked GIVE_UP_STEPS ticks in a row)
    blocked_for: int = 0


@dataclass
class Incident:
    id: str
    kind: str
    src: str
    gateway: str
    score: float
    stage: int  # 1.. for a campaign stage, 0 for a look-alike
    real: bool
    seen: int  # tick it appeared
    rule: str = NO_ACTION
    rule_target: str = ""
    rule_until: int = 0
    approval_at: int = -1  # tick the human answers, -1 none pending
    asked: str = "quarantine"  # the action the human is asked to approve
    closed: bool = False


@dataclass
class State:
    tick: int = 0
    stages: list[Stage] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    corrupted: set[int] = field(default_factory=set)
    exfiltrated: float = 0.0
    counters: dict[str, float] = field(default_factory=lambda: {
        "availability": 0.0, "suppressed": 0, "violations": 0, "rules": 0, "approvals": 0, "reward": 0.0})
    next_id: int = 0


class RespondEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, split: str = "train", city: City | None = None):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        self.split = split
        self.city = city or build_city()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (MAX_INCIDENTS * INCIDENT_FEATURES + MAX_SERVICES + 1,),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.state = State()
        self.template = ""

    # -- episode --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        names = SPLITS[self.split]
        self.template = names[int(rng.integers(len(names)))]
        self.state = State(stages=self._campaign(self.template, rng))
        self.state.stages[0].started = 0
        return self._observation(), self._info()

    def _campaign(self, template: str, rng: np.random.Generator) -> list[Stage]:
        gws = self.city.raw["gateways"]
        order = [CAMPAIGN_DOMAINS[i] for i in rng.permutation(len(CAMPAIGN_DOMAINS))]
        placed: dict[tuple[int, int], dict] = {}
        for _, d, k in TEMPLATES[template]:
            if (d, k) not in placed:
                pool = [g for g in gws if g["domain"] == order[d] and g not in placed.values()]
                placed[(d, k)] = pool[int(rng.integers(len(pool)))]
        first = placed[(TEMPLATES[template][0][1], TEMPLATES[template][0][2])]
        device = self._device_of(first["id"], rng)
        mode = ("external", "pivot", "botnet")[int(rng.integers(3))]
        later = f"{EXTERNAL_NET}{int(rng.integers(10, 250))}" if mode == "external" else device
        stages = []
        for role, d, k in TEMPLATES[template]:
            gw = placed[(d, k)]["id"]
            kind = STAGE_KIND[role]
            src = later
            if role == "recon":
                kind, src = ("mirai_scan", device) if mode == "botnet" else ("port_scan", f"{EXTERNAL_NET}9")
            elif role == "exfiltration":
                src = self._device_of(gw, rng)
            stages.append(Stage(kind, gw, src))
        return stages

    def _device_of(self, gateway: str, rng: np.random.Generator) -> str:
        idx = self.city.by_gateway[gateway]
        return self.city.raw["devices"][int(idx[int(rng.integers(len(idx)))])]["ip"]

    # -- step -----------------------------------------------------------------------------
    def step(self, action: int):
        s = self.state
        cost = self._act(int(action))
        progress, goals = self._advance()
        up = self._devices_up()
        h = health(self.city, up)
        avail = float((h * self.city.weights).sum() / self.city.weights.sum())
        reward = avail - PROGRESS_W * progress - GOAL_W * goals - cost
        s.counters["availability"] += avail
        s.counters["reward"] += reward
        s.tick += 1
        terminated = False  # a fixed horizon: every policy's availability over the same time
        truncated = s.tick >= EPISODE_STEPS
        return self._observation(h), float(reward), terminated, truncated, self._info()

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(N_ACTIONS, dtype=bool)
        mask[0] = True
        for slot, inc in enumerate(self.slots()):
            if inc is None:
                continue
            attacker = self.city.inventory.lookup(inc.src)
            for verb in VERBS:
                if verb == "revoke_mqtt" and not (attacker and attacker.client_id):
                    continue
                if verb == "ask_human" and inc.approval_at >= 0:
                    continue
                for ttl in TTLS_S:
                    mask[encode_action(slot, verb, ttl)] = True
        return mask

    def slots(self) -> list[Incident | None]:
        """The open incidents the policy sees, newest last, MAX_INCIDENTS at most."""
        open_ = [i for i in self.state.incidents if not i.closed][-MAX_INCIDENTS:]
        return open_ + [None] * (MAX_INCIDENTS - len(open_))

    def _act(self, action: int) -> float:
        chosen = decode_action(action)
        if chosen is None:
            return 0.0
        slot, verb, ttl = chosen
        inc = self.slots()[slot]
        if inc is None or not self.action_masks()[action]:
            return SUPPRESSED_COST  # a masked action (an unmasked sampler) does nothing
        if verb == "ask_human":
            return self._ask(inc)
        hub, ctx = self.hub_view(inc)
        target = (ctx.attacker.client_id if verb == "revoke_mqtt" and ctx.attacker else inc.src)
        d = shield(Decision(action=verb, target=target, ttl=ttl, reason="respond-env",
                            params=dict(PARAMS.get(verb, {}))), hub, ctx)
        if d.suppressed:
            self.state.counters["suppressed"] += 1
            return SUPPRESSED_COST
        if d.requires_approval:
            return self._ask(inc, d.action)
        return self._enforce(inc, d, ctx)

    def _ask(self, inc: Incident, action: str = "quarantine") -> float:
        if inc.approval_at < 0:
            inc.approval_at = self.state.tick + APPROVAL_STEPS
            inc.asked = action
            self.state.counters["approvals"] += 1
        return ACTION_COST

    def _enforce(self, inc: Incident, d: Decision, ctx: DecisionContext, approved: bool = False) -> float:
        if self._violates(d, ctx, approved):
            self.state.counters["violations"] += 1
        inc.rule, inc.rule_target = d.action, d.target
        inc.rule_until = self.state.tick + max(1, int(round(d.ttl / STEP_S)))
        self.state.counters["rules"] += 1
        return ACTION_COST + self.blast_cost(d.action, inc.src)

    def _violates(self, d: Decision, ctx: DecisionContext, approved: bool) -> bool:
        """The hub's invariants, checked independently of the shield on what is enforced."""
        a = ctx.attacker
        if ctx.allowlist.matches(d.target):
            return True
        return bool(a and a.criticality == "life_safety" and d.action in CUTS_OFF and not approved)

    def blast_cost(self, action: str, address: str) -> float:
        """What cutting off this device costs the critical services, as a share of their total
        weight: from the hub's city graph when installed (its BlastRadius.cost, its weights),
        else from the service declarations (the instances that fail, weighted CRIT_WEIGHT)."""
        if action not in CUTS_OFF or address not in self.city.address:
            return 0.0
        if self.city.graph is not None:
            return self._graph_cost(action, address)
        up = self._devices_up()
        before = health(self.city, up)
        up[self.city.address[address]] = False
        after = health(self.city, up)
        return float(((before - after) * self.city.weights).sum() / self.city.weights.sum())

    def _graph_cost(self, action: str, address: str) -> float:
        from atlas.central.ontology.query import CRITICALITY_WEIGHT

        device = self.city.raw["devices"][self.city.address[address]]
        target = device["client_id"] if action == "revoke_mqtt" else address
        radius = self.city.graph.blast_radius(action, target, device["gateway"])
        total = sum(CRITICALITY_WEIGHT[i.spec.criticality] for i in self.city.instances)
        return float(radius.cost / total)

    def hub_view(self, inc: Incident) -> tuple[HubIncident, DecisionContext]:
        now = 1.7e9 + self.state.tick * STEP_S
        hub = HubIncident(id=inc.id, kind=inc.kind, src_ip=inc.src, device=inc.src, dst_ip="",
                          first_seen=now, last_seen=now, score=inc.score, packets=0, state="open",
                          created_at=now, gateways=[inc.gateway])
        return hub, decision_context(self.city.inventory, hub, now, self.city.allowlist)

    def _advance(self) -> tuple[float, int]:
        """The world's tick: approvals answer, rules expire, stages progress and spread,
        attackers move, incidents appear. Returns the stage progress made (in stages) and the
        stages that reached their goal."""
        s, rng = self.state, self.np_random
        for inc in s.incidents:
            if inc.approval_at == s.tick:
                inc.approval_at = -1
                if not inc.closed and rng.random() < HUMAN_APPROVES[inc.real]:
                    hub, ctx = self.hub_view(inc)
                    target = (ctx.attacker.client_id if inc.asked == "revoke_mqtt" and ctx.attacker
                              else inc.src)
                    d = Decision(action=inc.asked, target=target, ttl=TTLS_S[1], reason="approved",
                                 requires_approval=True)
                    if not shield(d, hub, ctx).suppressed:
                        self._enforce(inc, d, ctx, approved=True)
            if inc.rule != NO_ACTION and inc.rule_until <= s.tick:
                inc.rule, inc.rule_target = NO_ACTION, ""
        made, goals = 0.0, 0
        for n, st in enumerate(s.stages):
            if st.started < 0 or st.done or st.stopped:
                continue
            if st.started + DETECT_STEPS == s.tick:
                self._raise(st.kind, st.attacker, st.gateway, n + 1)
            rate = 1.0 - self._blocked(st)
            st.blocked_for = st.blocked_for + 1 if rate == 0.0 else 0
            if st.blocked_for >= GIVE_UP_STEPS:
                st.stopped = True
                continue
            if rate == 0.0 and st.attacker.startswith(EXTERNAL_NET) and rng.random() < SWITCH_P:
                st.attacker = f"{EXTERNAL_NET}{int(rng.integers(10, 250))}"
                st.started = s.tick  # found again after DETECT_STEPS
                continue
            st.progress += rate
            made += rate / STAGE_STEPS
            if st.progress >= STAGE_STEPS:
                st.done = True
                goals += 1
                self._goal(st)
                if n + 1 < len(s.stages):
                    s.stages[n + 1].started = s.tick
        if rng.random() < LOOKALIKE_P:
            gw = self.city.raw["gateways"][int(rng.integers(len(self.city.raw["gateways"])))]["id"]
            self._raise("anomaly", self._device_of(gw, rng), gw, 0)
        self._close_finished()
        return made, goals

    def _blocked(self, st: Stage) -> float:
        best = 0.0
        for inc in self.state.incidents:
            if inc.src == st.attacker and inc.rule != NO_ACTION:
                best = max(best, BLOCKS.get(st.kind, {}).get(inc.rule, 0.0))
        return best

    def _goal(self, st: Stage) -> None:
        if st.kind == "false_data":
            self.state.corrupted |= set(int(i) for i in self.city.by_gateway[st.gateway])
        elif st.kind == "exfiltration":
            self.state.exfiltrated += 1.0

    def _raise(self, kind: str, src: str, gateway: str, stage: int) -> None:
        s = self.state
        real = stage > 0
        score = float(self.np_random.uniform(0.8, 1.0) if real else self.np_random.uniform(0.5, 0.9))
        s.next_id += 1
        s.incidents.append(Incident(f"i{s.next_id}", INCIDENT_KIND.get(kind, kind), src, gateway, score, stage, real, s.tick))

    def _close_finished(self) -> None:
        """A look-alike ends after a few ticks; a stage's incident when its stage is done or its
        attacker moved; a rule in force keeps its incident open until it expires."""
        s = self.state
        live = {(st.attacker, n + 1) for n, st in enumerate(s.stages)
                if st.started >= 0 and not st.done and not st.stopped}
        for inc in s.incidents:
            if inc.closed or inc.rule != NO_ACTION or inc.approval_at >= 0:
                continue
            if inc.real and (inc.src, inc.stage) not in live:
                inc.closed = True
            elif not inc.real and s.tick - inc.seen >= 3:
                inc.closed = True

    def _devices_up(self) -> np.ndarray:
        up = np.ones(len(self.city.raw["devices"]), dtype=bool)
        for inc in self.state.incidents:
            if inc.rule in CUTS_OFF and inc.src in self.city.address:
                up[self.city.address[inc.src]] = False
        for st in self.state.stages:  # forged readings while a tampering stage runs
            if st.kind == "false_data" and st.started >= 0 and not (st.done or st.stopped) \
                    and self._blocked(st) < 1.0:
                up[self.city.by_gateway[st.gateway]] = False
        if self.state.corrupted:
            up[list(self.state.corrupted)] = False
        return up

    # -- observation ----------------------------------------------------------------------
    def _observation(self, h: np.ndarray | None = None) -> np.ndarray:
        if h is None:
            h = health(self.city, self._devices_up())
        rows = []
        longest = max(TTLS_S) / STEP_S
        for inc in self.slots():
            row = np.zeros(INCIDENT_FEATURES, dtype=np.float32)
            if inc is not None:
                attacker = self.city.inventory.lookup(inc.src)
                cls = attacker.criticality if attacker else ATTACKER_CLASSES[0]
                o = 0
                row[o] = 1.0; o += 1
                row[o + KINDS.index(inc.kind)] = 1.0; o += len(KINDS)
                row[o] = min(inc.score, 1.0); o += 1
                row[o] = inc.stage / MAX_STAGES; o += 1
                row[o + ATTACKER_CLASSES.index(cls)] = 1.0; o += len(ATTACKER_CLASSES)
                row[o + RULE_ACTIONS.index(inc.rule)] = 1.0; o += len(RULE_ACTIONS)
                row[o] = min(max(inc.rule_until - self.state.tick, 0) / longest, 1.0); o += 1
                row[o] = float(inc.approval_at >= 0)
            rows.append(row)
        services = np.zeros(MAX_SERVICES, dtype=np.float32)
        services[:len(h)] = h
        rules = sum(1 for i in self.state.incidents if i.rule != NO_ACTION)
        return np.concatenate(rows + [services, np.array([min(rules / MAX_INCIDENTS, 1.0)], np.float32)])

    def _info(self) -> dict[str, Any]:
        return {"template": self.template, "tick": self.state.tick}

    # -- scores ---------------------------------------------------------------------------
    def episode_scores(self) -> dict[str, float]:
        """Availability (mean weighted critical-service health), containment (share of the
        campaign's stages that did not reach their goal), shield violations, suppressions."""
        s = self.state
        c = s.counters
        return {"availability": c["availability"] / max(s.tick, 1),
                "containment": sum(not st.done for st in s.stages) / len(s.stages),
                "shield_violations": c["violations"], "suppressed": c["suppressed"],
                "reward": c["reward"], "rules": c["rules"], "approvals": c["approvals"]}

    def snapshot(self) -> tuple[State, Any]:
        """The episode's mutable state (for a look-ahead), restored by restore()."""
        return copy.deepcopy(self.state), copy.deepcopy(self.np_random.bit_generator.state)

    def restore(self, snap: tuple[State, Any]) -> None:
        self.state = copy.deepcopy(snap[0])
        self.np_random.bit_generator.state = copy.deepcopy(snap[1])
