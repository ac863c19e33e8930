"""Per-step values of both versions, judged by Mann-Whitney: shared by compare and score."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
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


def mann_whitney(
    source: MetricSource,
    ctx: common.GateContext,
    template: str,
    direction: stats.Direction,
    *,
    confidence: float,
    effect_tolerance: float,
    min_points: int,
    window: str,
    step: str,
) -> stats.MetricComparison:
    """Stable's and the candidate's per-step values of ``template``, compared."""
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
    return stats.mann_whitney_judge(
        control,
        experiment,
        direction=direction,
        confidence=confidence,
        effect_tolerance=effect_tolerance,
        min_points=min_points,
    )


def describe(c: stats.MetricComparison) -> str:
    """One line on a comparison: the medians, the shift, its p-value and the class."""
    if c.classification == "NoData":
        return c.reason or "no data"
    assert c.hodges_lehmann is not None
    assert c.p_value is not None
    return (
        f"candidate median {c.experiment_median:.4g} vs stable {c.control_median:.4g}: "
        f"shift {c.hodges_lehmann:+.4g}, p-value {c.p_value:.3g} over "
        f"{c.n_experiment}/{c.n_control} points: {c.classification}"
    )
