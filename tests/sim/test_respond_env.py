"""The responder's environment (atlas.sim.respond): the gymnasium contract, masks, the hub's
shield inside the env, seeded splits, and the scripted defenders on the same episodes."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import check_env  # noqa: E402

from atlas.sim.respond import env as respond_env  # noqa: E402
from atlas.sim.respond.defenders import DEFENDERS  # noqa: E402
from atlas.sim.respond.env import (N_ACTIONS, SPLITS, TTLS_S, Incident, RespondEnv, build_city,  # noqa: E402
                                   decode_action, encode_action)
from atlas.sim.respond.score import run_episodes  # noqa: E402


@pytest.fixture(scope="module")
def city():
    return build_city()


def inject(env: RespondEnv, src: str, kind: str = "anomaly", real: bool = True) -> int:
    """An open incident from `src` on its gateway, in the first free slot; returns the slot."""
    gw = env.city.raw["devices"][env.city.address[src]]["gateway"] if src in env.city.address \
        else env.city.raw["gateways"][0]["id"]
    env.state.incidents.append(Incident(f"t{len(env.state.incidents)}", kind, src, gw, 0.9, 1, real,
                                        env.state.tick))
    return [i for i, inc in enumerate(env.slots()) if inc is not None and inc.src == src][0]


def test_passes_gymnasium_env_checker(city):
    check_env(RespondEnv(city=city), skip_render_check=True)


def test_action_codes_round_trip():
    for a in range(1, N_ACTIONS):
        assert encode_action(*decode_action(a)) == a
    assert decode_action(0) is None


def test_masks_empty_slots_and_revoke_of_a_host_without_identity(city):
    env = RespondEnv(city=city)
    env.reset(seed=3)
    env.state.incidents.clear()
    mask = env.action_masks()
    assert mask.shape == (N_ACTIONS,) and mask.dtype == bool
    assert mask[0] and mask.sum() == 1  # nothing open: only "none"
    slot = inject(env, "203.0.113.77", "port_scan")
    mask = env.action_masks()
    assert mask[encode_action(slot, "quarantine", TTLS_S[0])]
    assert not mask[encode_action(slot, "revoke_mqtt", TTLS_S[0])]  # an outside host has no MQTT id
    device = city.raw["devices"][0]["ip"]
    slot2 = inject(env, device)
    assert env.action_masks()[encode_action(slot2, "revoke_mqtt", TTLS_S[0])]


def life_safety_device(city, cls: str = "emergency_call_box") -> str:
    return next(d["ip"] for d in city.raw["devices"] if d["class"] == cls)


def test_shield_turns_a_life_safety_quarantine_into_an_approval_request(city, monkeypatch):
    env = RespondEnv(city=city)
    env.reset(seed=0)
    env.state.incidents.clear()
    box = life_safety_device(city)
    slot = inject(env, box)
    env.step(encode_action(slot, "quarantine", TTLS_S[1]))
    inc = next(i for i in env.state.incidents if i.src == box)
    assert inc.rule == "none" and inc.approval_at > 0  # not cut off: a human is asked
    assert env.state.counters["approvals"] == 1 and env.state.counters["violations"] == 0
    monkeypatch.setattr(respond_env, "HUMAN_APPROVES", {True: 1.0, False: 1.0})
    for _ in range(respond_env.APPROVAL_STEPS):
        env.step(0)
    assert inc.rule == "quarantine"  # approved: cut off, and not a violation
    assert env.state.counters["violations"] == 0


def test_shield_suppresses_an_allowlisted_target_and_it_costs(city):
    broker = city.raw["gateways"][0]["broker"]
    rewards = []
    for verb in ("filter", None):
        env = RespondEnv(city=city)
        env.reset(seed=0)
        env.state.incidents.clear()
        slot = inject(env, broker)
        rewards.append(env.step(encode_action(slot, verb, TTLS_S[0]) if verb else 0)[1])
        assert all(i.rule == "none" for i in env.state.incidents if i.src == broker)
        assert env.state.counters["suppressed"] == (1 if verb else 0)
    assert rewards[0] < rewards[1]  # a suppressed decision does nothing and costs a little


def test_violation_counter_sees_an_unapproved_life_safety_cut(city):
    """The count the defenders are held to is live: enforcing past the shield is counted."""
    from atlas.central.decide import Decision

    env = RespondEnv(city=city)
    env.reset(seed=0)
    box = life_safety_device(city)
    inject(env, box)
    inc = env.state.incidents[-1]
    hub, ctx = env.hub_view(inc)
    env._enforce(inc, Decision(action="quarantine", target=box, ttl=900.0, reason="t"), ctx)
    assert env.state.counters["violations"] == 1


@pytest.mark.parametrize("ontology", [True, False])
def test_blast_cost_of_cutting_off_a_service_member(city, ontology):
    if ontology:
        pytest.importorskip("rdflib")
    c = city if ontology else build_city(ontology=False)
    assert (c.graph is not None) == ontology
    env = RespondEnv(city=c)
    env.reset(seed=0)
    env.state.incidents.clear()
    box = life_safety_device(c)
    assert env.blast_cost("quarantine", box) > 0  # call boxes: min_up 1.0
    assert env.blast_cost("revoke_mqtt", box) > 0
    assert env.blast_cost("quarantine", "203.0.113.5") == 0.0
    assert env.blast_cost("rate_limit", box) == 0.0


def test_episodes_are_seeded_and_report_templates_never_train(city):
    def trajectory(seed: int) -> list[np.ndarray]:
        env = RespondEnv(city=city)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(20):
            out.append(env.step(0)[0])
        return out

    assert all(np.array_equal(a, b) for a, b in zip(trajectory(5), trajectory(5)))
    env = RespondEnv("train", city=city)
    seen = {env.reset(seed=s)[1]["template"] for s in range(40)}
    assert seen == set(SPLITS["train"]) and not seen & set(SPLITS["report"])
    assert RespondEnv("report", city=city).reset(seed=0)[1]["template"] in SPLITS["report"]
    with pytest.raises(ValueError, match="split"):
        RespondEnv("test", city=city)


def test_defenders_on_the_same_report_episodes(city):
    runs = {name: run_episodes(name, 8, 100, "report", city) for name in ("none", "static", "playbook")}
    mean = {n: {m: float(np.mean([r[m] for r in rs])) for m in rs[0]} for n, rs in runs.items()}
    assert mean["none"]["containment"] < mean["playbook"]["containment"]
    assert mean["static"]["availability"] < mean["playbook"]["availability"]
    for name, rs in runs.items():
        assert sum(r["shield_violations"] for r in rs) == 0, name


def test_respond_eval_command_writes_the_table(tmp_path, capsys):
    from atlas.sim.cli import main

    assert main(["respond-eval", "--episodes", "2", "--seed", "7", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "respond_eval.json").read_text())
    assert set(result["defenders"]) == set(DEFENDERS)
    for row in result["defenders"].values():
        assert row["shield_violations"]["mean"] == 0
        assert row["availability"]["low"] <= row["availability"]["mean"] <= row["availability"]["high"]
    assert "| greedy |" in (tmp_path / "respond_eval.md").read_text()
    assert main(["respond-eval", "--episodes", "1", "--seed", "7", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--episodes" in err[0]
