"""Training rows of a device after its attack: compromised devices' labels, and the synthetic
scan aftermath rows, checked against the agent's own feature extractor."""
from __future__ import annotations

import numpy as np
import pytest

from atlas.agent.decode import PACKET_DTYPE, TCP_ACK, TCP_SYN
from atlas.agent.detect import BENIGN
from atlas.agent.features.schema import FEATURE_NAMES, HALF_LIVES
from atlas.agent.features.windows import FeatureExtractor
from atlas.train.aftermath import add_scan_residue, scan_aftermath_rows
from atlas.train.dataset import AFTERMATH_S, TAIL_S, AttackLabel, LabeledCapture, Rows, capture_rows

DEVICE, BROKER = 0x0A000005, 0x0A000002


def _packets(ts, dst, dport, flags, wirelen):
    p = np.zeros(len(ts), PACKET_DTYPE)
    p["ts"], p["ipver"], p["proto"], p["wirelen"] = ts, 4, 6, wirelen
    p["src"], p["dst"], p["sport"], p["dport"], p["tcp_flags"] = DEVICE, dst, 40000, dport, flags
    return p


def _device_rows(scan: np.ndarray | None) -> dict[float, np.ndarray]:
    """The device's rows (by tick end): a packet to the broker every 10 s, and the scan's probes."""
    talk = _packets(np.arange(0.5, 300.0, 10.0), BROKER, 1883, TCP_ACK, 120)
    pk = talk if scan is None else np.sort(np.concatenate([talk, scan]), order="ts")
    fx = FeatureExtractor()
    rows = fx.update(pk) + fx.flush()
    return {r.tick_end: r.X[int(np.flatnonzero(r.devices == DEVICE)[0])] for r in rows}


def test_scan_residue_rows_are_the_rows_the_extractor_computes_after_a_scan():
    # 3,000 unanswered SYNs to new hosts on port 23, 100 per second from t=20.2 s to t=50.2 s
    ts = 20.2 + np.arange(3000) * 0.01
    scan = _packets(ts, 0x2D000000 + np.arange(3000), 23, TCP_SYN, 60)
    plain, scanned = _device_rows(None), _device_rows(scan)
    # The decayed sums at the scan's last tick (counts join the sums at their tick's end).
    ticks, counts = np.unique(np.floor(ts) + 1.0, return_counts=True)
    last = ticks[-1]
    short_end = float(np.sum(counts * 2.0 ** (-(last - ticks) / HALF_LIVES[0])))
    long_end = float(np.sum(counts * 2.0 ** (-(last - ticks) / HALF_LIVES[1])))
    port_short, port_long = (2.0 ** (-(last - ticks[0]) / h) for h in HALF_LIVES)  # port 23: new once
    after = [t for t in plain if t - last >= 20.0]
    assert len(after) >= 20
    want = np.array([scanned[t] for t in after])
    got = add_scan_residue(np.array([plain[t] for t in after]), np.array(after) - last, short_end=short_end,
                           long_end=long_end, ports_short_end=port_short, ports_long_end=port_long,
                           refused=0.0, new_hosts=1.0)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5), [
        (FEATURE_NAMES[j], float(got[i, j]), float(want[i, j]))
        for i, j in zip(*np.nonzero(~np.isclose(got, want, rtol=1e-5, atol=1e-5)))][:5]
    # and the residue is real: the 30 s window still holds the scan a minute later
    assert want[0, FEATURE_NAMES.index("syn_out@30s")] > 5.0 > plain[after[0]][FEATURE_NAMES.index("syn_out@30s")]


def test_synthetic_aftermath_rows_are_benign_and_carry_a_residue():
    rng = np.random.default_rng(0)
    n = 300
    X = np.abs(rng.normal(0, 1, (n, len(FEATURE_NAMES)))).astype(np.float32)
    e = np.zeros(n, dtype=object)
    rows = Rows(X, np.full(n, BENIGN, dtype=object), e, np.zeros(n), np.full(n, "generated/seed-1", dtype=object),
                np.zeros(n, dtype=bool))
    rows.y[:10] = "port_scan"
    out = scan_aftermath_rows(rows, 500, seed=3)
    assert len(out) == 500 and set(out.y) == {BENIGN} and not out.hard.any()
    assert set(out.source) == {"synthetic/scan-aftermath"}
    j = FEATURE_NAMES.index("syn_out@30s")
    assert (out.X[:, j] >= X[10:, j].min()).all() and out.X[:, j].max() > X[:, j].max() + 3  # up to big scans
    assert np.array_equal(scan_aftermath_rows(rows, 500, seed=3).X, out.X)  # seeded


@pytest.fixture(scope="module")
def compromised_scan(tmp_path_factory):
    from atlas.train.corpus import device_addresses
    from atlas.sim.attacks import AttackSpec
    from atlas.sim.capture import generate_capture

    seed, devices = 11, 12
    attacker = device_addresses(seed, devices)[3]  # publishes every few seconds
    pcap = tmp_path_factory.mktemp("compromised") / "scan.pcap"
    gt = generate_capture(pcap, devices=devices, duration=240.0, seed=seed,
                          attacks=[AttackSpec("port_scan", start=60.0, duration=20.0, attacker=attacker,
                                              params={"rate": 50, "ports": 300, "hosts": 2})])
    step = gt.steps[0]
    return LabeledCapture(pcap, "generated/test", [AttackLabel(attacker, "port_scan", step.start, step.end, compromised=True)])


def test_a_compromised_device_is_benign_before_its_attack_and_after_the_aftermath(compromised_scan):
    rows = capture_rows(compromised_scan)
    a = compromised_scan.attacks[0]
    mine = rows.device == a.attacker
    t, y = rows.t[mine], rows.y[mine]
    assert (y[t < a.start] == BENIGN).all() and (t < a.start).sum() >= 3
    assert (y[(t >= a.start) & (t <= a.end)] == "port_scan").all()
    assert not ((t > a.end + TAIL_S + 1.0) & (t < a.end + AFTERMATH_S)).any()  # the short window still holds it
    late = t >= a.end + AFTERMATH_S
    assert late.sum() > 5 and (y[late] == BENIGN).all()
    # a rogue host's rows outside its attack stay out
    rogue = capture_rows(LabeledCapture(compromised_scan.path, "generated/test",
                                        [AttackLabel(a.attacker, a.kind, a.start, a.end)]))
    t = rogue.t[rogue.device == a.attacker]
    assert ((t >= a.start) & (t <= a.end + TAIL_S + 1.0)).all()
