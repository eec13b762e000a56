"""The city's layout and schedule (no traffic generated): districts, gateways, subnets, the
devices per class, the attack and look-alike plan, campaigns, clear errors."""
from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from atlas.firmware_profiles import DOMAINS, load_device_profiles
from atlas.sim.attacks import ATTACKS
from atlas.sim.city import ScheduleOptions, plan_layout, plan_schedule
from atlas.sim.city.schedule import TEMPLATES
from atlas.sim.traffic.population import class_counts, device_address

PROFILES = load_device_profiles()


def test_the_issues_city_has_50_gateways_in_17_districts():
    lay = plan_layout(PROFILES, 5000, 50)
    assert len(lay.districts) == 17 and lay.districts[0] == "d01" and lay.districts[-1] == "d17"
    assert [g.id for g in lay.gateways[:4]] == ["gw-d01-tra", "gw-d01-ene", "gw-d01-pub", "gw-d02-tra"]
    assert [g.domain for g in lay.of_district("d17")] == ["transportation", "energy"]
    for k, g in enumerate(lay.gateways):
        assert g.subnet == f"10.{k + 1}.0.0/16" and g.broker == f"10.{k + 1}.0.1"
        assert all(PROFILES[c].domain == g.domain for c in g.counts)
    assert lay.devices == 5000


def test_devices_split_by_profile_weight_and_evenly_over_a_domains_gateways():
    lay = plan_layout(PROFILES, 5000, 50)
    city = Counter()
    for g in lay.gateways:
        city.update(g.counts)
    assert dict(city) == class_counts(PROFILES, 5000)
    for dom in DOMAINS:
        sizes = [g.devices for g in lay.of_domain(dom)]
        assert max(sizes) - min(sizes) <= 1, (dom, sizes)
        for cls in {c for g in lay.of_domain(dom) for c in g.counts}:
            per = [g.counts.get(cls, 0) for g in lay.of_domain(dom)]
            assert max(per) - min(per) <= 1, (cls, per)


@pytest.mark.parametrize("devices,gateways,words", [
    (5, 6, "cannot fill 6 gateways"),
    (100, 2, "at least one gateway per domain"),
    (10_000, 256, "at most 255"),
])
def test_layout_errors_name_the_problem(devices, gateways, words):
    with pytest.raises(ValueError, match=words):
        plan_layout(PROFILES, devices, gateways)


@pytest.mark.parametrize("devices,gateways", [(3, 3), (9, 9), (10, 9), (50, 48)])
def test_a_small_city_still_puts_a_device_behind_every_gateway(devices, gateways):
    # By weight alone, public safety (9.5 of 54.5) would get fewer devices than gateways here.
    lay = plan_layout(PROFILES, devices, gateways)
    assert lay.devices == devices and all(g.devices >= 1 for g in lay.gateways)
    assert all(PROFILES[c].domain == g.domain for g in lay.gateways for c in g.counts)


def _schedule(devices=600, gateways=12, duration=600.0, seed=3, **kw):
    lay = plan_layout(PROFILES, devices, gateways)
    return lay, plan_schedule(lay, PROFILES, duration, seed, ScheduleOptions(**kw))


def test_every_kind_once_at_least_and_no_two_steps_overlap_on_a_gateway():
    lay, plan = _schedule(attacks_per_gateway=1, campaigns=2, lookalike_share=0.5)
    kinds = Counter(s.kind for specs in plan.attacks.values() for s in specs if not s.campaign and s.id not in plan.decoys)
    assert set(kinds) == set(ATTACKS) and sum(kinds.values()) == 12
    for gid, specs in plan.attacks.items():
        spans = sorted((s.start, s.start + s.duration) for s in specs)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (gid, spans)
        assert all(0 < s.start and s.start + s.duration <= 600 for s in specs)


def test_campaign_templates_vary_and_keep_their_rules():
    lay, plan = _schedule(campaigns=10)
    by_id = {g.id: g for g in lay.gateways}
    assert [c.id for c in plan.campaigns] == [f"c{i}" for i in range(1, 11)]
    assert {c.template for c in plan.campaigns} == set(TEMPLATES)  # each template in turn
    assert len({c.mode for c in plan.campaigns}) >= 2  # modes rotate
    assert {len(TEMPLATES[c.template]) for c in plan.campaigns} == {2, 3, 4}
    orders = set()
    for c in plan.campaigns:
        specs = sorted((s for v in plan.attacks.values() for s in v if s.campaign == c.id), key=lambda s: s.stage)
        shape = TEMPLATES[c.template]
        assert [s.stage for s in specs] == list(range(1, len(shape) + 1))
        gws = [by_id[g] for g in c.gateways]
        for (_, d1, k1), g1 in zip(shape, gws):  # same slot = same gateway; domain slots = domains
            for (_, d2, k2), g2 in zip(shape, gws):
                assert (g1.id == g2.id) == ((d1, k1) == (d2, k2)) and (g1.domain == g2.domain) == (d1 == d2)
        orders.add(tuple(dict.fromkeys(g.domain for g in gws)))
        assert all(a.start + a.duration <= b.start for a, b in zip(specs, specs[1:]))
        first_role = shape[0][0]
        for (role, _, _), s, g in zip(shape, specs, gws):
            if role == "credential":
                assert s.kind == "mqtt_bruteforce" and s.params == {"success": True} and s.attacker == c.attacker
            elif role == "tamper":
                assert s.kind == "false_data" and s.attacker == c.attacker
            elif role == "exfiltration":  # a device behind the gateway whose credentials the stage before won
                assert s.kind == "exfiltration" and s.attacker in _device_ips(g) and s.attacker != c.attacker
                assert plan.notes[s.id]["compromised_in"] == specs[s.stage - 2].id
                assert c.gateways[s.stage - 2] == g.id
        if first_role != "recon":
            assert c.mode == "external"
        recon_net = ipaddress.IPv4Network(gws[0].subnet)
        if c.mode == "external":
            assert ipaddress.IPv4Address(c.attacker) not in ipaddress.IPv4Network("10.0.0.0/8")
            assert specs[0].attacker == c.attacker
        else:  # the later stages come from a device behind the recon's gateway
            assert ipaddress.IPv4Address(c.attacker) in recon_net and c.attacker in _device_ips(gws[0])
        if c.mode == "pivot":
            assert c.attacker in specs[0].victims  # the scan found the device it then took over
            assert plan.notes[specs[1].id]["compromised_in"] == specs[0].id
    assert len(orders) > 1  # domain orders vary too


def test_campaign_templates_need_two_gateways_of_a_domain():
    lay, plan = _schedule(devices=60, gateways=3, campaigns=6)
    assert "domain_then_jump" not in {c.template for c in plan.campaigns}
    assert len({c.template for c in plan.campaigns}) == len(TEMPLATES) - 1


def test_the_schedule_is_the_seeds():
    (_, a), (_, b), (_, c) = (_schedule(campaigns=5, seed=s) for s in (3, 3, 4))
    assert [x.to_dict() for x in a.campaigns] == [x.to_dict() for x in b.campaigns] and a.attacks == b.attacks
    assert [x.to_dict() for x in a.campaigns] != [x.to_dict() for x in c.campaigns]


def test_decoys_shadow_a_campaign_stage_with_another_attacker_and_change_nothing_else():
    lay, plan = _schedule(campaigns=4, attacks_per_gateway=1, lookalike_share=0.5)
    _, bare = _schedule(campaigns=4, attacks_per_gateway=1, lookalike_share=0.5, decoys=0)
    by_id = {g.id: g for g in lay.gateways}
    specs = {s.id: (gid, s) for gid, v in plan.attacks.items() for s in v if s.id}
    assert len(plan.decoys) == 4 and not bare.decoys
    campaign_attackers = {s.attacker for gid, v in plan.attacks.items() for s in v if s.campaign}
    for sid in plan.decoys:
        gid, d = specs[sid]
        note = plan.notes[sid]
        sgid, stage = specs[note["shadows"]]
        assert d.campaign == "" and note["decoy_of"] == stage.campaign  # no campaign in the ground truth
        assert d.kind == stage.kind and d.kind in ("mqtt_bruteforce", "port_scan") and d.params == {}
        assert by_id[gid].domain == by_id[sgid].domain
        assert d.attacker.startswith("198.51.100.") and d.attacker not in campaign_attackers
    # the same schedule otherwise: decoys take free slots from a random stream of their own
    key = lambda p: sorted((g, s.kind, s.start, s.attacker, s.campaign) for g, v in p.attacks.items()  # noqa: E731
                           for s in v if s.id not in p.decoys)
    assert key(plan) == key(bare) and plan.lookalikes == bare.lookalikes
    starts = {sid: specs[sid][1].start for sid in plan.decoys}
    shadowed = {sid: specs[plan.notes[sid]["shadows"]][1].start for sid in plan.decoys}
    L = (600 - 60) / max(len(v) for v in bare.attacks.values())  # a slot is at most this long
    assert all(abs(starts[k] - shadowed[k]) < 2 * L for k in starts)  # the stage's slot or the next one


def _device_ips(g) -> set[str]:
    return {device_address(g.subnet, i) for i in range(g.devices)}


def test_a_power_cut_hits_a_whole_district_at_once():
    lay, plan = _schedule(lookalike_share=1.0, campaigns=0, attacks_per_gateway=0)
    cuts = [(gid, s) for gid, looks in plan.lookalikes.items() for s in looks if s.kind == "power_cut"]
    assert cuts
    by_district: dict[str, set] = {}
    for gid, s in cuts:
        by_district.setdefault(plan.notes[s.id]["district"], set()).add(s.start)
    for d, starts in by_district.items():
        assert len(starts) == 1
        assert {gid for gid, s in cuts if plan.notes[s.id]["district"] == d} == {g.id for g in lay.of_district(d)}
    rush = [gid for gid, looks in plan.lookalikes.items() for s in looks if s.kind == "rush_hour"]
    by_id = {g.id: g for g in lay.gateways}
    assert rush and all(any(t.peak_factor > 1 for c in by_id[gid].counts for t in PROFILES[c].mqtt.topics) for gid in rush)


def test_no_attacks_means_an_empty_schedule():
    lay = plan_layout(PROFILES, 60, 6)
    plan = plan_schedule(lay, PROFILES, 120, 1, ScheduleOptions.none())
    assert plan.steps == 0 and not plan.campaigns and not any(plan.lookalikes.values())


def test_the_schedule_depends_on_the_seed_only():
    a, b, c = (_schedule(seed=s)[1] for s in (5, 5, 6))
    key = lambda p: [(g, s.kind, s.start, s.attacker) for g, v in sorted(p.attacks.items()) for s in v]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


@pytest.mark.parametrize("kw,words", [
    ({"attacks_per_gateway": -1}, "attacks-per-gateway: must be >= 0"),
    ({"campaigns": -2}, "campaigns: must be >= 0"),
    ({"lookalike_share": 1.5}, "lookalike-share: must be between 0 and 1"),
])
def test_schedule_option_errors(kw, words):
    with pytest.raises(ValueError, match=words):
        ScheduleOptions(**kw)
