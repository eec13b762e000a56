"""Engines and policies are chosen by name in central.toml; an unknown name is one clear
config error listing the known ones; the daemon's wiring builds what the config names."""
from __future__ import annotations

import pytest

from atlas.central.config import ConfigError, parse_config
from atlas.central.correlate.registry import ENGINES, RulesEngine, build_engine
from atlas.central.decide.playbook import Playbook
from atlas.central.decide.registry import POLICIES, build_policy
from atlas.central.daemon import build_correlator, gateway_places

BASE = {"hub": {"database": "central.db"}}


def config(**tables):
    return parse_config({**BASE, **tables}, source="central.toml")


def test_defaults_are_the_rules_engine_and_the_playbook():
    cfg = config()
    assert (cfg.correlate.engine, cfg.correlate.window, cfg.decide.policy) == \
        ("rules", 3600.0, "playbook")
    assert isinstance(build_policy(cfg), Playbook)
    engine = build_correlator(cfg)
    assert isinstance(engine, RulesEngine) and engine.window_s == 3600.0


def test_chosen_by_name_with_their_settings():
    cfg = config(correlate={"engine": "rules", "window": 600},
                 decide={"policy": "playbook", "shadow": True})
    assert build_correlator(cfg).window_s == 600.0
    policy = build_policy(cfg)
    assert isinstance(policy, Playbook) and policy.shadow is True


@pytest.mark.parametrize("tables, message", [
    ({"correlate": {"engine": "deepcase"}},
     "central.toml: correlate.engine: unknown correlation engine 'deepcase' (known: attention, rules)"),
    ({"decide": {"policy": "rl"}},
     "central.toml: decide.policy: unknown policy 'rl' (known: playbook)"),
    ({"correlate": {"window": 0}}, "central.toml: correlate.window: must be > 0"),
    ({"correlate": {"engin": "rules"}}, "central.toml: correlate.engin: unknown key (did you mean 'engine'?)"),
    ({"gateways": {"gw-1": {"subnet": "10.2.0.0/33"}}}, "central.toml: gateways.gw-1.subnet: bad network"),
    ({"gateways": {"gw 1": {"domain": "energy"}}}, "central.toml: gateways.gw 1: gateway id"),
    ({"gateways": {"gw-1": {"domian": "energy"}}}, "did you mean 'domain'?"),
])
def test_bad_names_and_places_are_one_clear_config_error(tables, message):
    with pytest.raises(ConfigError) as err:
        config(**tables)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_registries_list_what_config_accepts():
    assert set(ENGINES) == {"rules", "attention"} and set(POLICIES) == {"playbook"}
    assert build_engine("rules", 5.0).window_s == 5.0


def test_gateway_places_from_config():
    cfg = config(gateways={"gw-ene": {"domain": "energy", "district": "d01",
                                      "subnet": "10.2.0.7/16"}})
    [place] = gateway_places(cfg).values()
    assert (place.id, place.domain, place.district, place.subnet) == \
        ("gw-ene", "energy", "d01", "10.2.0.0/16")
