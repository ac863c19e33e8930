"""``score``: a Kayenta-style weighted score over several per-step comparisons.

Each metric gets the equivalence test of ``steps.shift_test`` at ``alpha / metrics``
(Bonferroni within the gate), spent over the stage's looks. A metric shown good counts
for the score, one shown worse against it, one not yet shown either way gives the score
an interval: ``lower`` counts the undecided as worse, ``upper`` as good. Pass when
``lower >= pass`` (and no critical metric is undecided), Fail when ``upper < marginal``
or a critical metric is shown worse, else Inconclusive (gathering evidence while any
metric is undecided; a human looks when the score is shown to be marginal).
"""

from __future__ import annotations

from modelrollout.analysis import sequential as sq
from modelrollout.analysis.gates import common, shown
from modelrollout.analysis.gates.steps import ShiftTest, look, points, shift_test
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


def _plug_in_good(t: ShiftTest) -> bool:
    """The metric's estimate within its tolerance: what the plug-in score counts."""
    assert t.estimate is not None
    lo, hi = t.limits
    return (lo is None or t.estimate >= lo) and (hi is None or t.estimate <= hi)


@common.guarded(limits)
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    sg = _spec(gate)
    win = common.since_stage(ctx, sg.window)
    k = look(ctx, gate.name)
    alpha = sq.spent_alpha(ctx.alpha, k) / len(sg.metrics)
    tests: dict[str, ShiftTest] = {}
    no_data: dict[str, str] = {}
    for m in sg.metrics:
        try:
            control, experiment = points(source, ctx, m.query, window=win, step=sg.step)
        except common.NoVerdict as exc:
            no_data[m.name] = exc.reason
            continue
        t = shift_test(
            control,
            experiment,
            direction=m.direction,
            alpha=alpha,
            effect_tolerance=m.effect_tolerance,
            min_points=sg.min_points,
        )
        if t.shown is None:
            no_data[m.name] = t.reason
        tests[m.name] = t
    judged = [m for m in sg.metrics if m.name not in no_data]
    parts = [f"look {k}, each metric at {shown.level_text(alpha)}"]
    for m in sg.metrics:
        if m.name in no_data:
            parts.append(f"{m.name}: no verdict ({no_data[m.name]})")
        else:
            t = tests[m.name]
            parts.append(f"{m.name}: {t.reason}: {shown.SAYS[t.shown or sq.Shown.NOT_YET]}")
    reason = "; ".join(parts)
    waiting = [tests[n] for n in no_data if n in tests and tests[n].samples < sg.min_points]
    if not judged:
        if waiting and len(waiting) == len(sg.metrics) and min(t.samples for t in waiting) > 0:
            raise common.NoVerdict(
                reason, samples=min(t.samples for t in waiting), needed=sg.min_points
            )
        raise common.NoVerdict(f"no metric has data; {reason}")
    critical_no_data = [m.name for m in sg.metrics if m.critical and m.name in no_data]
    total = sum(m.weight for m in judged)
    good = sum(m.weight for m in judged if tests[m.name].shown == sq.Shown.GOOD)
    bad = sum(m.weight for m in judged if tests[m.name].shown == sq.Shown.BAD)
    plug_in = sum(m.weight for m in judged if _plug_in_good(tests[m.name]))
    lower, upper = 100 * good / total, 100 * (total - bad) / total
    critical_bad = [m.name for m in judged if m.critical and tests[m.name].shown == sq.Shown.BAD]
    undecided = [m for m in judged if tests[m.name].shown == sq.Shown.NOT_YET]
    critical_undecided = [m.name for m in undecided if m.critical]
    if critical_bad:
        outcome = sq.Shown.BAD
        reason = f"critical metric shown worse: {', '.join(critical_bad)}; {reason}"
    elif upper < sg.marginal:
        outcome = sq.Shown.BAD
    elif critical_no_data:
        raise common.NoVerdict(
            f"critical metric has no verdict: {', '.join(critical_no_data)}; {reason}",
            value=100 * plug_in / total,
        )
    elif lower >= sg.pass_score and not critical_undecided:
        outcome = sq.Shown.GOOD
    else:
        outcome = sq.Shown.NOT_YET
    samples = min(tests[m.name].samples for m in judged)
    if outcome == sq.Shown.NOT_YET and not undecided:
        # Every metric decided, the score shown marginal: a human looks (no needed).
        return common.gate_result(
            gate.name,
            Verdict.INCONCLUSIVE,
            value=100 * plug_in / total,
            reason=f"score shown marginal [{lower:.1f}, {upper:.1f}]; {reason}",
            limits=limits(gate),
        ).model_copy(update={"lower": lower, "upper": upper, "alpha": ctx.alpha})

    def need() -> float:
        return max(tests[m.name].needed or float(samples + 1) for m in undecided or judged)

    return shown.result(
        gate.name,
        outcome,
        value=100 * plug_in / total,
        interval=sq.Interval(lower, upper),
        alpha=ctx.alpha,
        limits=limits(gate),
        reason=f"score [{lower:.1f}, {upper:.1f}] (pass {sg.pass_score:g}, marginal "
        f"{sg.marginal:g}); {reason}",
        samples=samples,
        need=need,
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
