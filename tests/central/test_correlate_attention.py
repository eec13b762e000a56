"""The learned correlator at the hub: its TFLite model loads and runs without TensorFlow, it
plugs into the live hub by name, and every link it makes carries its explanation (attention
weights over the earlier incidents, the relations in plain words, the next stage's domains)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atlas.link.signing import RuleSigner
from atlas.central import cli
from atlas.central.correlate import Event, GatewayPlace, Topology
from atlas.central.correlate.attention import (DEFAULT_MODEL, AttentionEngine, AttentionModel,
                                               ModelUnavailable)
from atlas.central.correlate.registry import build_engine
from atlas.central.decide.playbook import Playbook
from atlas.central.hub import Hub
from atlas.central.store import open_store

from tests.central.test_campaigns import PLACES, T0, Clock, report, send

SIX_HOURS = 6 * 3600.0


def test_the_model_loads_and_runs_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"  # any import of it fails
        "from atlas.central.correlate.attention import AttentionModel\n"
        "from atlas.central.correlate import features as F\n"
        "import numpy as np\n"
        "m = AttentionModel()\n"
        "s = m(np.zeros((3, F.T, F.H), np.float32), np.zeros((3, F.T, F.R), np.float32),\n"
        "      np.ones((3, F.T), np.float32), np.zeros((3, F.N), np.float32))\n"
        "assert s.link.shape == (3,) and s.attention.shape == (3, F.T)\n"
        "assert abs(float(s.attention.sum()) - 3.0) < 1e-3\n"
        "assert 'tensorflow' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print('ok', m.version)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok attention-")


def test_a_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(ModelUnavailable) as err:
        AttentionModel(tmp_path / "attention.tflite")
    assert str(tmp_path / "attention.tflite") in str(err.value) and "\n" not in str(err.value)


CITY = Topology([GatewayPlace("gw-tra", "transportation", "d01", "10.1.0.0/16", "10.1.0.1"),
                 GatewayPlace("gw-ene", "energy", "d01", "10.2.0.0/16", "10.2.0.1"),
                 GatewayPlace("gw-pub", "public_safety", "d02", "10.3.0.0/16", "10.3.0.1"),
                 GatewayPlace("gw-ene2", "energy", "d02", "10.4.0.0/16", "10.4.0.1")])


def ev(eid, gw, kind, src, t, dst="", ids=(), victims=()):
    g = CITY.gateways[gw]
    return Event(eid, gw, g.domain, kind, src, t, t + 120, dst or g.broker, tuple(victims),
                 tuple(ids), g.district)


def test_a_dormant_campaign_is_one_chain_and_a_look_alike_attacker_stays_apart():
    outside, other = "203.0.113.40", "198.51.100.9"
    events = [
        ev("scan", "gw-tra", "port_scan", outside, T0),
        # the same tool on the same gateway at about the same time, by someone else
        ev("other-scan", "gw-tra", "port_scan", other, T0 + 200),
        # three hours asleep, then the credential attack on another domain (beyond the rules'
        # one-hour window), then the tampering with the identity it won
        ev("brute", "gw-ene", "mqtt_bruteforce", outside, T0 + 3 * 3600, ids=("user-7",)),
        ev("tamper", "gw-pub", "false_data", outside, T0 + 3 * 3600 + 900, dst="10.3.0.20",
           ids=("user-7",)),
    ]
    found = AttentionEngine(SIX_HOURS).campaigns(events, CITY)
    by_event = {e.id: c.id for c in found for e in c.events}
    assert by_event["scan"] == by_event["brute"] == by_event["tamper"]
    assert by_event["other-scan"] != by_event["scan"]
    [chain] = [c for c in found if len(c.events) == 3]
    assert [(lk.later, lk.reason) for lk in chain.links] == [("brute", "attention"),
                                                            ("tamper", "attention")]
    for lk in chain.links:
        assert "attention over the campaign's incidents" in lk.detail
        assert "the same source address" in lk.detail
        assert "next stage likely in" in lk.detail
    assert chain.scope == "city"


@pytest.fixture
def hub(tmp_path):
    store = open_store(tmp_path / "hub.db")
    hub = Hub(store, Playbook(), RuleSigner(Ed25519PrivateKey.generate()), clock=Clock(),
              places=PLACES, correlator=build_engine("attention", SIX_HOURS))
    yield hub
    hub.close()
    store.close()


def test_the_live_hub_runs_the_engine_named_attention_and_shows_why(hub, tmp_path, capsys):
    send(hub, "gw-ene", 1, report("gw-ene", "port_scan", T0, dst="10.2.0.5"))
    assert hub.store.list_campaigns() == []
    send(hub, "gw-tra", 1, report("gw-tra", "mqtt_bruteforce", T0 + 600, dst="10.1.0.9"))

    [campaign] = hub.store.list_campaigns()
    scan, brute = (i.id for i in sorted(hub.store.list_incidents(), key=lambda i: i.first_seen))
    assert campaign.engine == "attention" and campaign.incidents == [scan, brute]
    assert campaign.domains == ["energy", "transportation"] and campaign.scope == "city"
    [link] = campaign.links
    assert (link.earlier, link.later, link.reason) == (scan, brute, "attention")

    db = ["--db", str(tmp_path / "hub.db")]
    assert cli.main(["campaigns", *db, "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == campaign.id
    assert cli.main(["campaigns", "show", campaign.id, *db]) == 0
    text = capsys.readouterr().out
    assert "attention over the campaign's incidents" in text
    assert "learned link p=" in text and "the same source address" in text


def test_the_shipped_model_has_its_card():
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert 0 < card["threshold"] < 1
    assert set(card["train_templates"]).isdisjoint(
        {"domain_then_jump", "credential_exfiltration", "dormant_jump", "identity_handoff_late",
         "target_handoff_jump"})
