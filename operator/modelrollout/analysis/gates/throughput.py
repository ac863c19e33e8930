"""``throughput``: requests per second since the stage start, a sequential test of min (max).

The test is ``counts.judge_rate`` on ``sum(increase(<requests>{...}[<stage age>]))``
over the stage's seconds; ``template`` is the per-interval rate ``report`` draws.
"""

from __future__ import annotations

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.base import parse_duration
from modelrollout.api.gates import CounterGate, MetricGate
from modelrollout.api.status import GateResult


def _spec(gate: MetricGate) -> CounterGate:
    assert gate.throughput is not None
    return gate.throughput


def template(gate: MetricGate) -> str:
    requests = _spec(gate).metric or common.REQUESTS_METRIC
    return f"sum(rate({requests}{common.VERSION_TEMPLATE}[{{{{interval}}}}]))"


window = counts.window
limits = common.own_limits


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    win = window(gate, ctx)
    requests = _spec(gate).metric or common.REQUESTS_METRIC
    sel = common.version_selector(ctx, "candidate")
    n = common.scalar(source, f"sum(increase({requests}{sel}[{win}]))", "requests")
    return counts.judge_rate(gate.name, n, parse_duration(win), limits(gate), ctx.alpha)


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    return common.Plot(common.per_version(template(gate), ctx))


def limit_text(gate: MetricGate) -> str:
    return f"requests/s {common.min_max_text(limits(gate))}"
