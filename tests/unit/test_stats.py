"""Tests of the pure statistics behind the drift, agreement, Kayenta and mSPRT gates.

Every reference value says how it was obtained independently of the code under test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.spatial.distance import jensenshannon

from modelrollout.analysis.stats import (
    DEFAULT_MIN_SAMPLES,
    Binned,
    DistributionMismatch,
    MeanSummary,
    MetricComparison,
    MSPRTState,
    ProportionSummary,
    ScoredMetric,
    agreement,
    align,
    bins_from_cumulative,
    chi2_homogeneity,
    drift,
    expected_psi_under_null,
    hodges_lehmann,
    js_distance,
    ks_from_bins,
    mann_whitney_judge,
    msprt_update,
    psi,
    psi_null_exceedance,
    required_samples_two_proportions,
    rule_of_three_upper,
    score_run,
    wilson_interval,
)

R = [100, 200, 400, 200, 100]
C = [80, 180, 380, 240, 120]

# ----------------------------------------------------------------------------- histograms


@pytest.mark.parametrize(
    ("buckets", "edges", "counts"),
    [
        pytest.param(
            {"+Inf": 35, "0.1": 10, "1": 30, "0.5": 25},
            (0.1, 0.5, 1.0, math.inf),
            (10, 15, 5, 5),
            id="string-le-labels-in-any-order",
        ),
        pytest.param(
            {0.25: 4.0, 1.0: 4.0, math.inf: 9.0},
            (0.25, 1.0, math.inf),
            (4, 0, 5),
            id="float-keys-and-an-empty-bucket",
        ),
        pytest.param(
            {"1.0": 2, " 2 ": 3, "+inf": 3}, (1.0, 2.0, math.inf), (2, 1, 0), id="1.0-and-+inf"
        ),
        pytest.param({}, (), (), id="no-buckets-at-all"),
    ],
)
def test_cumulative_buckets_become_per_bucket_counts_in_edge_order(
    buckets: dict[Any, float], edges: tuple[float, ...], counts: tuple[float, ...]
) -> None:
    binned = bins_from_cumulative(buckets)
    assert binned.edges == edges
    assert binned.counts == pytest.approx(counts)


def test_a_small_fall_in_a_cumulative_count_is_clipped_and_the_total_is_kept() -> None:
    # increase() extrapolates each bucket series separately: 30 then 29.9 is noise.
    binned = bins_from_cumulative({"0.1": 10, "0.5": 30, "1": 29.9, "+Inf": 35})
    assert binned.counts == pytest.approx((10, 20, 0, 5))
    assert sum(binned.counts) == pytest.approx(35)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        pytest.param({"1": -1, "+Inf": 3}, "not a count", id="negative-count"),
        pytest.param({"1": math.nan, "+Inf": 3}, "not a count", id="nan-count"),
        pytest.param({"NaN": 1, "+Inf": 3}, "NaN", id="nan-bound"),
        pytest.param({"fast": 1, "+Inf": 3}, "not a number", id="non-numeric-bound"),
        pytest.param({"1": 1, "1.0": 1, "+Inf": 3}, "appears twice", id="same-bound-twice"),
        pytest.param({"1": 50, "+Inf": 10}, "not a cumulative histogram", id="large-fall"),
    ],
)
def test_malformed_buckets_are_refused_with_a_clear_message(
    buckets: dict[Any, float], message: str
) -> None:
    with pytest.raises(DistributionMismatch, match=message):
        bins_from_cumulative(buckets)


def test_align_refuses_different_edges_and_names_the_edges_that_differ() -> None:
    ref = bins_from_cumulative({"0.5": 1, "1": 2, "+Inf": 3})
    cand = bins_from_cumulative({"0.75": 1, "1": 2, "+Inf": 3})
    with pytest.raises(DistributionMismatch, match=r"only in reference \[0\.5\].*\[0\.75\]"):
        align(ref, cand)


def test_align_accepts_the_same_edges_written_differently() -> None:
    ref = bins_from_cumulative({"1": 2, "+Inf": 3})
    cand = bins_from_cumulative({1.0: 1, "+inf": 5})
    assert align(ref, cand) == ((1.0, math.inf), (2.0, 1.0), (1.0, 4.0))


def test_a_version_without_series_yet_is_not_enough_data_rather_than_a_mismatch() -> None:
    aligned = align(bins_from_cumulative({"1": 600, "+Inf": 1200}), Binned((), ()))
    assert aligned.candidate == (0.0, 0.0)
    result = drift(aligned.reference, aligned.candidate, "psi", min_samples=1000)
    assert result.value is None
    assert result.reason == "not enough samples: 0 < 1000 (candidate)"


# ----------------------------------------------------------------------------- drift


@pytest.mark.parametrize(
    ("method", "value", "p_value"),
    [
        # By hand with math.log: sum((q - p) * log(q / p)) for p = R/1000, q = C/1000.
        pytest.param("psi", 0.018535, None, id="psi"),
        # scipy.spatial.distance.jensenshannon(R/1000, C/1000, base=2).
        pytest.param("js", 0.057775, None, id="js-distance-base-2"),
        # D by hand: cumulative p = .1 .3 .7 .9, q = .08 .26 .64 .88 -> max gap .06.
        # p: scipy.stats.ks_2samp(np.repeat(edges, R), np.repeat(edges, C), method="asymp")
        # on raw points placed at the edges (checked below as well).
        pytest.param("ks", 0.06, 0.052435, id="ks"),
        # scipy.stats.chi2_contingency([R, C], correction=False): 9.242220, p 0.055322, dof 4.
        pytest.param("chi2", 9.242220, 0.055322, id="chi2"),
    ],
)
def test_the_reference_vectors_give_the_reference_values_to_six_decimals(
    method: Any, value: float, p_value: float | None
) -> None:
    result = drift(R, C, method, min_samples=1000)
    assert result.value is not None
    assert round(result.value, 6) == pytest.approx(value, abs=1e-12)
    if p_value is None:
        assert result.p_value is None
    else:
        assert result.p_value is not None
        assert round(result.p_value, 6) == pytest.approx(p_value, abs=1e-12)
    assert (result.reference_n, result.candidate_n, result.reason) == (1000, 1000, None)


def test_ks_p_value_matches_ks_2samp_on_raw_points_at_the_edges() -> None:
    edges = np.arange(5.0)
    raw = stats.ks_2samp(np.repeat(edges, R), np.repeat(edges, C), method="asymp")
    ks = ks_from_bins(R, C)
    assert ks.statistic == pytest.approx(raw.statistic, abs=1e-12)
    assert ks.p_value == pytest.approx(raw.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    "candidate",
    [pytest.param(R, id="identical"), pytest.param([3 * x for x in R], id="three-times-R")],
)
def test_psi_of_the_same_proportions_is_zero(candidate: list[int]) -> None:
    assert round(psi(R, candidate), 6) == 0


def test_psi_adds_half_a_count_to_every_bin_only_when_a_bin_is_empty_on_one_side() -> None:
    # By hand: [10, 0, 10] and [5, 5, 10] become [10.5, 0.5, 10.5] and [5.5, 5.5, 10.5].
    r, c = np.array([10.5, 0.5, 10.5]) / 21.5, np.array([5.5, 5.5, 10.5]) / 21.5
    expected = sum((q - p) * math.log(q / p) for p, q in zip(r, c, strict=True))
    assert psi([10, 0, 10], [5, 5, 10]) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([10, 0], [0, 10]))


def test_bins_empty_on_both_sides_are_dropped_before_smoothing_and_testing() -> None:
    assert psi([10, 0, 10], [5, 0, 15]) == pytest.approx(psi([10, 10], [5, 15]), abs=1e-15)
    assert chi2_homogeneity([10, 0, 10], [5, 0, 15]).dof == 1
    assert chi2_homogeneity([10, 0], [5, 0]) == (0.0, 1.0, 0)


@pytest.mark.parametrize(
    ("reference", "candidate", "min_samples", "reason"),
    [
        pytest.param([1, 2], [500, 600], 10, "not enough samples: 3 < 10 (reference)", id="ref"),
        pytest.param(
            [500, 600], [1, 2.5], 10, "not enough samples: 3.5 < 10 (candidate)", id="cand"
        ),
        pytest.param([0, 0], [0, 0], 0, "not enough samples: 0 < 1 (reference)", id="empty"),
        pytest.param([], [], 5, "not enough samples: 0 < 5 (reference)", id="no-bins"),
    ],
)
@pytest.mark.parametrize("method", ["psi", "js", "ks", "chi2"])
def test_too_few_samples_is_a_value_with_a_reason_not_an_exception(
    reference: list[float], candidate: list[float], min_samples: int, reason: str, method: Any
) -> None:
    result = drift(reference, candidate, method, min_samples=min_samples)
    assert (result.value, result.p_value, result.reason) == (None, None, reason)


@pytest.mark.parametrize(
    ("reference", "candidate", "message"),
    [
        pytest.param([1, -2, 3], [1, 2, 3], "negative count at bin 1", id="negative"),
        pytest.param([1, 2, 3], [1, 2], "reference has 3 bins, candidate has 2", id="length"),
        pytest.param([1, math.nan], [1, 2], "non-finite", id="nan"),
        pytest.param([[1, 2]], [[1, 2]], "flat vector", id="two-dimensional"),
    ],
)
def test_malformed_count_vectors_raise_distribution_mismatch(
    reference: Any, candidate: Any, message: str
) -> None:
    with pytest.raises(DistributionMismatch, match=message):
        drift(reference, candidate, "psi", min_samples=0)


def test_the_measure_functions_refuse_an_empty_side_that_drift_would_report() -> None:
    with pytest.raises(DistributionMismatch, match="candidate has no observations"):
        js_distance([1, 2], [0, 0])


def test_an_unknown_drift_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown drift method"):
        drift(R, C, "kl", min_samples=0)  # type: ignore[arg-type]


def test_mean_psi_under_no_drift_is_close_to_the_chi_square_approximation() -> None:
    # 400 seeded multinomial pairs from the same 10-bin distribution, 2000 per side.
    rng = np.random.default_rng(7)
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.1, 0.1, 0.1, 0.08, 0.07, 0.05])
    values = [psi(rng.multinomial(2000, p), rng.multinomial(2000, p)) for _ in range(400)]
    assert expected_psi_under_null(10, 2000, 2000) == pytest.approx(0.009)
    assert np.mean(values) == pytest.approx(0.009, rel=0.1)


@pytest.mark.parametrize(
    ("k", "threshold", "bound"),
    [
        pytest.param(10, 0.1, 2e-7, id="10-bins-psi-0.1"),
        pytest.param(20, 0.1, 2e-4, id="20-bins-psi-0.1"),
        pytest.param(20, 0.2, 1e-12, id="20-bins-psi-0.2"),
    ],
)
def test_the_default_minimum_sample_makes_a_false_psi_alarm_rare(
    k: int, threshold: float, bound: float
) -> None:
    n = DEFAULT_MIN_SAMPLES
    assert psi_null_exceedance(k, n, n, threshold) < bound
    assert expected_psi_under_null(k, n, n) < threshold / 2


counts = st.integers(min_value=0, max_value=1000)


@st.composite
def count_pairs(draw: st.DrawFn, positive: bool = False) -> tuple[list[int], list[int]]:
    k = draw(st.integers(min_value=2, max_value=12))
    elem = st.integers(min_value=1, max_value=1000) if positive else counts
    vectors = st.lists(elem, min_size=k, max_size=k).filter(lambda v: sum(v) > 0)
    return draw(vectors), draw(vectors)


@settings(deadline=None)
@given(count_pairs())
def test_identical_distributions_give_zero_for_every_measure(
    pair: tuple[list[int], list[int]],
) -> None:
    r, _ = pair
    assert psi(r, r) == 0
    assert js_distance(r, r) == pytest.approx(0, abs=1e-7)
    assert ks_from_bins(r, r).statistic == pytest.approx(0, abs=1e-12)
    assert chi2_homogeneity(r, r).statistic == pytest.approx(0, abs=1e-9)


@settings(deadline=None)
@given(count_pairs(), st.floats(min_value=0.01, max_value=1000))
def test_scaling_the_counts_changes_neither_js_nor_ks(
    pair: tuple[list[int], list[int]], factor: float
) -> None:
    r, c = pair
    rs, cs = [factor * x for x in r], [factor * x for x in c]
    assert js_distance(rs, cs) == pytest.approx(js_distance(r, c), abs=1e-7)
    assert ks_from_bins(rs, cs).statistic == pytest.approx(ks_from_bins(r, c).statistic)
    assert psi(r, [factor * x for x in r]) == pytest.approx(0, abs=1e-12)


@settings(deadline=None)
@given(count_pairs(positive=True), st.floats(min_value=0.01, max_value=1000))
def test_scaling_the_counts_does_not_change_psi_when_no_bin_needs_smoothing(
    pair: tuple[list[int], list[int]], factor: float
) -> None:
    # The 0.5 pseudo-count is absolute, so PSI with an empty bin depends on n on purpose.
    r, c = pair
    scaled = psi([factor * x for x in r], [factor * x for x in c])
    assert scaled == pytest.approx(psi(r, c), rel=1e-9, abs=1e-12)


@settings(deadline=None)
@given(count_pairs())
def test_every_measure_is_symmetric_finite_and_non_negative(
    pair: tuple[list[int], list[int]],
) -> None:
    r, c = pair
    for measure in (psi, js_distance):
        value = measure(r, c)
        assert math.isfinite(value)
        assert value >= 0
        assert measure(c, r) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert js_distance(r, c) <= 1
    for test in (ks_from_bins, chi2_homogeneity):
        forward, backward = test(r, c), test(c, r)
        assert math.isfinite(forward.statistic)
        assert forward.statistic >= 0
        assert 0 <= forward.p_value <= 1
        assert backward.statistic == pytest.approx(forward.statistic, rel=1e-9, abs=1e-12)
    assert ks_from_bins(r, c).statistic <= 1


@settings(deadline=None)
@given(count_pairs())
def test_js_and_chi2_agree_with_scipy(pair: tuple[list[int], list[int]]) -> None:
    r, c = pair
    expected_js = jensenshannon(np.array(r) / sum(r), np.array(c) / sum(c), base=2)
    assert js_distance(r, c) == pytest.approx(expected_js, abs=1e-7)
    table = np.array([r, c])
    table = table[:, table.sum(axis=0) > 0]
    ours = chi2_homogeneity(r, c)
    if table.shape[1] >= 2:
        stat, p, dof, _ = stats.chi2_contingency(table, correction=False)
        assert ours.statistic == pytest.approx(stat, rel=1e-9, abs=1e-9)
        assert ours.p_value == pytest.approx(p, rel=1e-6, abs=1e-12)
        assert ours.dof == dof


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.floats(min_value=-1, max_value=1),
    st.floats(min_value=0.5, max_value=2),
    st.integers(min_value=20, max_value=400),
)
def test_ks_from_bins_never_exceeds_ks_on_the_raw_samples(
    seed: int, shift: float, scale: float, n: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, n), rng.normal(shift, scale, n + 17)
    edges = np.array([-2, -1, -0.5, 0, 0.25, 0.5, 1, 2.5, math.inf])
    # Prometheus semantics: an observation x lands in the first bucket with x <= le.
    ra = np.bincount(np.searchsorted(edges, a, side="left"), minlength=edges.size)
    rb = np.bincount(np.searchsorted(edges, b, side="left"), minlength=edges.size)
    raw = stats.ks_2samp(a, b).statistic
    assert ks_from_bins(ra, rb).statistic <= raw + 1e-12


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        # By hand: centre (x + z^2/2)/(n + z^2), half z sqrt(x(n-x)/n + z^2/4)/(n + z^2),
        # z = 1.959964 (scipy.stats.norm.ppf(0.975)).
        pytest.param(8, 10, 0.490162, 0.943318, id="8-of-10"),
        pytest.param(0, 10, 0.0, 0.277533, id="none-of-10-upper-is-z2-over-n-plus-z2"),
        pytest.param(10, 10, 0.722467, 1.0, id="all-of-10"),
        pytest.param(0, 0, 0.0, 1.0, id="no-trials-no-information"),
    ],
)
def test_wilson_interval_matches_the_formula_worked_by_hand(
    successes: int, n: int, lower: float, upper: float
) -> None:
    interval = wilson_interval(successes, n)
    assert interval.lower == pytest.approx(lower, abs=1e-6)
    assert interval.upper == pytest.approx(upper, abs=1e-6)


@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=10**6).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
    ),
    st.floats(min_value=0.5, max_value=0.999),
)
def test_the_wilson_interval_contains_the_observed_rate(
    data: tuple[int, int], confidence: float
) -> None:
    successes, n = data
    lower, upper = wilson_interval(successes, n, confidence)
    assert 0 <= lower <= successes / n + 1e-12
    assert successes / n <= upper + 1e-12
    assert upper <= 1


@pytest.mark.parametrize(
    ("agree", "disagree", "unpaired", "rate", "reason"),
    [
        pytest.param(950, 50, 10, 0.95, None, id="mostly-agreeing"),
        pytest.param(950, 50, 300, None, "too many unpaired requests: 0.231 > 0.1", id="unpaired"),
        pytest.param(0, 0, 0, None, "no requests", id="no-requests"),
        pytest.param(0, 0, 0.0, None, "no requests", id="no-requests-float"),
    ],
)
def test_agreement_reports_a_rate_or_the_reason_there_is_none(
    agree: float, disagree: float, unpaired: float, rate: float | None, reason: str | None
) -> None:
    result = agreement(agree, disagree, unpaired, max_unpaired_fraction=0.1)
    assert result.rate == (None if rate is None else pytest.approx(rate))
    assert result.reason == reason
    if rate is not None:
        assert result.lower is not None
        assert result.upper is not None
        assert result.lower < rate < result.upper
        assert (result.lower, result.upper) == wilson_interval(agree, agree + disagree)
        assert result.unpaired_fraction == pytest.approx(10 / 1010)
    else:
        assert (result.lower, result.upper) == (None, None)


def test_agreement_with_too_few_pairs_is_not_enough_samples() -> None:
    result = agreement(20, 1, 0, min_pairs=100)
    assert result.rate is None
    assert result.reason == "not enough samples: 21 < 100"


# ----------------------------------------------------------------------------- Kayenta


def test_hodges_lehmann_is_the_median_of_pairwise_differences() -> None:
    # By hand: [2, 4] - [1, 2, 3] -> 1, 0, -1, 3, 2, 1 -> sorted -1 0 1 1 2 3 -> median 1.
    assert hodges_lehmann([1, 2, 3], [2, 4]) == 1
    # Odd number of pairs: [10] - [1, 2, 7] -> 9, 8, 3 -> median 8.
    assert hodges_lehmann([1, 2, 7], [10]) == 8


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=-50, max_value=50), min_size=1, max_size=40),
    st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=1, max_size=40),
)
def test_the_bounded_hodges_lehmann_selection_equals_the_full_computation(
    control: list[int], experiment: list[float]
) -> None:
    exact = hodges_lehmann(control, experiment)
    bounded = hodges_lehmann(control, experiment, max_pairs=0)
    assert bounded == pytest.approx(exact, rel=1e-12, abs=1e-9)


def test_the_bounded_hodges_lehmann_handles_large_samples_quickly() -> None:
    rng = np.random.default_rng(3)
    c, e = rng.normal(10, 2, 4000), rng.normal(11, 2, 3001)  # 12 million pairs
    small = hodges_lehmann(c[::10], e[::10])
    assert hodges_lehmann(c, e) == pytest.approx(1.0, abs=0.15)
    assert small == pytest.approx(hodges_lehmann(c[::10], e[::10], max_pairs=0), rel=1e-12)


_rng = np.random.default_rng(11)
_BASE = _rng.normal(100, 5, 40)


@pytest.mark.parametrize(
    ("control", "experiment", "classification"),
    [
        pytest.param(_BASE, _BASE + 50, "High", id="much-higher-is-high"),
        pytest.param(_BASE, _BASE - 50, "Low", id="much-lower-is-low"),
        pytest.param(_BASE, _rng.normal(100, 5, 40), "Pass", id="same-distribution-passes"),
        pytest.param(
            _BASE, _BASE + 10, "Pass", id="significant-but-within-25-percent-of-median-passes"
        ),
        pytest.param([0.0] * 30, [0.0] * 10 + [1.0] * 20, "High", id="zero-median-any-shift"),
        pytest.param([0.0] * 30, [0.0] * 30, "Pass", id="identical-constants-pass"),
        pytest.param([1.0] * 30, [1.0] * 29 + [50.0], "Pass", id="one-outlier-is-not-a-shift"),
    ],
)
def test_the_judge_needs_significance_and_a_material_shift_for_high_or_low(
    control: Any, experiment: Any, classification: str
) -> None:
    result = mann_whitney_judge(control, experiment, direction="either")
    assert result.classification == classification
    assert result.n_control == len(control)
    assert result.p_value is not None
    # Same scipy call: pins the argument order and the two-sided alternative.
    if np.ptp(np.concatenate([control, experiment])) > 0:
        expected = stats.mannwhitneyu(experiment, control, alternative="two-sided").pvalue
        assert result.p_value == pytest.approx(expected)
    assert result.control_median == pytest.approx(np.median(control))


def test_the_judge_is_significant_at_alpha_equal_to_one_minus_confidence() -> None:
    # scipy.stats.mannwhitneyu(_BASE + 3, _BASE).pvalue = 0.0050; HL is exactly 3.
    result = mann_whitney_judge(_BASE, _BASE + 3, effect_tolerance=0.01, confidence=0.98)
    assert result.p_value == pytest.approx(0.0050, abs=1e-4)
    assert result.hodges_lehmann == pytest.approx(3)
    assert result.classification == "High"
    strict = mann_whitney_judge(_BASE, _BASE + 3, effect_tolerance=0.01, confidence=0.999)
    assert strict.classification == "Pass"


@pytest.mark.parametrize(
    ("control", "experiment", "reason"),
    [
        pytest.param([1.0] * 9, [1.0] * 30, "not enough points: 9 < 10 (control)", id="short"),
        pytest.param(
            [1.0] * 30,
            [1.0] * 8 + [math.nan] * 5,
            "not enough points: 8 < 10 (experiment)",
            id="nan-points-are-dropped-first",
        ),
    ],
)
def test_too_few_points_is_no_data(
    control: list[float], experiment: list[float], reason: str
) -> None:
    result = mann_whitney_judge(control, experiment)
    assert result.classification == "NoData"
    assert result.reason == reason
    assert not result.failed


@pytest.mark.parametrize(
    ("classification", "direction", "failed"),
    [
        pytest.param("High", "increase", True, id="high-fails-when-increase-is-bad"),
        pytest.param("Low", "increase", False, id="low-passes-when-only-increase-is-bad"),
        pytest.param("High", "decrease", False, id="high-passes-when-only-decrease-is-bad"),
        pytest.param("Low", "decrease", True, id="low-fails-when-decrease-is-bad"),
        pytest.param("High", "either", True, id="high-fails-either-way"),
        pytest.param("Low", "either", True, id="low-fails-either-way"),
        pytest.param("Pass", "either", False, id="pass-passes"),
    ],
)
def test_whether_a_classification_fails_depends_on_the_harmful_direction(
    classification: Any, direction: Any, failed: bool
) -> None:
    assert _comparison(classification, direction).failed is failed


def _comparison(classification: Any, direction: Any = "increase") -> MetricComparison:
    return MetricComparison(classification, direction, 0.01, 1.0, 1.0, 2.0, 30, 30)


def _metric(name: str, cls: Any, direction: Any = "increase", **kw: Any) -> ScoredMetric:
    return ScoredMetric(name, _comparison(cls, direction), **kw)


@pytest.mark.parametrize(
    ("metrics", "score", "verdict", "failed", "critical_failed"),
    [
        pytest.param(
            [_metric("a", "Pass"), _metric("b", "Pass")], 100, "Pass", (), (), id="all-pass"
        ),
        pytest.param(
            [_metric(n, "Pass") for n in "abc"] + [_metric("d", "High")],
            75,
            "Marginal",
            ("d",),
            (),
            id="one-of-four-failed-is-marginal",
        ),
        pytest.param(
            [_metric("latency", "Low", "increase"), _metric("err", "Pass")],
            100,
            "Pass",
            (),
            (),
            id="low-latency-when-only-increase-is-bad-counts-as-pass",
        ),
        pytest.param(
            [_metric(n, "Pass") for n in "abc"] + [_metric("d", "NoData")],
            100,
            "Pass",
            (),
            (),
            id="no-data-is-left-out-of-the-denominator",
        ),
        pytest.param(
            [_metric("a", "NoData"), _metric("b", "NoData")],
            None,
            "NoData",
            (),
            (),
            id="all-no-data-is-no-data-not-100",
        ),
        pytest.param([], None, "NoData", (), (), id="no-metrics"),
        pytest.param(
            [_metric(f"m{i}", "Pass") for i in range(19)] + [_metric("x", "High", critical=True)],
            95,
            "Fail",
            ("x",),
            ("x",),
            id="a-failed-critical-metric-fails-a-passing-score",
        ),
        pytest.param(
            [_metric("a", "Pass"), _metric("x", "NoData", critical=True)],
            100,
            "NoData",
            (),
            (),
            id="a-critical-metric-without-data-is-inconclusive",
        ),
        pytest.param(
            [_metric("a", "High", weight=3), _metric("b", "Pass")],
            25,
            "Fail",
            ("a",),
            (),
            id="weights-count",
        ),
    ],
)
def test_score_run_weighs_the_metrics_with_data(
    metrics: list[ScoredMetric],
    score: float | None,
    verdict: str,
    failed: tuple[str, ...],
    critical_failed: tuple[str, ...],
) -> None:
    result = score_run(metrics)
    assert result.score == (None if score is None else pytest.approx(score))
    assert result.verdict == verdict
    assert result.failed_metrics == failed
    assert result.critical_failed == critical_failed


def test_score_run_refuses_bad_weights_and_thresholds() -> None:
    with pytest.raises(ValueError, match="positive weight"):
        score_run([_metric("a", "Pass", weight=0)])
    with pytest.raises(ValueError, match="marginal_threshold"):
        score_run([_metric("a", "Pass")], pass_threshold=70, marginal_threshold=80)


# ----------------------------------------------------------------------------- mSPRT


def _mean_summary(n: int, mean: float, var: float) -> MeanSummary:
    # sum and sum of squares of n points with this mean and sample variance.
    return MeanSummary(n, n * mean, (n - 1) * var + n * mean * mean)


def _lambda_by_integration(d: float, v: float, tau: float, one_sided: bool) -> float:
    # Mixture of likelihood ratios N(d; theta, V) / N(d; 0, V) over N(0, tau^2) on theta,
    # or the half-normal on theta > 0, by numerical integration (scipy.integrate.quad).
    def integrand(theta: float) -> float:
        ratio = math.exp((theta * d - theta * theta / 2) / v)
        return ratio * (2 if one_sided else 1) * float(stats.norm.pdf(theta, 0, tau))

    lower = 0.0 if one_sided else -np.inf
    return float(integrate.quad(integrand, lower, np.inf)[0])


@pytest.mark.parametrize(
    ("direction", "effect"),
    [
        pytest.param("either", 0.3, id="two-sided"),
        pytest.param("increase", 0.3, id="one-sided-harmful-shift"),
        pytest.param("increase", -0.3, id="one-sided-harmless-shift"),
        pytest.param("decrease", -0.3, id="decrease-is-harmful"),
    ],
)
def test_the_mixture_likelihood_ratio_matches_numerical_integration(
    direction: Any, effect: float
) -> None:
    control, experiment = _mean_summary(100, 0.0, 1.0), _mean_summary(100, effect, 1.0)
    result = msprt_update(None, control, experiment, tau=0.1, direction=direction)
    # V = 1/100 + 1/100; for "decrease" the mirror image of "increase".
    sign = -1 if direction == "decrease" else 1
    expected = _lambda_by_integration(sign * effect, 0.02, 0.1, direction != "either")
    assert result.statistic == pytest.approx(expected, rel=1e-6)
    assert result.effect == pytest.approx(effect)
    assert result.always_valid_p == pytest.approx(min(1.0, 1 / expected), rel=1e-6)


def test_the_always_valid_p_value_is_a_running_minimum_and_a_rejection_sticks() -> None:
    control = _mean_summary(1000, 0.0, 1.0)
    strong = msprt_update(None, control, _mean_summary(1000, 0.5, 1.0), tau=0.1)
    assert strong.decision == "reject"
    later = msprt_update(strong.state, control, _mean_summary(2000, 0.0, 1.0), tau=0.1)
    assert later.always_valid_p == strong.always_valid_p
    assert later.decision == "reject"
    assert later.statistic is not None
    assert later.statistic < 1


def test_a_harmless_difference_never_lowers_the_one_sided_p_value() -> None:
    control, better = _mean_summary(1000, 1.0, 1.0), _mean_summary(1000, 0.5, 1.0)
    result = msprt_update(MSPRTState(0.4), control, better, tau=0.1, direction="increase")
    assert (result.always_valid_p, result.decision) == (0.4, "continue")


@pytest.mark.parametrize(
    ("control", "experiment", "reason"),
    [
        pytest.param(
            _mean_summary(50, 0, 1),
            _mean_summary(500, 9, 1),
            "burn-in: 50 < 100 (control)",
            id="burn-in",
        ),
        pytest.param(
            ProportionSummary(0, 500),
            ProportionSummary(0, 600),
            "zero variance: no information in this look",
            id="no-errors-yet",
        ),
    ],
)
def test_a_look_without_information_keeps_the_previous_p_value(
    control: Any, experiment: Any, reason: str
) -> None:
    result = msprt_update(MSPRTState(0.3), control, experiment, tau=0.01)
    assert (result.always_valid_p, result.statistic, result.reason) == (0.3, None, reason)
    assert result.decision == "continue"


def test_malformed_summaries_are_refused() -> None:
    with pytest.raises(ValueError, match="successes <= trials"):
        msprt_update(None, ProportionSummary(5, 4), ProportionSummary(1, 4), tau=0.01)
    with pytest.raises(ValueError, match="same kind"):
        msprt_update(None, ProportionSummary(1, 4), MeanSummary(4, 1, 1), tau=0.01)


def _simulate(
    kind: str, effect: float, seed: int, runs: int = 300, looks: int = 20
) -> tuple[float, float]:
    """Share of runs the mSPRT rejects, and the share a naive z-test at every look does.

    Each look adds 50 points per arm (means: N(0, 1) vs N(effect, 1), tau 0.1) or 200
    requests per arm (proportions: error rate 5% vs 5% + effect, tau 0.02). Both tests are
    one-sided ("increase") at alpha 0.05; the naive one rejects when z > 1.645 at any look.
    """
    rng = np.random.default_rng(seed)
    msprt_rejections = naive_rejections = 0
    for _ in range(runs):
        state: MSPRTState | None = None
        sc, se = np.zeros(3), np.zeros(3)
        rejected = naive = False
        for _ in range(looks):
            if kind == "mean":
                x, y = rng.normal(0, 1, 50), rng.normal(effect, 1, 50)
                sc += [50, x.sum(), x @ x]
                se += [50, y.sum(), y @ y]
                c: Any = MeanSummary(*sc)
                e: Any = MeanSummary(*se)
                z = (e.mean - c.mean) / math.sqrt(c.variance / c.n + e.variance / e.n)
                tau = 0.1
            else:
                sc += [rng.binomial(200, 0.05), 200, 0]
                se += [rng.binomial(200, 0.05 + effect), 200, 0]
                c, e = ProportionSummary(sc[0], sc[1]), ProportionSummary(se[0], se[1])
                pooled = (sc[0] + se[0]) / (sc[1] + se[1])
                sd = math.sqrt(pooled * (1 - pooled) * (1 / sc[1] + 1 / se[1]))
                z = (se[0] / se[1] - sc[0] / sc[1]) / sd if sd > 0 else 0.0
                tau = 0.02
            result = msprt_update(state, c, e, tau=tau, alpha=0.05, direction="increase")
            state = result.state
            rejected |= result.decision == "reject"
            naive |= z > 1.6448536269514722
        msprt_rejections += rejected
        naive_rejections += naive
    return msprt_rejections / runs, naive_rejections / runs


@pytest.mark.parametrize(
    ("kind", "seed", "measured"),
    [
        # Measured with these seeds: mSPRT 0.007 (2/300), naive z-test at every look 0.223.
        pytest.param("mean", 1, (0.007, 0.223), id="difference-of-means"),
        # Measured with these seeds: mSPRT 0.010 (3/300), naive z-test at every look 0.253.
        pytest.param("proportion", 3, (0.010, 0.253), id="two-error-rates"),
    ],
)
def test_checking_the_msprt_every_look_keeps_false_rejections_near_alpha(
    kind: str, seed: int, measured: tuple[float, float]
) -> None:
    msprt_rate, naive_rate = _simulate(kind, 0.0, seed)
    assert (msprt_rate, naive_rate) == pytest.approx(measured, abs=0.002)
    assert msprt_rate < 0.05 * 2  # well under 2 alpha
    assert naive_rate > 0.05 * 3  # peeking at a fixed-sample test inflates alpha 4-5x


@pytest.mark.parametrize(
    ("kind", "effect", "seed"),
    [
        pytest.param("mean", 0.2, 4, id="a-fifth-of-a-standard-deviation"),
        pytest.param("proportion", 0.02, 5, id="error-rate-5-to-7-percent"),
    ],
)
def test_the_msprt_catches_a_real_regression_within_twenty_looks(
    kind: str, effect: float, seed: int
) -> None:
    msprt_rate, _ = _simulate(kind, effect, seed, runs=100)
    assert msprt_rate > 0.8


# ----------------------------------------------------------------------------- sample sizes


def test_required_samples_for_doubling_a_one_percent_error_rate() -> None:
    # By hand: z_.95 = 1.644854, z_.8 = 0.841621, pbar = 0.015:
    # (1.644854 sqrt(2 * .015 * .985) + 0.841621 sqrt(.01 * .99 + .02 * .98))^2 / .01^2
    # = 1825.9 -> 1826 per arm.
    assert required_samples_two_proportions(0.01, 0.02) == 1826


def test_the_required_sample_gives_the_requested_power_in_simulation() -> None:
    # 20000 seeded experiments at n = 1826 per arm: the pooled one-sided z-test at alpha
    # 0.05 should reject about 80% of the time when the rate doubles from 1% to 2%.
    n = required_samples_two_proportions(0.01, 0.02)
    rng = np.random.default_rng(5)
    a, b = rng.binomial(n, 0.01, 20000), rng.binomial(n, 0.02, 20000)
    pooled = (a + b) / (2 * n)
    z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert np.mean(z > 1.6448536269514722) == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize(
    ("n", "upper"),
    [
        pytest.param(300, 0.01, id="300-clean-requests-bound-the-rate-at-1-percent"),
        pytest.param(3000, 0.001, id="3000-clean-requests"),
        pytest.param(2, 1.0, id="too-few-to-say-anything"),
        pytest.param(0, 1.0, id="none"),
    ],
)
def test_rule_of_three(n: int, upper: float) -> None:
    assert rule_of_three_upper(n) == pytest.approx(upper)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=10**7))
def test_the_rule_of_three_is_above_the_exact_one_sided_bound(n: int) -> None:
    # Exact: the p with (1 - p)^n = 0.05.
    assert rule_of_three_upper(n) >= 1 - 0.05 ** (1 / n)
