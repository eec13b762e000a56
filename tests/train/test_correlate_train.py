"""The learned correlator's training: the split never shows the report templates or seeds to
training or tuning, the data has its decoys and the templates the rules cannot express, and one
command with a fixed seed trains the same model twice (a tiny run)."""
from __future__ import annotations

import json

import numpy as np

from atlas.central.correlate import features as F
from atlas.central.correlate.attention import AttentionModel
from atlas.central.correlate.rules import DEFAULT_WINDOW_S, correlate
from atlas.train.correlate import data
from atlas.train.correlate.__main__ import main
from atlas.train.correlate.evaluate import BEYOND_RULES, score


def test_report_templates_and_seeds_are_never_trained_or_tuned_on():
    assert set(data.SPLIT["train"]).isdisjoint(data.SPLIT["report"])
    seeds = {k: set(v) for k, v in data.SEEDS.items()}
    assert not (seeds["train"] & seeds["validation"] or seeds["train"] & seeds["report"]
                or seeds["validation"] & seeds["report"])
    report = data.episodes("report", range(2000, 2003))
    assert {t for ep in report for t in ep.templates.values()} <= set(data.SPLIT["report"])
    assert {t for ep in data.episodes("validation", range(1000, 1003))
            for t in ep.templates.values()} <= set(data.SPLIT["train"])


def test_episodes_have_decoys_a_shared_district_and_gaps_the_rules_miss():
    ep = data.episode(2000, ("dormant_jump",))
    decoys = [e for e in ep.events if ep.truth[e.id] == e.id]
    stages = [e for e in ep.events if ep.truth[e.id] != e.id]
    assert len(decoys) > len(stages)
    # a second attacker with a campaign stage's tool, in its domain
    assert any(d.kind == s.kind and d.domain == s.domain and d.src_ip != s.src_ip
               for d in decoys for s in stages)
    first_two = [[e for e in stages if ep.truth[e.id] == c] for c in sorted(ep.templates)[:2]]
    assert {e.district for e in first_two[0]} & {e.district for e in first_two[1]}
    # the dormant gap (hours) splits the chain for the rules at their one-hour window
    rules = score(ep, correlate(ep.events, ep.topology, window_s=DEFAULT_WINDOW_S))
    assert rules["full_chain"] == 0.0
    assert "dormant_jump" in BEYOND_RULES


def test_one_command_trains_the_same_model_twice(tmp_path, capsys):
    args = ["train", "--train-seeds", "0-5", "--validation-seeds", "1000-1001", "--epochs", "1",
            "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    cards = [json.loads((tmp_path / x / "attention.json").read_text()) for x in "ab"]
    assert cards[0] == cards[1] and cards[0]["seed"] == 3
    rng = np.random.default_rng(0)
    x = (rng.random((5, F.T, F.H), dtype=np.float32), rng.random((5, F.T, F.R), dtype=np.float32),
         np.ones((5, F.T), np.float32), rng.random((5, F.N), dtype=np.float32))
    a, b = (AttentionModel(tmp_path / x_ / "attention.tflite")(*x) for x_ in "ab")
    assert np.array_equal(a.link, b.link) and np.array_equal(a.attention, b.attention)


def test_the_comparison_command_scores_every_engine_on_report_seeds(capsys, tmp_path):
    assert main(["evaluate", "--seeds", "2000-2002", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["engines"]) == {"attention", "rules", "rules_6h", "per_domain"}
    for e in r["engines"].values():
        assert set(e["by_template"]) <= set(data.SPLIT["report"])
        assert 0 <= e["precision"][0] <= 1 and 0 <= e["full_chain"][0] <= 1
    assert r["engines"]["per_domain"]["full_chain"][0] == 0.0  # every template crosses domains
    assert r["next_domain_top2"]["cases"] > 0
    # a missing model: one line, no traceback
    assert main(["evaluate", "--model", str(tmp_path / "none.tflite")]) == 2
    err = capsys.readouterr().err
    assert "attention model not found" in err and err.count("\n") == 1
