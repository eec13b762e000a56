"""Robust aggregation: each rule's guarantee from its paper, as a property over random rounds,
and FedAvg shown to have none."""
from __future__ import annotations

import math

import numpy as np
import pytest
from atlas.central.federated import (
    CoordinateMedian,
    FedAvg,
    GaussianDP,
    Krum,
    TrimmedMean,
    Update,
    clip_norm,
    make_strategy,
)
from atlas.central.federated.dp import epsilon
from hypothesis import assume, given, settings
from hypothesis import strategies as st

D = 6  # weights per update: small, so hypothesis explores many rounds quickly
big = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
near = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


def updates(rows: list[np.ndarray], prefix: str = "gw") -> list[Update]:
    return [Update(f"{prefix}{i}", np.asarray(r, dtype=np.float32), 100) for i, r in enumerate(rows)]


@st.composite
def honest_and_byzantine(draw, min_honest: int, byzantine: st.SearchStrategy[int] | None = None):
    """Honest updates in the box [-1, 1]^D and `f` arbitrary ones (any finite values)."""
    h = draw(st.integers(min_honest, 9))
    honest = [np.array(draw(st.lists(near, min_size=D, max_size=D))) for _ in range(h)]
    f = draw(byzantine if byzantine is not None else st.integers(0, h - 1))
    bad = [np.array(draw(st.lists(big, min_size=D, max_size=D))) for _ in range(f)]
    return honest, bad


def within_honest_range(agg: np.ndarray, honest: list[np.ndarray]) -> bool:
    H = np.stack(honest).astype(np.float32).astype(np.float64)
    return bool(np.all(agg >= H.min(axis=0) - 1e-5) and np.all(agg <= H.max(axis=0) + 1e-5))


@settings(max_examples=150, deadline=None)
@given(honest_and_byzantine(min_honest=2))
def test_median_stays_in_honest_range_while_attackers_are_fewer_than_half(case):
    honest, bad = case
    assume(len(bad) < (len(honest) + len(bad)) / 2)
    agg = CoordinateMedian().aggregate(updates(honest + bad)).delta
    assert within_honest_range(agg, honest)


@settings(max_examples=150, deadline=None)
@given(honest_and_byzantine(min_honest=3), st.sampled_from([0.1, 0.2, 0.3, 0.4]))
def test_trimmed_mean_stays_in_honest_range_when_it_trims_at_least_the_attackers(case, beta):
    honest, bad = case
    tm = TrimmedMean(beta=beta)
    assume(len(bad) <= tm.trimmed(len(honest) + len(bad)))
    agg = tm.aggregate(updates(bad + honest)).delta
    assert within_honest_range(agg, honest)


@settings(max_examples=150, deadline=None)
@given(honest_and_byzantine(min_honest=3), st.integers(0, 2**31))
def test_krum_picks_an_honest_update_while_f_below_n_minus_2_over_2(case, seed):
    """Honest updates within radius r of a centre, attackers anywhere farther than r + far from
    it. An honest update's n - f - 2 nearest are honest (n - f - 1 others exist): score at most
    (n - f - 2) (2r)^2. An attacker has only f - 1 attacker neighbours, so with n > 2f + 1 at
    least one honest one counts: score above far^2. far = 4 r sqrt(n) separates the two."""
    honest, bad = case
    n, f = len(honest) + len(bad), len(bad)
    assume(f < (n - 2) / 2)
    centre = np.zeros(D)
    r = max(float(np.linalg.norm(h - centre)) for h in honest)
    far = 4.0 * math.sqrt(n) * max(r, 1e-3) + 1.0
    moved = []
    for b in bad:  # keep the attacker's direction and spread, but out of the honest ball
        dist = float(np.linalg.norm(b - centre))
        moved.append(b if dist > far + r else b + (far + r) * (b / dist if dist > 0 else np.eye(D)[0]))
    order = np.random.default_rng(seed).permutation(n)  # honest ones need not come first
    mixed = [(honest + moved)[i] for i in order]
    ups = updates(mixed)
    agg = Krum(f=f).aggregate(ups)
    chosen = [u.gateway for u in ups if u.gateway not in agg.excluded_gateways]
    assert len(chosen) == 1
    honest_names = {ups[i].gateway for i, j in enumerate(order) if j < len(honest)}
    assert chosen[0] in honest_names
    assert set(agg.excluded_gateways) >= {u.gateway for u in ups} - honest_names


@settings(max_examples=100, deadline=None)
@given(honest_and_byzantine(min_honest=2, byzantine=st.just(0)), st.lists(big, min_size=D, max_size=D))
def test_fedavg_is_moved_anywhere_by_one_attacker(case, target):
    """FedAvg has no breakdown point: one update chosen against the others puts the mean exactly
    on any target the attacker likes, far outside the honest updates."""
    honest, _ = case
    target = np.array(target)
    n = len(honest) + 1
    attacker = n * target - np.sum(honest, axis=0)
    agg = FedAvg().aggregate(updates(honest + [attacker])).delta
    assert np.allclose(agg, target, rtol=1e-4, atol=1e-2 + 1e-6 * np.abs(attacker).max())
    if np.abs(target).max() > 2.0:
        assert not within_honest_range(agg, honest)
    robust = CoordinateMedian().aggregate(updates(honest + [attacker])).delta  # 1 < n / 2
    assert within_honest_range(robust, honest)


def test_fedavg_weights_by_rows():
    ups = [Update("a", np.array([1.0, 0.0], np.float32), 300), Update("b", np.array([0.0, 1.0], np.float32), 100)]
    assert np.allclose(FedAvg().aggregate(ups).delta, [0.75, 0.25])


def test_multi_krum_averages_the_m_best():
    ups = updates([np.full(D, v) for v in (0.0, 0.1, 0.2, 50.0, -40.0)])
    agg = Krum(f=1, m=3).aggregate(ups)
    assert np.allclose(agg.delta, 0.1, atol=1e-6)
    assert agg.excluded_gateways == ["gw3", "gw4"]


def test_hub_clipping_bounds_each_update():
    ups = updates([np.full(D, 1.0), np.full(D, 1000.0)])
    agg = FedAvg(clip=1.0).aggregate(ups)
    assert np.linalg.norm(agg.delta) <= 1.0 + 1e-6
    assert np.linalg.norm(clip_norm(np.full(D, 1000.0, np.float32), 2.0)) == pytest.approx(2.0, rel=1e-6)
    small = np.full(D, 0.1, np.float32)
    assert clip_norm(small, 2.0) is small


def test_dp_noise_and_epsilon():
    ups = updates([np.full(D, 0.5) for _ in range(10)])
    dp = GaussianDP(FedAvg(), clip=1.0, noise_multiplier=1.1, seed=3)
    agg = dp.aggregate(ups)
    assert agg.info["noise_std"] == pytest.approx(0.11)
    assert not np.allclose(agg.delta, FedAvg(clip=1.0).aggregate(ups).delta)
    e1 = agg.info["epsilon"]
    dp.aggregate(ups)
    assert dp.epsilon() > e1 > 0  # privacy spent grows with the rounds
    assert epsilon(4.0, 10, 1e-5) < epsilon(1.0, 10, 1e-5)  # more noise, less spent
    # Gaussian mechanism, one release: z = sqrt(2 ln(1.25/delta)) / eps is (eps, delta)-DP for eps < 1;
    # the Renyi bound must not claim a smaller epsilon than that classic calibration allows at eps = 1.
    z = math.sqrt(2 * math.log(1.25 / 1e-5))
    assert 0.5 < epsilon(z, 1, 1e-5) < 1.5


@pytest.mark.parametrize(
    "bad, message",
    [
        ([np.zeros(D), np.zeros(D + 1)], "gw1: delta has shape"),
        ([np.zeros(D), np.full(D, np.nan)], "gw1: delta holds NaN"),
    ],
)
def test_bad_updates_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        FedAvg().aggregate(updates(bad))


def test_configuration_errors_are_one_line():
    with pytest.raises(ValueError, match="'fedprox' is not one of fedavg, krum, median, trimmed_mean"):
        make_strategy("fedprox")
    with pytest.raises(ValueError, match="trimmed_mean beta"):
        TrimmedMean(beta=0.5)
    with pytest.raises(ValueError, match="needs n >= 2f \\+ 3"):
        Krum(f=2).aggregate(updates([np.zeros(D)] * 6))
    with pytest.raises(ValueError, match="no updates"):
        FedAvg().aggregate([])
    assert make_strategy("trimmed_mean", beta=0.3).beta == 0.3
    assert make_strategy("krum", f=1).configure_round(4).round == 4
