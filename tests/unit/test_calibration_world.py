"""Tests of the calibration harness: the simulated world and the fake Prometheus.

The fake's answers are checked against the world's own totals (kept apart from the
labelled series it reads) and against hand-worked ``histogram_quantile`` values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from modelrollout.analysis.source import Sample, SourceError
from tests.calibration.fake_prometheus import (
    FakePrometheus,
    UnsupportedQuery,
    histogram_quantile,
    parse_duration,
)
from tests.calibration.world import (
    FEATURE_BUCKETS,
    Kind,
    Regression,
    World,
    WorldConfig,
    binned_psi,
    feature_probs,
    shift_for_psi,
)

CAND = 'model="demo",version="v2"'
STABLE = 'model="demo",version="v1"'


@pytest.fixture(scope="module")
def world() -> World:
    w = World(7)
    w.step(10)
    return w


@pytest.fixture
def prom(world: World) -> FakePrometheus:
    return FakePrometheus(world)


def one(samples: list[Sample]) -> float:
    assert len(samples) == 1
    return samples[0].value


# ----------------------------------------------------------------------------- world


def test_the_same_seed_gives_the_same_world() -> None:
    a, b = World(3), World(3)
    a.step(5)
    b.step(5)
    assert a.totals["v2"].requests == b.totals["v2"].requests
    assert np.array_equal(a.totals["v1"].latency, b.totals["v1"].latency)


def test_the_candidate_gets_about_a_third_of_the_stables_traffic(world: World) -> None:
    ratio = world.totals["v1"].requests / world.totals["v2"].requests
    assert 2.5 < ratio < 3.5
    assert 700 < world.totals["v2"].requests < 1300


def test_series_are_cumulative_and_sum_to_the_totals(world: World) -> None:
    requests = 0.0
    for labels, values in world.series("model_requests_total"):
        assert len(values) == world.intervals + 1
        assert values[0] == 0.0
        assert all(b >= a for a, b in itertools.pairwise(values))
        if labels["version"] == "v2":
            requests += values[-1]
    assert requests == world.totals["v2"].requests


@pytest.mark.parametrize(
    ("kind", "truth", "low", "high"),
    [
        pytest.param(Kind.ERRORS, "error_rate", 0.02, 0.04, id="errors-plus-two-points"),
        pytest.param(Kind.LATENCY, "share_above", 0.01, 0.05, id="p99-plus-20pct-breaks-500ms"),
        pytest.param(Kind.DRIFT, "psi", 0.2499, 0.2501, id="input-shift-psi-0.25"),
        pytest.param(Kind.AGREEMENT, "agreement", 0.93, 0.93, id="agreement-93pct"),
    ],
)
def test_a_regression_moves_the_truth_it_is_about(
    kind: Kind, truth: str, low: float, high: float
) -> None:
    healthy, broken = World(11), World(11, regression=Regression(kind))
    healthy.step(5)
    broken.step(5)
    assert low <= broken.truth()[truth] <= high
    assert healthy.truth()[truth] != broken.truth()[truth]


def test_a_regression_starts_at_its_interval() -> None:
    w = World(5, regression=Regression(Kind.ERRORS, start=3))
    w.step(6)
    assert w.truth()["error_rate"] < w.truth(since=3)["error_rate"]
    assert w.truth(since=3)["error_rate"] > 0.02


def test_healthy_worlds_stay_within_the_calibration_limits() -> None:
    for seed in range(40):
        w = World(seed, WorldConfig(record_series=False))
        w.step(5)
        truth = w.truth()
        assert truth["error_rate"] < 0.01
        assert truth["share_above"] < 0.01
        assert truth["psi"] == pytest.approx(0.0, abs=1e-12)


def test_the_input_shift_is_solved_on_the_feature_buckets() -> None:
    shift = shift_for_psi(0.25)
    assert binned_psi(feature_probs(0.0), feature_probs(shift)) == pytest.approx(0.25)
    assert feature_probs(0.0).size == len(FEATURE_BUCKETS)


# ----------------------------------------------------------------------------- fake source


def test_sum_of_increase_over_the_whole_run_is_the_total(
    world: World, prom: FakePrometheus
) -> None:
    got = one(prom.instant(f"sum(increase(model_requests_total{{{CAND}}}[600s]))"))
    assert got == world.totals["v2"].requests
    errors = one(prom.instant(f"sum(increase(model_request_errors_total{{{STABLE}}}[1h]))"))
    assert errors == world.totals["v1"].errors


def test_increase_over_a_window_is_the_difference_across_it(world: World) -> None:
    prom = FakePrometheus(world)
    full = one(prom.instant(f"sum(increase(model_requests_total{{{CAND}}}[10m]))"))
    early = one(
        FakePrometheus(world, at=300).instant(f"sum(increase(model_requests_total{{{CAND}}}[5m]))")
    )
    late = one(prom.instant(f"sum(increase(model_requests_total{{{CAND}}}[5m]))"))
    shifted = one(prom.instant(f"sum(increase(model_requests_total{{{CAND}}}[5m] offset 5m))"))
    assert early + late == full
    assert shifted == early


def test_rate_is_increase_per_second(prom: FakePrometheus) -> None:
    increase = one(prom.instant(f"sum(increase(model_requests_total{{{CAND}}}[2m]))"))
    rate = one(prom.instant(f"sum(rate(model_requests_total{{{CAND}}}[2m]))"))
    assert rate == pytest.approx(increase / 120)


def test_sum_by_le_gives_the_cumulative_histogram(world: World, prom: FakePrometheus) -> None:
    samples = prom.instant(
        f"sum by (le) (increase(model_request_duration_seconds_bucket{{{CAND}}}[10m]))"
    )
    got = {float(s.labels["le"]): s.value for s in samples}
    assert all(set(s.labels) == {"le"} for s in samples)
    edges = sorted(got)
    assert [got[e] for e in edges] == pytest.approx(np.cumsum(world.totals["v2"].latency))


def test_sum_by_a_label_groups_the_shadow_comparisons(world: World, prom: FakePrometheus) -> None:
    pair = 'model="demo",stable_version="v1",candidate_version="v2"'
    samples = prom.instant(
        f"sum by (result) (increase(model_shadow_comparisons_total{{{pair}}}[10m]))"
    )
    got = {s.labels["result"]: s.value for s in samples}
    assert got == {"agree": world.totals["v2"].agree, "disagree": world.totals["v2"].disagree}
    unpaired = prom.instant(
        'sum(increase(model_shadow_unpaired_total{model="demo",candidate_version="v2"}[10m]))'
    )
    assert one(unpaired) == world.totals["v2"].unpaired


def test_the_drift_query_reads_the_feature_histogram(world: World, prom: FakePrometheus) -> None:
    query = (
        "sum by (le) (increase(model_input_feature_bucket"
        '{model="demo",feature="f0",version="v1"}[600s]))'
    )
    got = sorted((float(s.labels["le"]), s.value) for s in prom.instant(query))
    assert [v for _, v in got] == pytest.approx(np.cumsum(world.totals["v1"].feature))


def test_todays_error_rate_query_divides_two_sums(world: World, prom: FakePrometheus) -> None:
    query = (
        f"sum(rate(model_request_errors_total{{{CAND}}}[10m])) / "
        f"sum(rate(model_requests_total{{{CAND}}}[10m]))"
    )
    totals = world.totals["v2"]
    assert one(prom.instant(query)) == pytest.approx(totals.errors / totals.requests)


def test_todays_latency_query_is_prometheus_histogram_quantile(prom: FakePrometheus) -> None:
    query = (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(model_request_duration_seconds_bucket{{{CAND}}}[10m])))"
    )
    p99 = one(prom.instant(query))
    assert 0.25 < p99 <= 1.0


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        pytest.param(0.5, 0.1 + 0.4 * 40 / 50, id="median-inside-the-second-bucket"),
        pytest.param(0.05, 0.1 * 5 / 10, id="first-bucket-starts-at-zero"),
        pytest.param(0.95, 1.0, id="rank-in-the-inf-bucket-gives-the-last-finite-bound"),
    ],
)
def test_histogram_quantile_interpolates_as_prometheus_does(q: float, expected: float) -> None:
    buckets = [(0.1, 10.0), (0.5, 60.0), (1.0, 90.0), (math.inf, 100.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_of_an_empty_histogram_is_nan() -> None:
    assert math.isnan(histogram_quantile(0.99, [(0.5, 0.0), (math.inf, 0.0)]))


def test_zero_over_zero_is_nan_like_prometheus() -> None:
    w = World(1)
    w.step(1)
    prom = FakePrometheus(w, at=0)
    query = (
        f"sum(rate(model_request_errors_total{{{CAND}}}[1m])) / "
        f"sum(rate(model_requests_total{{{CAND}}}[1m]))"
    )
    assert math.isnan(one(prom.instant(query)))


@pytest.mark.parametrize(
    ("matchers", "versions"),
    [
        pytest.param('model="demo"', {"v1", "v2"}, id="equal"),
        pytest.param('model="demo",version!="v1"', {"v2"}, id="not-equal"),
        pytest.param('version=~"v[12]"', {"v1", "v2"}, id="regex"),
        pytest.param('version!~"v.*"', set(), id="negated-regex"),
        pytest.param('version="v3"', set(), id="nothing-matches"),
    ],
)
def test_label_matchers_select_series_as_prometheus_does(
    prom: FakePrometheus, matchers: str, versions: set[str]
) -> None:
    samples = prom.instant(f"sum by (version) (increase(model_requests_total{{{matchers}}}[1m]))")
    assert {s.labels["version"] for s in samples} == versions


def test_a_range_query_gives_one_value_per_step(prom: FakePrometheus) -> None:
    values = prom.range(f"sum(increase(model_requests_total{{{CAND}}}[1m]))", 300.0, 60.0)
    assert len(values) == 6
    assert all(v > 0 for v in values[1:])


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("avg(rate(model_requests_total[1m]))", id="another-aggregation"),
        pytest.param("sum(model_requests_total)", id="a-bare-selector"),
        pytest.param("sum(increase(model_requests_total[1.5h]))", id="a-fractional-duration"),
        pytest.param("sum(rate(model_requests_total[1m])) by (le)", id="by-after-the-sum"),
        pytest.param('sum(increase(x{a~"b"}[1m]))', id="a-broken-matcher"),
    ],
)
def test_a_query_of_an_unknown_shape_is_refused_loudly(prom: FakePrometheus, query: str) -> None:
    with pytest.raises(UnsupportedQuery) as caught:
        prom.instant(query)
    assert not isinstance(caught.value, SourceError)


def test_a_down_source_raises_source_error_and_records_the_query(prom: FakePrometheus) -> None:
    prom.down = True
    with pytest.raises(SourceError):
        prom.instant("sum(rate(model_requests_total[1m]))")
    assert prom.queries == ["sum(rate(model_requests_total[1m]))"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90.0, id="seconds"),
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("250ms", 0.25, id="milliseconds"),
    ],
)
def test_parse_duration_reads_promql_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
