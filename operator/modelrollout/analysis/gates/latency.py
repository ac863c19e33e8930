"""``latency``: a quantile limit, a sequential test on the histogram's bucket counts.

"The q-quantile is at most L" is "at most 1 - q of requests are slower than L": the
test is ``counts.judge_latency`` on ``sum by (le) (increase(<hist>_bucket{...}[<stage
age>]))`` (docs/analysis.md, the bucket-boundary rule). ``template`` is the
per-interval ``histogram_quantile`` that ``report --prometheus`` draws.
"""

from __future__ import annotations

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import LatencyGate, MetricGate
from modelrollout.api.status import GateResult


def _spec(gate: MetricGate) -> LatencyGate:
    assert gate.latency is not None
    return gate.latency


def template(gate: MetricGate) -> str:
    """``histogram_quantile(q, sum by (le) (rate(<hist>_bucket{...}[interval])))``."""
    q, metric = _spec(gate).quantile, _spec(gate).metric
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({metric}_bucket{common.VERSION_TEMPLATE}[{{{{interval}}}}])))"
    )


window = counts.window
limits = common.own_limits


def buckets_query(gate: MetricGate, ctx: common.GateContext, win: str) -> str:
    """The candidate's cumulative bucket counts over ``win``, one series per ``le``."""
    sel = common.version_selector(ctx, "candidate")
    return f"sum by (le) (increase({_spec(gate).metric}_bucket{sel}[{win}]))"


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    win = window(gate, ctx)
    samples = common.ask(source, buckets_query(gate, ctx, win))
    buckets = common.categories(samples, "le", "latency buckets")
    return counts.judge_latency(
        gate.name, buckets, _spec(gate).quantile, limits(gate), ctx.alpha, window=win
    )


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    return common.Plot(common.per_version(template(gate), ctx))


def limit_text(gate: MetricGate) -> str:
    return f"p{_spec(gate).quantile * 100:g} {common.min_max_text(limits(gate))}"
