"""``score``: a Kayenta-style weighted score over several Mann-Whitney comparisons."""

from __future__ import annotations

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
from modelrollout.analysis.gates.steps import describe, mann_whitney
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import MetricGate, ScoreGate
from modelrollout.api.status import GateResult, Verdict


def _spec(gate: MetricGate) -> ScoreGate:
    assert gate.score is not None
    return gate.score


def limits(gate: MetricGate) -> common.Limits:
    return _spec(gate).pass_score, None


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


@common.guarded(limits)
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    sg = _spec(gate)
    win = common.since_stage(ctx, sg.window)
    scored: list[stats.ScoredMetric] = []
    for m in sg.metrics:
        try:
            comparison = mann_whitney(
                source,
                ctx,
                m.query,
                m.direction,
                confidence=sg.confidence,
                effect_tolerance=m.effect_tolerance,
                min_points=sg.min_points,
                window=win,
                step=sg.step,
            )
        except (common.NoVerdict, ValueError) as exc:
            why = exc.reason if isinstance(exc, common.NoVerdict) else str(exc)
            comparison = stats.MetricComparison(
                "NoData", m.direction, None, None, None, None, 0, 0, reason=why
            )
        scored.append(stats.ScoredMetric(m.name, comparison, m.weight, m.critical))
    run = stats.score_run(scored, sg.pass_score, sg.marginal)
    parts = [f"score {run.score:.1f}" if run.score is not None else "no score", run.verdict]
    if run.failed_metrics:
        parts.append(
            "worse: "
            + ", ".join(
                f"{m.name} ({describe(m.comparison)})"
                for m in scored
                if m.name in run.failed_metrics
            )
        )
    if run.no_data_metrics:
        parts.append(
            "no data: "
            + ", ".join(
                f"{m.name} ({m.comparison.reason})" for m in scored if m.name in run.no_data_metrics
            )
        )
    if run.reason:
        parts.append(run.reason)
    verdict = {"Pass": Verdict.PASS, "Fail": Verdict.FAIL}.get(run.verdict, Verdict.INCONCLUSIVE)
    waiting = [m.comparison for m in scored if m.name in run.no_data_metrics]
    points = [min(c.n_control, c.n_experiment) for c in waiting]
    if verdict == Verdict.INCONCLUSIVE and waiting and min(points) > 0 and run.score is None:
        # Every metric has points, just too few yet: gathering evidence, not missing data.
        return common.gate_result(
            gate.name,
            verdict,
            reason="; ".join(parts),
            limits=limits(gate),
            samples=min(points),
            needed=sg.min_points,
        )
    return common.gate_result(
        gate.name, verdict, value=run.score, reason="; ".join(parts), limits=limits(gate)
    )


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """The score has no series: its metrics' queries, for each version, on their own axis."""
    sg = _spec(gate)
    series = tuple(
        s
        for m in sg.metrics
        for s in common.per_version(
            m.query, ctx, what=m.name, same_scale=False, window=sg.step, step=sg.step
        )
    )
    return common.Plot(
        series, note="the score is worked out at each check from its metrics, drawn here"
    )


def limit_text(gate: MetricGate) -> str:
    sg = _spec(gate)
    return f"score min {sg.pass_score:g} (marginal from {sg.marginal:g})"
