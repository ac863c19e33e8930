"""``errorRate``: errors of requests since the stage start, a sequential test of max (min).

The test is ``counts.judge_share`` (docs/analysis.md, "Threshold gates"); ``template``
is the per-interval rate ``report --prometheus`` draws.
"""

from __future__ import annotations

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import CounterGate, MetricGate
from modelrollout.api.status import GateResult

ERRORS_METRIC = "model_request_errors_total"


def _spec(gate: MetricGate) -> CounterGate:
    assert gate.error_rate is not None
    return gate.error_rate


def template(gate: MetricGate) -> str:
    return common.per_request(_spec(gate).metric or ERRORS_METRIC)


window = counts.window
limits = common.own_limits


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    metric = _spec(gate).metric or ERRORS_METRIC
    return counts.evaluate_share(gate, source, ctx, events=metric, what="error rate")


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    return common.Plot(common.per_version(template(gate), ctx))


def limit_text(gate: MetricGate) -> str:
    return common.min_max_text(limits(gate))
