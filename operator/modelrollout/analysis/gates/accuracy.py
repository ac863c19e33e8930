"""``accuracy``: late-label accuracy of the candidate against stable, with a margin.

``judge_accuracy`` is pure and shared with ``modelrollout analyze``.
"""

from __future__ import annotations

import math

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common, shown
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


#: The mixing scale of the normal mixture when ``maxDrop`` is 0 (no margin to scale by).
MIN_TAU = 0.005


def judge_accuracy(
    name: str,
    candidate: tuple[float, float],
    stable: tuple[float, float],
    opts: AccuracyGate,
    alpha: float,
) -> GateResult:
    """A non-inferiority test on (correct, labelled) of candidate and stable (pure).

    The difference of accuracies (candidate - stable) with the plug-in variance of
    ``sequential.proportion_difference`` gets the normal-mixture confidence sequence at
    level ``alpha`` with mixing scale ``tau = maxDrop`` (the smallest drop worth
    catching): Pass when its lower end is at or above ``-maxDrop`` (the drop is shown
    within the margin), Fail when its upper end is below it (shown beyond it), else
    Inconclusive with samples/needed (more labels). Fewer than ``minLabels`` on a side is
    gathering evidence too. The value is the plug-in difference.
    """
    limit = -opts.max_drop
    limits: common.Limits = (limit, None)
    (x1, n1), (x2, n2) = candidate, stable
    n1, n2 = max(0.0, n1), max(0.0, n2)
    x1, x2 = min(max(0.0, x1), n1), min(max(0.0, x2), n2)
    samples = min(n1, n2)
    if samples < max(opts.min_labels, 1):
        return common.gate_result(
            name,
            Verdict.INCONCLUSIVE,
            reason=f"waiting for labels: candidate {n1:.0f}, stable {n2:.0f} "
            f"(need {opts.min_labels} each)",
            limits=limits,
            samples=samples,
            needed=max(opts.min_labels, 1),
        )
    tau = max(opts.max_drop, MIN_TAU)
    p1, p2 = x1 / n1, x2 / n2

    def cs(scale: float) -> sq.Interval:
        estimate, variance = sq.proportion_difference(
            p1 * n1 * scale, n1 * scale, p2 * n2 * scale, n2 * scale
        )
        return sq.normal_mixture_cs(estimate, variance, alpha, tau=tau)

    interval = cs(1.0)
    outcome = shown.judge(interval, limits)
    reason = (
        f"accuracy {p1:.4f} ({n1:.0f} labels) vs stable {p2:.4f} ({n2:.0f}): difference "
        f"{p1 - p2:+.4f}, {shown.level_text(alpha)} confidence sequence "
        f"[{interval.lower:+.4f}, {interval.upper:+.4f}], allowed drop {opts.max_drop:g}"
    )
    return shown.result(
        name,
        outcome,
        value=p1 - p2,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=samples,
        need=lambda: shown.needed(
            lambda n: shown.judge(cs(n / samples), limits) != sq.Shown.NOT_YET, samples
        ),
        floor=opts.min_labels,
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
    return judge_accuracy(gate.name, candidate, stable, a, ctx.alpha)


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
    return f"drop at most {a.max_drop:g} (anytime-valid)"
