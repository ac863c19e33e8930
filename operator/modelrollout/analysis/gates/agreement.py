"""``agreement``: the share of shadow pairs that agree, as an anytime-valid test.

``judge_agreement`` is pure and shared with ``modelrollout analyze``.
"""

from __future__ import annotations

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common, shown
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import AgreementGate, MetricGate
from modelrollout.api.status import GateResult, Verdict


def _spec(gate: MetricGate) -> AgreementGate:
    assert gate.agreement is not None
    return gate.agreement


limits = common.own_limits


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


def _prior(limits: common.Limits) -> sq.Prior:
    """A Beta prior centred on the limit (known before the data): tightest near it."""
    lo, hi = limits
    limit = lo if lo is not None else hi
    return sq.DEFAULT_BETA_PRIOR if limit is None else sq.beta_prior_at(limit)


def judge_agreement(
    name: str,
    agree: float,
    disagree: float,
    unpaired: float,
    opts: AgreementGate,
    limits: common.Limits,
    alpha: float,
) -> GateResult:
    """The verdict on shadow pair counts (pure), a test at level ``alpha``.

    ``binomial_cs`` of agree among the pairs (prior centred on the limit): Pass when
    its lower end is at or above ``min``, Fail when its upper end is below it, else
    Inconclusive with samples/needed (not yet shown: gathering evidence). The value is
    the plug-in rate. Too many unpaired requests is inconclusive without needed (waiting
    will not fix a biased sample); fewer than ``minPairs`` is gathering evidence.
    """
    a = stats.agreement(
        agree,
        disagree,
        unpaired,
        max_unpaired_fraction=opts.max_unpaired_fraction,
        min_pairs=opts.min_pairs,
    )
    counts = f"{agree:.0f} agree, {disagree:.0f} disagree, {unpaired:.0f} unpaired"
    if a.rate is None or a.n <= 0:
        gathering = (a.reason or "").startswith("not enough samples")
        return common.gate_result(
            name,
            Verdict.INCONCLUSIVE,
            reason=f"{a.reason} ({counts})",
            limits=limits,
            samples=a.n if gathering else None,
            needed=opts.min_pairs if gathering else None,
        )
    prior = _prior(limits)
    interval = sq.binomial_cs(agree, a.n, alpha, prior=prior)
    outcome = shown.judge(interval, limits)

    rate = a.rate

    def decides(n: float) -> bool:
        return shown.judge(sq.binomial_cs(rate * n, n, alpha, prior=prior), limits) != (
            sq.Shown.NOT_YET
        )

    reason = (
        f"agreement {a.rate:.4f} ({agree:.0f} of {a.n:.0f} pairs), "
        f"{shown.level_text(alpha)} confidence sequence [{interval.lower:.4f}, "
        f"{interval.upper:.4f}] against {common.min_max_text(limits)}, "
        f"unpaired {a.unpaired_fraction or 0:.1%}"
    )
    return shown.result(
        name,
        outcome,
        value=a.rate,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=a.n,
        need=lambda: max(float(opts.min_pairs), shown.needed(decides, a.n)),
        floor=opts.min_pairs,
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
    win = common.since_stage(ctx, a.window)
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
        ctx.alpha,
    )


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """The share of pairs that agree over each window (the point estimate)."""
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
    return f"agreement {common.min_max_text(common.own_limits(gate))} (anytime-valid)"
