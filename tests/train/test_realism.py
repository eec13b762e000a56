"""Realism check: sim-only models scored on the real MQTTset captures, recorded in the model card."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="training needs the `train` extra (TensorFlow)")

from atlas.train.recipe import DEFAULT_MQTTSET  # noqa: E402
from atlas.train.realism import main, realism_check, record  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]
MODELS = Path(__file__).resolve().parents[2] / "agent" / "detect" / "models"


def test_missing_mqttset_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no MQTTset captures"):
        realism_check(tmp_path, tmp_path / "nowhere", train_seeds=[1], devices=5, duration=60)
    assert main(["--work", str(tmp_path), "--mqttset", str(tmp_path / "nowhere"), "--models", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.mqttset
def test_sim_only_models_are_scored_on_every_real_capture(tmp_path):
    if not DEFAULT_MQTTSET.is_dir():
        pytest.skip(f"MQTTset captures not found at {DEFAULT_MQTTSET}")
    r = realism_check(tmp_path / "work", DEFAULT_MQTTSET, train_seeds=[1], devices=15, duration=300)
    assert r["trained_on"] == ["generated/seed-1"] and not any("mqttset" in s for s in r["trained_on"])
    attack_captures = {o["source"] for o in r["outcomes"]}
    assert attack_captures == {s for s in r["tested_on"] if "benign" not in s}
    assert 0 <= r["detected"] <= r["attacks"] == len(r["outcomes"])
    assert set(r["false_incidents_by_capture"]) == set(r["tested_on"])

    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    record(models, r | {"command": "test"})
    assert json.loads((models / "evaluation.json").read_text())["realism"]["detected"] == r["detected"]
    card = (models / "MODEL_CARD.md").read_text()
    assert "## Realism check" in card and f"Attacks detected: {r['detected']}/{r['attacks']}" in card
