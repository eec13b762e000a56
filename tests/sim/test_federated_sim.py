"""`atlas-sim federated` on a small city: a backdoor from one poisoned gateway in five blinds
FedAvg to the targeted kind, Multi-Krum leaves the poisoned update out and keeps detecting it;
the report carries the metrics by their exact names; only deltas travel."""
from __future__ import annotations

import json

import pytest
from atlas.sim.cli import main
from atlas.sim.federated import FederatedOptions, run_federated

SMALL = dict(gateways=5, malicious=1, seed=3, devices=8, duration=240)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fl-rows")  # both runs share the gateways' rows


@pytest.fixture(scope="module")
def report(tmp_path_factory, work):
    out = tmp_path_factory.mktemp("fl")
    r = run_federated(FederatedOptions(out=out, rounds=2, attack="backdoor", work=work, **SMALL))
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(r))
    assert r["plots"] == ["convergence.png", "kinds.png", "false_flags.png"]
    assert all((out / p).stat().st_size > 10_000 for p in r["plots"])
    return r


def test_scaling_floods_fedavg_with_false_flags(tmp_path, work, report):
    """A reversed, boosted update wrecks FedAvg's model for benign traffic (everything looks
    anomalous), which targeted detection alone would not show; the robust rules do not move."""
    m = run_federated(FederatedOptions(out=tmp_path, rounds=3, attack="scaling", work=work, **SMALL))["metrics"]
    ff = m["false_incidents_per_device_day_by_strategy"]
    assert ff["fedavg"] > 100
    assert ff["median"] == ff["trimmed_mean"] == ff["krum"] == 0.0
    assert m["poisoned_updates_excluded"]["krum"] == 3  # every round


def test_backdoor_blinds_fedavg_and_krum_holds(report):
    t = report["metrics"]["targeted_kind_detection"]
    assert set(t) == {"fedavg", "median", "trimmed_mean", "krum", "configured"}
    start = report["strategies"]["fedavg"]["rounds"][0]["detection"]["mqtt_flood"]
    assert start >= 0.95  # the central model detects the targeted kind before the rounds
    assert t["fedavg"] < 0.5
    assert t["krum"] >= 0.95 and t["configured"] == t["krum"]
    poisoned = [g["name"] for g in report["gateways"] if g["poisoned"]]
    assert len(poisoned) == 1
    for r in report["strategies"]["krum"]["rounds"][1:]:
        assert poisoned[0] in r["excluded"]


def test_report_metrics_and_bytes(report):
    m = report["metrics"]
    for name in ("false_incidents_per_device_day", "kind_detection"):
        assert set(m[name]) == {"central", "federated"}
    assert m["kind_detection"]["federated"] >= 0.99 * m["kind_detection"]["central"]  # under Krum: no kind lost
    # the buffer's filter keeps out what the detector flags; the few attack rows it misses (an
    # attack's first or tail row that looks benign) may get in, and are counted
    assert m["attack_rows_in_honest_traffic"] > 100
    assert m["attack_rows_in_honest_buffers"] <= 0.02 * m["attack_rows_in_honest_traffic"]
    # float16 deltas of 3,249 weights, deflated: at most 2 bytes a weight, far below the rows
    assert 1000 < m["bytes_per_round_per_gateway"] <= 2 * 3249
    assert m["bytes_per_round_per_gateway"] < m["row_upload_bytes_per_gateway"]
    assert len({tuple(g["classes"]) for g in report["gateways"]}) == 5  # every gateway its own device mix


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gateways", "4", "--malicious", "2"], "--malicious: must be >= 0 and fewer than half of 4 gateways"),
        (["--gateways", "5", "--target", "nope"], "--target: 'nope' is not a known kind"),
        (["--gateways", "5", "--strategy", "fedprox"], "--strategy: 'fedprox' is not one of"),
        (["--gateways", "5", "--rounds", "0"], "--rounds: need at least 1"),
        (["--gateways", "5", "--dp-noise", "1"], "--dp-noise: needs --clip"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    rc = main(["federated", "--rounds", "1", "--seed", "1", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
