"""Tests of the anytime-valid core: confidence sequences, drift bounds, the e-value,
three-way outcomes, budgets and latency buckets.

Reference values come from scipy's own distributions (the beta-binomial and negative
binomial marginals, whose ratio to the binomial or Poisson likelihood is the mixture
martingale) or from the formulas written out in the test, never from the code under test.
The Monte Carlo tests look after every batch of a long stream and count streams whose
interval missed the truth at ANY look: that share must stay within alpha (plus three
standard errors of Monte Carlo noise).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from modelrollout.analysis import sequential as sq
from modelrollout.analysis.stats import Interval, js_distance, ks_from_bins, psi

SEED = 20240611
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.inf)


def _allowed_misses(alpha: float, streams: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / streams)


# ----------------------------------------------------------------------------- binomial_cs


@pytest.mark.parametrize(
    ("x", "n", "alpha", "prior"),
    [
        pytest.param(5, 1000, 0.01 / 3, (0.5, 0.5), id="rare-events-jeffreys"),
        pytest.param(5, 1000, 0.01 / 3, sq.beta_prior_at(0.01), id="rare-events-prior-at-limit"),
        pytest.param(480, 500, 0.05, sq.beta_prior_at(0.95), id="agreement-near-one"),
        pytest.param(37, 80, 0.2, (1.0, 1.0), id="middle-share-uniform-prior"),
        pytest.param(3, 7, 1e-4, (2.0, 5.0), id="tiny-alpha-few-trials"),
    ],
)
def test_binomial_cs_ends_are_where_the_mixture_ratio_reaches_one_over_alpha(
    x: int, n: int, alpha: float, prior: tuple[float, float]
) -> None:
    # The beta-binomial pmf over the binomial pmf is the mixture martingale (the
    # binomial coefficients cancel): it equals 1/alpha at both ends of the CS.
    lo, hi = sq.binomial_cs(x, n, alpha, prior=prior)
    a, b = prior
    for end in (lo, hi):
        ratio = sps.betabinom.pmf(x, n, a, b) / sps.binom.pmf(x, n, end)
        assert ratio == pytest.approx(1 / alpha, rel=1e-6)
    assert lo < x / n < hi


@pytest.mark.parametrize(
    ("x", "n", "at_zero", "at_one"),
    [
        pytest.param(0, 200, True, False, id="no-events-reaches-zero"),
        pytest.param(200, 200, False, True, id="all-events-reaches-one"),
        pytest.param(0, 0, True, True, id="no-trials-is-everything"),
    ],
)
def test_binomial_cs_reaches_an_end_exactly_when_the_data_sit_on_it(
    x: int, n: int, at_zero: bool, at_one: bool
) -> None:
    lo, hi = sq.binomial_cs(x, n, 0.01)
    assert (lo == 0.0) is at_zero
    assert (hi == 1.0) is at_one


def test_binomial_cs_clamps_extrapolated_counts_into_range() -> None:
    assert sq.binomial_cs(101.3, 100.0, 0.05) == sq.binomial_cs(100.0, 100.0, 0.05)
    assert sq.binomial_cs(-0.4, 100.0, 0.05) == sq.binomial_cs(0.0, 100.0, 0.05)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"alpha": 0.0}, id="alpha-zero"),
        pytest.param({"alpha": 1.0}, id="alpha-one"),
        pytest.param({"prior": (0.0, 1.0)}, id="improper-prior"),
    ],
)
def test_binomial_cs_refuses_a_level_or_prior_that_is_not_one(bad: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"alpha": 0.05, "prior": (0.5, 0.5)} | bad
    with pytest.raises(ValueError, match=r"alpha|prior"):
        sq.binomial_cs(3, 10, **kwargs)  # type: ignore[arg-type]


def test_a_prior_centred_on_the_limit_is_tighter_near_it_than_jeffreys() -> None:
    at_limit = sq.binomial_cs(5, 1000, 0.01 / 3, prior=sq.beta_prior_at(0.01))
    jeffreys = sq.binomial_cs(5, 1000, 0.01 / 3)
    assert at_limit.upper < jeffreys.upper


@settings(deadline=None, max_examples=80)
@given(
    n=st.integers(min_value=1, max_value=10**6),
    share=st.floats(min_value=0, max_value=1),
    alpha=st.floats(min_value=1e-6, max_value=0.5),
    a=st.floats(min_value=0.05, max_value=500),
    b=st.floats(min_value=0.05, max_value=500),
)
def test_binomial_cs_holds_the_observed_share_inside_zero_one(
    n: int, share: float, alpha: float, a: float, b: float
) -> None:
    x = round(share * n)
    lo, hi = sq.binomial_cs(x, n, alpha, prior=(a, b))
    assert 0.0 <= lo <= x / n <= hi <= 1.0


@settings(deadline=None, max_examples=60)
@given(
    n=st.integers(min_value=1, max_value=20_000),
    share=st.floats(min_value=0, max_value=1),
    alpha=st.floats(min_value=1e-4, max_value=0.2),
)
def test_binomial_cs_narrows_as_trials_grow_at_a_fixed_share(
    n: int, share: float, alpha: float
) -> None:
    x = round(share * n)
    small = sq.binomial_cs(x, n, alpha)
    large = sq.binomial_cs(4 * x, 4 * n, alpha)
    assert large.upper - large.lower < small.upper - small.lower


@pytest.mark.parametrize(
    ("p", "prior"),
    [
        pytest.param(0.01, sq.beta_prior_at(0.01), id="rare-events-prior-at-truth"),
        pytest.param(0.01, (0.5, 0.5), id="rare-events-jeffreys"),
        pytest.param(0.3, sq.beta_prior_at(0.05), id="prior-far-from-truth"),
    ],
)
def test_binomial_cs_misses_the_truth_at_any_of_50_looks_at_most_alpha_of_the_time(
    p: float, prior: tuple[float, float]
) -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha = 2000, 50, 40, 0.05
    x = rng.binomial(batch, p, size=(streams, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    lo, hi = sq.binomial_cs_many(x, n, alpha, prior=prior)
    missed = ((lo > p) | (hi < p)).any(axis=1).mean()
    assert missed <= _allowed_misses(alpha, streams)


# ----------------------------------------------------------------------------- poisson_rate_cs


@pytest.mark.parametrize(
    ("count", "seconds", "around"),
    [
        pytest.param(600, 60.0, 10.0, id="ten-per-second-as-expected"),
        pytest.param(3, 60.0, 10.0, id="far-below-the-prior"),
        pytest.param(12_000, 600.0, 5.0, id="far-above-the-prior"),
    ],
)
def test_poisson_rate_cs_ends_are_where_the_mixture_ratio_reaches_one_over_alpha(
    count: int, seconds: float, around: float
) -> None:
    alpha, shape = 0.01, 4.0
    lo, hi = sq.poisson_rate_cs(count, seconds, alpha, around=around, shape=shape)
    rate = shape / around
    marginal = sps.nbinom.pmf(count, shape, rate / (rate + seconds))
    for end in (lo, hi):
        assert marginal / sps.poisson.pmf(count, end * seconds) == pytest.approx(
            1 / alpha, rel=1e-6
        )
    assert lo < count / seconds < hi


def test_poisson_rate_cs_with_no_events_starts_at_zero_and_with_no_time_is_unbounded() -> None:
    assert sq.poisson_rate_cs(0, 60.0, 0.01, around=1.0).lower == 0.0
    assert sq.poisson_rate_cs(0, 0.0, 0.01, around=1.0) == Interval(0.0, math.inf)


def test_poisson_rate_cs_misses_the_truth_at_any_of_50_looks_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, seconds, alpha, rate = 2000, 50, 10.0, 0.05, 2.0
    counts = rng.poisson(rate * seconds, size=(streams, looks)).cumsum(axis=1)
    exposure = seconds * np.arange(1, looks + 1)
    lo, hi = sq.poisson_rate_cs_many(counts, exposure, alpha, around=5.0)
    missed = ((lo > rate) | (hi < rate)).any(axis=1).mean()
    assert missed <= _allowed_misses(alpha, streams)


# ----------------------------------------------------------------------------- normal mixture


@pytest.mark.parametrize(
    ("estimate", "variance", "alpha", "tau"),
    [
        pytest.param(0.01, 1e-5, 0.05, 0.01, id="variance-near-tau-squared"),
        pytest.param(-0.2, 4e-2, 0.001, 0.05, id="large-variance-small-tau"),
        pytest.param(3.0, 1e-6, 0.01 / 3, 1.0, id="tiny-variance"),
    ],
)
def test_normal_mixture_cs_ends_are_where_the_mixture_ratio_reaches_one_over_alpha(
    estimate: float, variance: float, alpha: float, tau: float
) -> None:
    lo, hi = sq.normal_mixture_cs(estimate, variance, alpha, tau=tau)
    t2 = tau * tau
    for end in (lo, hi):
        d = estimate - end
        lam = math.sqrt(variance / (variance + t2)) * math.exp(
            t2 * d * d / (2 * variance * (variance + t2))
        )
        assert lam == pytest.approx(1 / alpha, rel=1e-9)
    assert lo < estimate < hi


def test_normal_mixture_cs_without_variance_says_nothing() -> None:
    assert sq.normal_mixture_cs(0.1, 0.0, 0.05, tau=0.1) == Interval(-math.inf, math.inf)


def test_normal_mixture_cs_misses_a_gaussian_mean_at_any_of_50_looks_at_most_alpha() -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha, mu = 2000, 50, 20, 0.05, 0.3
    sums = rng.normal(mu * batch, math.sqrt(batch), size=(streams, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    missed = 0
    for row in sums:
        for s, k in zip(row, n, strict=True):
            lo, hi = sq.normal_mixture_cs(s / k, 1.0 / k, alpha, tau=0.1)
            if not lo <= mu <= hi:
                missed += 1
                break
    assert missed / streams <= _allowed_misses(alpha, streams)


def test_normal_mixture_cs_on_two_error_rates_misses_their_difference_at_most_alpha() -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha = 2000, 30, 100, 0.05
    p_c, p_r = 0.03, 0.02
    xc = rng.binomial(batch, p_c, size=(streams, looks)).cumsum(axis=1)
    xr = rng.binomial(3 * batch, p_r, size=(streams, looks)).cumsum(axis=1)
    missed = 0
    for i in range(streams):
        for k in range(looks):
            n = batch * (k + 1)
            est, var = sq.proportion_difference(xc[i, k], n, xr[i, k], 3 * n)
            lo, hi = sq.normal_mixture_cs(est, var, alpha, tau=0.01)
            if not lo <= p_c - p_r <= hi:
                missed += 1
                break
    assert missed / streams <= _allowed_misses(alpha, streams)


def test_proportion_difference_keeps_some_variance_when_no_side_has_events() -> None:
    estimate, variance = sq.proportion_difference(0, 100, 0, 300)
    assert estimate == 0.0
    assert variance > 0.0


def test_mean_difference_is_the_welch_plug_in() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([2.0, 2.5, 3.0])
    est, var = sq.mean_difference(
        (a.size, a.sum(), (a * a).sum()), (b.size, b.sum(), (b * b).sum())
    )
    assert est == pytest.approx(a.mean() - b.mean())
    assert var == pytest.approx(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)


# ----------------------------------------------------------------------------- drift bounds

counts = st.lists(st.integers(min_value=0, max_value=5000), min_size=2, max_size=12)


@st.composite
def count_pairs(draw: st.DrawFn, *, positive: bool = False) -> tuple[list[int], list[int]]:
    low = 1 if positive else 0
    k = draw(st.integers(min_value=2, max_value=12))
    bins = st.lists(st.integers(min_value=low, max_value=5000), min_size=k, max_size=k)
    r, c = draw(bins), draw(bins)
    if sum(r) == 0:
        r[0] = 1
    if sum(c) == 0:
        c[-1] = 1
    return r, c


@settings(deadline=None, max_examples=60)
@given(count_pairs(), st.floats(min_value=1e-4, max_value=0.3))
def test_psi_bounds_hold_the_smoothed_plug_in_between_them(
    pair: tuple[list[int], list[int]], alpha: float
) -> None:
    r, c = pair
    bounds = sq.psi_bounds(r, c, alpha)
    assert 0.0 <= bounds.lower <= bounds.estimate <= bounds.upper
    assert bounds.estimate == pytest.approx(sq.smoothed_psi(r, c))


@settings(deadline=None, max_examples=60)
@given(count_pairs(positive=True), st.floats(min_value=1e-4, max_value=0.3))
def test_psi_lower_bound_is_below_the_unsmoothed_plug_in(
    pair: tuple[list[int], list[int]], alpha: float
) -> None:
    r, c = pair
    assert sq.psi_bounds(r, c, alpha).lower <= psi(r, c) + 1e-12


@settings(deadline=None, max_examples=60)
@given(count_pairs(), st.floats(min_value=1e-4, max_value=0.3))
def test_js_and_ks_bounds_hold_the_plug_in_between_them(
    pair: tuple[list[int], list[int]], alpha: float
) -> None:
    r, c = pair
    js = sq.js_bounds(r, c, alpha)
    ks = sq.ks_bounds(r, c, alpha)
    assert 0.0 <= js.lower <= js_distance(r, c) + 1e-12
    assert js_distance(r, c) - 1e-12 <= js.upper <= 1.0
    assert js.estimate == pytest.approx(js_distance(r, c), abs=1e-9)
    assert 0.0 <= ks.lower <= ks_from_bins(r, c).statistic + 1e-12
    assert ks_from_bins(r, c).statistic - 1e-12 <= ks.upper <= 1.0


def test_drift_bounds_tighten_around_the_true_psi_as_counts_grow() -> None:
    r = np.array([100, 200, 400, 200, 100])
    c = np.array([60, 150, 380, 260, 150])
    small, large = sq.psi_bounds(r, c, 0.01), sq.psi_bounds(100 * r, 100 * c, 0.01)
    assert small.lower <= large.lower <= large.estimate <= large.upper <= small.upper
    assert large.upper - large.lower < 0.1 * (small.upper - small.lower)


@pytest.mark.parametrize(
    "bounds",
    [
        pytest.param(sq.psi_bounds_many, id="psi"),
        pytest.param(sq.js_bounds_many, id="js"),
        pytest.param(sq.ks_bounds_many, id="ks"),
    ],
)
def test_drift_bounds_miss_the_true_measure_at_any_of_20_looks_at_most_alpha(
    bounds: object,
) -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha = 600, 20, 60, 0.2
    p_r = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    p_c = np.array([0.06, 0.15, 0.38, 0.26, 0.15])
    r = rng.multinomial(3 * batch, p_r, size=(streams, looks)).cumsum(axis=1)
    c = rng.multinomial(batch, p_c, size=(streams, looks)).cumsum(axis=1)
    fn = bounds
    assert callable(fn)
    truth_lo, truth, truth_hi = fn(p_r * 1e12, p_c * 1e12, 0.5)  # the population measure
    lo, _, hi = fn(r.reshape(-1, 5), c.reshape(-1, 5), alpha)
    missed = ((lo > truth[0]) | (hi < truth[0])).reshape(streams, looks).any(axis=1).mean()
    assert truth_hi[0] - truth_lo[0] < 1e-3  # the population measure is pinned down
    assert missed <= _allowed_misses(alpha, streams)


def test_drift_bounds_refuse_histograms_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="bins"):
        sq.psi_bounds([1, 2, 3], [1, 2], 0.05)


# ----------------------------------------------------------------------------- e-value


def test_homogeneity_e_value_is_large_for_different_distributions_and_small_for_equal() -> None:
    assert sq.homogeneity_e_value([500, 500, 0], [0, 500, 500]) > 1e6
    assert sq.homogeneity_e_value([500, 500, 500], [500, 500, 500]) < 1.0
    assert sq.homogeneity_e_value([0, 0], [0, 0]) == 1.0


def test_homogeneity_e_value_crosses_one_over_alpha_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha = 2000, 50, 40, 0.05
    p = np.array([0.05, 0.15, 0.3, 0.3, 0.15, 0.05])
    r = rng.multinomial(3 * batch, p, size=(streams, looks)).cumsum(axis=1)
    c = rng.multinomial(batch, p, size=(streams, looks)).cumsum(axis=1)
    log_e = sq.homogeneity_log_e_many(r.reshape(-1, 6), c.reshape(-1, 6))
    crossed = (log_e >= math.log(1 / alpha)).reshape(streams, looks).any(axis=1).mean()
    assert crossed <= _allowed_misses(alpha, streams)


# ----------------------------------------------------------------------------- three-way


@pytest.mark.parametrize(
    ("interval", "limit", "shown"),
    [
        pytest.param(Interval(0.001, 0.009), 0.01, sq.Shown.GOOD, id="wholly-below"),
        pytest.param(Interval(0.001, 0.01), 0.01, sq.Shown.GOOD, id="touching-from-below"),
        pytest.param(Interval(0.011, 0.05), 0.01, sq.Shown.BAD, id="wholly-above"),
        pytest.param(Interval(0.01, 0.05), 0.01, sq.Shown.NOT_YET, id="touching-from-above"),
        pytest.param(Interval(0.005, 0.02), 0.01, sq.Shown.NOT_YET, id="straddling"),
    ],
)
def test_judge_upper_limit_is_good_below_bad_above_and_undecided_across(
    interval: Interval, limit: float, shown: sq.Shown
) -> None:
    result = sq.judge_upper_limit(interval, limit)
    assert result.shown is shown
    assert result.interval == interval
    assert "max 0.01" in result.reason


@pytest.mark.parametrize(
    ("interval", "limit", "shown"),
    [
        pytest.param(Interval(0.96, 0.99), 0.95, sq.Shown.GOOD, id="wholly-above"),
        pytest.param(Interval(0.95, 0.99), 0.95, sq.Shown.GOOD, id="touching-from-above"),
        pytest.param(Interval(0.90, 0.94), 0.95, sq.Shown.BAD, id="wholly-below"),
        pytest.param(Interval(0.90, 0.95), 0.95, sq.Shown.NOT_YET, id="touching-from-below"),
        pytest.param(Interval(0.93, 0.97), 0.95, sq.Shown.NOT_YET, id="straddling"),
    ],
)
def test_judge_lower_limit_is_good_above_bad_below_and_undecided_across(
    interval: Interval, limit: float, shown: sq.Shown
) -> None:
    result = sq.judge_lower_limit(interval, limit)
    assert result.shown is shown
    assert "min 0.95" in result.reason


def test_shown_values_read_as_the_outcomes() -> None:
    assert [s.value for s in sq.Shown] == ["pass", "fail", "undecided"]


def test_a_stream_that_never_gets_data_is_never_shown_good() -> None:
    alpha = sq.budget_split(0.01, 3)
    for _ in range(50):
        for judged in (
            sq.judge_upper_limit(sq.binomial_cs(0, 0, alpha), 0.01),
            sq.judge_lower_limit(sq.binomial_cs(0, 0, alpha), 0.95),
            sq.judge_lower_limit(sq.poisson_rate_cs(0, 0.0, alpha, around=1.0), 1.0),
            sq.judge_upper_limit(sq.psi_bounds([0, 0, 0], [0, 0, 0], alpha).interval, 0.2),
        ):
            assert judged.shown is sq.Shown.NOT_YET


def test_a_share_sitting_on_its_limit_is_shown_good_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha, limit = 2000, 50, 100, 0.05, 0.01
    x = rng.binomial(batch, limit, size=(streams, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    _, hi = sq.binomial_cs_many(x, n, alpha, prior=sq.beta_prior_at(limit))
    shown_good = (hi <= limit).any(axis=1).mean()
    assert shown_good <= _allowed_misses(alpha, streams)


@pytest.mark.parametrize(
    "judged",
    [
        pytest.param(
            lambda a: sq.judge_upper_limit(
                sq.binomial_cs(50, 100, a, prior=sq.beta_prior_at(0.01)), 0.01
            ),
            id="half-the-requests-fail-against-max-1pct",
        ),
        pytest.param(
            lambda a: sq.judge_lower_limit(
                sq.binomial_cs(50, 100, a, prior=sq.beta_prior_at(0.95)), 0.95
            ),
            id="half-the-answers-agree-against-min-95pct",
        ),
        pytest.param(
            lambda a: sq.judge_lower_limit(sq.poisson_rate_cs(6, 60.0, a, around=10.0), 10.0),
            id="six-requests-a-minute-against-min-10-per-second",
        ),
        pytest.param(
            lambda a: sq.judge_upper_limit(
                sq.psi_bounds([300, 300, 0, 0], [0, 0, 50, 50], a).interval, 0.2
            ),
            id="disjoint-inputs-against-psi-0.2",
        ),
    ],
)
def test_a_large_breach_is_shown_bad_on_the_first_look(judged: object) -> None:
    assert callable(judged)
    result = judged(sq.budget_split(0.01, 3))
    assert result.shown is sq.Shown.BAD, result.reason


# ----------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    ("budget", "tests", "each"),
    [
        pytest.param(0.01, 3, 0.01 / 3, id="three-gates"),
        pytest.param(0.05, 1, 0.05, id="one-gate"),
        pytest.param(0.01, 12, 0.01 / 12, id="three-gates-over-four-stages"),
    ],
)
def test_budget_split_shares_the_budget_equally(budget: float, tests: int, each: float) -> None:
    assert sq.budget_split(budget, tests) == pytest.approx(each)


def test_budget_split_needs_a_test_and_a_budget_below_one() -> None:
    with pytest.raises(ValueError, match="test"):
        sq.budget_split(0.01, 0)
    with pytest.raises(ValueError, match="alpha"):
        sq.budget_split(1.0, 3)


def test_spent_alpha_over_any_number_of_looks_sums_to_at_most_alpha() -> None:
    spent = [sq.spent_alpha(0.01, k) for k in range(1, 100_001)]
    assert spent[0] == pytest.approx(0.01 * 6 / math.pi**2)
    assert all(a > b for a, b in itertools.pairwise(spent))
    assert 0.0099 < math.fsum(spent) <= 0.01


def test_spent_alpha_counts_looks_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        sq.spent_alpha(0.01, 0)


@pytest.mark.parametrize(
    ("phi", "low", "high"),
    [
        pytest.param(0.0, 0.85, 1.0, id="independent-points-count-fully"),
        pytest.param(0.8, 0.07, 0.16, id="strongly-correlated-points-count-about-a-ninth"),
        pytest.param(-0.6, 0.85, 1.0, id="negative-correlation-is-not-extra-information"),
    ],
)
def test_effective_sample_size_shrinks_with_lag_one_autocorrelation(
    phi: float, low: float, high: float
) -> None:
    rng = np.random.default_rng(SEED)
    n = 2000
    noise = rng.normal(size=n)
    series = np.empty(n)
    series[0] = noise[0]
    for i in range(1, n):
        series[i] = phi * series[i - 1] + noise[i]
    assert low * n <= sq.effective_sample_size(series) <= high * n


def test_effective_sample_size_of_a_constant_or_short_series_is_its_length() -> None:
    assert sq.effective_sample_size([3.0] * 10) == 10.0
    assert sq.effective_sample_size([1.0, math.nan, 2.0]) == 2.0


# ----------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("limit", "resolved"),
    [
        pytest.param(0.5, (0.5, 0.5), id="limit-on-a-boundary"),
        pytest.param(0.3, (0.25, 0.5), id="limit-between-boundaries"),
        pytest.param(10.0, (10.0, 10.0), id="the-largest-finite-boundary"),
        pytest.param(0.005, (0.005, 0.005), id="the-smallest-boundary"),
    ],
)
def test_resolve_bucket_brackets_the_limit_with_finite_boundaries(
    limit: float, resolved: tuple[float, float]
) -> None:
    assert sq.resolve_bucket(limit, DEFAULT_BUCKETS) == resolved


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param(0.001, id="below-the-smallest-boundary"),
        pytest.param(20.0, id="above-the-largest-finite-boundary"),
        pytest.param(math.inf, id="infinite"),
    ],
)
def test_resolve_bucket_refuses_a_limit_no_bucket_resolves(limit: float) -> None:
    with pytest.raises(sq.UnresolvableLimit, match=r"no bucket resolves|not a finite"):
        sq.resolve_bucket(limit, DEFAULT_BUCKETS)


def test_resolve_bucket_message_lists_the_buckets() -> None:
    with pytest.raises(sq.UnresolvableLimit) as caught:
        sq.resolve_bucket(20.0, DEFAULT_BUCKETS)
    assert str(caught.value) == (
        "no bucket resolves limit 20 (buckets: 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, "
        "1, 2.5, 5, 10)"
    )


# ----------------------------------------------------------------------------- drift CS

_EDGES = np.array([-np.inf, -1.5, -0.5, 0.0, 0.5, 1.0, 1.5, np.inf])
_REFERENCE_SHARES = np.diff(sps.norm.cdf(_EDGES))


def _shifted_shares(shift: float) -> np.ndarray:
    """Bin shares of N(shift, 1) over 7 buckets; shift 0.521 gives PSI 0.25."""
    return np.asarray(np.diff(sps.norm.cdf(_EDGES - shift)))


@pytest.mark.parametrize(
    ("fn", "shift"),
    [
        pytest.param(sq.psi_cs_many, 0.0, id="psi-healthy"),
        pytest.param(sq.psi_cs_many, 0.3, id="psi-small-shift"),
        pytest.param(sq.psi_cs_many, 0.521, id="psi-0.25-shift"),
        pytest.param(sq.js_cs_many, 0.0, id="js-healthy"),
        pytest.param(sq.js_cs_many, 0.521, id="js-shift"),
    ],
)
def test_drift_cs_misses_the_true_measure_at_any_of_20_looks_at_most_alpha(
    fn: object, shift: float
) -> None:
    rng = np.random.default_rng(SEED)
    streams, looks, batch, alpha = 500, 20, 200, 0.05
    p_c = _shifted_shares(shift)
    r = rng.multinomial(batch, _REFERENCE_SHARES, size=(streams, looks)).cumsum(axis=1)
    c = rng.multinomial(batch, p_c, size=(streams, looks)).cumsum(axis=1)
    assert callable(fn)
    truth = fn(_REFERENCE_SHARES * 1e12, p_c * 1e12, 0.5)[1][0]  # the population measure
    lo, _, hi = fn(r.reshape(-1, 7), c.reshape(-1, 7), alpha, tau=0.2)
    missed = ((lo > truth) | (hi < truth)).reshape(streams, looks).any(axis=1).mean()
    assert missed <= _allowed_misses(alpha, streams)


def test_psi_cs_decides_at_the_traffic_where_the_per_bin_bounds_cannot() -> None:
    # 3,000 observations a side, limit 0.2: a healthy candidate is shown within it and a
    # PSI 0.9 shift beyond it; the Bonferroni per-bin bounds cannot pass the healthy one.
    rng = np.random.default_rng(SEED)
    n = 3000
    healthy = rng.multinomial(n, _REFERENCE_SHARES, size=(2, 200))
    shifted = rng.multinomial(n, _shifted_shares(1.0), size=200)
    _, _, upper = sq.psi_cs_many(healthy[0], healthy[1], 0.01, tau=0.2)
    lower, _, _ = sq.psi_cs_many(healthy[0], shifted, 0.01, tau=0.2)
    assert np.median(upper) < 0.05
    assert (upper <= 0.2).mean() > 0.99
    assert (lower > 0.2).mean() > 0.95
    per_bin = sq.psi_bounds_many(healthy[0], healthy[1], 0.01)
    assert np.median(per_bin[2]) > 0.2


def test_psi_cs_holds_the_plug_in_between_its_ends_and_starts_at_zero() -> None:
    bounds = sq.psi_cs([100, 200, 400, 200, 100], [80, 180, 380, 240, 120], 0.05)
    assert 0.0 == bounds.lower <= bounds.estimate <= bounds.upper
    assert bounds.estimate == pytest.approx(
        sq.smoothed_psi([100, 200, 400, 200, 100], [80, 180, 380, 240, 120])
    )


# ----------------------------------------------------------------------------- shift


def _ar1(rng: np.random.Generator, n: int, rho: float, size: int) -> np.ndarray:
    out = np.empty((size, n))
    out[:, 0] = rng.normal(size=size)
    for t in range(1, n):
        out[:, t] = rho * out[:, t - 1] + math.sqrt(1 - rho * rho) * rng.normal(size=size)
    return out


def test_shift_interval_holds_the_hodges_lehmann_shift() -> None:
    bounds = sq.shift_interval([1.0, 2.0, 3.0, 4.0] * 5, [2.0, 3.0, 4.0, 5.0] * 5, 0.05)
    assert bounds.estimate == pytest.approx(1.0)
    assert bounds.lower <= 1.0 <= bounds.upper
    assert sq.shift_interval([1.0, 2.0], [1.0, 2.0], 0.01).lower == -math.inf


@pytest.mark.parametrize("rho", [pytest.param(0.0, id="independent"), pytest.param(0.6, id="ar1")])
def test_shift_interval_misses_a_zero_shift_of_autocorrelated_series_at_most_alpha(
    rho: float,
) -> None:
    rng = np.random.default_rng(SEED)
    runs, n, alpha = 400, 40, 0.1
    control, experiment = _ar1(rng, n, rho, runs), _ar1(rng, n, rho, runs)
    missed = 0
    for c, e in zip(control, experiment, strict=True):
        b = sq.shift_interval(c, e, alpha)
        missed += b.lower > 0 or b.upper < 0
    assert missed / runs <= _allowed_misses(alpha, runs)
