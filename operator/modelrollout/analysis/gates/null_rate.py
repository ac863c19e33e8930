"""``nullRate``: null outputs of requests since the stage start, tested as ``errorRate``."""

from __future__ import annotations

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import CounterGate, MetricGate
from modelrollout.api.status import GateResult

NULL_OUTPUTS_METRIC = "model_null_outputs_total"


def _spec(gate: MetricGate) -> CounterGate:
    assert gate.null_rate is not None
    return gate.null_rate


def template(gate: MetricGate) -> str:
    return common.per_request(_spec(gate).metric or NULL_OUTPUTS_METRIC)


window = counts.window
limits = common.own_limits


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    metric = _spec(gate).metric or NULL_OUTPUTS_METRIC
    return counts.evaluate_share(gate, source, ctx, events=metric, what="null rate")


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    return common.Plot(common.per_version(template(gate), ctx))


def limit_text(gate: MetricGate) -> str:
    return common.min_max_text(limits(gate))
