"""The LLM serving gates: vLLM's metrics judged by the threshold kinds' sequential tests.

A fake metric source answers each gate's PromQL (a table from a query substring to the
samples), look after look as the operator would over a stage: each check sees the counts
since the stage start and the results of the earlier checks. Against a live Prometheus
and the simulated model server's LLM mode these gates run in tests/e2e/test_llm_gates.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelrollout.analysis.gates import GateContext, evaluate, limit_text, queries
from modelrollout.analysis.gates.llm import cost_factor
from modelrollout.analysis.source import Sample
from modelrollout.api.gates import CostPerThousandTokensGate, MetricGate
from modelrollout.api.status import GateResult, Verdict

EDGES = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"]
#: A world: (look number, seconds into the stage) -> {query substring: answer}.
World = Callable[[int, float], Mapping[str, list[Sample]]]


class FakeSource:
    """Answers a query from the first table key that is a substring of it; else no data."""

    def __init__(self, table: Mapping[str, list[Sample]]) -> None:
        self.table = table
        self.queries: list[str] = []

    def instant(self, query: str) -> list[Sample]:
        self.queries.append(query)
        return next((v for k, v in self.table.items() if k in query), [])


def gate(**kw: Any) -> MetricGate:
    return MetricGate.model_validate({"name": "g", **kw})


def ctx(seconds: float = 60.0, previous: tuple[GateResult, ...] = ()) -> GateContext:
    return GateContext(
        model="chat",
        namespace="ml",
        candidate_version="v2",
        stable_version="v1",
        interval="30s",
        stage="canary",
        stage_seconds=seconds,
        previous=previous,
        alpha=0.01,
    )


def buckets(counts: list[float]) -> list[Sample]:
    """``sum by (le) (increase(x_bucket[w]))`` of per-bucket counts."""
    running = np.cumsum(counts)
    return [Sample({"le": e}, float(v)) for e, v in zip(EDGES, running, strict=True)]


def scalar(value: float) -> list[Sample]:
    return [Sample({}, value)]


def looks(g: MetricGate, world: World, n: int = 30, every: float = 30.0) -> list[GateResult]:
    """``n`` checks ``every`` seconds apart in one stage, newest result fed back first."""
    results: list[GateResult] = []
    for k in range(1, n + 1):
        [r] = evaluate([g], FakeSource(world(k, k * every)), ctx(k * every, tuple(results[::-1])))
        results.append(r)
    return results


# ----------------------------------------------------------------------- the gates

TTFT = {"timeToFirstToken": {"quantile": 0.95}, "max": 0.25}
ITL = {"interTokenLatency": {"quantile": 0.99}, "max": 0.1}
QUEUE = {"queueTime": {"quantile": 0.9}, "max": 0.5}
TOKENS = {"outputTokensPerSecond": {}, "min": 100}
#: $2/GPU-hour on 2 GPUs: k = 2 * 2 / 3.6; max $0.01 per 1,000 tokens <=> >= 111.1 tokens/s.
COST = {"costPerThousandTokens": {"pricePerGpuHour": 2, "gpus": 2}, "max": 0.01}
KV = {"kvCacheUsage": {}, "max": 0.9}
COST_RATE = 2 * 2 / 3.6 / 0.01


def histogram(metric: str, tail_share: float, per_look: float = 200) -> World:
    """Requests with ``tail_share`` of them above the limit (0.25 s, 0.1 s, 0.5 s buckets)."""

    def world(k: int, _: float) -> Mapping[str, list[Sample]]:
        n = per_look * k
        slow = tail_share * n
        # the slow ones in the +Inf bucket: above every limit here
        return {f"{metric}_bucket": buckets([n - slow, 0, 0, 0, 0, slow])}

    return world


def tokens(rate: float) -> World:
    return lambda _, seconds: {"vllm:generation_tokens_total": scalar(rate * seconds)}


def kv(level: Callable[[int], float]) -> World:
    return lambda k, _: {"vllm:gpu_cache_usage_perc": scalar(level(k))}


CASES = [
    pytest.param(TTFT, histogram("vllm:time_to_first_token_seconds", 0.05), id="ttft"),
    pytest.param(ITL, histogram("vllm:time_per_output_token_seconds", 0.01), id="inter-token"),
    pytest.param(QUEUE, histogram("vllm:request_queue_time_seconds", 0.1), id="queue-time"),
    pytest.param(TOKENS, tokens(100), id="output-tokens"),
    pytest.param(COST, tokens(COST_RATE), id="cost"),
    pytest.param(KV, kv(lambda k: 0.95 if k % 2 else 0.5), id="kv-cache"),
]


@pytest.mark.parametrize(("spec", "at_the_limit"), CASES)
def test_a_candidate_sitting_on_the_limit_never_passes(
    spec: dict[str, Any], at_the_limit: World
) -> None:
    # Given a candidate exactly at its limit, check after check
    results = looks(gate(**spec), at_the_limit)
    # Then no check ever passes it (nor fails it): it waits for evidence
    assert {r.verdict for r in results} == {Verdict.INCONCLUSIVE}
    assert all(r.needed_samples is not None for r in results)


@pytest.mark.parametrize(
    ("spec", "breach", "within"),
    [
        pytest.param(TTFT, histogram("vllm:time_to_first_token_seconds", 0.6), 1, id="ttft"),
        pytest.param(
            ITL, histogram("vllm:time_per_output_token_seconds", 0.5), 1, id="inter-token"
        ),
        pytest.param(QUEUE, histogram("vllm:request_queue_time_seconds", 0.7), 1, id="queue-time"),
        pytest.param(TOKENS, tokens(10), 1, id="output-tokens"),
        pytest.param(COST, tokens(COST_RATE / 10), 1, id="cost"),
        # a gauge has no counts: the sign test over checks needs several (slow by design)
        pytest.param(KV, kv(lambda _: 0.99), 12, id="kv-cache"),
    ],
)
def test_a_large_breach_fails_as_soon_as_the_data_can_show_it(
    spec: dict[str, Any], breach: World, within: int
) -> None:
    results = looks(gate(**spec), breach, n=within)
    assert results[-1].verdict == Verdict.FAIL, results[-1].reason
    assert all(r.verdict != Verdict.PASS for r in results)


@pytest.mark.parametrize(
    ("spec", "healthy", "within"),
    [
        pytest.param(TTFT, histogram("vllm:time_to_first_token_seconds", 0.005), 3, id="ttft"),
        pytest.param(
            ITL, histogram("vllm:time_per_output_token_seconds", 0.0), 5, id="inter-token"
        ),
        pytest.param(QUEUE, histogram("vllm:request_queue_time_seconds", 0.02), 3, id="queue-time"),
        pytest.param(TOKENS, tokens(200), 3, id="output-tokens"),
        pytest.param(COST, tokens(2 * COST_RATE), 3, id="cost"),
        pytest.param(KV, kv(lambda _: 0.5), 12, id="kv-cache"),
    ],
)
def test_a_healthy_candidate_passes(spec: dict[str, Any], healthy: World, within: int) -> None:
    results = looks(gate(**spec), healthy, n=within)
    assert results[-1].verdict == Verdict.PASS, results[-1].reason
    assert all(r.verdict != Verdict.FAIL for r in results)


# ----------------------------------------------------------------------- what they read


def test_histogram_kinds_read_the_candidates_bucket_counts_since_the_stage_start() -> None:
    source = FakeSource({"_bucket": buckets([100, 0, 0, 0, 0, 0])})
    evaluate([gate(**TTFT)], source, ctx(90))
    assert source.queries == [
        "sum by (le) (increase(vllm:time_to_first_token_seconds_bucket"
        '{model="chat",version="v2"}[90s]))'
    ]


def test_users_override_the_metric_and_the_labels() -> None:
    # Given vLLM's newer inter-token histogram and its own model_name label
    spec = {
        "interTokenLatency": {
            "metric": "vllm:inter_token_latency_seconds",
            "modelLabel": "model_name",
            "versionLabel": "revision",
        },
        "max": 0.1,
    }
    source = FakeSource({"_bucket": buckets([100, 0, 0, 0, 0, 0])})
    evaluate([gate(**spec)], source, ctx(60))
    assert source.queries == [
        "sum by (le) (increase(vllm:inter_token_latency_seconds_bucket"
        '{model_name="chat",revision="v2"}[60s]))'
    ]


def test_the_kv_cache_gate_reads_the_highest_level_of_any_pod_over_the_interval() -> None:
    source = FakeSource({"kv": scalar(0.5)})
    evaluate([gate(kvCacheUsage={"metric": "vllm:kv_cache_usage_perc"}, max=0.9)], source, ctx())
    assert source.queries == [
        'max(max_over_time(vllm:kv_cache_usage_perc{model="chat",version="v2"}[30s]))'
    ]


def test_cost_is_the_gpu_price_over_the_tokens_per_hour_in_thousands() -> None:
    # Given $2.50/GPU-hour on 4 GPUs producing 500 tokens/s (1.8 M tokens an hour)
    spec = CostPerThousandTokensGate(price_per_gpu_hour=2.5, gpus=4)
    assert cost_factor(spec) == pytest.approx(10 / 3.6)
    g = gate(costPerThousandTokens={"pricePerGpuHour": 2.5, "gpus": 4}, max=0.01)
    [r] = evaluate([g], FakeSource({"tokens": scalar(500 * 600)}), ctx(600))
    # Then it costs $10 per 1.8 M tokens, $0.00556 per 1,000, shown within $0.01
    assert r.value == pytest.approx(10 / 1800)
    assert r.verdict == Verdict.PASS
    assert r.lower is not None
    assert r.upper is not None
    assert r.lower <= r.value <= r.upper <= 0.01
    assert (r.min, r.max) == (None, 0.01)
    assert "cost per 1,000 output tokens 0.005556 at 2.5/GPU-hour x 4 GPUs" in (r.reason or "")


def test_no_tokens_in_half_a_minute_is_an_unbounded_cost_shown_too_high() -> None:
    # Given a candidate that generated nothing in 30 s (the limit needs 111 tokens/s)
    [r] = evaluate([gate(**COST)], FakeSource({"tokens": scalar(0)}), ctx(30))
    # Then its cost has no finite value or upper end, and it is shown above the max
    assert (r.verdict, r.value, r.upper) == (Verdict.FAIL, None, None)
    assert r.lower is not None
    assert r.lower > 0.01


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        pytest.param(TTFT, "time to first token p95 max 0.25", id="ttft"),
        pytest.param(TOKENS, "output tokens/s min 100", id="tokens"),
        pytest.param(COST, "cost per 1,000 output tokens max 0.01", id="cost"),
        pytest.param(KV, "KV-cache usage max 0.9", id="kv-cache"),
    ],
)
def test_limit_text_names_the_measure(spec: dict[str, Any], text: str) -> None:
    assert limit_text(gate(**spec)) == text


def test_report_draws_the_ttft_quantile_of_each_version() -> None:
    plot = queries(gate(**TTFT), ctx())
    assert [s.promql for s in plot.series] == [
        "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
        f'{{model="chat",version="{v}"}}[30s])))'
        for v in ("v2", "v1")
    ]


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"timeToFirstToken": {}, "min": 0.1}, "need max", id="ttft-min"),
        pytest.param({"kvCacheUsage": {}, "min": 0.1, "max": 0.9}, "need max", id="kv-both"),
        pytest.param({"outputTokensPerSecond": {}, "max": 10}, "needs min", id="tokens-max"),
        pytest.param(
            {"costPerThousandTokens": {"gpus": 1}, "max": 1}, "pricePerGpuHour", id="no-price"
        ),
        pytest.param(
            {"costPerThousandTokens": {"pricePerGpuHour": 0}, "max": 1}, "greater than 0", id="free"
        ),
        pytest.param({"queueTime": {"quantile": 1}, "max": 1}, "less than 1", id="quantile-1"),
        pytest.param({"queueTime": {"metric": "not a name"}, "max": 1}, "pattern", id="bad-metric"),
        pytest.param(
            {"timeToFirstToken": {}, "latency": {}, "max": 1}, "exactly one of", id="two-kinds"
        ),
    ],
)
def test_the_api_refuses_a_gate_that_cannot_be_judged(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        gate(**spec)


def test_defaults_are_vllms_names_and_the_relabelled_labels() -> None:
    g = gate(timeToFirstToken={}, max=1)
    assert g.time_to_first_token is not None
    assert g.time_to_first_token.metric == "vllm:time_to_first_token_seconds"
    assert (g.time_to_first_token.model_label, g.time_to_first_token.version_label) == (
        "model",
        "version",
    )
    assert g.time_to_first_token.quantile == 0.95
    assert gate(interTokenLatency={}, max=1).inter_token_latency.metric == (  # type: ignore[union-attr]
        "vllm:time_per_output_token_seconds"
    )
    assert gate(kvCacheUsage={}, max=1).kv_cache_usage.metric == "vllm:gpu_cache_usage_perc"  # type: ignore[union-attr]


# ----------------------------------------------------------------------- against stable

#: The documented recipe (docs/analysis.md): the share of requests whose first token came
#: after 0.25 s, candidate against stable, by ``compare`` in ``msprt`` mode.
SLOW_FIRST_TOKENS = (
    'sum(increase(vllm:time_to_first_token_seconds_count{model="{{model}}",'
    'version="{{version}}"}[{{window}}])) - sum(increase(vllm:time_to_first_token_seconds_bucket'
    '{model="{{model}}",version="{{version}}",le="0.25"}[{{window}}]))'
)


@pytest.mark.parametrize(
    ("candidate_slow", "verdict"),
    [
        pytest.param(600, Verdict.FAIL, id="30%-slow-vs-2%-fails"),
        pytest.param(40, Verdict.PASS, id="2%-slow-like-stable-passes"),
    ],
)
def test_ttft_against_stable_by_the_documented_compare_recipe(
    candidate_slow: float, verdict: Verdict
) -> None:
    # Given 2000 requests on each version since the stage start, stable 2% slow
    g = gate(
        compare={
            "mode": "msprt",
            "direction": "increase",
            "successes": SLOW_FIRST_TOKENS,
            "trials": "vllm:time_to_first_token_seconds_count",
            "tau": 0.05,
        }
    )
    source = FakeSource(
        {
            'version="v2",le="0.25"': scalar(candidate_slow),
            'version="v1",le="0.25"': scalar(40),
            "_count": scalar(2000),
        }
    )
    [r] = evaluate([g], source, ctx(60))
    # Then the candidate's slower first tokens are judged against stable's
    assert r.verdict == verdict, r.reason
    assert any('le="0.25"}[60s]' in q for q in source.queries)
