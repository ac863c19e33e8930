"""``agreement``: the Wilson lower bound of the share of shadow pairs that agree.

``judge_agreement`` is pure and shared with ``modelrollout analyze``.
"""

from __future__ import annotations

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import AgreementGate, MetricGate
from modelrollout.api.status import GateResult, Verdict


def _spec(gate: MetricGate) -> AgreementGate:
    assert gate.agreement is not None
    return gate.agreement


limits = common.own_limits


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.window_or_interval(ctx, _spec(gate).window)


def judge_agreement(
    name: str,
    agree: float,
    disagree: float,
    unpaired: float,
    opts: AgreementGate,
    limits: common.Limits,
) -> GateResult:
    """The verdict on shadow pair counts (pure): the value is the Wilson lower bound."""
    a = stats.agreement(
        agree,
        disagree,
        unpaired,
        confidence=opts.confidence,
        max_unpaired_fraction=opts.max_unpaired_fraction,
        min_pairs=opts.min_pairs,
    )
    if a.rate is None or a.lower is None or a.upper is None:
        # Only "too few pairs" is gathering evidence (samples/needed); too many unpaired
        # requests will not get better by waiting.
        gathering = (a.reason or "").startswith("not enough samples")
        return common.gate_result(
            name,
            Verdict.INCONCLUSIVE,
            reason=f"{a.reason} ({agree:.0f} agree, {disagree:.0f} disagree, "
            f"{unpaired:.0f} unpaired)",
            limits=limits,
            samples=a.n if gathering else None,
            needed=opts.min_pairs if gathering else None,
        )
    reason = (
        f"agreement {a.rate:.4f} ({agree:.0f} of {a.n:.0f} pairs), "
        f"{opts.confidence:.0%} interval [{a.lower:.4f}, {a.upper:.4f}], "
        f"unpaired {a.unpaired_fraction or 0:.1%}"
    )
    return common.gate_result(
        name,
        common.within(a.lower, limits),
        value=a.lower,
        reason=reason,
        limits=limits,
        samples=a.n,
        needed=opts.min_pairs,
    )


def _selectors(ctx: common.GateContext) -> tuple[str, str]:
    """(the pairs of the two versions, the candidate's requests without a partner)."""
    pair = common.selector(
        {
            "model": ctx.model,
            "stable_version": ctx.stable_version,
            "candidate_version": ctx.candidate_version,
        }
    )
    return pair, common.selector({"model": ctx.model, "candidate_version": ctx.candidate_version})


def agreement_queries(a: AgreementGate, ctx: common.GateContext) -> tuple[str, str]:
    """(comparisons by result, unpaired) PromQL of an agreement gate."""
    win = common.window_or_interval(ctx, a.window)
    pair, alone = _selectors(ctx)
    return (
        f"sum by (result) (increase({a.comparisons}{pair}[{win}]))",
        f"sum(increase({a.unpaired}{alone}[{win}]))",
    )


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    a = _spec(gate)
    comparisons_q, unpaired_q = agreement_queries(a, ctx)
    by_result = common.categories(common.ask(source, comparisons_q), "result", "comparisons")
    if not by_result:
        raise common.NoVerdict(
            f"no shadow comparisons of {ctx.candidate_version} with {ctx.stable_version}: "
            "is the candidate mirrored, and does the shadow comparer run?"
        )
    unpaired = common.scalar(source, unpaired_q, "unpaired requests", default=0.0)
    agree, disagree = by_result.get("agree", 0.0), by_result.get("disagree", 0.0)
    return judge_agreement(
        gate.name,
        max(0.0, agree),
        max(0.0, disagree),
        max(0.0, unpaired),
        a,
        common.own_limits(gate),
    )


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """The share of pairs that agree over each window (the point estimate, not its bound)."""
    a = _spec(gate)
    win = common.window_or_interval(ctx, a.window)
    pair, _ = _selectors(ctx)
    agreed = common.selector(
        {
            "model": ctx.model,
            "stable_version": ctx.stable_version,
            "candidate_version": ctx.candidate_version,
            "result": "agree",
        }
    )
    promql = (
        f"sum(increase({a.comparisons}{agreed}[{win}])) / "
        f"sum(increase({a.comparisons}{pair}[{win}]))"
    )
    return common.Plot((common.Series("agreement rate", promql),))


def limit_text(gate: MetricGate) -> str:
    a = _spec(gate)
    return f"{a.confidence:.0%} lower bound {common.min_max_text(common.own_limits(gate))}"
