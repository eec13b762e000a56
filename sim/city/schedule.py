"""The city's attack and look-alike schedule, chosen by the seed.

- Single attacks: every registered kind at least once, `attacks_per_gateway` per gateway on
  average, spread over gateways and time. Their attacker is left to the kind (a rogue host on
  the gateway's subnet, or a device for kinds that run from a compromised one).
- Multi-stage campaigns: 2 to 4 stages over two or three domains, after a template the seed
  picks (TEMPLATES, rotated so a city with five campaigns has each once): recon -> MQTT
  credential attack (that succeeds) -> tampering (false data injection, else a publish flood)
  across three domains; recon and credential attack on two gateways of one domain, then a jump;
  a credential attack whose victim network then leaks data (exfiltration by a device behind it);
  and so on. Domains are a seed-chosen order. Stages are strictly ordered in time. The attacker
  of the later stages is the same external address (mode `external`) or a device behind the
  recon's gateway: one that the recon found and took over (`pivot`) or one already in a botnet
  that runs the Mirai-style scan itself (`botnet`, when `mirai_scan` is registered). An
  exfiltration stage runs on a device of the gateway whose credentials the previous stage won.
- Decoys (one per campaign by default): a second, independent attacker from outside the city
  running the same tool as one of the campaign's stages (its credential attack, else its scan)
  on another gateway of the same domain, in the same district when one has room, in the same
  time slot as that stage. Ground truth: no campaign (`campaign` empty), `params.decoy_of` names
  the campaign it shadows. Linking a decoy into the campaign is over-linking, and the pairwise
  link precision (atlas.sim.evaluate.campaigns) pays for it. Decoys draw from their own random
  stream and only take free slots, so every other item of a seed's schedule stays as it was.
- Benign look-alikes on some gateways: a power cut hits every gateway of a district at the
  same moment (cross-domain, like a campaign, but benign), firmware updates, rush hours on
  transportation gateways.

Each gateway's timeline is cut into K equal slots (K = the busiest gateway's load) after a
warm-up; an attack or a short look-alike gets one slot, so steps on one gateway never overlap
and a campaign's stages take increasing slots. Rush hours span many slots (they are periods).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.firmware_profiles import DeviceProfile
from atlas.sim.attacks import ATTACKS, AttackSpec
from atlas.sim.city.layout import CityLayout, GatewaySpec
from atlas.sim.traffic.population import device_address
from atlas.sim.traffic.lookalikes import DEFAULTS as LOOK_DEFAULTS
from atlas.sim.traffic.lookalikes import LookalikeSpec
from atlas.sim.traffic.payloads import topic_rng

CAMPAIGN_DOMAINS = ("transportation", "energy", "public_safety")
EXTERNAL_NET = "203.0.113."  # TEST-NET-3 (RFC 5737): campaign attackers outside the city
DECOY_NET = "198.51.100."  # TEST-NET-2 (RFC 5737): the decoys' independent attackers
DECOY_KINDS = ("mqtt_bruteforce", "port_scan")  # tools an outside attacker runs, in order of preference
MIRAI_TARGET_HARDWARE = ("camera_soc", "embedded_linux")  # devices with a Linux and a telnet to guess

# Campaign templates: per stage (role, domain slot, gateway slot). Domain slots 0, 1, 2 map to a
# seed-chosen order of CAMPAIGN_DOMAINS; the same (domain, gateway) slot is the same gateway.
TEMPLATES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "three_domains": (("recon", 0, 0), ("credential", 1, 0), ("tamper", 2, 0)),
    "domain_then_jump": (("recon", 0, 0), ("credential", 0, 1), ("tamper", 1, 0)),
    "credential_exfiltration": (("recon", 0, 0), ("credential", 1, 0), ("exfiltration", 1, 0)),
    "credential_tamper": (("credential", 0, 0), ("tamper", 1, 0)),
    "four_stages": (("recon", 0, 0), ("credential", 1, 0), ("exfiltration", 1, 0), ("tamper", 2, 0)),
}
# Templates no correlator was written, trained or tuned against: a city draws from them only when
# asked (ScheduleOptions.templates; atlas.sim.evaluate.splits holds them out for the report split).
HELD_OUT_TEMPLATES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "scan_then_tamper": (("recon", 0, 0), ("tamper", 1, 0)),
    "two_credentials_exfiltration": (("credential", 0, 0), ("credential", 1, 0), ("exfiltration", 1, 0)),
    "domain_pair_then_tamper": (("recon", 0, 0), ("credential", 0, 1), ("exfiltration", 0, 1), ("tamper", 2, 0)),
}
ALL_TEMPLATES = TEMPLATES | HELD_OUT_TEMPLATES


@dataclass
class ScheduleOptions:
    attacks_per_gateway: float = 1.0  # single attacks per gateway (on average; every kind at least once)
    campaigns: int | None = None  # multi-stage campaigns (None: one per ten gateways, at least one)
    lookalike_share: float = 0.2  # share of gateways with a benign look-alike
    warmup: float = 60.0  # seconds of benign traffic before the first event (at most a tenth of the capture)
    decoys: int | None = None  # independent attacks shadowing campaign stages (None: one per campaign)
    templates: tuple[str, ...] | None = None  # campaign templates to draw from (None: TEMPLATES)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.templates or ()) - set(ALL_TEMPLATES))
        if unknown:
            raise ValueError(f"templates: unknown campaign template {unknown[0]!r} (known: {', '.join(ALL_TEMPLATES)})")
        if self.templates is not None and not self.templates:
            raise ValueError("templates: give at least one campaign template")
        if self.decoys is not None and self.decoys < 0:
            raise ValueError(f"decoys: must be >= 0, got {self.decoys}")
        if self.attacks_per_gateway < 0:
            raise ValueError(f"attacks-per-gateway: must be >= 0, got {self.attacks_per_gateway:g}")
        if self.campaigns is not None and self.campaigns < 0:
            raise ValueError(f"campaigns: must be >= 0, got {self.campaigns}")
        if not 0 <= self.lookalike_share <= 1:
            raise ValueError(f"lookalike-share: must be between 0 and 1, got {self.lookalike_share:g}")

    @classmethod
    def none(cls) -> ScheduleOptions:
        """Benign traffic only: no attacks, no campaigns, no look-alikes."""
        return cls(attacks_per_gateway=0, campaigns=0, lookalike_share=0, decoys=0)


@dataclass
class Campaign:
    id: str
    mode: str  # external | pivot | botnet
    attacker: str  # the address that runs the later stages (an exfiltration stage: a device of its own gateway)
    stages: list[str] = field(default_factory=list)  # step ids, stage 1 first
    gateways: list[str] = field(default_factory=list)
    template: str = ""  # a key of TEMPLATES

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "template": self.template, "attacker": self.attacker,
                "stages": self.stages, "gateways": self.gateways}


@dataclass
class CitySchedule:
    attacks: dict[str, list[AttackSpec]]  # per gateway id
    lookalikes: dict[str, list[LookalikeSpec]]
    campaigns: list[Campaign]
    notes: dict[str, dict[str, Any]]  # extra ground truth per step or event id (campaign roles, district-wide cuts)
    decoys: list[str] = field(default_factory=list)  # step ids of the decoys

    @property
    def steps(self) -> int:
        return sum(len(v) for v in self.attacks.values())


@dataclass
class _Item:
    gw: list[int]  # gateway indexes it occupies (a district-wide power cut: several)
    kind: str
    look: bool = False
    campaign: int = -1
    stage: int = 0
    slot: int = -1


def plan_schedule(layout: CityLayout, profiles: dict[str, DeviceProfile], duration: float, seed: int,
                  opts: ScheduleOptions | None = None) -> CitySchedule:
    """Which attacks and look-alikes run where and when (seconds after the capture starts)."""
    opts = opts or ScheduleOptions()
    rng = topic_rng(seed, "city", "schedule")
    G = len(layout.gateways)
    items: list[_Item] = []
    n_camp = (max(1, G // 10) if opts.campaigns is None else opts.campaigns)
    if not all(layout.of_domain(d) for d in CAMPAIGN_DOMAINS):
        n_camp = 0
    load = np.zeros(G, dtype=np.int64)
    templates = _pick_templates(layout, n_camp, rng, opts.templates or tuple(TEMPLATES))
    for c, name in enumerate(templates):
        order = [CAMPAIGN_DOMAINS[i] for i in rng.permutation(len(CAMPAIGN_DOMAINS))]
        placed: dict[tuple[int, int], GatewaySpec] = {}
        for s, (_, d, k) in enumerate(ALL_TEMPLATES[name]):
            if (d, k) not in placed:
                taken = set(x.index for x in placed.values())
                placed[(d, k)] = _least_loaded([g for g in layout.of_domain(order[d]) if g.index not in taken], load, rng)
            g = placed[(d, k)]
            items.append(_Item([g.index], "", campaign=c, stage=s + 1))
            load[g.index] += 1
    for kind, g in _singles(layout, opts, rng):
        items.append(_Item([g], kind))
        load[g] += 1
    items += _lookalike_items(layout, profiles, opts, rng)
    n_slots = _assign_slots(items, G, rng)
    plan = _timed(layout, profiles, items, n_slots, duration, opts, rng, templates)
    n_decoys = len(plan.campaigns) if opts.decoys is None else opts.decoys
    _add_decoys(plan, layout, items, n_slots, duration, opts, n_decoys, topic_rng(seed, "city", "decoys"))
    return plan


def _pick_templates(layout: CityLayout, n: int, rng, pool: tuple[str, ...]) -> list[str]:
    """A template per campaign: the feasible ones of the pool (enough gateways per domain) in
    turn, from a seed-chosen first one, so a few campaigns already differ."""
    per_domain = min(len(layout.of_domain(d)) for d in CAMPAIGN_DOMAINS)
    names = [t for t in pool if max(k for _, _, k in ALL_TEMPLATES[t]) < per_domain]
    if n and not names:
        raise ValueError(f"templates: none of {', '.join(pool)} fits {per_domain} gateway(s) per domain")
    first = int(rng.integers(len(names))) if names else 0
    return [names[(first + c) % len(names)] for c in range(n)]


def _least_loaded(gws: list[GatewaySpec], load: np.ndarray, rng) -> GatewaySpec:
    order = rng.permutation(len(gws))
    return min((gws[i] for i in order), key=lambda g: load[g.index])


def _singles(layout: CityLayout, opts: ScheduleOptions, rng) -> list[tuple[str, int]]:
    if opts.attacks_per_gateway <= 0:
        return []
    kinds = sorted(ATTACKS)
    n = max(int(round(opts.attacks_per_gateway * len(layout.gateways))), len(kinds))
    seq: list[str] = []
    while len(seq) < n:
        seq += [kinds[i] for i in rng.permutation(len(kinds))]
    order = rng.permutation(len(layout.gateways))
    return [(seq[i], int(order[i % len(order)])) for i in range(n)]


def _lookalike_items(layout: CityLayout, profiles, opts: ScheduleOptions, rng) -> list[_Item]:
    n = int(round(opts.lookalike_share * len(layout.gateways)))
    if n <= 0:
        return []
    rushy = [g.index for g in layout.gateways
             if any(t.peak_factor > 1 for c in g.counts for t in profiles[c].mqtt.topics)]
    kinds = ["power_cut", "firmware_update", "rush_hour"]
    first = int(rng.integers(len(kinds)))
    out, used_districts, used = [], set(), set()
    for i in range(n):
        kind = kinds[(first + i) % len(kinds)]
        if kind == "power_cut":
            free = [d for d in layout.districts if d not in used_districts]
            if not free:
                kind = "firmware_update"
            else:
                d = free[int(rng.integers(len(free)))]
                used_districts.add(d)
                gws = [g.index for g in layout.of_district(d)]
                out.append(_Item(gws, kind, look=True))
                continue
        pool = [g for g in (rushy if kind == "rush_hour" else range(len(layout.gateways))) if (g, kind) not in used]
        if not pool:
            continue
        g = int(pool[int(rng.integers(len(pool)))])
        used.add((g, kind))
        out.append(_Item([g], kind, look=True))
    return out


def _assign_slots(items: list[_Item], G: int, rng) -> int:
    """Give every slot-using item a slot free on each of its gateways; campaigns' stages in
    increasing slots. Grows the slot count until everything fits."""
    slotted = [it for it in items if it.kind != "rush_hour"]
    load = np.zeros(G, dtype=np.int64)
    for it in slotted:
        load[it.gw] += 1
    stages = max((it.stage for it in items), default=0)
    K = max(int(load.max(initial=0)), stages, 1)
    while True:
        if _try_slots(slotted, G, K, rng):
            return K
        K += 1


def _try_slots(items: list[_Item], G: int, K: int, rng) -> bool:
    free = [set(range(K)) for _ in range(G)]
    by_campaign: dict[int, list[_Item]] = {}
    for it in items:
        if it.campaign >= 0:
            by_campaign.setdefault(it.campaign, []).append(it)
    for c in sorted(by_campaign):
        stages = sorted(by_campaign[c], key=lambda it: it.stage)
        for _ in range(50):
            picks, lo = [], 0
            for k, it in enumerate(stages):
                room = len(stages) - 1 - k  # later stages need later slots
                cand = sorted(j for j in free[it.gw[0]] if lo <= j < K - room)
                if not cand:
                    break
                j = cand[int(rng.integers(len(cand)))]
                picks.append(j)
                lo = j + 1
            if len(picks) == len(stages):
                break
        else:
            return False
        for it, j in zip(stages, picks):
            it.slot = j
            free[it.gw[0]].discard(j)
    # Multi-gateway items (district power cuts) next, then the rest.
    rest = sorted((it for it in items if it.campaign < 0), key=lambda it: -len(it.gw))
    for it in rest:
        cand = sorted(set.intersection(*(free[g] for g in it.gw)))
        if not cand:
            return False
        it.slot = cand[int(rng.integers(len(cand)))]
        for g in it.gw:
            free[g].discard(it.slot)
    return True


def _timed(layout: CityLayout, profiles, items: list[_Item], K: int, duration: float, opts: ScheduleOptions,
           rng, templates: list[str]) -> CitySchedule:
    warm = min(opts.warmup, 0.1 * duration)
    L = (duration - warm) / K
    attacks: dict[str, list[AttackSpec]] = {g.id: [] for g in layout.gateways}
    looks: dict[str, list[LookalikeSpec]] = {g.id: [] for g in layout.gateways}
    notes: dict[str, dict[str, Any]] = {}

    def start_in(slot: int, length: float) -> float:
        return round(warm + slot * L + float(rng.uniform(0, max(L - length, 0.0))), 3)

    campaigns = [_campaign_roles(c, t, layout, profiles, items, rng) for c, t in enumerate(templates)]
    for it in sorted(items, key=lambda it: (it.slot, it.gw[0], it.kind, it.campaign, it.stage)):
        gws = [layout.gateways[g] for g in it.gw]
        if it.look:
            _place_lookalike(it, gws, L, duration, start_in, looks, notes, rng)
            continue
        if it.campaign >= 0:
            camp, role = campaigns[it.campaign]
            spec_kind, attacker, victims, params, given_by = role[it.stage]
            dur = round(min(ATTACKS[spec_kind].duration, 0.6 * L), 3)
            sid = f"{camp.id}-s{it.stage}-{spec_kind}"
            attacks[gws[0].id].append(AttackSpec(spec_kind, start=start_in(it.slot, dur), duration=dur, params=params,
                                                 attacker=attacker, victims=victims, campaign=camp.id, stage=it.stage, id=sid))
            camp.stages.append(sid)
            camp.gateways.append(gws[0].id)
            notes[sid] = {"campaign_mode": camp.mode, "campaign_template": camp.template,
                          "compromised_in": f"{camp.id}-s{given_by}-{role[given_by][0]}" if given_by else ""}
            continue
        dur = round(min(ATTACKS[it.kind].duration, 0.6 * L), 3)
        attacks[gws[0].id].append(AttackSpec(it.kind, start=start_in(it.slot, dur), duration=dur))
    for g in attacks:  # ids in time order per gateway, as generate_capture numbers them
        attacks[g].sort(key=lambda s: s.start)
    return CitySchedule(attacks, looks, [c for c, _ in campaigns], notes)


def _campaign_roles(c: int, template: str, layout: CityLayout, profiles, items: list[_Item], rng):
    """(Campaign, {stage: (kind, attacker, victims, params, stage that handed the attacker its
    address or 0 = it had it before the capture)})."""
    stages = ALL_TEMPLATES[template]
    stage_gw = {it.stage: layout.gateways[it.gw[0]] for it in items if it.campaign == c}
    has_recon = stages[0][0] == "recon"
    modes = ["external", "pivot"] + (["botnet"] if "mirai_scan" in ATTACKS else [])
    mode = modes[(c + int(rng.integers(len(modes)))) % len(modes)] if has_recon else "external"
    external = f"{EXTERNAL_NET}{10 + c % 240}"
    device = _pick_device(stage_gw[1], profiles, rng) if has_recon else ""
    later = external if mode == "external" else device
    later_from = 1 if mode == "pivot" else 0
    tamper = "false_data" if "false_data" in ATTACKS else "mqtt_flood"
    roles: dict[int, tuple] = {}
    for s, (role, _, _) in enumerate(stages, 1):
        if role == "recon" and mode == "botnet":
            roles[s] = ("mirai_scan", device, None, {}, 0)
        elif role == "recon":
            # The scan takes in the device it will take over (pivot), besides the gateway.
            roles[s] = ("port_scan", external, [stage_gw[s].broker, device] if mode == "pivot" else None, {}, 0)
        elif role == "credential":
            roles[s] = ("mqtt_bruteforce", later, None, {"success": True}, later_from)
        elif role == "exfiltration" and "exfiltration" in ATTACKS:
            # A device behind the gateway whose broker credentials the stage before won.
            roles[s] = ("exfiltration", _pick_device(stage_gw[s], profiles, rng), None, {}, s - 1)
        else:  # tamper (or exfiltration without that kind registered)
            roles[s] = (tamper, later, None, {}, later_from)
    return Campaign(f"c{c + 1}", mode, later, template=template), roles


def _pick_device(g: GatewaySpec, profiles, rng) -> str:
    """A device of the gateway that malware would go for (a Linux camera or controller if any)."""
    index, cands, all_ = 0, [], []
    for cls in sorted(g.counts):
        idx = list(range(index, index + g.counts[cls]))
        all_ += idx
        if profiles[cls].hardware.cls in MIRAI_TARGET_HARDWARE:
            cands += idx
        index += g.counts[cls]
    pool = cands or all_
    return device_address(g.subnet, pool[int(rng.integers(len(pool)))])


def _place_lookalike(it: _Item, gws: list[GatewaySpec], L: float, duration: float, start_in, looks, notes, rng) -> None:
    if it.kind == "rush_hour":
        dur = round(min(LOOK_DEFAULTS["rush_hour"]["duration"], 0.5 * duration), 3)
        ramp = round(min(LOOK_DEFAULTS["rush_hour"]["ramp"], 0.2 * dur), 3)
        start = round(float(rng.uniform(0.05, 0.45)) * duration, 3)
        g = gws[0]
        looks[g.id].append(LookalikeSpec("rush_hour", start=start, duration=dur, params={"ramp": ramp},
                                         id=f"{g.id}/rush_hour/{len(looks[g.id]) + 1}"))
        return
    if it.kind == "power_cut":
        boot_max = round(min(LOOK_DEFAULTS["power_cut"]["boot_max"], 0.3 * L), 3)
        dur = round(min(LOOK_DEFAULTS["power_cut"]["duration"], 0.3 * L), 3)
        start = start_in(it.slot, dur + boot_max)
        for g in gws:  # the whole district at once
            eid = f"{g.id}/power_cut/{len(looks[g.id]) + 1}"
            looks[g.id].append(LookalikeSpec("power_cut", start=start, duration=dur,
                                             params={"boot_max": boot_max, "boot_min": round(min(3.0, boot_max / 2), 3)}, id=eid))
            notes[eid] = {"district": g.district, "gateways": [x.id for x in gws]}
        return
    g = gws[0]
    # A firmware push sized to fit its slot: image, devices and reboots (about a minute at full size).
    small = L < 150
    params = {"devices": 3 if small else 10, "image_kb": 256 if small else 1536}
    looks[g.id].append(LookalikeSpec("firmware_update", start=start_in(it.slot, min(L, 90.0)), params=params,
                                     id=f"{g.id}/firmware_update/{len(looks[g.id]) + 1}"))


def _add_decoys(plan: CitySchedule, layout: CityLayout, items: list[_Item], K: int, duration: float,
                opts: ScheduleOptions, n: int, rng) -> None:
    """`n` decoys, campaigns in turn (see the module doc); one that finds no free slot in its
    domain is left out."""
    if not plan.campaigns or n <= 0:
        return
    warm = min(opts.warmup, 0.1 * duration)
    L = (duration - warm) / K
    free = [set(range(K)) for _ in layout.gateways]
    for it in items:
        if it.slot >= 0:
            for g in it.gw:
                free[g].discard(it.slot)
    stage_item = {(it.campaign, it.stage): it for it in items if it.campaign >= 0}
    for i in range(n):
        c = i % len(plan.campaigns)
        camp = plan.campaigns[c]
        shadow = _shadowed_stage(camp)
        if shadow is None:
            continue
        stage, kind = shadow
        it = stage_item[(c, stage)]
        g, slot = _decoy_place(layout, layout.gateways[it.gw[0]], it.slot, free, rng)
        if g is None:
            continue
        free[g.index].discard(slot)
        dur = round(min(ATTACKS[kind].duration, 0.6 * L), 3)
        start = round(warm + slot * L + float(rng.uniform(0, max(L - dur, 0.0))), 3)
        sid = f"decoy{i + 1}-{kind}"
        plan.attacks[g.id].append(AttackSpec(kind, start=start, duration=dur, attacker=f"{DECOY_NET}{10 + i % 240}", id=sid))
        plan.attacks[g.id].sort(key=lambda a: a.start)
        plan.notes[sid] = {"decoy_of": camp.id, "shadows": camp.stages[stage - 1]}
        plan.decoys.append(sid)


def _shadowed_stage(camp: Campaign) -> tuple[int, str] | None:
    """(stage number, kind) of the campaign stage a decoy copies: the first of DECOY_KINDS it runs."""
    kinds = [sid.split("-s", 1)[1].split("-", 1)[1] for sid in camp.stages]
    for kind in DECOY_KINDS:
        if kind in kinds and kind in ATTACKS:
            return kinds.index(kind) + 1, kind
    return None


def _decoy_place(layout: CityLayout, near: GatewaySpec, slot: int, free: list[set[int]], rng
                 ) -> tuple[GatewaySpec | None, int]:
    """A gateway of `near`'s domain and its free slot closest to `slot`: the closest in time
    first, then another gateway than `near`, then the same district."""
    same = [g for g in layout.of_domain(near.domain)]
    best: tuple | None = None
    for k in rng.permutation(len(same)):
        g = same[int(k)]
        if not free[g.index]:
            continue
        j = min(free[g.index], key=lambda j: (abs(j - slot), j))
        key = (abs(j - slot), g.index == near.index, g.district != near.district)
        if best is None or key < best[0]:
            best = (key, g, j)
    return (best[1], best[2]) if best else (None, -1)
