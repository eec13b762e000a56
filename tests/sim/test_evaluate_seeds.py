"""The three-way split of seeds and campaign templates (atlas.sim.evaluate.splits) and
`atlas-sim evaluate-seeds`: N cities of a split, mean and 95 % t-interval over them."""
from __future__ import annotations

import json
import math

import pytest

from atlas.firmware_profiles import load_device_profiles
from atlas.sim.city import ScheduleOptions, plan_layout, plan_schedule
from atlas.sim.city.schedule import ALL_TEMPLATES, HELD_OUT_TEMPLATES
from atlas.sim.cli import main
from atlas.sim.evaluate.figures import KEYS
from atlas.sim.evaluate.seeds import interval, summarize, t975
from atlas.sim.evaluate.splits import SEED_RANGES, SPLITS, TEMPLATE_SPLIT, seeds_of, split_of_seed, templates_of


def test_every_template_in_one_split_and_the_report_holds_out_templates_nobody_tuned_on():
    assert set(TEMPLATE_SPLIT) == set(ALL_TEMPLATES) and set(TEMPLATE_SPLIT.values()) == set(SPLITS)
    assert set(templates_of("report")) == set(HELD_OUT_TEMPLATES)
    assert not set(templates_of("report")) & (set(templates_of("training")) | set(templates_of("validation")))


def test_seed_ranges_are_disjoint_and_the_cities_already_looked_at_are_training():
    ranges = sorted(SEED_RANGES.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert {split_of_seed(s) for s in (1, 2, 3, 5, 7)} == {"training"}
    assert [split_of_seed(s) for s in seeds_of("report", 5)] == ["report"] * 5
    assert seeds_of("report", 2, first=3) == [SEED_RANGES["report"][0] + 3, SEED_RANGES["report"][0] + 4]
    with pytest.raises(ValueError, match="split: must be one of"):
        seeds_of("test", 1)
    with pytest.raises(ValueError, match="seeds: must be >= 1"):
        seeds_of("report", 0)


def test_a_report_city_draws_its_campaigns_from_the_held_out_templates_only():
    profiles = load_device_profiles()
    lay = plan_layout(profiles, 600, 12)
    plan = plan_schedule(lay, profiles, 600, seeds_of("report", 1)[0], ScheduleOptions(campaigns=6, templates=templates_of("report")))
    assert {c.template for c in plan.campaigns} == set(HELD_OUT_TEMPLATES)
    with pytest.raises(ValueError, match="unknown campaign template 'nope'"):
        ScheduleOptions(templates=("nope",))


def test_t_interval_by_hand():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=1e-3) and t975(1000) == pytest.approx(1.962, abs=1e-3)
    i = interval([1.0, 2.0, 3.0])
    assert i["mean"] == 2.0 and i["half_width"] == pytest.approx(4.303 / math.sqrt(3))
    assert i["low"] == pytest.approx(2 - 4.303 / math.sqrt(3)) and i["n"] == 3
    assert interval([0.5]) == {"mean": 0.5, "low": None, "high": None, "half_width": None, "n": 1}
    s = summarize([{"metrics": {"step_recall": 1.0, "containment": {"none": 0.0}}},
                   {"metrics": {"step_recall": None, "containment": {"none": 0.5}}}])
    assert s["step_recall"]["n"] == 1 and s["step_recall"]["values"] == [1.0, None]
    assert s["containment.none"]["mean"] == 0.25 and s["containment.none"]["half_width"] == pytest.approx(12.706 * 0.25)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "ev"
    rc = main(["evaluate-seeds", "--split", "report", "--seeds", "2", "--devices", "60", "--gateways", "6",
               "--duration", "60", "--out", str(out), "--workers", "1"])
    assert rc == 0
    return out


def test_evaluate_seeds_summarises_the_report_cities(run):
    out = run
    s = json.loads((out / "summary.json").read_text())
    assert s["seeds"] == seeds_of("report", 2) and s["templates"] == list(templates_of("report"))
    assert s["commit"] and s["model_version"] and "+sha256:" in s["model_version"]
    reports = [json.loads((out / "reports" / f"seed-{seed}" / "report.json").read_text())["metrics"] for seed in s["seeds"]]
    assert [r["seeds"] for r in reports] == [[seed] for seed in s["seeds"]]
    for key in ("step_recall", "campaign_link_precision", "campaign_link_recall", "availability_critical.none"):
        m = s["metrics"][key]
        head, _, policy = key.partition(".")
        assert m["values"] == [r[head][policy] if policy else r[head] for r in reports]
        vals = [v for v in m["values"] if v is not None]
        assert m["mean"] == pytest.approx(sum(vals) / len(vals))
        if len(vals) == 2:
            assert m["low"] <= m["mean"] <= m["high"]
    assert {k.partition(".")[0] for k in s["metrics"]} <= set(KEYS)
    md = (out / "summary.md").read_text()
    assert "| campaign_link_precision |" in md and s["commit"] in md


def test_a_decoy_merged_into_its_campaign_lowers_link_precision_on_a_real_city(run):
    from atlas.central.correlate import Campaign, Topology, correlate
    from atlas.sim.evaluate.campaigns import city_events, score_campaigns
    from atlas.sim.evaluate.city import load_city

    seed = seeds_of("report", 1)[0]
    city = load_city(run / "cities" / f"seed-{seed}")
    incidents = {p.stem: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
                 for p in (run / "reports" / f"seed-{seed}" / "incidents").glob("*.jsonl")}
    topology = Topology.from_city(city.meta)
    events = city_events(city, incidents, topology)
    decoy = next(s for s in city.steps if s.params.get("decoy_of"))
    decoy_events = [e for e in events if e.src_ip == decoy.attacker and e.gateway == decoy.gateway]
    assert decoy_events, "the agents detected the decoy"
    camps = correlate(events, topology, scope="city")
    before = score_campaigns(camps, events, city.steps)["links"]
    ids = {e.id for e in decoy_events}
    stage_ids = set(next(c for c in city.meta["campaigns"] if c["id"] == decoy.params["decoy_of"])["stages"])
    stage_attackers = {(s.gateway, s.attacker) for s in city.steps if s.id in stage_ids}
    home = next(c for c in camps if any((e.gateway, e.src_ip) in stage_attackers for e in c.events))
    merged = [Campaign(c.id, [e for e in c.events if e.id not in ids] + (decoy_events if c is home else []), c.links)
              for c in camps]
    after = score_campaigns([c for c in merged if c.events], events, city.steps)["links"]
    assert after["false_links"] > before["false_links"] and after["precision"] < before["precision"]
    assert after["recall"] == before["recall"]


def test_a_bad_split_is_one_clear_line(tmp_path, capsys):
    rc = main(["evaluate-seeds", "--split", "test", "--seeds", "2", "--devices", "60", "--gateways", "6",
               "--duration", "60", "--out", str(tmp_path / "x")])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        "atlas-sim evaluate-seeds: split: must be one of training, validation, report, got 'test'")


def test_no_report_template_is_a_shape_the_learned_correlator_trained_on():
    # atlas.train.correlate.data keeps its own episode split; the simulator's report cities must
    # still be new to it, by name and by shape.
    from atlas.train.correlate import data

    trained = {data.TEMPLATES[t].stages for t in data.SPLIT["train"]}
    for name in templates_of("report"):
        assert name not in data.SPLIT["train"] and ALL_TEMPLATES[name] not in trained, name
