"""``compare``: candidate against stable on one metric, as an anytime-valid test.

``msprt`` reads cumulative counters since the stage start: the normal-mixture confidence
sequence of the difference (the mSPRT inverted), judged against the margin ``tau`` in the
harmful direction. ``mannWhitney`` judges per-step values of a query by an equivalence
test on the Hodges-Lehmann shift, its level spent over the stage's looks (``steps``).
"""

from __future__ import annotations

import re

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common, shown
from modelrollout.analysis.gates.steps import harm_limits, look, points, shift_test, variables
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import METRIC_NAME_PATTERN, CompareGate, MetricGate
from modelrollout.api.status import GateResult

_BARE_METRIC = re.compile(METRIC_NAME_PATTERN)


def _spec(gate: MetricGate) -> CompareGate:
    assert gate.compare is not None
    return gate.compare


def limits(gate: MetricGate) -> common.Limits:
    """mSPRT: the margin ``tau`` on the difference's harmful side; Mann-Whitney: the
    tolerance is relative to stable's median, so no fixed number."""
    c = _spec(gate)
    if c.mode == "msprt":
        assert c.tau is not None
        return harm_limits(c.direction, c.tau)
    return None, None


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


# ----------------------------------------------------------------------- Mann-Whitney


def _evaluate_mann_whitney(
    gate: MetricGate, source: MetricSource, ctx: common.GateContext
) -> GateResult:
    c = _spec(gate)
    assert c.query is not None
    control, experiment = points(
        source, ctx, c.query, window=common.since_stage(ctx, c.window), step=c.step
    )
    k = look(ctx, gate.name)
    alpha = sq.spent_alpha(ctx.alpha, k)
    t = shift_test(
        control,
        experiment,
        direction=c.direction,
        alpha=alpha,
        effect_tolerance=c.effect_tolerance,
        min_points=c.min_points,
    )
    if t.shown is None:
        if t.samples == 0:
            raise common.NoVerdict(f"no data: {t.reason}")
        gathering = t.samples < c.min_points
        raise common.NoVerdict(
            t.reason,
            samples=t.samples if gathering else None,
            needed=t.needed if gathering else None,
        )
    return shown.result(
        gate.name,
        t.shown,
        value=t.estimate,
        interval=t.interval,
        alpha=alpha,
        limits=t.limits,
        reason=f"look {k}: {t.reason}",
        samples=t.samples,
        need=lambda: t.needed or float(t.samples + 1),
        floor=c.min_points,
    )


# ----------------------------------------------------------------------- mSPRT


def _counter(expr: str, ctx: common.GateContext, role: str, window: str) -> str:
    """A bare counter name becomes ``sum(increase(name{model,version}[window]))``."""
    if _BARE_METRIC.fullmatch(expr):
        return f"sum(increase({expr}{common.version_selector(ctx, role)}[{window}]))"
    return common.render(expr, variables(ctx, role, window=window))


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


def _size(s: stats.Summary) -> float:
    return s.trials if isinstance(s, stats.ProportionSummary) else s.n


def _scaled(s: stats.Summary, factor: float) -> stats.Summary:
    """The same rate or mean and spread over ``factor`` times the observations."""
    if isinstance(s, stats.ProportionSummary):
        return stats.ProportionSummary(s.successes * factor, s.trials * factor)
    return stats.MeanSummary(s.n * factor, s.sum * factor, s.sum_sq * factor)


def _difference(control: stats.Summary, experiment: stats.Summary) -> tuple[float, float]:
    """(candidate - stable, its plug-in variance)."""
    if isinstance(control, stats.ProportionSummary) and isinstance(
        experiment, stats.ProportionSummary
    ):
        return sq.proportion_difference(
            experiment.successes, experiment.trials, control.successes, control.trials
        )
    assert isinstance(control, stats.MeanSummary)
    assert isinstance(experiment, stats.MeanSummary)
    return sq.mean_difference(
        (experiment.n, experiment.sum, experiment.sum_sq), (control.n, control.sum, control.sum_sq)
    )


def _evaluate_msprt(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    c = _spec(gate)
    assert c.tau is not None
    tau = c.tau
    window = common.since_stage(ctx, None)
    control = _summary(c, source, ctx, "stable", window)
    experiment = _summary(c, source, ctx, "candidate", window)
    n_c, n_e = _size(control), _size(experiment)
    burn_in = max(c.burn_in, 2)
    if min(n_c, n_e) < burn_in:
        arm = "stable" if n_c < n_e else "candidate"
        raise common.NoVerdict(
            f"burn-in: {min(n_c, n_e):g} < {burn_in:g} ({arm})",
            samples=min(n_c, n_e),
            needed=burn_in,
        )
    bounds = limits(gate)

    def cs(factor: float) -> sq.Interval:
        estimate, variance = _difference(_scaled(control, factor), _scaled(experiment, factor))
        return sq.normal_mixture_cs(estimate, variance, ctx.alpha, tau=tau)

    estimate, _ = _difference(control, experiment)
    interval = cs(1.0)
    outcome = shown.judge(interval, bounds)
    # The mSPRT's p against "no difference" at this look (cheap; for the reader only).
    p = stats.msprt_update(
        None, control, experiment, tau=tau, alpha=ctx.alpha, direction=c.direction, burn_in=burn_in
    ).always_valid_p
    kind = "rate" if isinstance(control, stats.ProportionSummary) else "mean"

    def level(s: stats.Summary) -> str:
        if isinstance(s, stats.ProportionSummary):
            return f"{s.successes / s.trials:.4g}"
        return f"{s.mean:.4g}"

    reason = (
        f"candidate {kind} {level(experiment)} over {n_e:.0f} vs stable {level(control)} over "
        f"{n_c:.0f} since {window} ago: difference {estimate:+.4g}, "
        f"{shown.level_text(ctx.alpha)} confidence sequence [{interval.lower:+.4g}, "
        f"{interval.upper:+.4g}] against the margin {common.min_max_text(bounds)} "
        f"({c.direction} is harmful); mSPRT p {p:.3g} against no difference"
    )
    samples = min(n_c, n_e)
    return shown.result(
        gate.name,
        outcome,
        value=estimate,
        interval=interval,
        alpha=ctx.alpha,
        limits=bounds,
        reason=reason,
        samples=samples,
        need=lambda: shown.needed(
            lambda n: shown.judge(cs(n / samples), bounds) != sq.Shown.NOT_YET, samples
        ),
        floor=burn_in,
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
        return f"no {c.direction} beyond {c.tau:g} shown (anytime-valid)"
    return f"no {c.direction} beyond {c.effect_tolerance:.0%} of stable's median (equivalence)"
