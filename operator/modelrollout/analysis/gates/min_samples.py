"""``minSamples`` (any gate): too few requests to the candidate is inconclusive."""

from __future__ import annotations

from collections.abc import Callable

from modelrollout.analysis.gates import common
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult, Verdict


def with_min_samples(
    inner: common.Evaluator,
    *,
    window: Callable[[MetricGate, common.GateContext], str],
    limits: common.LimitsOf,
) -> common.Evaluator:
    """``inner``, asked only once the candidate had ``minSamples`` requests in its window.

    ``window`` is the gate kind's own window; ``limits`` the limit its results show.
    """

    def run(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
        needed = gate.min_samples
        assert needed is not None
        span = window(gate, ctx)
        requests = f"{common.REQUESTS_METRIC}{common.version_selector(ctx, 'candidate')}"
        promql = f"sum(increase({requests}[{span}]))"
        try:
            n = common.scalar(source, promql, "requests to the candidate")
        except common.NoVerdict as exc:
            return common.gate_result(
                gate.name, Verdict.INCONCLUSIVE, reason=exc.reason, limits=limits(gate)
            )
        if n < needed:
            return common.gate_result(
                gate.name,
                Verdict.INCONCLUSIVE,
                reason=f"not enough requests to the candidate: {n:.0f} < {needed} in {span}",
                limits=limits(gate),
                samples=n,
                needed=needed,
            )
        result = inner(gate, source, ctx)
        if result.samples is None:
            result = result.model_copy(
                update={"samples": common.count(n), "needed_samples": float(needed)}
            )
        return result

    return run
