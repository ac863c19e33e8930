"""``compare``: candidate against stable on one metric.

``mannWhitney`` judges per-step values of a query (Kayenta-style); ``msprt`` runs a
sequential test on cumulative counters since the stage start, whose always-valid
p-value survives between checks in ``GateContext.previous``.
"""

from __future__ import annotations

import re

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
from modelrollout.analysis.gates.steps import describe, mann_whitney, variables
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import METRIC_NAME_PATTERN, CompareGate, MetricGate
from modelrollout.api.status import GateResult, Verdict

_BARE_METRIC = re.compile(METRIC_NAME_PATTERN)


def _spec(gate: MetricGate) -> CompareGate:
    assert gate.compare is not None
    return gate.compare


def limits(gate: MetricGate) -> common.Limits:
    """mSPRT: its alpha is the least p-value that passes; Mann-Whitney: no number."""
    c = _spec(gate)
    return (c.alpha, None) if c.mode == "msprt" else (None, None)


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


# ----------------------------------------------------------------------- Mann-Whitney


def _evaluate_mann_whitney(
    gate: MetricGate, source: MetricSource, ctx: common.GateContext
) -> GateResult:
    c = _spec(gate)
    assert c.query is not None
    result = mann_whitney(
        source,
        ctx,
        c.query,
        c.direction,
        confidence=c.confidence,
        effect_tolerance=c.effect_tolerance,
        min_points=c.min_points,
        window=common.since_stage(ctx, c.window),
        step=c.step,
    )
    samples = min(result.n_control, result.n_experiment)
    if result.classification == "NoData":
        if samples == 0:
            raise common.NoVerdict(f"no data: {describe(result)}")
        raise common.NoVerdict(describe(result), samples=samples, needed=c.min_points)
    return common.gate_result(
        gate.name,
        Verdict.FAIL if result.failed else Verdict.PASS,
        value=result.hodges_lehmann,
        reason=describe(result),
        limits=limits(gate),
        samples=samples,
        needed=c.min_points,
    )


# ----------------------------------------------------------------------- mSPRT


def _counter(expr: str, ctx: common.GateContext, role: str, window: str) -> str:
    """A bare counter name becomes ``sum(increase(name{model,version}[window]))``."""
    if _BARE_METRIC.fullmatch(expr):
        return f"sum(increase({expr}{common.version_selector(ctx, role)}[{window}]))"
    return common.render(expr, variables(ctx, role, window=window))


def _previous_p(gate: MetricGate, ctx: common.GateContext) -> float | None:
    for r in ctx.previous:
        if r.metric == gate.name and r.value is not None and 0.0 <= r.value <= 1.0:
            return r.value
    return None


def _summary(
    c: CompareGate, source: MetricSource, ctx: common.GateContext, role: str, window: str
) -> stats.Summary:
    def read(expr: str | None, what: str, absent: float | None = 0.0) -> float:
        assert expr is not None
        return common.scalar(source, _counter(expr, ctx, role, window), f"{what} of {role}", absent)

    # No series of trials (or count) is no data; events absent are none yet.
    if c.successes is not None:
        trials = max(0.0, read(c.trials, "trials", None))
        # increase() extrapolates each counter separately: keep events within trials.
        return stats.ProportionSummary(min(trials, max(0.0, read(c.successes, "events"))), trials)
    return stats.MeanSummary(
        max(0.0, read(c.count, "count", None)),
        read(c.sum, "sum"),
        max(0.0, read(c.sum_squares, "sumSquares")),
    )


def _evaluate_msprt(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    c = _spec(gate)
    assert c.tau is not None
    previous = _previous_p(gate, ctx)
    window = common.since_stage(ctx, None)
    try:
        control = _summary(c, source, ctx, "stable", window)
        experiment = _summary(c, source, ctx, "candidate", window)
    except common.NoVerdict as exc:
        exc.value = previous  # the state survives a failed look
        raise
    r = stats.msprt_update(
        None if previous is None else stats.MSPRTState(previous),
        control,
        experiment,
        tau=c.tau,
        alpha=c.alpha,
        direction=c.direction,
        burn_in=c.burn_in,
    )
    kind = "rate" if isinstance(control, stats.ProportionSummary) else "mean"

    def level(s: stats.Summary) -> str:
        if isinstance(s, stats.ProportionSummary):
            return f"{s.successes / s.trials:.4g}" if s.trials else "-"
        return f"{s.mean:.4g}" if s.n else "-"

    reason = (
        f"always-valid p {r.always_valid_p:.4g} (alpha {c.alpha:g}); candidate {kind} "
        f"{level(experiment)} over {r.n_experiment:.0f} vs stable {level(control)} over "
        f"{r.n_control:.0f} since {window} ago"
    )
    if r.effect is not None:
        reason += f"; effect {r.effect:+.4g}"
    if r.reason:
        reason += f"; {r.reason}"
    if r.decision == "reject":
        verdict = Verdict.FAIL
    elif r.statistic is None and r.reason and r.reason.startswith("burn-in"):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS  # no evidence of harm so far; zero variance too
    return common.gate_result(
        gate.name,
        verdict,
        value=r.always_valid_p,
        reason=reason,
        limits=limits(gate),
        samples=min(r.n_control, r.n_experiment),
        needed=c.burn_in,
    )


@common.guarded(limits)
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    if _spec(gate).mode == "msprt":
        return _evaluate_msprt(gate, source, ctx)
    return _evaluate_mann_whitney(gate, source, ctx)


# ----------------------------------------------------------------------- report


def _level_template(c: CompareGate) -> str:
    """The rate (events / trials) or mean (sum / count) the mSPRT compares, per interval."""

    def rate(expr: str | None) -> str:
        assert expr is not None
        if _BARE_METRIC.fullmatch(expr):
            return f"sum(rate({expr}{common.VERSION_TEMPLATE}[{{{{interval}}}}]))"
        return f"({expr})"

    if c.successes is not None:
        return f"{rate(c.successes)} / {rate(c.trials)}"
    return f"{rate(c.sum)} / {rate(c.count)}"


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """What is compared, for each version: the query per step, or the mSPRT's rate or mean.

    The gate's value (a shift, or a p-value) has no series of its own: these are drawn on
    their own axis.
    """
    c = _spec(gate)
    if c.mode == "msprt":
        what = "rate" if c.successes is not None else "mean"
        interval = common.promql_duration(ctx.interval)
        return common.Plot(
            common.per_version(
                _level_template(c), ctx, what=what, same_scale=False, window=interval
            )
        )
    assert c.query is not None
    return common.Plot(
        common.per_version(c.query, ctx, same_scale=False, window=c.step, step=c.step)
    )


def limit_text(gate: MetricGate) -> str:
    c = _spec(gate)
    if c.mode == "msprt":
        return f"always-valid p min {c.alpha:g} ({c.direction} is harmful, tau {c.tau:g})"
    return (
        f"no {c.direction} beyond {c.effect_tolerance:.0%} of stable's median "
        f"at {c.confidence:.0%} confidence"
    )
