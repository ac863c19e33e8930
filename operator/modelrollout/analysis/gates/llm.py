"""LLM serving gates: vLLM's metrics, judged by the threshold kinds' sequential tests.

Six kinds, one module: they differ in the metric they read and the limit they hold, and
share how they select the candidate's series and which test judges them
(docs/analysis.md, "LLM serving gates"):

- ``timeToFirstToken``, ``interTokenLatency``, ``queueTime``: a quantile of a latency
  histogram, ``max`` in seconds: the latency kind's test on the share of observations
  above the limit's bucket (``counts.judge_latency``), on the counts since the stage start;
- ``outputTokensPerSecond``: the generated-tokens counter over the stage's seconds,
  ``min``: the throughput kind's Poisson rate test (``counts.judge_rate``);
- ``costPerThousandTokens``: ``pricePerGpuHour x gpus / (tokens per hour / 1000)``,
  ``max``: the same rate test, since cost is at most ``C`` exactly when tokens/s is at
  least ``pricePerGpuHour x gpus / (3.6 C)``; the interval is mapped back to cost;
- ``kvCacheUsage``: a gauge has no counts, so each check reads its highest value over
  the interval and the query kind's sequential sign test over the checks judges them
  (``counts.judge_checks``), ``max`` as a share 0-1.

Every kind selects the candidate by ``modelLabel`` and ``versionLabel`` (vLLM's own
label is ``model_name``; a scrape config relabels pods' ``version``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.base import parse_duration
from modelrollout.api.gates import (
    CostPerThousandTokensGate,
    KvCacheUsageGate,
    LlmLatencyGate,
    MetricGate,
    OutputTokensGate,
)
from modelrollout.api.status import GateResult

#: Seconds per hour over tokens per thousand: cost per 1,000 tokens at ``r`` tokens/s is
#: ``price x gpus / (r x 3600 / 1000)``, that is ``price x gpus / (3.6 r)``.
_HOUR_PER_THOUSAND = 3.6


class LlmKind(NamedTuple):
    """The five names of a gate kind (``registry.GateKind``)."""

    window: Callable[[MetricGate, common.GateContext], str]
    limits: common.LimitsOf
    evaluate: common.Evaluator
    queries: Callable[[MetricGate, common.GateContext], common.Plot]
    limit_text: Callable[[MetricGate], str]


def _candidate(
    spec: OutputTokensGate | LlmLatencyGate | KvCacheUsageGate, ctx: common.GateContext
) -> str:
    """The candidate's selector, by the gate's own label names."""
    return common.selector({spec.model_label: ctx.model, spec.version_label: ctx.candidate_version})


def _templated(spec: OutputTokensGate | LlmLatencyGate | KvCacheUsageGate) -> str:
    """The selector of one version in a ``report`` template."""
    return common.selector({spec.model_label: "{{model}}", spec.version_label: "{{version}}"})


def _limit_text(measure: Callable[[MetricGate], str]) -> Callable[[MetricGate], str]:
    def text(gate: MetricGate) -> str:
        return f"{measure(gate)} {common.min_max_text(common.own_limits(gate))}"

    return text


# ----------------------------------------------------------------------- histograms


def _histogram_kind(field: str, what: str) -> LlmKind:
    """TTFT, inter-token latency, queue time: a quantile of a histogram, ``max`` seconds."""

    def spec(gate: MetricGate) -> LlmLatencyGate:
        value = getattr(gate, field)
        assert isinstance(value, LlmLatencyGate)
        return value

    @common.guarded()
    def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
        s, win = spec(gate), counts.window(gate, ctx)
        promql = f"sum by (le) (increase({s.metric}_bucket{_candidate(s, ctx)}[{win}]))"
        buckets = common.categories(common.ask(source, promql), "le", f"{what} buckets")
        result = counts.judge_latency(
            gate.name, buckets, s.quantile, common.own_limits(gate), ctx.alpha, window=win
        )
        return result.model_copy(update={"reason": f"{what} {result.reason}"})

    def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
        s = spec(gate)
        template = (
            f"histogram_quantile({s.quantile}, sum by (le) "
            f"(rate({s.metric}_bucket{_templated(s)}[{{{{interval}}}}])))"
        )
        return common.Plot(common.per_version(template, ctx, what=what))

    def measure(gate: MetricGate) -> str:
        return f"{what} p{spec(gate).quantile * 100:g}"

    return LlmKind(counts.window, common.own_limits, evaluate, queries, _limit_text(measure))


time_to_first_token = _histogram_kind("time_to_first_token", "time to first token")
inter_token_latency = _histogram_kind("inter_token_latency", "inter-token latency")
queue_time = _histogram_kind("queue_time", "queue time")


# ----------------------------------------------------------------------- tokens


def _tokens(gate: MetricGate) -> OutputTokensGate:
    spec = gate.output_tokens_per_second or gate.cost_per_thousand_tokens
    assert spec is not None
    return spec


def _read_tokens(
    gate: MetricGate, source: MetricSource, ctx: common.GateContext
) -> tuple[float, float]:
    """(generated tokens, seconds) of the candidate since the stage start."""
    s, win = _tokens(gate), counts.window(gate, ctx)
    promql = f"sum(increase({s.metric}{_candidate(s, ctx)}[{win}]))"
    return common.scalar(source, promql, "generated tokens"), parse_duration(win)


def _tokens_template(gate: MetricGate) -> str:
    s = _tokens(gate)
    return f"sum(rate({s.metric}{_templated(s)}[{{{{interval}}}}]))"


@common.guarded()
def _evaluate_tokens(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    tokens, seconds = _read_tokens(gate, source, ctx)
    return counts.judge_rate(
        gate.name, tokens, seconds, common.own_limits(gate), ctx.alpha, unit="tokens"
    )


output_tokens_per_second = LlmKind(
    counts.window,
    common.own_limits,
    _evaluate_tokens,
    lambda gate, ctx: common.Plot(common.per_version(_tokens_template(gate), ctx)),
    _limit_text(lambda gate: "output tokens/s"),
)


# ----------------------------------------------------------------------- cost


def cost_factor(spec: CostPerThousandTokensGate) -> float:
    """``k`` with cost per 1,000 tokens ``= k / (tokens per second)``."""
    return spec.price_per_gpu_hour * spec.gpus / _HOUR_PER_THOUSAND


def _per(k: float, rate: float) -> float | None:
    """``k / rate``; None for no tokens (an unbounded cost)."""
    return k / rate if rate > 0 and math.isfinite(rate) else None


def judge_cost(
    name: str,
    tokens: float,
    seconds: float,
    spec: CostPerThousandTokensGate,
    limits: common.Limits,
    alpha: float,
) -> GateResult:
    """Cost per 1,000 output tokens against ``max`` (``min``), by the tokens/s rate test.

    ``cost = k / rate`` is decreasing in the rate, so "cost <= C" is "rate >= k / C":
    the rate's CS decides, and its ends map to the cost's (``k / upper``, ``k / lower``).
    """
    k = cost_factor(spec)
    lo, hi = limits
    rate_limits: common.Limits = (_per(k, hi) if hi else None, _per(k, lo) if lo else None)
    rated = counts.judge_rate(name, tokens, seconds, rate_limits, alpha, unit="tokens")
    lower = _per(k, rated.upper) if rated.upper is not None else 0.0
    upper = _per(k, rated.lower) if rated.lower is not None else None
    value = _per(k, rated.value) if rated.value is not None else None
    shown = "-" if value is None else f"{value:.4g}"
    reason = (
        f"cost per 1,000 output tokens {shown} at {spec.price_per_gpu_hour:g}/GPU-hour x "
        f"{spec.gpus:g} GPUs, from {rated.reason}"
    )
    return rated.model_copy(
        update={
            "value": value,
            "lower": lower,
            "upper": upper,
            "min": lo,
            "max": hi,
            "reason": reason,
        }
    )


def _cost(gate: MetricGate) -> CostPerThousandTokensGate:
    assert gate.cost_per_thousand_tokens is not None
    return gate.cost_per_thousand_tokens


@common.guarded()
def _evaluate_cost(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    tokens, seconds = _read_tokens(gate, source, ctx)
    return judge_cost(gate.name, tokens, seconds, _cost(gate), common.own_limits(gate), ctx.alpha)


def _cost_queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    template = f"{cost_factor(_cost(gate))!r} / {_tokens_template(gate)}"
    return common.Plot(common.per_version(template, ctx))


cost_per_thousand_tokens = LlmKind(
    counts.window,
    common.own_limits,
    _evaluate_cost,
    _cost_queries,
    _limit_text(lambda gate: "cost per 1,000 output tokens"),
)


# ----------------------------------------------------------------------- KV cache


def _kv(gate: MetricGate) -> KvCacheUsageGate:
    assert gate.kv_cache_usage is not None
    return gate.kv_cache_usage


def _kv_template(gate: MetricGate) -> str:
    s = _kv(gate)
    return f"max(max_over_time({s.metric}{_templated(s)}[{{{{interval}}}}]))"


@common.guarded()
def _evaluate_kv(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    """The highest KV-cache usage of any candidate pod this interval, by the sign test."""
    value = common.scalar(source, common.render(_kv_template(gate), ctx.variables()))
    before = counts.violations_so_far(gate.name, ctx.previous)
    return counts.judge_checks(gate.name, value, before, common.own_limits(gate), ctx.alpha)


kv_cache_usage = LlmKind(
    common.interval_window,
    common.own_limits,
    _evaluate_kv,
    lambda gate, ctx: common.Plot(common.per_version(_kv_template(gate), ctx)),
    _limit_text(lambda gate: "KV-cache usage"),
)

__all__ = [
    "LlmKind",
    "cost_factor",
    "cost_per_thousand_tokens",
    "inter_token_latency",
    "judge_cost",
    "kv_cache_usage",
    "output_tokens_per_second",
    "queue_time",
    "time_to_first_token",
]
