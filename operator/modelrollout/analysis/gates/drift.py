"""``drift``: the candidate's input or output distribution against stable's (or a baseline).

The two distributions come as histograms (``sum by (le)``) or as a counter by a label
(``sum by (by)``), counted since the stage start. PSI, Jensen-Shannon distance or KS D
(``stats.drift``) measure the shift; a confidence sequence at the gate's level says
whether it is shown within the gate's ``max``, shown beyond it, or not yet either
(``sequential.psi_cs``, ``js_cs``, ``ks_bounds``). The p-value methods (``chi2``, ``ks``
with ``min``) become a test of "the distributions differ" (an e-value) against one of
"they are within PSI 0.1" (``EQUIVALENT_PSI``). ``judge_drift`` is pure and shared with
``modelrollout analyze``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common, shown
from modelrollout.analysis.source import MetricSource, Sample
from modelrollout.api.gates import DriftGate, MetricGate
from modelrollout.api.status import GateResult, Verdict

#: The limit ``modelrollout analyze`` applies when none is given: (min, max).
#: PSI 0.1 is the usual "moderate shift" line; JS distance 0.1 and KS D 0.1 are shifts of
#: similar size; chi-square is gated on its p-value.
DEFAULT_DRIFT_LIMITS: dict[str, common.Limits] = {
    "psi": (None, 0.1),
    "js": (None, 0.1),
    "ks": (None, 0.1),
    "chi2": (0.01, None),
}


def _spec(gate: MetricGate) -> DriftGate:
    assert gate.drift is not None
    return gate.drift


limits = common.own_limits


#: The equivalence margin of the p-value methods: shown PSI at or below it passes.
EQUIVALENT_PSI = 0.1


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.since_stage(ctx, _spec(gate).window)


def _uses_p_value(method: stats.DriftMethod, limits: common.Limits) -> bool:
    lo, hi = limits
    return method == "chi2" or (method == "ks" and lo is not None and hi is None)


def judge_drift(
    name: str,
    reference: stats.Counts,
    candidate: stats.Counts,
    method: stats.DriftMethod,
    min_samples: int,
    limits: common.Limits,
    alpha: float,
    *,
    context: str = "",
) -> GateResult:
    """The verdict on two count vectors on the same bins (pure), a test at level ``alpha``.

    ``psi``, ``js``, ``ks`` with ``max``: the measure's confidence sequence against the
    max (value: the plug-in). ``chi2`` and ``ks`` with ``min`` (on a p-value): Fail when
    the homogeneity e-value reaches ``1 / level`` (level: the smaller of ``alpha`` and
    the gate's ``min``), Pass when the PSI CS's upper end is at most ``EQUIVALENT_PSI``;
    the value is the plug-in p-value. Too few observations on a side is gathering
    evidence. ``DistributionMismatch`` for malformed counts.
    """
    r = stats.drift(reference, candidate, method, min_samples)
    samples = min(r.reference_n, r.candidate_n)
    counts = f"{r.candidate_n:.0f} candidate and {r.reference_n:.0f} reference observations"
    where = f" ({context})" if context else ""
    if r.value is None:
        return common.gate_result(
            name,
            Verdict.INCONCLUSIVE,
            reason=f"{r.reason}; {counts}{where}",
            limits=limits,
            samples=samples,
            needed=min_samples,
        )
    ref = np.asarray(reference, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    text = f"{method} {r.value:.6g}"
    if r.p_value is not None:
        text += f", p-value {r.p_value:.4g}"
    lo, hi = limits

    if _uses_p_value(method, limits):
        level = min(alpha, lo) if lo is not None and 0 < lo < 1 else alpha

        def judged(factor: float) -> tuple[sq.Shown, float, sq.Bounds]:
            e = sq.homogeneity_e_value(ref * factor, cand * factor)
            psi = _measure_cs("psi", ref * factor, cand * factor, level, EQUIVALENT_PSI)
            if e >= 1 / level:
                return sq.Shown.BAD, e, psi
            if psi.upper <= EQUIVALENT_PSI:
                return sq.Shown.GOOD, e, psi
            return sq.Shown.NOT_YET, e, psi

        outcome, e_value, psi = judged(1.0)
        reason = (
            f"{text}; e-value {e_value:.4g} against 'same distribution' (fails at "
            f"{1 / level:.4g}), {shown.level_text(level)} PSI confidence sequence "
            f"[{psi.lower:.4g}, {psi.upper:.4g}] (passes at or below {EQUIVALENT_PSI:g}); "
            f"{counts}{where}"
        )
        return shown.result(
            name,
            outcome,
            value=r.p_value,
            interval=sq.Interval(math.nan, math.nan),
            alpha=level,
            limits=limits,
            reason=reason,
            samples=samples,
            need=_need(lambda f: judged(f)[0], samples),
            floor=min_samples,
        )

    def bounds(factor: float) -> sq.Bounds:
        tau = hi if hi is not None and hi > 0 else 0.1
        r_, c_ = ref * factor, cand * factor
        if method == "ks":
            return sq.ks_bounds(r_, c_, alpha)
        return _measure_cs(method, r_, c_, alpha, tau)

    b = bounds(1.0)
    reason = (
        f"{text}; {shown.level_text(alpha)} confidence sequence [{b.lower:.4g}, "
        f"{b.upper:.4g}]; {counts}{where}"
    )
    return shown.result(
        name,
        shown.judge(b.interval, limits),
        value=r.value,
        interval=b.interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=samples,
        need=_need(lambda f: shown.judge(bounds(f).interval, limits), samples),
        floor=min_samples,
    )


def _measure_cs(
    method: str, reference: np.ndarray, candidate: np.ndarray, alpha: float, tau: float
) -> sq.Bounds:
    """PSI's or JS distance's CS: the asymptotic one (``psi_cs``, ``js_cs``) and the exact
    per-bin bounds, each at ``alpha / 2``, intersected (union bound). The first is tight
    for well-filled bins, the second where a bin is (nearly) empty on one side (a new
    category), where the delta method's variance explodes."""
    if method == "psi":
        delta = sq.psi_cs(reference, candidate, alpha / 2, tau=tau)
        exact = sq.psi_bounds(reference, candidate, alpha / 2)
    else:
        delta = sq.js_cs(reference, candidate, alpha / 2, tau=tau)
        exact = sq.js_bounds(reference, candidate, alpha / 2)
    return sq.Bounds(max(delta.lower, exact.lower), delta.estimate, min(delta.upper, exact.upper))


def _need(outcome: Callable[[float], sq.Shown], samples: float) -> Callable[[], float]:
    """``neededSamples``: the counts scaled up until the test decides."""

    def need() -> float:
        return shown.needed(lambda n: outcome(n / samples) != sq.Shown.NOT_YET, samples)

    return need


def drift_queries(d: DriftGate, ctx: common.GateContext) -> tuple[str, str]:
    """(reference, candidate) PromQL of a drift gate, with the rollout's values filled in.

    Both sides count since the stage start (a sequential test on cumulative counts)
    unless ``window`` is set.
    """
    win = common.since_stage(ctx, d.window)

    def query(role: str, span: str, offset: str | None) -> str:
        variables = ctx.variables(role)
        matchers = {"model": ctx.model}
        matchers.update({k: common.render(v, variables) for k, v in (d.labels or {}).items()})
        matchers[d.version_label] = variables["version"]
        if d.metric is not None:
            series, by = f"{d.metric}_bucket{common.selector(matchers)}", "le"
        else:
            assert d.counter is not None
            assert d.by is not None
            series, by = f"{d.counter}{common.selector(matchers)}", d.by
        shift = f" offset {offset}" if offset else ""
        return f"sum by ({by}) (increase({series}[{span}]{shift}))"

    if d.against == "baseline":
        offset = common.promql_duration(d.baseline_offset) if d.baseline_offset else None
        reference = query("stable", common.promql_duration(d.baseline_window), offset)
    else:
        reference = query("stable", win, None)
    return reference, query("candidate", win, None)


def _histogram(samples: list[Sample], side: str) -> stats.Binned:
    buckets: dict[str | float, float] = {}
    for s in samples:
        le = s.labels.get("le")
        if le is None:
            raise common.NoVerdict(
                f"{side}: a series without an le label: is the metric a histogram?"
            )
        if not math.isfinite(s.value):
            raise common.NoVerdict(f"{side}: bucket le={le} is {s.value}")
        buckets[le] = s.value
    return stats.bins_from_cumulative(buckets)


@common.guarded()
def evaluate(gate: MetricGate, source: MetricSource, ctx: common.GateContext) -> GateResult:
    d = _spec(gate)
    ref_q, cand_q = drift_queries(d, ctx)
    ref_samples, cand_samples = common.ask(source, ref_q), common.ask(source, cand_q)
    for side, answer, promql in (
        ("reference", ref_samples, ref_q),
        ("candidate", cand_samples, cand_q),
    ):
        if not answer:
            raise common.NoVerdict(f"no data for the {side}: {promql}")
    if d.metric is not None:
        aligned = stats.align(
            _histogram(ref_samples, "reference"), _histogram(cand_samples, "candidate")
        )
        ref, cand = list(aligned.reference), list(aligned.candidate)
    else:
        assert d.by is not None
        r = common.categories(ref_samples, d.by, "reference")
        c = common.categories(cand_samples, d.by, "candidate")
        keys = sorted(set(r) | set(c))
        ref, cand = [r.get(k, 0.0) for k in keys], [c.get(k, 0.0) for k in keys]
    if d.against == "baseline":
        offset = f", {d.baseline_offset} ago" if d.baseline_offset else ""
        against = f"baseline: {ctx.stable_version} over {d.baseline_window}{offset}"
    else:
        against = f"against {ctx.stable_version}"
    return judge_drift(
        gate.name,
        ref,
        cand,
        d.method,
        d.min_samples,
        common.own_limits(gate),
        ctx.alpha,
        context=against,
    )


def queries(gate: MetricGate, ctx: common.GateContext) -> common.Plot:
    """No series: the statistic is worked out from two whole distributions at each check."""
    d = _spec(gate)
    return common.Plot(
        note=f"{d.method} compares two distributions at each check; Prometheus has no "
        "series of it to draw (the ledger's points are the values)"
    )


def limit_text(gate: MetricGate) -> str:
    d = _spec(gate)
    if _uses_p_value(d.method, common.own_limits(gate)):
        return f"{d.method}: differ (e-value) or within PSI {EQUIVALENT_PSI:g}"
    return f"{d.method} {common.min_max_text(common.own_limits(gate))} (anytime-valid)"
