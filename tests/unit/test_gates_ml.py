"""The ML gates (drift, nullRate, agreement, compare, score, accuracy, minSamples).

The evaluators run against a fake metric source: a table from a query substring to
the samples Prometheus would answer. The source is a seam (the ``MetricSource``
protocol, plus ``range`` for per-step values), so a fake is fine here: what these tests
check is the PromQL each gate asks and what it makes of the answer. The real
Prometheus client path is covered by test_gates_threshold.py and test_analyze_cli.py (recorded
answers over HTTP), and against a live Prometheus by the end-to-end tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelrollout.analysis.gates import GateContext, evaluate, previous_results, stage_seconds
from modelrollout.analysis.gates.accuracy import judge_accuracy, newcombe_difference
from modelrollout.analysis.gates.agreement import agreement_queries
from modelrollout.analysis.gates.drift import drift_queries
from modelrollout.analysis.source import Sample, SourceError
from modelrollout.api import crd
from modelrollout.api.gates import AccuracyGate, MetricGate
from modelrollout.api.status import (
    AnalysisRun,
    GateResult,
    ModelRolloutStatus,
    Phase,
    Stage,
    Verdict,
)
from modelrollout.engine.types import TrafficState

from .engine_harness import Sim, make_spec

R = [100, 200, 400, 200, 100]
C = [80, 180, 380, 240, 120]
EDGES = ["0.1", "0.5", "1", "5", "+Inf"]

Answer = list[Sample] | Exception


class FakeSource:
    """Answers a query from the first table key that is a substring of it; else no data."""

    def __init__(
        self,
        instant: Mapping[str, Answer] | None = None,
        ranges: Mapping[str, list[float] | Exception] | None = None,
    ) -> None:
        self.table = dict(instant or {})
        self.ranges = dict(ranges or {})
        self.queries: list[str] = []

    def instant(self, query: str) -> list[Sample]:
        self.queries.append(query)
        for key, answer in self.table.items():
            if key in query:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return []

    def range(self, query: str, seconds: float, step: float) -> list[float]:
        self.queries.append(f"range[{seconds:g}s:{step:g}s] {query}")
        for key, answer in self.ranges.items():
            if key in query:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return []


class InstantOnly:
    def instant(self, query: str) -> list[Sample]:
        return [Sample({}, 1.0)]


def ctx(**kw: Any) -> GateContext:
    base: dict[str, Any] = {
        "model": "fraud-detector",
        "namespace": "ml",
        "candidate_version": "v2",
        "stable_version": "v1",
        "interval": "1m",
        "stage": "canary",
    }
    base.update(kw)
    return GateContext(**base)


def gate(**kw: Any) -> MetricGate:
    return MetricGate.model_validate({"name": "g", **kw})


def one(g: MetricGate, source: Any, context: GateContext | None = None) -> GateResult:
    [result] = evaluate([g], source, context or ctx())
    return result


def scalar(value: float, **labels: str) -> list[Sample]:
    return [Sample(dict(labels), value)]


def cumulative(counts: Sequence[float], edges: Sequence[str] = EDGES) -> list[Sample]:
    """``sum by (le) (increase(x_bucket[w]))`` of per-bucket counts."""
    running = np.cumsum(counts)
    return [Sample({"le": e}, float(v)) for e, v in zip(edges, running, strict=True)]


def sel(version: str) -> str:
    return f'version="{version}"'


# --------------------------------------------------------------------------- drift


def drift_source(
    reference: Sequence[float],
    candidate: Sequence[float],
    ref_edges: Sequence[str] = EDGES,
    cand_edges: Sequence[str] = EDGES,
) -> FakeSource:
    return FakeSource(
        {
            sel("v2"): cumulative(candidate, cand_edges),
            sel("v1"): cumulative(reference, ref_edges),
        }
    )


def drift_gate(method: str = "psi", limit: dict[str, float] | None = None, **kw: Any) -> MetricGate:
    spec = {"metric": "model_input_feature", "labels": {"feature": "f0"}, "method": method, **kw}
    return gate(drift=spec, **(limit or {"max": 0.1}))


def scaled(counts: Sequence[float], factor: float) -> list[float]:
    return [factor * c for c in counts]


SHIFTED = [300, 300, 200, 120, 80]  # PSI about 0.35 against R


def test_psi_of_the_reference_histograms_is_shown_within_its_max() -> None:
    r = one(drift_gate(), drift_source(R, C))
    assert r.verdict == Verdict.PASS
    assert r.value == pytest.approx(0.018535, abs=1e-6)
    assert (r.max, r.samples, r.needed_samples, r.alpha) == (0.1, 1000, 1000, 0.01)
    assert r.lower is not None
    assert r.upper is not None
    assert r.lower <= r.value <= r.upper <= 0.1
    assert "1000 candidate and 1000 reference" in (r.reason or "")


def test_js_distance_base_2_is_not_yet_shown_on_1000_and_shown_on_10000() -> None:
    r = one(drift_gate("js"), drift_source(R, C))
    assert r.value == pytest.approx(0.057775, abs=1e-6)
    assert r.verdict == Verdict.INCONCLUSIVE
    assert r.samples == 1000
    assert r.needed_samples is not None
    assert r.needed_samples > 1000  # gathering evidence, not missing data
    more = one(drift_gate("js"), drift_source(scaled(R, 10), scaled(C, 10)))
    assert more.verdict == Verdict.PASS


def test_psi_shown_above_max_fails_and_a_small_excess_waits() -> None:
    assert one(drift_gate(), drift_source(R, SHIFTED)).verdict == Verdict.FAIL
    r = one(drift_gate(limit={"max": 0.01}), drift_source(R, C))
    assert r.verdict == Verdict.INCONCLUSIVE  # 0.0185 > 0.01, but not shown on 1000


def test_chi2_fails_when_the_e_value_shows_a_difference_and_passes_within_psi_0_1() -> None:
    source = drift_source(R, C)
    r = one(drift_gate("chi2", {"min": 0.01}), source)
    assert r.value == pytest.approx(0.055322, abs=1e-6)
    assert r.verdict == Verdict.PASS  # PSI shown at most 0.1
    assert "chi2 9.24222" in (r.reason or "")
    assert "e-value" in (r.reason or "")
    shifted = one(drift_gate("chi2", {"min": 0.01}), drift_source(R, SHIFTED))
    assert shifted.verdict == Verdict.FAIL


def test_ks_reads_d_with_max_and_tests_like_chi2_with_min() -> None:
    source = drift_source(R, C)
    by_d = one(drift_gate("ks", {"max": 0.05}), source)
    assert by_d.value == pytest.approx(0.06)
    assert by_d.verdict == Verdict.INCONCLUSIVE  # D 0.06 > 0.05, not shown on 1000
    assert one(drift_gate("ks", {"max": 0.1}), drift_source(R, SHIFTED)).verdict == Verdict.FAIL
    by_p = one(drift_gate("ks", {"min": 0.01}), source)
    assert by_p.value == pytest.approx(0.052435, abs=1e-6)
    assert by_p.verdict == Verdict.PASS


def test_differing_bucket_edges_are_inconclusive_with_the_mismatch() -> None:
    other = ["0.1", "0.5", "2", "5", "+Inf"]
    r = one(drift_gate(), drift_source(R, C, cand_edges=other))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert r.value is None
    assert "DistributionMismatch" in (r.reason or "")
    assert "bucket edges differ" in (r.reason or "")


def test_below_min_samples_is_inconclusive_with_samples_and_needed() -> None:
    r = one(drift_gate(), drift_source(R, [c / 10 for c in C]))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert (r.samples, r.needed_samples) == (100, 1000)
    assert "not enough samples" in (r.reason or "")
    low = one(drift_gate(minSamples=50), drift_source(R, [c / 10 for c in C]))
    assert low.verdict == Verdict.INCONCLUSIVE  # past the floor, but 100 show little
    assert low.needed_samples is not None
    assert low.needed_samples > 100


def test_no_series_is_no_data_and_empty_buckets_are_gathering_evidence() -> None:
    # No series at all: no data, which counts towards inconclusiveLimit (a typo in a
    # metric name must not hold a rollout forever). Series with no observations yet:
    # samples/needed, which the engine holds on without counting.
    r = one(drift_gate(), FakeSource({sel("v1"): cumulative(R)}))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "no data for the candidate" in (r.reason or "")
    assert (r.samples, r.needed_samples) == (None, None)
    empty = one(drift_gate(), drift_source(R, [0, 0, 0, 0, 0]))
    assert empty.verdict == Verdict.INCONCLUSIVE
    assert (empty.samples, empty.needed_samples) == (0, 1000)


def test_a_non_histogram_answer_is_inconclusive() -> None:
    r = one(drift_gate(), FakeSource({"version=": scalar(5.0)}))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "le label" in (r.reason or "")


def test_drift_queries_select_the_feature_and_each_version() -> None:
    g = drift_gate()
    assert g.drift is not None
    reference, candidate = drift_queries(g.drift, ctx())
    assert candidate == (
        "sum by (le) (increase(model_input_feature_bucket"
        '{model="fraud-detector",feature="f0",version="v2"}[1m]))'
    )
    assert 'version="v1"' in reference
    assert "[1m]" in reference


def test_baseline_drift_reads_stable_over_the_baseline_window_and_offset() -> None:
    g = drift_gate(against="baseline", baselineWindow="1h", baselineOffset="24h", window="5m")
    assert g.drift is not None
    reference, candidate = drift_queries(g.drift, ctx())
    assert reference.endswith('version="v1"}[1h] offset 24h))')
    assert candidate.endswith('version="v2"}[5m]))')


def test_label_values_take_template_variables_and_are_escaped() -> None:
    g = drift_gate(labels={"upstream": "{{candidateVersion}}", "odd": 'a"b'})
    assert g.drift is not None
    _, candidate = drift_queries(g.drift, ctx())
    assert 'upstream="v2"' in candidate
    assert 'odd="a\\"b"' in candidate


def test_output_drift_over_predicted_classes() -> None:
    g = gate(drift={"counter": "model_predictions_total", "by": "class"}, max=0.1)
    stable = [
        Sample({"class": "approve"}, 700),
        Sample({"class": "review"}, 200),
        Sample({"class": "reject"}, 100),
    ]
    same = [Sample(s.labels, s.value * 1.5) for s in stable]
    skewed = [*stable[:2], Sample({"class": "reject"}, 50), Sample({"class": "UNKNOWN"}, 150)]
    ok = one(g, FakeSource({sel("v2"): same, sel("v1"): stable}))
    assert ok.verdict == Verdict.PASS
    assert ok.value == pytest.approx(0.0)
    bad = one(g, FakeSource({sel("v2"): skewed, sel("v1"): stable}))
    assert bad.verdict == Verdict.FAIL
    assert bad.value is not None
    assert bad.value > 0.1
    source = FakeSource({sel("v2"): same, sel("v1"): stable})
    one(g, source)
    assert source.queries[0].startswith("sum by (class) (increase(model_predictions_total{")


def test_an_unreachable_source_is_inconclusive() -> None:
    r = one(drift_gate(), FakeSource({"version": SourceError("connection refused")}))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "unreachable" in (r.reason or "")


# --------------------------------------------------------------------------- nullRate


def test_null_rate_is_null_outputs_of_requests_since_the_stage_start() -> None:
    g = gate(nullRate={}, max=0.01)
    source = FakeSource(
        {"model_null_outputs_total": scalar(50), "model_requests_total": scalar(1000)}
    )
    r = one(g, source, ctx(stage_seconds=600))
    assert r.verdict == Verdict.FAIL
    assert r.value == pytest.approx(0.05)
    assert source.queries == [
        'sum(increase(model_requests_total{model="fraud-detector",version="v2"}[600s]))',
        'sum(increase(model_null_outputs_total{model="fraud-detector",version="v2"}[600s]))',
    ]
    assert one(g, FakeSource()).verdict == Verdict.INCONCLUSIVE


# --------------------------------------------------------------------------- agreement


def agreement_source(agree: float, disagree: float, unpaired: float | None) -> FakeSource:
    table: dict[str, Answer] = {
        "model_shadow_comparisons_total": [
            Sample({"result": "agree"}, agree),
            Sample({"result": "disagree"}, disagree),
        ]
    }
    if unpaired is not None:
        table["model_shadow_unpaired_total"] = scalar(unpaired)
    return FakeSource(table)


AGREEMENT = {"confidence": 0.95, "maxUnpairedFraction": 0.1, "minPairs": 200}


def test_agreement_value_is_the_rate_and_passes_once_its_cs_clears_min() -> None:
    r = one(gate(agreement=AGREEMENT, min=0.95), agreement_source(980, 20, 5))
    assert r.verdict == Verdict.PASS
    assert r.value == pytest.approx(0.98)
    assert r.lower is not None
    assert 0.95 <= r.lower < 0.98
    assert "agreement 0.9800 (980 of 1000 pairs)" in (r.reason or "")
    assert (r.samples, r.needed_samples, r.min, r.alpha) == (1000, 200, 0.95, 0.01)


@pytest.mark.parametrize(
    ("agree", "disagree", "verdict"),
    [
        # Issue 10: 98 % on 200 pairs failed (Wilson lower bound < 0.95): not yet shown.
        pytest.param(196, 4, Verdict.INCONCLUSIVE, id="98%-on-200-pairs-waits"),
        pytest.param(240, 10, Verdict.INCONCLUSIVE, id="96%-on-250-pairs-waits"),
        pytest.param(9600, 400, Verdict.PASS, id="96%-on-10000-pairs-passes"),
        pytest.param(900, 100, Verdict.FAIL, id="90%-on-1000-pairs-fails"),
    ],
)
def test_agreement_not_yet_shown_is_inconclusive_never_fail(
    agree: float, disagree: float, verdict: Verdict
) -> None:
    r = one(gate(agreement=AGREEMENT, min=0.95), agreement_source(agree, disagree, 0))
    assert r.verdict == verdict
    if verdict == Verdict.INCONCLUSIVE:
        assert r.needed_samples is not None
        assert r.samples is not None
        assert r.samples < r.needed_samples  # gathering evidence: the engine holds
        assert "not yet shown" in (r.reason or "")


def test_too_many_unpaired_is_inconclusive() -> None:
    r = one(gate(agreement=AGREEMENT, min=0.95), agreement_source(98, 2, 500))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert r.value is None
    assert "too many unpaired" in (r.reason or "")
    assert (r.samples, r.needed_samples) == (None, None)  # waiting will not fix it


def test_too_few_pairs_and_no_comparisons_are_inconclusive() -> None:
    few = one(gate(agreement=AGREEMENT, min=0.95), agreement_source(99, 1, None))
    assert few.verdict == Verdict.INCONCLUSIVE
    assert (few.samples, few.needed_samples) == (100, 200)
    none = one(gate(agreement=AGREEMENT, min=0.95), FakeSource())
    assert none.verdict == Verdict.INCONCLUSIVE
    assert "no shadow comparisons" in (none.reason or "")
    assert none.needed_samples is None


def test_agreement_queries_pair_the_two_versions() -> None:
    g = gate(agreement={"window": "5m"}, min=0.9)
    assert g.agreement is not None
    comparisons, unpaired = agreement_queries(g.agreement, ctx())
    assert comparisons == (
        "sum by (result) (increase(model_shadow_comparisons_total{model="
        '"fraud-detector",stable_version="v1",candidate_version="v2"}[5m]))'
    )
    assert unpaired == (
        'sum(increase(model_shadow_unpaired_total{model="fraud-detector",'
        'candidate_version="v2"}[5m]))'
    )


# --------------------------------------------------------------------------- compare


LATENCY = 'avg(rate(x_sum{version="{{version}}"}[{{step}}]))'
rng = np.random.default_rng(7)
STABLE_POINTS = list(rng.normal(0.100, 0.005, 20))
SLOWER_POINTS = list(rng.normal(0.150, 0.005, 20))
FASTER_POINTS = list(rng.normal(0.060, 0.005, 20))


def compare_gate(direction: str = "increase", **kw: Any) -> MetricGate:
    return gate(compare={"query": LATENCY, "direction": direction, "window": "10m", **kw})


def test_mann_whitney_fails_a_slower_candidate() -> None:
    source = FakeSource(ranges={sel("v1"): STABLE_POINTS, sel("v2"): SLOWER_POINTS})
    r = one(compare_gate(), source)
    assert r.verdict == Verdict.FAIL
    assert r.value is not None
    assert r.value == pytest.approx(0.05, abs=0.01)
    assert "shown outside the limit" in (r.reason or "")
    assert r.max == pytest.approx(0.1 * float(np.median(STABLE_POINTS)))
    assert (r.min, r.samples, r.needed_samples) == (None, 20, 10)
    assert r.alpha == pytest.approx(0.01 * 6 / math.pi**2)  # the first look's share
    assert source.queries[0] == 'range[600s:30s] avg(rate(x_sum{version="v1"}[30s]))'


def test_mann_whitney_passes_a_faster_candidate_when_only_increases_hurt() -> None:
    source = FakeSource(ranges={sel("v1"): STABLE_POINTS, sel("v2"): FASTER_POINTS})
    assert one(compare_gate("increase"), source).verdict == Verdict.PASS
    assert one(compare_gate("either"), source).verdict == Verdict.FAIL


def test_mann_whitney_with_too_few_points_is_inconclusive() -> None:
    source = FakeSource(ranges={sel("v1"): STABLE_POINTS, sel("v2"): SLOWER_POINTS[:4]})
    r = one(compare_gate(), source)
    assert r.verdict == Verdict.INCONCLUSIVE
    assert (r.samples, r.needed_samples) == (4, 10)
    nothing = one(compare_gate(), FakeSource(ranges={sel("v1"): STABLE_POINTS}))
    assert nothing.verdict == Verdict.INCONCLUSIVE
    assert (nothing.reason or "").startswith("no data")
    assert nothing.needed_samples is None


def test_compare_needs_a_range_source_and_a_per_version_query() -> None:
    r = one(compare_gate(), InstantOnly())
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "range queries" in (r.reason or "")
    same = gate(compare={"query": "avg(x)", "direction": "increase"})
    r = one(same, FakeSource(ranges={"x": STABLE_POINTS}))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "{{version}}" in (r.reason or "")


def test_compare_window_defaults_to_since_the_stage_start() -> None:
    g = gate(compare={"query": LATENCY, "direction": "increase", "step": "1m"})
    source = FakeSource(ranges={sel("v1"): STABLE_POINTS, sel("v2"): STABLE_POINTS})
    one(g, source, ctx(stage_seconds=1800.4))
    assert source.queries[0].startswith("range[1801s:60s]")


MSPRT = {
    "mode": "msprt",
    "direction": "increase",
    "successes": "model_request_errors_total",
    "trials": "model_requests_total",
    "tau": 0.02,
    "alpha": 0.05,
}


def msprt_source(errors: tuple[float, float], requests: tuple[float, float]) -> FakeSource:
    """(stable, candidate) error and request counts since the stage start."""
    return FakeSource(
        {
            f'model_request_errors_total{{model="fraud-detector",{sel("v1")}': scalar(errors[0]),
            f'model_request_errors_total{{model="fraud-detector",{sel("v2")}': scalar(errors[1]),
            f'model_requests_total{{model="fraud-detector",{sel("v1")}': scalar(requests[0]),
            f'model_requests_total{{model="fraud-detector",{sel("v2")}': scalar(requests[1]),
        }
    )


def test_msprt_fails_an_error_rate_shown_worse_by_more_than_tau() -> None:
    source = msprt_source((20, 200), (2000, 2000))
    r = one(gate(compare=MSPRT), source, ctx(stage_seconds=600))
    assert r.verdict == Verdict.FAIL
    assert r.value == pytest.approx(0.09)  # candidate - stable error rate
    assert (r.min, r.max, r.alpha) == (None, 0.02, 0.01)
    assert r.lower is not None
    assert r.lower > 0.02
    assert "mSPRT p" in (r.reason or "")
    assert (
        'sum(increase(model_request_errors_total{model="fraud-detector",version="v2"}[600s]))'
        in source.queries
    )


def test_msprt_passes_equal_error_rates_once_shown_and_waits_for_burn_in() -> None:
    r = one(gate(compare=MSPRT), msprt_source((50, 50), (10000, 10000)), ctx(stage_seconds=600))
    assert r.verdict == Verdict.PASS
    assert r.upper is not None
    assert r.upper <= 0.02
    few = one(gate(compare=MSPRT), msprt_source((5, 5), (150, 150)), ctx(stage_seconds=60))
    assert few.verdict == Verdict.INCONCLUSIVE  # past burn-in, not yet shown
    assert few.needed_samples is not None
    assert few.needed_samples > 150
    early = one(gate(compare=MSPRT), msprt_source((1, 1), (40, 30)), ctx(stage_seconds=60))
    assert early.verdict == Verdict.INCONCLUSIVE
    assert (early.samples, early.needed_samples) == (30, 100)
    no_trials = FakeSource({"model_request_errors_total": scalar(0)})
    r = one(gate(compare=MSPRT), no_trials, ctx(stage_seconds=60))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "no data for trials" in (r.reason or "")
    assert r.needed_samples is None


@pytest.mark.parametrize(
    ("direction", "errors", "verdict"),
    [
        pytest.param("increase", (100, 10), Verdict.PASS, id="fewer-errors-pass-on-increase"),
        pytest.param("decrease", (100, 10), Verdict.FAIL, id="fewer-events-fail-on-decrease"),
        pytest.param("either", (100, 10), Verdict.FAIL, id="either-way-fails"),
        pytest.param("either", (50, 50), Verdict.PASS, id="either-equal-passes"),
    ],
)
def test_msprt_judges_the_harmful_direction(
    direction: str, errors: tuple[float, float], verdict: Verdict
) -> None:
    g = gate(compare={**MSPRT, "direction": direction, "tau": 0.005})
    r = one(g, msprt_source(errors, (10000, 10000)), ctx(stage_seconds=600))
    assert r.verdict == verdict


def test_msprt_on_means_reads_count_sum_and_sum_of_squares() -> None:
    g = gate(
        compare={
            "mode": "msprt",
            "direction": "increase",
            "count": "score_count",
            "sum": "score_sum",
            "sumSquares": "score_sumsq",
            "tau": 0.1,
        }
    )
    n = 1000.0

    def arm(mean: float) -> tuple[float, float]:
        return n * mean, n * (mean * mean + 1.0)  # variance 1

    (s1, q1), (s2, q2) = arm(0.0), arm(0.5)
    source = FakeSource(
        {
            f'score_count{{model="fraud-detector",{sel("v1")}': scalar(n),
            f'score_count{{model="fraud-detector",{sel("v2")}': scalar(n),
            f'score_sum{{model="fraud-detector",{sel("v1")}': scalar(s1),
            f'score_sum{{model="fraud-detector",{sel("v2")}': scalar(s2),
            f'score_sumsq{{model="fraud-detector",{sel("v1")}': scalar(q1),
            f'score_sumsq{{model="fraud-detector",{sel("v2")}': scalar(q2),
        }
    )
    r = one(g, source, ctx(stage_seconds=600))
    assert r.verdict == Verdict.FAIL
    assert "candidate mean 0.5" in (r.reason or "")


# --------------------------------------------------------------------------- score


def score_gate(**kw: Any) -> MetricGate:
    metrics = [
        {"name": "latency", "query": LATENCY, "direction": "increase", "weight": 2},
        {"name": "cpu", "query": 'cpu{version="{{version}}"}', "direction": "increase"},
        {"name": "qps", "query": 'qps{version="{{version}}"}', "direction": "decrease"},
    ]
    return gate(score={"metrics": metrics, "window": "10m", **kw})


def test_score_passes_when_nothing_got_worse() -> None:
    source = FakeSource(ranges={"version=": STABLE_POINTS})
    r = one(score_gate(), source)
    assert r.verdict == Verdict.PASS
    assert (r.value, r.min) == (100.0, 95)


def test_score_is_marginal_then_inconclusive_and_a_critical_metric_fails_it() -> None:
    ranges = {
        'x_sum{version="v2"}': STABLE_POINTS,
        'cpu{version="v2"}': SLOWER_POINTS,
        "version=": STABLE_POINTS,
    }
    marginal = one(score_gate(marginal=70), FakeSource(ranges=ranges))
    assert marginal.verdict == Verdict.INCONCLUSIVE
    assert marginal.value == pytest.approx(75.0)
    assert "cpu" in (marginal.reason or "")
    critical = gate(
        score={
            "metrics": [
                {"name": "cpu", "query": 'cpu{version="{{version}}"}', "direction": "increase"},
                {"name": "latency", "query": LATENCY, "direction": "increase", "weight": 9},
            ],
            "window": "10m",
            "pass": 10,
            "marginal": 5,
        }
    )
    critical.score.metrics[0].critical = True  # type: ignore[union-attr]
    assert one(critical, FakeSource(ranges=ranges)).verdict == Verdict.FAIL


def test_score_with_no_data_is_inconclusive_and_with_few_points_gathering() -> None:
    r = one(score_gate(), FakeSource())
    assert r.verdict == Verdict.INCONCLUSIVE
    assert r.value is None
    assert r.needed_samples is None
    few = one(score_gate(), FakeSource(ranges={"version=": STABLE_POINTS[:3]}))
    assert few.verdict == Verdict.INCONCLUSIVE
    assert (few.samples, few.needed_samples) == (3, 10)


# --------------------------------------------------------------------------- accuracy


def accuracy_source(candidate: tuple[float, float], stable: tuple[float, float]) -> FakeSource:
    """(correct, labelled) of each version."""
    rows: dict[str, Answer] = {}
    for version, (correct, labelled) in (("v2", candidate), ("v1", stable)):
        rows[f'model_correct_predictions_total{{model="fraud-detector",{sel(version)}'] = scalar(
            correct
        )
        rows[f'model_labelled_feedback_total{{model="fraud-detector",{sel(version)}'] = scalar(
            labelled
        )
    return FakeSource(rows)


ACCURACY = {"minLabels": 500, "maxDrop": 0.02}


def test_accuracy_below_min_labels_is_inconclusive_with_samples_and_needed() -> None:
    r = one(
        gate(accuracy=ACCURACY),
        accuracy_source((110, 120), (4000, 4300)),
        ctx(stage_seconds=900),
    )
    assert r.verdict == Verdict.INCONCLUSIVE
    assert (r.samples, r.needed_samples, r.min) == (120, 500, -0.02)
    assert "waiting for labels" in (r.reason or "")
    no_counter = one(gate(accuracy=ACCURACY), FakeSource(), ctx(stage_seconds=900))
    assert no_counter.verdict == Verdict.INCONCLUSIVE
    assert "no data for model_labelled_feedback_total" in (no_counter.reason or "")
    assert no_counter.needed_samples is None


def test_accuracy_passes_a_candidate_shown_within_the_margin() -> None:
    r = one(gate(accuracy=ACCURACY), accuracy_source((9300, 10000), (9300, 10000)))
    assert r.verdict == Verdict.PASS
    assert r.value == pytest.approx(0.0)
    assert r.lower is not None
    assert r.lower >= -0.02
    same_on_3000 = one(gate(accuracy=ACCURACY), accuracy_source((2790, 3000), (2790, 3000)))
    assert same_on_3000.verdict == Verdict.INCONCLUSIVE  # not yet shown within 0.02


def test_accuracy_fails_a_clear_drop_and_waits_on_an_unclear_one() -> None:
    clear = one(gate(accuracy=ACCURACY), accuracy_source((2550, 3000), (2790, 3000)))
    assert clear.verdict == Verdict.FAIL
    assert "shown outside the limit" in (clear.reason or "")
    unclear = one(gate(accuracy=ACCURACY), accuracy_source((560, 600), (565, 600)))
    assert unclear.verdict == Verdict.INCONCLUSIVE
    assert "not yet shown" in (unclear.reason or "")
    assert unclear.needed_samples is not None
    assert unclear.needed_samples > 600


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 -> [0.0524, 0.3339] at 95 %.
    lo, hi = newcombe_difference(56, 70, 48, 80, 0.95)
    assert lo == pytest.approx(0.0524, abs=1e-4)
    assert hi == pytest.approx(0.3339, abs=1e-4)


def test_judge_accuracy_reads_since_the_stage_start() -> None:
    source = accuracy_source((2790, 3000), (2790, 3000))
    one(gate(accuracy=ACCURACY), source, ctx(stage_seconds=3600))
    assert all("[3600s]" in q for q in source.queries)
    opts = AccuracyGate(min_labels=1, max_drop=0.2)
    assert judge_accuracy("a", (95, 100), (95, 100), opts, 0.01).verdict == Verdict.PASS
    one_label = judge_accuracy("a", (1, 1), (1, 1), opts, 0.01)
    assert one_label.verdict == Verdict.INCONCLUSIVE  # one label shows nothing


def test_an_inconclusive_accuracy_gate_holds_the_canary_at_its_weight() -> None:
    spec = make_spec(
        strategy={
            "canary": {"steps": [{"setWeight": 10}, {"analysis": {"checks": 1}}, {"setWeight": 50}]}
        },
        analysis={
            "interval": "1m",
            "inconclusiveLimit": 100,
            "metrics": [{"name": "accuracy", "accuracy": ACCURACY, "onInconclusive": "Hold"}],
        },
    )
    sim = Sim(spec)
    sim.tick()
    assert sim.route == TrafficState(10, 0)
    [g] = spec.analysis.metrics
    waiting = accuracy_source((100, 110), (4000, 4300))
    for _ in range(5):
        sim.tick(seconds=60, results=[one(g, waiting)])
    assert sim.route == TrafficState(10, 0)
    assert sim.status.phase == Phase.PROGRESSING  # held, not paused: labels are on the way
    assert "accuracy has 110 of 500 samples" in (sim.status.message or "")
    enough = accuracy_source((9300, 10000), (9300, 10000))
    sim.tick(seconds=60, results=[one(g, enough)])
    assert sim.route == TrafficState(50, 0)


# --------------------------------------------------------------------------- minSamples


def test_min_samples_holds_any_gate_until_the_candidate_has_requests() -> None:
    g = gate(errorRate={}, max=0.01, minSamples=500)
    source = FakeSource(
        {
            "sum(increase(model_requests_total": scalar(120),
            "model_request_errors_total": scalar(0.0),
        }
    )
    r = one(g, source)
    assert r.verdict == Verdict.INCONCLUSIVE
    assert (r.samples, r.needed_samples) == (120, 500)
    assert len(source.queries) == 1  # the gate itself was not asked
    assert one(g, FakeSource()).needed_samples is None  # no series: no data, counted
    source.table["sum(increase(model_requests_total"] = scalar(800.4)
    r = one(g, source)
    assert r.verdict == Verdict.PASS  # 0 errors in 800 requests: shown below 1 %
    assert (r.samples, r.needed_samples) == (800, None)
    assert source.queries[-2] == (
        'sum(increase(model_requests_total{model="fraud-detector",version="v2"}[1m]))'
    )


def test_min_samples_uses_the_gates_own_window() -> None:
    g = drift_gate(window="10m")
    g.min_samples = 100
    source = drift_source(R, C)
    source.table = {"model_requests_total": scalar(5000), **source.table}
    assert one(g, source).verdict == Verdict.PASS
    assert source.queries[0].endswith("[10m]))")


# --------------------------------------------------------------------------- status facts


def test_previous_results_are_this_stages_newest_first_and_stage_seconds() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 0)

    def run(at: str, stage: Stage, value: float) -> AnalysisRun:
        result = GateResult(metric="g", value=value, verdict=Verdict.PASS)
        return AnalysisRun(at=at, stage=stage, verdict=Verdict.PASS, results=[result])

    status = ModelRolloutStatus(
        stage=Stage.CANARY,
        stage_started_at="2026-01-01T12:00:00Z",
        analysis_ledger=[
            run("2026-01-01T11:59:00Z", Stage.SHADOW, 0.9),
            run("2026-01-01T12:01:00Z", Stage.CANARY, 0.5),
            run("2026-01-01T12:02:00Z", Stage.CANARY, 0.2),
        ],
    )
    assert [r.value for r in previous_results(status)] == [0.2, 0.5]
    assert stage_seconds(status, t0 + timedelta(minutes=5)) == 300
    assert stage_seconds(ModelRolloutStatus(), t0) == 0


# --------------------------------------------------------------------------- the manifest


def test_threshold_gates_still_run_through_evaluate() -> None:
    results = evaluate(
        [gate(query="up", min=1), gate(name="n", nullRate={}, max=0.1)],
        FakeSource({"up": scalar(1.0), "null": scalar(0.0), "requests": scalar(1000)}),
        ctx(),
    )
    # One query value shows nothing yet (a sign test over checks); 0 of 1000 does.
    assert [r.verdict for r in results] == [Verdict.INCONCLUSIVE, Verdict.PASS]
    assert results[0].samples == 1 < (results[0].needed_samples or 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nullRate": {}, "errorRate": {}, "max": 1}, "exactly one of"),
        ({"nullRate": {}}, "needs min or max"),
        ({"compare": {"query": "q", "direction": "increase"}, "max": 1}, "own limits"),
        ({"accuracy": {}, "min": 0.9}, "own limits"),
        ({"drift": {"metric": "m"}, "min": 0.1}, "psi and js need max"),
        ({"drift": {"metric": "m", "method": "chi2"}, "max": 0.1}, "chi2 needs min"),
        ({"drift": {"metric": "m", "method": "ks"}, "min": 0.1, "max": 0.1}, "ks needs"),
        ({"drift": {"metric": "m", "counter": "c", "by": "x"}, "max": 0.1}, "exactly one of"),
        ({"drift": {"counter": "c"}, "max": 0.1}, "needs by"),
        (
            {"drift": {"counter": "c", "by": "class", "method": "ks"}, "max": 0.1},
            "categories of a counter have no order",
        ),
        ({"drift": {"metric": "m", "labels": {"bad-key": "x"}}, "max": 1}, "label name"),
        ({"compare": {"direction": "increase"}}, "mannWhitney mode needs query"),
        ({"compare": {"mode": "msprt", "direction": "increase", "tau": 1}}, "successes"),
        ({"compare": {**MSPRT, "tau": None}}, "needs tau"),
        (
            {"score": {"metrics": [{"name": "a", "query": "q", "direction": "either"}] * 2}},
            "unique",
        ),
        (
            {
                "score": {
                    "metrics": [{"name": "a", "query": "q", "direction": "either"}],
                    "pass": 50,
                    "marginal": 60,
                }
            },
            "marginal <= pass",
        ),
    ],
)
def test_the_models_refuse_malformed_ml_gates(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        gate(**fields)


def test_the_crd_carries_the_ml_gates_and_their_rules() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    item = schema["properties"]["spec"]["properties"]["analysis"]["properties"]["metrics"]["items"]
    for kind in ("nullRate", "drift", "agreement", "compare", "score", "accuracy", "minSamples"):
        assert kind in item["properties"], kind
    rules = " ".join(r["rule"] for r in item["x-kubernetes-validations"])
    assert "has(self.accuracy)" in rules
    assert "self.drift.method == 'chi2'" in rules
    labels = item["properties"]["drift"]["properties"]["labels"]
    assert labels.get("x-kubernetes-preserve-unknown-fields") is True
    assert item["properties"]["score"]["properties"]["pass"]["default"] == 95


# --------------------------------------------------------------------------- every ML kind


def _psi_source(n: float, shift: float) -> FakeSource:
    """Reference R and a candidate with a share ``shift`` moved from bin 2 to bin 0."""
    ref = scaled(R, n / 1000)
    cand = scaled([100 + 1000 * shift, 200, 400 - 1000 * shift, 200, 100], n / 1000)
    return drift_source(ref, cand)


def _points_source(stable: list[float], candidate: list[float]) -> FakeSource:
    return FakeSource(ranges={sel("v1"): stable, sel("v2"): candidate})


def _steady(n: int, level: float = 0.1) -> list[float]:
    """Points around ``level`` (noise 5 %), the same for every seed of the table."""
    noise = np.random.default_rng(n).normal(0, 0.05 * level, n)
    return list(level + noise)


def _at_tolerance(n: int) -> FakeSource:
    stable = _steady(n)
    shift = 0.1 * float(np.median(stable))  # exactly the default effectTolerance
    return _points_source(stable, [x + shift for x in stable])


SCORE = {
    "metrics": [{"name": "latency", "query": LATENCY, "direction": "increase", "critical": True}],
    "minPoints": 20,
}
#: 20 points: at 10 the lag-1 correction and the first look's share of alpha leave the
#: rank test too few effective points to decide anything (docs/analysis.md).
MW = {"query": LATENCY, "direction": "increase", "window": "10m", "minPoints": 20}

#: (gate, source after ``n`` observations with the truth sitting on the limit, a large
#: breach at the first size that has the data, a healthy candidate with plenty of data)
KINDS_TABLE = [
    pytest.param(
        gate(agreement=AGREEMENT, min=0.95),
        lambda n: agreement_source(0.95 * n, 0.05 * n, 0),
        lambda: agreement_source(100, 100, 0),
        lambda: agreement_source(4950, 50, 0),
        id="agreement",
    ),
    pytest.param(
        gate(accuracy=ACCURACY),
        lambda n: accuracy_source((0.91 * n, n), (0.93 * n, n)),
        lambda: accuracy_source((250, 500), (465, 500)),
        lambda: accuracy_source((18600, 20000), (18600, 20000)),
        id="accuracy",
    ),
    pytest.param(
        gate(compare=MSPRT),
        lambda n: msprt_source((0.01 * n, 0.03 * n), (n, n)),
        lambda: msprt_source((0, 100), (100, 100)),
        lambda: msprt_source((100, 100), (20000, 20000)),
        id="compare-msprt",
    ),
    pytest.param(
        gate(compare=MW),
        lambda n: _at_tolerance(20 + int(n) // 100),
        lambda: _points_source(_steady(20), _steady(20, level=2.0)),
        lambda: _points_source(_steady(60), _steady(61)[:60]),
        id="compare-mannWhitney",
    ),
    pytest.param(
        gate(score={**SCORE, "window": "10m"}),
        lambda n: _at_tolerance(20 + int(n) // 100),
        lambda: _points_source(_steady(20), _steady(20, level=2.0)),
        lambda: _points_source(_steady(60), _steady(61)[:60]),
        id="score",
    ),
    pytest.param(
        drift_gate(limit={"max": 0.2}),
        lambda n: _psi_source(max(n, 1000), 0.165),  # PSI just above 0.2
        lambda: _psi_source(1000, 0.3),
        lambda: _psi_source(20000, 0.0),
        id="drift-psi",
    ),
    pytest.param(
        drift_gate("js", {"max": 0.2}),
        lambda n: _psi_source(max(n, 1000), 0.18),  # JS distance just above 0.2
        lambda: _psi_source(1000, 0.35),
        lambda: _psi_source(20000, 0.0),
        id="drift-js",
    ),
    pytest.param(
        drift_gate("chi2", {"min": 0.01}),
        lambda n: _psi_source(max(n, 1000), 0.165),
        lambda: _psi_source(1000, 0.3),
        lambda: _psi_source(20000, 0.0),
        id="drift-chi2",
    ),
]


@pytest.mark.parametrize(("g", "at_limit", "breach", "healthy"), KINDS_TABLE)
def test_a_truth_on_the_limit_is_never_passed_over_200_looks(
    g: MetricGate, at_limit: Any, breach: Any, healthy: Any
) -> None:
    previous: list[GateResult] = []
    verdicts = set()
    for k in range(1, 201):
        r = one(g, at_limit(100.0 * k), ctx(stage_seconds=60 * k, previous=previous))
        verdicts.add(r.verdict)
        previous.insert(0, r)
    assert Verdict.PASS not in verdicts


@pytest.mark.parametrize(("g", "at_limit", "breach", "healthy"), KINDS_TABLE)
def test_a_large_breach_fails_on_the_first_check_that_has_the_data(
    g: MetricGate, at_limit: Any, breach: Any, healthy: Any
) -> None:
    r = one(g, breach(), ctx(stage_seconds=60))
    assert r.verdict == Verdict.FAIL, r.reason


@pytest.mark.parametrize(("g", "at_limit", "breach", "healthy"), KINDS_TABLE)
def test_a_healthy_candidate_passes_with_enough_data(
    g: MetricGate, at_limit: Any, breach: Any, healthy: Any
) -> None:
    r = one(g, healthy(), ctx(stage_seconds=3600))
    assert r.verdict == Verdict.PASS, r.reason
    assert r.alpha is not None


def test_mann_whitney_refuses_mostly_zero_series_and_points_at_the_count_test() -> None:
    # Issue 10: 13 errors in 30 steps against none passed with shift 0.
    stable = [0.0] * 30
    candidate = [0.0] * 17 + [0.05] * 13
    r = one(compare_gate(), _points_source(stable, candidate))
    assert r.verdict == Verdict.INCONCLUSIVE
    assert "msprt" in (r.reason or "")
    assert "errorRate" in (r.reason or "")
    assert r.needed_samples is None  # waiting will not fix it: counted, a human looks


def test_mann_whitney_spends_its_level_over_the_looks_of_the_stage() -> None:
    source = _points_source(_steady(60), _steady(61)[:60])
    earlier = [GateResult(metric="g", verdict=Verdict.INCONCLUSIVE)] * 3
    other = [GateResult(metric="other", verdict=Verdict.PASS)]
    r = one(compare_gate(), source, ctx(previous=[*earlier, *other]))
    assert r.alpha == pytest.approx(0.01 * 6 / (math.pi**2 * 16))  # the 4th look
    assert "look 4" in (r.reason or "")
