"""Every baseline on one small city (`atlas-sim city`'s builder) with the real agent's incidents,
through the harness's entry point (run_baselines), as `atlas-sim evaluate` calls them."""
from __future__ import annotations

import pytest
from atlas.sim.city.build import build_city
from atlas.sim.city.schedule import ScheduleOptions
from atlas.sim.evaluate.agent import jobs_for, run_agent
from atlas.sim.evaluate.baselines import run_baselines
from atlas.sim.evaluate.baselines.playbook import atlas_responses, city_inventory
from atlas.sim.evaluate.campaigns import run_correlation
from atlas.sim.evaluate.city import load_city
from atlas.sim.evaluate.metrics import detection_of, match, step_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    build_city(out / "city", devices=90, gateways=3, duration=360, seed=11, workers=1,
               schedule=ScheduleOptions(campaigns=1))
    city = load_city(out / "city")
    agent = run_agent(jobs_for(city), workers=1)
    results = run_baselines(city, agent, out / "report")
    return city, agent, results, out / "report"


def test_every_baseline_runs(evaluated):
    _, _, results, _ = evaluated
    assert {"signature", "centralized", "centralized_300s", "per_domain", "static_playbook"} <= set(results)
    for name, res in results.items():
        assert not res.notes.startswith("failed"), f"{name}: {res.notes}"


def test_signature_detections_match_attack_steps(evaluated):
    city, _, results, _ = evaluated
    dets = [detection_of(d, gw) for gw, ds in results["signature"].detections.items() for d in ds]
    steps = [step_of(s) for s in city.steps]
    m = match(dets, steps)
    detected = {s.kind for s in steps if m.by_step[s.id]}
    # the rules see every kind they have a rule for, when the city has it
    for kind in ("port_scan", "mqtt_bruteforce", "mqtt_flood", "malformed", "topic_scan", "mirai_scan"):
        if any(s.kind == kind for s in steps):
            assert kind in detected, kind
    assert "false_data" not in {d.kind for d in dets}  # no rule can see physical ranges


def test_centralized_detects_at_export_times_and_measures_bytes(evaluated):
    city, _, results, _ = evaluated
    for name, interval in (("centralized", 60.0), ("centralized_300s", 300.0)):
        res = results[name]
        times = [d["detected_at"] for ds in res.detections.values() for d in ds]
        assert times, name
        assert all(((t - city.start) / interval) == pytest.approx(round((t - city.start) / interval)) for t in times)
        assert res.metrics["bandwidth_bytes_per_device_hour"] > 0
    # longer export intervals ship fewer records (long flows cut less often)
    assert results["centralized_300s"].metrics["bandwidth_bytes_per_device_hour"] < \
        results["centralized"].metrics["bandwidth_bytes_per_device_hour"]


def test_campaign_correlation_scores(evaluated):
    city, agent, results, _ = evaluated
    res = results["per_domain"]
    assert any(s.campaign for s in city.steps)
    corr = run_correlation(city, agent.incidents())  # what the harness's ATLAS path runs
    hub, dom = corr["city"], corr["domain"]
    assert hub["campaigns"] == dom["campaigns"] == len({s.campaign for s in city.steps if s.campaign})
    # per-domain links are a subset of the city-wide ones: never more stages linked
    for c in hub["by_campaign"]:
        assert dom["by_campaign"][c]["stages_linked"] <= hub["by_campaign"][c]["stages_linked"]
        assert hub["by_campaign"][c]["full_chain"] <= hub["by_campaign"][c]["two_or_more"]
    assert res.metrics["campaigns_detected"] == dom["share_full_chain"]
    assert res.metrics["campaigns_two_or_more_linked"] == dom["share_two_or_more"]


def test_playbooks_on_the_city(evaluated):
    city, agent, results, _ = evaluated
    res = results["static_playbook"]
    for value in (res.metrics["availability"], res.atlas["availability"]):
        assert value is None or 0.0 <= value <= 1.0
    life_safety = {d["ip"] for d in city.devices if d["criticality"] == "life_safety"}
    rules = atlas_responses(agent.incidents(), city_inventory(city))
    assert not [r for r in rules if r.action == "quarantine" and r.target in life_safety]
    assert len(rules) <= sum(len(v) for v in agent.incidents().values()) * 2


def test_one_decode_of_each_capture_serves_every_baseline(evaluated):
    from atlas.sim.evaluate.baselines.passes import city_pass

    city, agent, _, report = evaluated
    run = city_pass(city, agent, report)
    assert city_pass(city, agent, report) is run  # what run_baselines computed, not a second decode
    assert sum(g.packets for g in run.gateways.values()) == sum(g["packets"] for g in city.gateways)
    assert set(run.gateways) == set(city.gateway_ids)
