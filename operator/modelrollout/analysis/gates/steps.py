"""Per-step values of both versions, judged by a rank test: shared by compare and score.

Per-step values (one point per ``step`` of a range query) are all some metrics have. The
Mann-Whitney / Hodges-Lehmann shift of the candidate's points against stable's is tested
for *equivalence* at every look: Pass only when the shift's interval lies within the
tolerance, Fail when it lies wholly beyond it, else not yet shown. The interval
(``sequential.shift_interval``) is not anytime-valid on its own, so the ``k``-th look of
the stage spends ``spent_alpha(alpha, k)`` (the levels sum to ``alpha`` over any number of
looks) and counts the points as worth their effective sample size (lag-1
autocorrelation). Series that are mostly 0 (rare events per step) are refused: a rank
test sees no shift in them; counts are the honest test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common, shown
from modelrollout.analysis.source import MetricSource, SourceError
from modelrollout.api.base import parse_duration


@runtime_checkable
class RangeSource(Protocol):
    """A metric source that can also answer range queries (``PrometheusSource`` does)."""

    def range(self, query: str, seconds: float, step: float) -> list[float]: ...


def variables(ctx: common.GateContext, role: str, **extra: str) -> dict[str, str]:
    """The template variables of one version, with the extra ones a kind adds."""
    return {**ctx.variables(role), **extra}


def _points(
    source: MetricSource,
    template: str,
    ctx: common.GateContext,
    role: str,
    window: float,
    step: float,
) -> list[float]:
    if not isinstance(source, RangeSource):
        raise common.NoVerdict("the metric source cannot answer range queries")
    promql = common.render(
        template,
        variables(ctx, role, window=common.seconds_text(window), step=common.seconds_text(step)),
    )
    try:
        return source.range(promql, window, step)
    except SourceError as exc:
        raise common.NoVerdict(f"unreachable: {exc}") from exc


#: The message of a refused mostly-zero comparison: where the honest test lives.
MOSTLY_ZERO = (
    "more than half the points of both series are 0 (rare events per step): a rank test "
    "sees no shift there; use the count test instead: compare mode msprt with "
    "successes/trials, or errorRate"
)


def look(ctx: common.GateContext, name: str) -> int:
    """The number of this look in the stage: the gate's earlier results, plus one."""
    return 1 + sum(1 for r in ctx.previous if r.metric == name)


def points(
    source: MetricSource, ctx: common.GateContext, template: str, *, window: str, step: str
) -> tuple[list[float], list[float]]:
    """(stable's, the candidate's) per-step values of ``template`` over ``window``."""
    seconds, step_s = parse_duration(window), parse_duration(step)
    probe = variables(ctx, "candidate", window="w", step="s")
    if common.render(template, probe) == common.render(
        template, {**probe, **ctx.variables("stable")}
    ):
        raise common.NoVerdict(
            "the query reads the same series for both versions: select one with {{version}}"
        )
    control = _points(source, template, ctx, "stable", seconds, step_s)
    experiment = _points(source, template, ctx, "candidate", seconds, step_s)
    return control, experiment


def harm_limits(direction: stats.Direction, tolerance: float) -> common.Limits:
    """The limits on the shift (candidate - stable) that ``direction`` makes harmful."""
    if direction == "increase":
        return None, tolerance
    if direction == "decrease":
        return -tolerance, None
    return -tolerance, tolerance


@dataclass(frozen=True)
class ShiftTest:
    """One look of the equivalence test of a shift; ``shown`` None: no verdict (reason)."""

    shown: sq.Shown | None
    estimate: float | None
    interval: sq.Interval
    limits: common.Limits
    alpha: float
    n_control: int
    n_experiment: int
    reason: str
    needed: float | None = None

    @property
    def samples(self) -> int:
        return min(self.n_control, self.n_experiment)


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def shift_test(
    control: Sequence[float],
    experiment: Sequence[float],
    *,
    direction: stats.Direction,
    alpha: float,
    effect_tolerance: float,
    min_points: int,
) -> ShiftTest:
    """The shift's equivalence test at level ``alpha`` (already spent for this look, pure).

    Tolerance ``effectTolerance x |median(stable)|``; the harmful side from
    ``direction``. Fewer than ``min_points`` finite points on a side, or more than half
    of both series at 0, give no verdict (``shown`` None).
    """
    c, e = _finite(control), _finite(experiment)
    nc, ne = len(c), len(e)
    nothing = sq.Interval(-math.inf, math.inf)
    if min(nc, ne) < max(min_points, 1):
        side = "stable" if nc < ne else "candidate"
        return ShiftTest(
            None,
            None,
            nothing,
            (None, None),
            alpha,
            nc,
            ne,
            f"not enough points: {min(nc, ne)} < {max(min_points, 1)} ({side})",
            needed=float(max(min_points, 1)),
        )
    ca, ea = np.asarray(c), np.asarray(e)
    if (ca == 0).mean() > 0.5 and (ea == 0).mean() > 0.5:
        return ShiftTest(None, None, nothing, (None, None), alpha, nc, ne, MOSTLY_ZERO)
    bounds = sq.shift_interval(ca, ea, alpha)
    median = float(np.median(ca))
    tolerance = effect_tolerance * abs(median)
    limits = harm_limits(direction, tolerance)
    interval = bounds.interval
    outcome = shown.judge(interval, limits)
    reason = (
        f"candidate median {float(np.median(ea)):.4g} vs stable {median:.4g}: shift "
        f"{bounds.estimate:+.4g}, {shown.level_text(alpha)} interval "
        f"[{interval.lower:.4g}, {interval.upper:.4g}] over {ne}/{nc} points, tolerance "
        f"{common.min_max_text(limits)} ({effect_tolerance:g} of stable's median, "
        f"{direction} is harmful)"
    )
    return ShiftTest(
        outcome,
        bounds.estimate,
        interval,
        limits,
        alpha,
        nc,
        ne,
        reason,
        needed=_needed_points(min(nc, ne), interval, bounds.estimate, limits),
    )


def _needed_points(n: int, interval: sq.Interval, estimate: float, limits: common.Limits) -> float:
    """About how many points decide: the interval's half-width shrinks as ``1/sqrt(n)``
    and must come down to the estimate's distance from the nearest limit."""
    lo, hi = limits
    gaps = [abs(estimate - x) for x in (lo, hi) if x is not None]
    half = (interval.upper - interval.lower) / 2
    gap = min(gaps) if gaps else 0.0
    if not (math.isfinite(half) and gap > 0):
        return float(max(n + 1, 2 * n))
    factor = min((half / gap) ** 2, shown.NEEDED_HORIZON)
    return float(max(n + 1, math.ceil(n * factor)))
