"""ML gates: judge a model as an ML engineer would.

Gate kinds (``MetricGate`` fields; formulas, defaults and limits in docs/analysis.md):

- ``nullRate``:  null outputs / requests, a threshold like ``errorRate``;
- ``drift``:     the candidate's input or output distribution against stable's (or a
  baseline window), by PSI, Jensen-Shannon distance, KS or chi-square;
- ``agreement``: the Wilson lower bound of the share of shadow pairs that agree;
- ``compare``:   candidate against stable on one metric: a Mann-Whitney judge on
  per-step values, or a sequential test (mSPRT) on cumulative counters;
- ``score``:     a Kayenta-style weighted score over several Mann-Whitney comparisons;
- ``accuracy``:  late-label accuracy, candidate against stable, with a margin;
- ``minSamples`` (any gate): too few requests to the candidate is inconclusive.

Each evaluator asks the metric source a few PromQL queries, hands the numbers to the
pure functions in ``stats.py`` and turns the answer into a ``GateResult`` with value,
limit (min/max), samples, neededSamples, verdict and reason. As for threshold gates, a
measurement problem (no data, too little data, differing bucket edges, an unreachable
Prometheus) is an *inconclusive* verdict, never an exception.

The judging functions (``judge_drift``, ``judge_agreement``, ``judge_accuracy``) are
pure and shared with ``modelrollout analyze``.

Two gates need facts from the rollout's status (``GateContext``): ``stage_seconds``
for windows that run since the stage start (``accuracy``, ``compare``, ``score``), and
``previous`` for the mSPRT's always-valid p-value, which must survive between checks.
``stage_seconds()`` and ``previous_results()`` compute both from the status.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from modelrollout.analysis import stats
from modelrollout.analysis.gates import Evaluator, GateContext, render
from modelrollout.analysis.source import MetricSource, Sample, SourceError
from modelrollout.api.base import parse_duration
from modelrollout.api.gates import (
    METRIC_NAME_PATTERN,
    AccuracyGate,
    AgreementGate,
    CompareGate,
    DriftGate,
    MetricGate,
)
from modelrollout.api.status import GateResult, ModelRolloutStatus, Verdict
from modelrollout.engine.decide import parse_ts

__all__ = [
    "DEFAULT_DRIFT_LIMITS",
    "RangeSource",
    "agreement_queries",
    "drift_queries",
    "evaluator_for",
    "judge_accuracy",
    "judge_agreement",
    "judge_drift",
    "newcombe_difference",
    "previous_results",
    "stage_seconds",
]

#: The limit ``modelrollout analyze`` applies when none is given: (min, max).
#: PSI 0.1 is the usual "moderate shift" line; JS distance 0.1 and KS D 0.1 are shifts of
#: similar size; chi-square is gated on its p-value.
DEFAULT_DRIFT_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "psi": (None, 0.1),
    "js": (None, 0.1),
    "ks": (None, 0.1),
    "chi2": (0.01, None),
}
REQUESTS_METRIC = "model_requests_total"
NULL_OUTPUTS_METRIC = "model_null_outputs_total"
_BARE_METRIC = re.compile(METRIC_NAME_PATTERN)


@runtime_checkable
class RangeSource(Protocol):
    """A metric source that can also answer range queries (``PrometheusSource`` does)."""

    def range(self, query: str, seconds: float, step: float) -> list[float]: ...


class _NoVerdict(Exception):
    """Raised inside an evaluator: the check is inconclusive, for this reason."""

    def __init__(
        self,
        reason: str,
        *,
        value: float | None = None,
        samples: float | None = None,
        needed: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value
        self.samples = samples
        self.needed = needed


# ----------------------------------------------------------------------- status facts


def stage_seconds(status: ModelRolloutStatus, now: datetime) -> float:
    """Seconds since the current stage started (0 when unknown), for ``GateContext``."""
    started = parse_ts(status.stage_started_at)
    return 0.0 if started is None else max(0.0, (now - started).total_seconds())


def previous_results(status: ModelRolloutStatus) -> list[GateResult]:
    """Results of the checks run in the current stage, newest first, for ``GateContext``.

    Only checks of the current stage count: a new stage (or a new candidate, which starts
    a new stage) starts every sequential test afresh.
    """
    started = status.stage_started_at or ""
    out: list[GateResult] = []
    for run in reversed(status.analysis_ledger):
        if run.stage == status.stage and run.at >= started:
            out.extend(run.results)
    return out


# ----------------------------------------------------------------------- small helpers


def _limits(gate: MetricGate) -> tuple[float | None, float | None]:
    """The limit a result shows: the gate's, or the one a judge carries itself."""
    if gate.compare is not None:
        return (gate.compare.alpha, None) if gate.compare.mode == "msprt" else (None, None)
    if gate.score is not None:
        return gate.score.pass_score, None
    if gate.accuracy is not None:
        return -gate.accuracy.max_drop, None
    return gate.min, gate.max


def _count(n: float | None) -> float | None:
    """Counts from ``increase()`` are extrapolated: keep them whole in the status."""
    return None if n is None else float(round(n))


def _make(
    gate: MetricGate,
    verdict: Verdict,
    value: float | None,
    reason: str | None,
    samples: float | None = None,
    needed: float | None = None,
) -> GateResult:
    lo, hi = _limits(gate)
    return GateResult(
        metric=gate.name,
        value=value,
        min=lo,
        max=hi,
        verdict=verdict,
        reason=reason,
        samples=_count(samples),
        needed_samples=_count(needed),
    )


def _within(value: float, lo: float | None, hi: float | None) -> Verdict:
    if lo is not None and value < lo:
        return Verdict.FAIL
    if hi is not None and value > hi:
        return Verdict.FAIL
    return Verdict.PASS


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _selector(matchers: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in matchers.items()) + "}"


def _version_selector(ctx: GateContext, role: str, label: str = "version") -> str:
    return _selector({"model": ctx.model, label: ctx.variables(role)["version"]})


def _seconds_text(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def _promql_duration(text: str) -> str:
    """A manifest duration as PromQL reads it: PromQL has no fractions (``1.5h``)."""
    if re.fullmatch(r"([0-9]+(ms|s|m|h))+", text):
        return text
    return _seconds_text(parse_duration(text))


def _since_stage(ctx: GateContext, override: str | None) -> str:
    """A window: the override, else since the stage start, else the analysis interval."""
    if override:
        return _promql_duration(override)
    if ctx.stage_seconds >= 1:
        return _seconds_text(ctx.stage_seconds)
    return _promql_duration(ctx.interval)


def _window_or_interval(ctx: GateContext, window: str | None) -> str:
    return _promql_duration(window or ctx.interval)


def gate_window(gate: MetricGate, ctx: GateContext) -> str:
    """The window a gate measures over; ``minSamples`` counts requests in it."""
    if gate.drift is not None:
        return _window_or_interval(ctx, gate.drift.window)
    if gate.agreement is not None:
        return _window_or_interval(ctx, gate.agreement.window)
    if gate.accuracy is not None:
        return _since_stage(ctx, gate.accuracy.window)
    if gate.compare is not None:
        return _since_stage(ctx, gate.compare.window)
    if gate.score is not None:
        return _since_stage(ctx, gate.score.window)
    return _promql_duration(ctx.interval)


def _ask(source: MetricSource, promql: str) -> list[Sample]:
    try:
        return source.instant(promql)
    except SourceError as exc:
        raise _NoVerdict(f"unreachable: {exc}") from exc


def _scalar(source: MetricSource, promql: str, what: str, default: float | None = None) -> float:
    """One number from an instant query; ``default`` for no data (absent counters)."""
    samples = _ask(source, promql)
    if not samples:
        if default is not None:
            return default
        raise _NoVerdict(f"no data for {what}")
    if len(samples) > 1:
        raise _NoVerdict(f"{what}: {len(samples)} series returned; aggregate with sum")
    value = samples[0].value
    if not math.isfinite(value):
        raise _NoVerdict(f"{what} is {value}")
    return value


def _guarded(fn: Evaluator) -> Evaluator:
    """Turn every measurement problem inside an evaluator into an inconclusive result."""

    @functools.wraps(fn)
    def run(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
        try:
            return fn(gate, source, ctx)
        except _NoVerdict as exc:
            return _make(gate, Verdict.INCONCLUSIVE, exc.value, exc.reason, exc.samples, exc.needed)
        except stats.DistributionMismatch as exc:
            return _make(gate, Verdict.INCONCLUSIVE, None, f"DistributionMismatch: {exc}")
        except (ValueError, ArithmeticError) as exc:  # TemplateError is a ValueError
            return _make(gate, Verdict.INCONCLUSIVE, None, str(exc))

    return run


# ----------------------------------------------------------------------- nullRate


def null_rate_query(gate: MetricGate) -> str:
    """The template of a ``nullRate`` gate: null outputs over all requests."""
    assert gate.null_rate is not None
    nulls = gate.null_rate.metric or NULL_OUTPUTS_METRIC
    sel = '{model="{{model}}",version="{{version}}"}'
    return (
        f"sum(rate({nulls}{sel}[{{{{interval}}}}])) / "
        f"sum(rate({REQUESTS_METRIC}{sel}[{{{{interval}}}}]))"
    )


def _null_rate(threshold: Evaluator) -> Evaluator:
    def run(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
        as_query = gate.model_copy(update={"query": null_rate_query(gate), "null_rate": None})
        return threshold(as_query, source, ctx)

    return run


# ----------------------------------------------------------------------- drift


def judge_drift(
    name: str,
    reference: stats.Counts,
    candidate: stats.Counts,
    method: stats.DriftMethod,
    min_samples: int,
    lo: float | None,
    hi: float | None,
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
        return GateResult(
            metric=name,
            min=lo,
            max=hi,
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{r.reason}; {counts}{where}",
            samples=_count(samples),
            needed_samples=float(min_samples),
        )
    use_p = method == "chi2" or (method == "ks" and lo is not None and hi is None)
    value = r.p_value if use_p and r.p_value is not None else r.value
    text = f"{method} {r.value:.6g}"
    if r.p_value is not None:
        text += f", p-value {r.p_value:.4g}"
    return GateResult(
        metric=name,
        value=value,
        min=lo,
        max=hi,
        verdict=_within(value, lo, hi),
        reason=f"{text}; {counts}{where}",
        samples=_count(samples),
        needed_samples=float(min_samples),
    )


def drift_queries(d: DriftGate, ctx: GateContext) -> tuple[str, str]:
    """(reference, candidate) PromQL of a drift gate, with the rollout's values filled in."""
    window = _window_or_interval(ctx, d.window)

    def query(role: str, win: str, offset: str | None) -> str:
        variables = ctx.variables(role)
        matchers = {"model": ctx.model}
        matchers.update({k: render(v, variables) for k, v in (d.labels or {}).items()})
        matchers[d.version_label] = variables["version"]
        if d.metric is not None:
            series, by = f"{d.metric}_bucket{_selector(matchers)}", "le"
        else:
            assert d.counter is not None
            assert d.by is not None
            series, by = f"{d.counter}{_selector(matchers)}", d.by
        shift = f" offset {offset}" if offset else ""
        return f"sum by ({by}) (increase({series}[{win}]{shift}))"

    if d.against == "baseline":
        offset = _promql_duration(d.baseline_offset) if d.baseline_offset else None
        reference = query("stable", _promql_duration(d.baseline_window), offset)
    else:
        reference = query("stable", window, None)
    return reference, query("candidate", window, None)


def _histogram(samples: list[Sample], side: str) -> stats.Binned:
    buckets: dict[str | float, float] = {}
    for s in samples:
        le = s.labels.get("le")
        if le is None:
            raise _NoVerdict(f"{side}: a series without an le label: is the metric a histogram?")
        if not math.isfinite(s.value):
            raise _NoVerdict(f"{side}: bucket le={le} is {s.value}")
        buckets[le] = s.value
    return stats.bins_from_cumulative(buckets)


def _categories(samples: list[Sample], by: str, side: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in samples:
        if not math.isfinite(s.value):
            raise _NoVerdict(f"{side}: count of {by}={s.labels.get(by, '')!r} is {s.value}")
        key = s.labels.get(by, "")
        out[key] = out.get(key, 0.0) + s.value
    return out


@_guarded
def evaluate_drift(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    d = gate.drift
    assert d is not None
    ref_q, cand_q = drift_queries(d, ctx)
    ref_samples, cand_samples = _ask(source, ref_q), _ask(source, cand_q)
    for side, answer, promql in (
        ("reference", ref_samples, ref_q),
        ("candidate", cand_samples, cand_q),
    ):
        if not answer:
            raise _NoVerdict(f"no data for the {side}: {promql}")
    if d.metric is not None:
        aligned = stats.align(
            _histogram(ref_samples, "reference"), _histogram(cand_samples, "candidate")
        )
        ref, cand = list(aligned.reference), list(aligned.candidate)
    else:
        assert d.by is not None
        r = _categories(ref_samples, d.by, "reference")
        c = _categories(cand_samples, d.by, "candidate")
        keys = sorted(set(r) | set(c))
        ref, cand = [r.get(k, 0.0) for k in keys], [c.get(k, 0.0) for k in keys]
    if d.against == "baseline":
        offset = f", {d.baseline_offset} ago" if d.baseline_offset else ""
        against = f"baseline: {ctx.stable_version} over {d.baseline_window}{offset}"
    else:
        against = f"against {ctx.stable_version}"
    return judge_drift(
        gate.name, ref, cand, d.method, d.min_samples, gate.min, gate.max, context=against
    )


# ----------------------------------------------------------------------- agreement


def judge_agreement(
    name: str,
    agree: float,
    disagree: float,
    unpaired: float,
    opts: AgreementGate,
    lo: float | None,
    hi: float | None = None,
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
        return GateResult(
            metric=name,
            min=lo,
            max=hi,
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{a.reason} ({agree:.0f} agree, {disagree:.0f} disagree, "
            f"{unpaired:.0f} unpaired)",
            samples=_count(a.n) if gathering else None,
            needed_samples=float(opts.min_pairs) if gathering else None,
        )
    reason = (
        f"agreement {a.rate:.4f} ({agree:.0f} of {a.n:.0f} pairs), "
        f"{opts.confidence:.0%} interval [{a.lower:.4f}, {a.upper:.4f}], "
        f"unpaired {a.unpaired_fraction or 0:.1%}"
    )
    return GateResult(
        metric=name,
        value=a.lower,
        min=lo,
        max=hi,
        verdict=_within(a.lower, lo, hi),
        reason=reason,
        samples=_count(a.n),
        needed_samples=float(opts.min_pairs),
    )


def agreement_queries(a: AgreementGate, ctx: GateContext) -> tuple[str, str]:
    """(comparisons by result, unpaired) PromQL of an agreement gate."""
    window = _window_or_interval(ctx, a.window)
    pair = _selector(
        {
            "model": ctx.model,
            "stable_version": ctx.stable_version,
            "candidate_version": ctx.candidate_version,
        }
    )
    alone = _selector({"model": ctx.model, "candidate_version": ctx.candidate_version})
    return (
        f"sum by (result) (increase({a.comparisons}{pair}[{window}]))",
        f"sum(increase({a.unpaired}{alone}[{window}]))",
    )


@_guarded
def evaluate_agreement(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    a = gate.agreement
    assert a is not None
    comparisons_q, unpaired_q = agreement_queries(a, ctx)
    by_result = _categories(_ask(source, comparisons_q), "result", "comparisons")
    if not by_result:
        raise _NoVerdict(
            f"no shadow comparisons of {ctx.candidate_version} with {ctx.stable_version}: "
            "is the candidate mirrored, and does the shadow comparer run?"
        )
    unpaired = _scalar(source, unpaired_q, "unpaired requests", default=0.0)
    agree, disagree = by_result.get("agree", 0.0), by_result.get("disagree", 0.0)
    return judge_agreement(
        gate.name, max(0.0, agree), max(0.0, disagree), max(0.0, unpaired), a, gate.min, gate.max
    )


# ----------------------------------------------------------------------- compare


def _template_variables(ctx: GateContext, role: str, **extra: str) -> dict[str, str]:
    return {**ctx.variables(role), **extra}


def _points(
    source: MetricSource, template: str, ctx: GateContext, role: str, window: float, step: float
) -> list[float]:
    if not isinstance(source, RangeSource):
        raise _NoVerdict("the metric source cannot answer range queries")
    promql = render(
        template,
        _template_variables(ctx, role, window=_seconds_text(window), step=_seconds_text(step)),
    )
    try:
        return source.range(promql, window, step)
    except SourceError as exc:
        raise _NoVerdict(f"unreachable: {exc}") from exc


def _mann_whitney(
    source: MetricSource,
    ctx: GateContext,
    template: str,
    direction: stats.Direction,
    *,
    confidence: float,
    effect_tolerance: float,
    min_points: int,
    window: str,
    step: str,
) -> stats.MetricComparison:
    seconds, step_s = parse_duration(window), parse_duration(step)
    probe = _template_variables(ctx, "candidate", window="w", step="s")
    if render(template, probe) == render(template, {**probe, **ctx.variables("stable")}):
        raise _NoVerdict(
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


def _describe(c: stats.MetricComparison) -> str:
    if c.classification == "NoData":
        return c.reason or "no data"
    assert c.hodges_lehmann is not None
    assert c.p_value is not None
    return (
        f"candidate median {c.experiment_median:.4g} vs stable {c.control_median:.4g}: "
        f"shift {c.hodges_lehmann:+.4g}, p-value {c.p_value:.3g} over "
        f"{c.n_experiment}/{c.n_control} points: {c.classification}"
    )


def _evaluate_mann_whitney(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    c = gate.compare
    assert c is not None
    assert c.query is not None
    result = _mann_whitney(
        source,
        ctx,
        c.query,
        c.direction,
        confidence=c.confidence,
        effect_tolerance=c.effect_tolerance,
        min_points=c.min_points,
        window=_since_stage(ctx, c.window),
        step=c.step,
    )
    samples = min(result.n_control, result.n_experiment)
    if result.classification == "NoData":
        if samples == 0:
            raise _NoVerdict(f"no data: {_describe(result)}")
        raise _NoVerdict(_describe(result), samples=samples, needed=c.min_points)
    verdict = Verdict.FAIL if result.failed else Verdict.PASS
    return _make(
        gate, verdict, result.hodges_lehmann, _describe(result), samples, float(c.min_points)
    )


def _counter(expr: str, ctx: GateContext, role: str, window: str) -> str:
    """A bare counter name becomes ``sum(increase(name{model,version}[window]))``."""
    if _BARE_METRIC.fullmatch(expr):
        return f"sum(increase({expr}{_version_selector(ctx, role)}[{window}]))"
    return render(expr, _template_variables(ctx, role, window=window))


def _previous_p(gate: MetricGate, ctx: GateContext) -> float | None:
    for r in ctx.previous:
        if r.metric == gate.name and r.value is not None and 0.0 <= r.value <= 1.0:
            return r.value
    return None


def _summary(
    c: CompareGate, source: MetricSource, ctx: GateContext, role: str, window: str
) -> stats.Summary:
    def read(expr: str | None, what: str, absent: float | None = 0.0) -> float:
        assert expr is not None
        return _scalar(source, _counter(expr, ctx, role, window), f"{what} of {role}", absent)

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


def _evaluate_msprt(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    c = gate.compare
    assert c is not None
    assert c.tau is not None
    previous = _previous_p(gate, ctx)
    window = _since_stage(ctx, None)
    try:
        control = _summary(c, source, ctx, "stable", window)
        experiment = _summary(c, source, ctx, "candidate", window)
    except _NoVerdict as exc:
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
    samples = min(r.n_control, r.n_experiment)
    if r.decision == "reject":
        verdict = Verdict.FAIL
    elif r.statistic is None and r.reason and r.reason.startswith("burn-in"):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS  # no evidence of harm so far; zero variance too
    return _make(gate, verdict, r.always_valid_p, reason, samples, float(c.burn_in))


@_guarded
def evaluate_compare(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    assert gate.compare is not None
    if gate.compare.mode == "msprt":
        return _evaluate_msprt(gate, source, ctx)
    return _evaluate_mann_whitney(gate, source, ctx)


# ----------------------------------------------------------------------- score


@_guarded
def evaluate_score(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    sg = gate.score
    assert sg is not None
    window = _since_stage(ctx, sg.window)
    scored: list[stats.ScoredMetric] = []
    for m in sg.metrics:
        try:
            comparison = _mann_whitney(
                source,
                ctx,
                m.query,
                m.direction,
                confidence=sg.confidence,
                effect_tolerance=m.effect_tolerance,
                min_points=sg.min_points,
                window=window,
                step=sg.step,
            )
        except (_NoVerdict, ValueError) as exc:
            why = exc.reason if isinstance(exc, _NoVerdict) else str(exc)
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
                f"{m.name} ({_describe(m.comparison)})"
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
        return _make(gate, verdict, None, "; ".join(parts), min(points), sg.min_points)
    return _make(gate, verdict, run.score, "; ".join(parts))


# ----------------------------------------------------------------------- accuracy


def newcombe_difference(
    x1: float, n1: float, x2: float, n2: float, confidence: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2`` (from the Wilson intervals).

    Newcombe (1998), method 10: better coverage than the Wald interval near 0 and 1,
    where accuracies live.
    """
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = stats.wilson_interval(x1, n1, confidence)
    l2, u2 = stats.wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def judge_accuracy(
    name: str,
    candidate: tuple[float, float],
    stable: tuple[float, float],
    opts: AccuracyGate,
) -> GateResult:
    """A non-inferiority verdict on (correct, labelled) of candidate and stable (pure).

    With ``[lo, hi]`` the one-sided ``confidence`` bounds of candidate - stable accuracy:
    Pass when ``lo >= -maxDrop`` (the drop is shown to be within the margin), Fail when
    ``hi < -maxDrop`` (the drop is shown to exceed it), else Inconclusive (more labels
    needed). Fewer than ``minLabels`` on a side is inconclusive. The value is ``lo``.
    """
    limit = -opts.max_drop
    (x1, n1), (x2, n2) = candidate, stable
    n1, n2 = max(0.0, n1), max(0.0, n2)
    x1, x2 = min(max(0.0, x1), n1), min(max(0.0, x2), n2)
    samples = min(n1, n2)
    if samples < opts.min_labels:
        return GateResult(
            metric=name,
            min=limit,
            verdict=Verdict.INCONCLUSIVE,
            reason=f"waiting for labels: candidate {n1:.0f}, stable {n2:.0f} "
            f"(need {opts.min_labels} each)",
            samples=_count(samples),
            needed_samples=float(opts.min_labels),
        )
    lo, hi = newcombe_difference(x1, n1, x2, n2, 2 * opts.confidence - 1)
    p1, p2 = x1 / n1, x2 / n2
    reason = (
        f"accuracy {p1:.4f} ({n1:.0f} labels) vs stable {p2:.4f} ({n2:.0f}): "
        f"difference {p1 - p2:+.4f}, {opts.confidence:.0%} bounds [{lo:+.4f}, {hi:+.4f}], "
        f"allowed drop {opts.max_drop:g}"
    )
    if lo >= limit:
        verdict = Verdict.PASS
    elif hi < limit:
        verdict = Verdict.FAIL
        reason += ": the drop exceeds it"
    else:
        verdict = Verdict.INCONCLUSIVE
        reason += ": not yet shown to be within it (more labels needed)"
    return GateResult(
        metric=name,
        value=lo,
        min=limit,
        verdict=verdict,
        reason=reason,
        samples=_count(samples),
        needed_samples=float(opts.min_labels),
    )


@_guarded
def evaluate_accuracy(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    a = gate.accuracy
    assert a is not None
    window = _since_stage(ctx, a.window)

    def read(metric: str, role: str, absent: float | None) -> float:
        promql = f"sum(increase({metric}{_version_selector(ctx, role)}[{window}]))"
        return _scalar(source, promql, f"{metric} of {role}", absent)

    # No labelled series is no data (counted); zero labels so far is gathering evidence.
    candidate = (read(a.correct, "candidate", 0.0), read(a.labelled, "candidate", None))
    stable = (read(a.correct, "stable", 0.0), read(a.labelled, "stable", None))
    return judge_accuracy(gate.name, candidate, stable, a)


# ----------------------------------------------------------------------- dispatch


def _with_min_samples(inner: Evaluator) -> Evaluator:
    def run(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
        needed = gate.min_samples
        assert needed is not None
        window = gate_window(gate, ctx)
        promql = f"sum(increase({REQUESTS_METRIC}{_version_selector(ctx, 'candidate')}[{window}]))"
        try:
            n = _scalar(source, promql, "requests to the candidate")
        except _NoVerdict as exc:
            return _make(gate, Verdict.INCONCLUSIVE, None, exc.reason)
        if n < needed:
            return _make(
                gate,
                Verdict.INCONCLUSIVE,
                None,
                f"not enough requests to the candidate: {n:.0f} < {needed} in {window}",
                n,
                needed,
            )
        result = inner(gate, source, ctx)
        if result.samples is None:
            result = result.model_copy(
                update={"samples": _count(n), "needed_samples": float(needed)}
            )
        return result

    return run


_KINDS: tuple[tuple[str, Evaluator], ...] = (
    ("drift", evaluate_drift),
    ("agreement", evaluate_agreement),
    ("compare", evaluate_compare),
    ("score", evaluate_score),
    ("accuracy", evaluate_accuracy),
)


def evaluator_for(gate: MetricGate, *, threshold: Evaluator) -> Evaluator:
    """The evaluator of a gate's kind (``threshold`` for query and threshold built-ins)."""
    evaluator: Evaluator = threshold
    if gate.null_rate is not None:
        evaluator = _null_rate(threshold)
    for field, kind_evaluator in _KINDS:
        if getattr(gate, field) is not None:
            evaluator = kind_evaluator
    if gate.min_samples is not None:
        evaluator = _with_min_samples(evaluator)
    return evaluator
