"""``query``: a PromQL template of the candidate, a sequential sign test over the checks.

One number per check and no counts behind it: ``counts.judge_checks`` counts the checks
of this stage whose value broke the limit (docs/analysis.md: slow by design, the
fallback where no counters exist).
"""

from __future__ import annotations

from modelrollout.analysis.gates import common, counts
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult


def template(gate: MetricGate) -> str:
    assert gate.query is not None
    return gate.query


window = common.interval_window
limits = common.own_limits


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    value = common.scalar(source, common.render(template(gate), ctx.variables()))
    before = counts.violations_so_far(gate.name, ctx.previous)
    return counts.judge_checks(gate.name, value, before, limits(gate), ctx.alpha)


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    return common.Plot(common.per_version(template(gate), ctx))


def limit_text(gate: MetricGate) -> str:
    return common.min_max_text(limits(gate))
