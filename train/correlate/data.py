"""Training data for the learned correlator: incident sequences from campaign templates, with
decoys, split by template and seed so the report never sees what training or tuning saw.

The incidents are generated directly from the templates (what the agents would report for each
stage: kind, source, target, identity, time), not from pcaps run through the agent: cheap
enough to make thousands of episodes. The templates extend the simulator's
(atlas.sim.city.schedule.TEMPLATES, same (role, domain slot, gateway slot) stages) with what
the rule-based engine cannot express:

- `dormant`: a gap of 2 to 5 hours between two stages (beyond the rules' one-hour window);
- `handoff="identity"`: from a stage on, a new outside address, linked only by the MQTT
  identity the credential stage won;
- `handoff="target"`: a new outside address attacking the same device as the stage before;
- every episode has two campaigns placed in one district at overlapping times.

Decoys in every episode: single attacks of every kind on random gateways (mostly from a rogue
host on the gateway's network, some from outside), a second independent attacker using a campaign stage's tool in the same domain at
about the same time, and a district-wide power cut's anomalies (benign, one per gateway).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atlas.link.incidents import KINDS
from atlas.central.correlate.rules import Event, GatewayPlace, Topology

DOMAINS = ("transportation", "energy", "public_safety")
OTHER_DOMAIN = "water"
DISTRICTS = ("d01", "d02", "d03", "d04")
CAMPAIGN_NET = "203.0.113."  # campaigns' outside addresses
DECOY_NET = "198.51.100."  # independent attackers' outside addresses
HOUR = 3600.0
MISSED_FIRST = 0.3  # training campaigns whose first stage the agents missed
# A stage often reaches the hub as two incidents of one source (the classifier's kind and the
# anomaly model's or the profile check's), as the real agent reports it.
ECHO_SHARE = 0.3
ECHO_KINDS = ("anomaly", "profile_violation")
EXFILTRATION_KINDS = ("anomaly", "profile_violation", "slowite")


@dataclass(frozen=True)
class Template:
    stages: tuple[tuple[str, int, int], ...]  # (role, domain slot, gateway slot), as the simulator's
    dormant_after: int = 0  # stage number after which the campaign sleeps for hours (0: never)
    handoff_at: int = 0  # stage number from which a new outside address runs it (0: never)
    handoff: str = ""  # identity | target: what alone links the new address to the stages before


TEMPLATES: dict[str, Template] = {
    # the simulator's five
    "three_domains": Template((("recon", 0, 0), ("credential", 1, 0), ("tamper", 2, 0))),
    "domain_then_jump": Template((("recon", 0, 0), ("credential", 0, 1), ("tamper", 1, 0))),
    "credential_exfiltration": Template((("recon", 0, 0), ("credential", 1, 0), ("exfiltration", 1, 0))),
    "credential_tamper": Template((("credential", 0, 0), ("tamper", 1, 0))),
    "four_stages": Template((("recon", 0, 0), ("credential", 1, 0), ("exfiltration", 1, 0), ("tamper", 2, 0))),
    # the ones the rules cannot express
    "dormant_three_domains": Template((("recon", 0, 0), ("credential", 1, 0), ("tamper", 2, 0)),
                                      dormant_after=1),
    "dormant_jump": Template((("recon", 0, 0), ("credential", 0, 1), ("tamper", 1, 0)),
                             dormant_after=2),
    "identity_handoff": Template((("recon", 0, 0), ("credential", 1, 0), ("tamper", 2, 0)),
                                 handoff_at=3, handoff="identity"),
    "identity_handoff_late": Template((("credential", 0, 0), ("tamper", 1, 0), ("tamper", 2, 0)),
                                      handoff_at=2, handoff="identity"),
    "target_handoff": Template((("recon", 0, 0), ("credential", 1, 0), ("tamper", 1, 0)),
                               handoff_at=3, handoff="target"),
    "target_handoff_jump": Template((("credential", 0, 0), ("tamper", 0, 0), ("tamper", 1, 0)),
                                    handoff_at=2, handoff="target"),
}
# The split: report templates are never seen in training or tuning (validation = training
# templates on other seeds, used to pick the link threshold).
SPLIT = {
    "train": ("three_domains", "credential_tamper", "four_stages", "dormant_three_domains",
              "identity_handoff", "target_handoff"),
    "report": ("domain_then_jump", "credential_exfiltration", "dormant_jump",
               "identity_handoff_late", "target_handoff_jump"),
}
SEEDS = {"train": range(0, 400), "validation": range(1000, 1040), "report": range(2000, 2010)}


@dataclass
class Episode:
    topology: Topology
    events: list[Event]  # in time order
    truth: dict[str, str]  # event id -> campaign id (a decoy: its own id)
    templates: dict[str, str] = field(default_factory=dict)  # campaign id -> template name


def city() -> Topology:
    """Eleven gateways: one per campaign domain in each of three districts (as the
    simulator's layout: one per district and domain), and two of water."""
    places, i = [], 0
    for domain in DOMAINS + (OTHER_DOMAIN,):
        for k in range(3 if domain in DOMAINS else 2):
            i += 1
            district = DISTRICTS[k] if domain in DOMAINS else DISTRICTS[3 * k]
            places.append(GatewayPlace(f"gw-{domain[:3]}-{k}", domain, district,
                                       f"10.{i}.0.0/16", f"10.{i}.0.1"))
    return Topology(places)


def _device(g: GatewayPlace, rng: np.random.Generator) -> str:
    return g.subnet.replace("0.0/16", f"0.{int(rng.integers(10, 60))}")


def episode(seed: int, templates: tuple[str, ...], campaigns: int = 4,
            missed_first: float = 0.0) -> Episode:
    """One city's day: `campaigns` campaigns of these templates (rotated from a seed-chosen
    first), two of them in one district at overlapping times, among decoys. With probability
    `missed_first` a campaign of three stages or more has its first stage unseen (the agent
    missed it), so training also sees campaigns that begin mid-way."""
    rng = np.random.default_rng(seed)
    topo = city()
    gws = list(topo.gateways.values())
    out = Episode(topo, [], {})
    first = int(rng.integers(len(templates)))
    shared_district = DISTRICTS[int(rng.integers(3))]  # one with a gateway of every domain
    ext = iter(rng.permutation(240)[:200] + 10)
    for c in range(campaigns):
        name = templates[(first + c) % len(templates)]
        start = float(rng.uniform(0, 4 * HOUR)) if c > 1 else float(rng.uniform(HOUR, 1.5 * HOUR))
        district = shared_district if c < 2 else ""
        events = _campaign(f"c{seed}-{c}", TEMPLATES[name], gws, district, start, ext, rng)
        if len(TEMPLATES[name].stages) > 2 and rng.random() < missed_first:
            stage1 = f"c{seed}-{c}-s1"
            events = [e for e in events if e.id != stage1 and not e.id.startswith(stage1 + "-")]
        out.templates[f"c{seed}-{c}"] = name
        for e in events:
            out.events.append(e)
            out.truth[e.id] = f"c{seed}-{c}"
    _decoys(out, gws, rng)
    out.events.sort(key=lambda e: (e.time, e.id))
    return out


def _pick(gws: list[GatewayPlace], domain: str, district: str, taken: set[str],
          rng: np.random.Generator) -> GatewayPlace:
    pool = [g for g in gws if g.domain == domain and g.id not in taken]
    near = [g for g in pool if g.district == district]
    pool = near or pool
    return pool[int(rng.integers(len(pool)))]


def _campaign(cid: str, t: Template, gws: list[GatewayPlace], district: str, start: float,
              ext, rng: np.random.Generator) -> list[Event]:
    order = [DOMAINS[i] for i in rng.permutation(3)]
    placed: dict[tuple[int, int], GatewayPlace] = {}
    has_recon = t.stages[0][0] == "recon"
    mode = ["external", "pivot", "botnet"][int(rng.integers(3))] if has_recon else "external"
    outside = f"{CAMPAIGN_NET}{next(ext)}"
    won = f"user-{cid}"  # the MQTT identity the credential stage wins
    events: list[Event] = []
    now, attacker, device = start, outside, ""
    for s, (role, d, k) in enumerate(t.stages, 1):
        if (d, k) not in placed:
            taken = {g.id for g in placed.values()}
            placed[(d, k)] = _pick(gws, order[d], district, taken, rng)
        g = placed[(d, k)]
        if s == 1 and has_recon:
            device = _device(g, rng)
            if mode != "external":
                attacker = device
        src, dst, victims, ids, kind = attacker, g.broker, (), (), ""
        if t.handoff == "target" and s == t.handoff_at - 1:
            dst = _device(g, rng)  # the device whose service the next address attacks again
        if t.handoff_at and s >= t.handoff_at:
            if s == t.handoff_at:
                attacker = f"{CAMPAIGN_NET}{next(ext)}"
            src = attacker
            if t.handoff == "identity":
                ids = (won,)
            elif s == t.handoff_at and events:
                dst = events[-1].dst_ip
        if role == "recon" and mode == "botnet":
            # a Mirai-style scan from the device itself, mostly of the internet
            kind, src, dst = "port_scan", device, f"198.18.1.{int(rng.integers(1, 250))}"
        elif role == "recon":
            kind, src = "port_scan", outside
            victims = (device,) if mode == "pivot" else ()
        elif role == "credential":
            kind, ids = "mqtt_bruteforce", (won,)
        elif role == "exfiltration":  # what the agent reports a device's uploads as
            kind = EXFILTRATION_KINDS[int(rng.integers(len(EXFILTRATION_KINDS)))]
            src, dst = _device(g, rng), f"198.18.0.{int(rng.integers(1, 250))}"
        else:
            kind = ("false_data", "mqtt_flood")[int(rng.integers(2))]
            if t.handoff != "target" or s not in (t.handoff_at - 1, t.handoff_at):
                dst = _device(g, rng) if rng.random() < 0.5 else g.broker
        dur = float(rng.uniform(60, 600))
        events.append(Event(f"{cid}-s{s}", g.id, g.domain, kind, src, now, now + dur, dst,
                            victims, ids, g.district))
        if rng.random() < ECHO_SHARE:  # the agent reports the stage twice, by two detectors
            echo = ECHO_KINDS[int(rng.integers(len(ECHO_KINDS)))]
            at = now + float(rng.uniform(0, 10))
            events.append(Event(f"{cid}-s{s}-{echo}", g.id, g.domain, echo, src, at, at + dur,
                                dst, victims, ids, g.district))
        gap = float(rng.uniform(2 * HOUR, 5 * HOUR)) if s == t.dormant_after \
            else float(rng.uniform(120, 1500))
        now += dur + gap
    return events


def _decoys(ep: Episode, gws: list[GatewayPlace], rng: np.random.Generator) -> None:
    span = max(e.last_seen for e in ep.events) + HOUR
    n = 0

    def add(g: GatewayPlace, kind: str, src: str, t: float, dst: str = "", ids=()) -> None:
        nonlocal n
        n += 1
        eid = f"decoy-{n}-{kind}"
        ep.events.append(Event(eid, g.id, g.domain, kind, src, t, t + float(rng.uniform(30, 600)),
                               dst or g.broker, (), tuple(ids), g.district))
        ep.truth[eid] = eid

    decoy = iter(rng.permutation(250)[:240] + 5)
    for kind in KINDS:  # single attacks of every kind, from addresses of their own
        for _ in range(2):
            g = gws[int(rng.integers(len(gws)))]
            # mostly a rogue host on the gateway's network, as the simulator's single attacks
            src = _device(g, rng) if rng.random() < 0.8 else f"{DECOY_NET}{next(decoy)}"
            ident = (f"dev-{src}",) if kind == "mqtt_bruteforce" and rng.random() < 0.5 else ()
            dst = _device(g, rng) if rng.random() < 0.3 else ""
            add(g, kind, src, float(rng.uniform(0, span)), dst, ident)
    campaign_events = [e for e in ep.events if not ep.truth[e.id].startswith("decoy")]
    for e in campaign_events:  # a second attacker with the same tool, same domain, same hour
        if rng.random() < 0.6:
            same = [g for g in gws if g.domain == e.domain]
            g = same[int(rng.integers(len(same)))]
            add(g, e.kind, f"{DECOY_NET}{next(decoy)}", e.time + float(rng.uniform(-1800, 1800)))
    district = DISTRICTS[int(rng.integers(len(DISTRICTS)))]
    cut = float(rng.uniform(0, span))
    for g in gws:  # a power cut: every gateway of a district sees its devices come back at once
        if g.district == district:
            add(g, "anomaly", _device(g, rng), cut + float(rng.uniform(0, 20)))


def episodes(split: str, seeds=None) -> list[Episode]:
    """The split's episodes: training and validation use the training templates (on disjoint
    seeds), the report its own templates and seeds; training alone has missed first stages."""
    templates = SPLIT["report" if split == "report" else "train"]
    missed = MISSED_FIRST if split == "train" else 0.0
    return [episode(s, templates, missed_first=missed)
            for s in (SEEDS[split] if seeds is None else seeds)]
