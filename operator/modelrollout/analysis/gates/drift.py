"""``drift``: the candidate's input or output distribution against stable's (or a baseline).

The two distributions come as histograms (``sum by (le)``) or as a counter by a label
(``sum by (by)``); PSI, Jensen-Shannon distance, KS or chi-square (``stats.drift``)
measure the shift, and the gate's min or max limits it. ``judge_drift`` is pure and
shared with ``modelrollout analyze``.
"""

from __future__ import annotations

import math

from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
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


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    return common.window_or_interval(ctx, _spec(gate).window)


def judge_drift(
    name: str,
    reference: stats.Counts,
    candidate: stats.Counts,
    method: stats.DriftMethod,
    min_samples: int,
    limits: common.Limits,
    *,
    context: str = "",
) -> GateResult:
    """The verdict on two count vectors on the same bins (pure).

    The value is the statistic (PSI, JS distance, KS D), or the p-value for chi2 and for
    ks gated with a min only. Too few observations on a side is inconclusive, with the
    smaller side's count as samples. ``DistributionMismatch`` for malformed counts.
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
    lo, hi = limits
    use_p = method == "chi2" or (method == "ks" and lo is not None and hi is None)
    value = r.p_value if use_p and r.p_value is not None else r.value
    text = f"{method} {r.value:.6g}"
    if r.p_value is not None:
        text += f", p-value {r.p_value:.4g}"
    return common.gate_result(
        name,
        common.within(value, limits),
        value=value,
        reason=f"{text}; {counts}{where}",
        limits=limits,
        samples=samples,
        needed=min_samples,
    )


def drift_queries(d: DriftGate, ctx: common.GateContext) -> tuple[str, str]:
    """(reference, candidate) PromQL of a drift gate, with the rollout's values filled in."""
    win = common.window_or_interval(ctx, d.window)

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
        gate.name, ref, cand, d.method, d.min_samples, common.own_limits(gate), context=against
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
    p_value = d.method == "chi2" or (d.method == "ks" and gate.max is None)
    measure = f"{d.method} p-value" if p_value else d.method
    return f"{measure} {common.min_max_text(common.own_limits(gate))}"
