"""Per-domain isolation vs city-wide correlation, scored against ground-truth campaigns on
hand-made incidents."""
from __future__ import annotations

from types import SimpleNamespace

from atlas.central.correlate import Topology, correlate
from atlas.sim.evaluate.campaigns import city_events, run_correlation, score_campaigns
from atlas.sim.capture import AttackStep

T0 = 1_767_254_400.0
EXT = "203.0.113.10"
META = {"gateways": [
    {"id": "gw-d01-tra", "domain": "transportation", "district": "d01", "subnet": "10.1.0.0/16", "broker": "10.1.0.1"},
    {"id": "gw-d01-ene", "domain": "energy", "district": "d01", "subnet": "10.2.0.0/16", "broker": "10.2.0.1"},
    {"id": "gw-d01-pub", "domain": "public_safety", "district": "d01", "subnet": "10.3.0.0/16", "broker": "10.3.0.1"},
    {"id": "gw-d02-ene", "domain": "energy", "district": "d02", "subnet": "10.5.0.0/16", "broker": "10.5.0.1"},
]}


def step(id, kind, gw, attacker, start, campaign="", stage=1):
    return AttackStep(id, kind, campaign, stage, attacker, [], gw, T0 + start, T0 + start + 30, attackers=[attacker])


def inc(gw, src, t, kind="anomaly", dst=""):
    return {"id": f"{gw}/{src}/{kind}/{t}", "gateway": gw, "src_ip": src, "kind": kind, "dst_ip": dst,
            "time": T0 + t, "last_seen": T0 + t + 20, "evidence": {"detected_at": T0 + t + 1}}


# c1: external recon on transportation -> pivot device 10.1.4.4 brute-forces energy -> tampers in public safety
STEPS = [step("c1/1", "port_scan", "gw-d01-tra", EXT, 0, "c1", 1),
         step("c1/2", "mqtt_bruteforce", "gw-d01-ene", "10.1.4.4", 300, "c1", 2),
         step("c1/3", "false_data", "gw-d01-pub", "10.1.4.4", 600, "c1", 3),
         # c2: two stages inside the energy domain (two districts), same outside attacker
         step("c2/1", "port_scan", "gw-d01-ene", "203.0.113.77", 100, "c2", 1),
         step("c2/2", "mqtt_flood", "gw-d02-ene", "203.0.113.77", 400, "c2", 2),
         step("single", "mqtt_flood", "gw-d01-pub", "10.3.255.254", 50)]
CITY = SimpleNamespace(meta=META, steps=STEPS)


def test_city_wide_links_the_cross_domain_campaign_per_domain_does_not():
    incidents = {"gw-d01-tra": [inc("gw-d01-tra", EXT, 1, "port_scan", dst="10.1.0.1")],
                 "gw-d01-ene": [inc("gw-d01-ene", "10.1.4.4", 302, dst="10.2.0.1"), inc("gw-d01-ene", "203.0.113.77", 101)],
                 "gw-d01-pub": [inc("gw-d01-pub", "10.1.4.4", 605), inc("gw-d01-pub", "10.3.255.254", 55)],
                 "gw-d02-ene": [inc("gw-d02-ene", "203.0.113.77", 402)]}
    scores = run_correlation(CITY, incidents)
    hub, dom = scores["city"], scores["domain"]
    assert hub["by_campaign"]["c1"] == {"stages": 3, "stages_detected": 3, "stages_linked": 3, "linked": [1, 2, 3],
                                        "full_chain": True, "two_or_more": True, "by": hub["by_campaign"]["c1"]["by"]}
    assert hub["by_campaign"]["c2"]["stages_linked"] == 2 and hub["share_full_chain"] == hub["share_two_or_more"] == 1.0
    # per domain: c1's stages are in three domains; c2 is inside energy and still linked
    assert dom["by_campaign"]["c1"]["stages_linked"] == 1 and not dom["by_campaign"]["c1"]["two_or_more"]
    assert dom["by_campaign"]["c2"]["full_chain"] and dom["share_full_chain"] == dom["share_two_or_more"] == 0.5
    assert hub["false_campaigns"] == 0 and hub["stages_linked"] == 5 and hub["stages"] == 5


def test_a_missed_stage_and_false_campaigns():
    # stage 1 missed: stages 2 and 3 are still linked (same pivot device)
    incidents = {"gw-d01-ene": [inc("gw-d01-ene", "10.1.4.4", 302)], "gw-d01-pub": [inc("gw-d01-pub", "10.1.4.4", 605)]}
    c1 = run_correlation(CITY, incidents)["city"]["by_campaign"]["c1"]
    assert (c1["stages_detected"], c1["stages_linked"], c1["two_or_more"], c1["full_chain"]) == (2, 2, True, False)
    # one stage alone is no campaign
    alone = run_correlation(CITY, {"gw-d01-pub": [inc("gw-d01-pub", "10.1.4.4", 605)]})["city"]
    assert alone["by_campaign"]["c1"]["stages_linked"] == 1 and alone["two_or_more"] == alone["full_chain"] == 0
    # a benign device flagged on two gateways under one address: a false campaign
    noise = {"gw-d01-ene": [inc("gw-d01-ene", "10.2.9.9", 1000)], "gw-d02-ene": [inc("gw-d02-ene", "10.2.9.9", 1010)]}
    scores = run_correlation(CITY, noise)["domain"]
    assert scores["false_campaigns"] == 1 and scores["correlated_campaigns"] == 1


def test_score_counts_a_stage_once_whatever_the_incidents():
    topo = Topology.from_city(META)
    incidents = {"gw-d01-tra": [inc("gw-d01-tra", EXT, 1, dst="10.1.0.1"), inc("gw-d01-tra", EXT, 5, "volumetric")],
                 "gw-d01-ene": [inc("gw-d01-ene", "10.1.4.4", 302)]}
    events = city_events(CITY, incidents, topo)
    s = score_campaigns(correlate(events, topo), events, STEPS)
    assert s["by_campaign"]["c1"]["linked"] == [1, 2]
    # an incident outside every step's window belongs to none
    late = {"gw-d01-ene": [inc("gw-d01-ene", "10.1.4.4", 2000)], "gw-d01-pub": [inc("gw-d01-pub", "10.1.4.4", 2100)]}
    s = run_correlation(CITY, late)["city"]
    assert s["by_campaign"]["c1"]["stages_linked"] == 0 and s["false_campaigns"] == 1


# c3: two stages inside transportation (scan, then brute force on another gateway), then a jump
# to public safety from a device behind the first gateway (a pivot)
META3 = {"gateways": META["gateways"] + [
    {"id": "gw-d02-tra", "domain": "transportation", "district": "d02", "subnet": "10.4.0.0/16", "broker": "10.4.0.1"}]}
STEPS3 = [step("c3/1", "port_scan", "gw-d01-tra", EXT, 0, "c3", 1),
          step("c3/2", "mqtt_bruteforce", "gw-d02-tra", EXT, 200, "c3", 2),
          step("c3/3", "false_data", "gw-d01-pub", "10.1.7.7", 500, "c3", 3)]
CITY3 = SimpleNamespace(meta=META3, steps=STEPS3)


def test_two_stages_in_one_domain_count_per_domain_as_two_linked_but_not_the_full_chain():
    incidents = {"gw-d01-tra": [inc("gw-d01-tra", EXT, 1, "port_scan", dst="10.1.0.1")],
                 "gw-d02-tra": [inc("gw-d02-tra", EXT, 201, "mqtt_bruteforce", dst="10.4.0.1")],
                 "gw-d01-pub": [inc("gw-d01-pub", "10.1.7.7", 505, "false_data")]}
    scores = run_correlation(CITY3, incidents)
    hub, dom = scores["city"]["by_campaign"]["c3"], scores["domain"]["by_campaign"]["c3"]
    assert (hub["stages_linked"], hub["full_chain"], hub["two_or_more"]) == (3, True, True)
    assert (dom["stages_linked"], dom["full_chain"], dom["two_or_more"]) == (2, False, True)
    assert scores["domain"]["share_full_chain"] == 0.0 and scores["domain"]["share_two_or_more"] == 1.0
    # the last stage missed: city-wide still links two, but no full chain
    del incidents["gw-d01-pub"]
    hub = run_correlation(CITY3, incidents)["city"]
    assert (hub["full_chain"], hub["two_or_more"], hub["by_campaign"]["c3"]["stages_detected"]) == (0, 1, 2)
