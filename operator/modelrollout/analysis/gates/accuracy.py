"""``accuracy``: late-label accuracy of the candidate against stable, with a margin.

``judge_accuracy`` is pure and shared with ``modelrollout analyze``.
"""

from __future__ import annotations

import math

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import AccuracyGate, MetricGate
from modelrollout.api.status import GateResult, Verdict


def _spec(gate: MetricGate) -> AccuracyGate:
    assert gate.accuracy is not None
    return gate.accuracy


def limits(gate: MetricGate) -> common.Limits:
    return -_spec(gate).max_drop, None


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


def newcombe_difference(
    x1: float, n1: float, x2: float, n2: float, confidence: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2`` (from the Wilson intervals).

    Newcombe (1998), method 10: better coverage than the Wald interval near 0 and 1,
    where accuracies live.
    """
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = stats.wilson_interval(x1, n1, confidence)
    l2, u2 = stats.wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def judge_accuracy(
    name: str,
    candidate: tuple[float, float],
    stable: tuple[float, float],
    opts: AccuracyGate,
) -> GateResult:
    """A non-inferiority verdict on (correct, labelled) of candidate and stable (pure).

    With ``[lo, hi]`` the one-sided ``confidence`` bounds of candidate - stable accuracy:
    Pass when ``lo >= -maxDrop`` (the drop is shown to be within the margin), Fail when
    ``hi < -maxDrop`` (the drop is shown to exceed it), else Inconclusive (more labels
    needed). Fewer than ``minLabels`` on a side is inconclusive. The value is ``lo``.
    """
    limit = -opts.max_drop
    (x1, n1), (x2, n2) = candidate, stable
    n1, n2 = max(0.0, n1), max(0.0, n2)
    x1, x2 = min(max(0.0, x1), n1), min(max(0.0, x2), n2)
    samples = min(n1, n2)
    if samples < opts.min_labels:
        return common.gate_result(
            name,
            Verdict.INCONCLUSIVE,
            reason=f"waiting for labels: candidate {n1:.0f}, stable {n2:.0f} "
            f"(need {opts.min_labels} each)",
            limits=(limit, None),
            samples=samples,
            needed=opts.min_labels,
        )
    lo, hi = newcombe_difference(x1, n1, x2, n2, 2 * opts.confidence - 1)
    p1, p2 = x1 / n1, x2 / n2
    reason = (
        f"accuracy {p1:.4f} ({n1:.0f} labels) vs stable {p2:.4f} ({n2:.0f}): "
        f"difference {p1 - p2:+.4f}, {opts.confidence:.0%} bounds [{lo:+.4f}, {hi:+.4f}], "
        f"allowed drop {opts.max_drop:g}"
    )
    if lo >= limit:
        verdict = Verdict.PASS
    elif hi < limit:
        verdict = Verdict.FAIL
        reason += ": the drop exceeds it"
    else:
        verdict = Verdict.INCONCLUSIVE
        reason += ": not yet shown to be within it (more labels needed)"
    return common.gate_result(
        name,
        verdict,
        value=lo,
        reason=reason,
        limits=(limit, None),
        samples=samples,
        needed=opts.min_labels,
    )


@common.guarded(limits)
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    a = _spec(gate)
    win = common.since_stage(ctx, a.window)

    def read(metric: str, role: str, absent: float | None) -> float:
        promql = f"sum(increase({metric}{common.version_selector(ctx, role)}[{win}]))"
        return common.scalar(source, promql, f"{metric} of {role}", absent)

    # No labelled series is no data (counted); zero labels so far is gathering evidence.
    candidate = (read(a.correct, "candidate", 0.0), read(a.labelled, "candidate", None))
    stable = (read(a.correct, "stable", 0.0), read(a.labelled, "stable", None))
    return judge_accuracy(gate.name, candidate, stable, a)


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """Candidate minus stable accuracy over each interval: the point the bound sits under."""
    a = _spec(gate)

    def accuracy(role: str) -> str:
        template = (
            f"sum(rate({a.correct}{common.VERSION_TEMPLATE}[{{{{interval}}}}])) / "
            f"sum(rate({a.labelled}{common.VERSION_TEMPLATE}[{{{{interval}}}}]))"
        )
        return common.render(template, ctx.variables(role))

    promql = f"({accuracy('candidate')}) - ({accuracy('stable')})"
    return common.Plot((common.Series("accuracy difference", promql),))


def limit_text(gate: MetricGate) -> str:
    a = _spec(gate)
    return f"drop at most {a.max_drop:g} ({a.confidence:.0%} bound)"
