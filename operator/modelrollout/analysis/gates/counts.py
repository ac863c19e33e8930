"""The threshold kinds as anytime-valid tests on counts since the stage start.

``errorRate``, ``nullRate``, ``latency``, ``throughput`` and ``query`` used to hold one
interval's value to a limit: a healthy candidate near its limit then fails some share of
checks, and checking every interval turns that share into a likely rollback. Here each
(gate, stage) is one sequential test at the gate's level ``alpha`` (its share of
``falseRollbackBudget``) on the counts gathered since the stage started, with three
outcomes (docs/analysis.md, "Threshold gates"):

- **Pass**: the confidence sequence (CS) lies wholly on the good side of the limit;
- **Fail**: it lies wholly on the bad side;
- **Inconclusive**: it straddles the limit; ``samples``/``neededSamples`` say how many
  requests (checks, for ``query``) there are and about how many would decide at the
  current rate, so the engine holds the rollout as "waiting for evidence" without
  counting the check towards ``inconclusiveLimit``.

A CS at level ``1 - alpha`` misses the truth at any look with probability at most
``alpha`` (``analysis.sequential``), so neither a false Fail nor a false Pass has more
than ``alpha``, however often the gate is checked.

Every ``judge_*`` function is pure and shared by the kind modules and
``modelrollout analyze``, so both give one verdict for the same counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from modelrollout.analysis import sequential as sq
from modelrollout.analysis import stats
from modelrollout.analysis.gates import common
from modelrollout.analysis.gates import shown as shown_kinds
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult, Verdict

Bools = NDArray[np.bool_]
Floats = NDArray[np.float64]

#: The search for ``neededSamples`` looks as far as the ML kinds' (``shown``).
NEEDED_HORIZON = shown_kinds.NEEDED_HORIZON
#: The search steps by x1.5 up to the horizon, then by about x1.04 within the step.
_COARSE = 1.5
_FINE = 10

_VERDICT = shown_kinds.VERDICT
_SAYS = {
    sq.Shown.GOOD: "shown within the limit",
    sq.Shown.BAD: "shown outside the limit",
    sq.Shown.NOT_YET: "not yet shown",
}


# ----------------------------------------------------------------------- three ways


def shown_many(lower: Floats, upper: Floats, limits: common.Limits) -> tuple[Bools, Bools]:
    """(good, bad) per interval: good when every limit holds, bad when one is broken.

    ``max``: good when ``upper <= max``, bad when ``lower > max``; ``min``: good when
    ``lower >= min``, bad when ``upper < min`` (as ``sequential.judge_*_limit``).
    """
    lo, hi = limits
    good = np.ones(np.shape(lower), dtype=bool)
    bad = np.zeros(np.shape(lower), dtype=bool)
    if hi is not None:
        good &= upper <= hi
        bad |= lower > hi
    if lo is not None:
        good &= lower >= lo
        bad |= upper < lo
    return good & ~bad, bad


def shown(interval: sq.Interval, limits: common.Limits) -> sq.Shown:
    good, bad = shown_many(np.array([interval.lower]), np.array([interval.upper]), limits)
    return sq.Shown.BAD if bad[0] else sq.Shown.GOOD if good[0] else sq.Shown.NOT_YET


def needed(decides: Callable[[Floats], Bools], n: float) -> float | None:
    """About how much data (in the units of ``n``) decides if the current rate holds on.

    ``decides(sizes)`` says, for data sizes larger than ``n`` with the same plug-in rate,
    whether the CS would then decide. The first size on a geometric grid (steps of
    about 4 %) that does, at least ``n + 1``; None when none up to ``NEEDED_HORIZON``
    times ``n`` does (a truth at the limit is never shown either way). An estimate for
    the status, never a verdict.
    """
    base = max(n, 1.0)
    steps = math.ceil(math.log(NEEDED_HORIZON) / math.log(_COARSE))
    coarse = np.asarray(base * _COARSE ** np.arange(1, steps + 1), dtype=np.float64)
    ok = decides(coarse)
    if not ok.any():
        return None
    first = int(np.argmax(ok))
    below = coarse[first - 1] if first else base
    fine = np.asarray(np.geomspace(below, coarse[first], _FINE + 1)[1:], dtype=np.float64)
    size = float(fine[int(np.argmax(decides(fine)))])
    return float(max(n + 1, math.ceil(size)))


def level_text(alpha: float) -> str:
    """``99.67%`` for ``alpha`` 0.0033: the CS's level as the reason shows it."""
    return f"{100 * (1 - alpha):.4g}%"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _span(lower: float, upper: float) -> str:
    return f"[{_fmt(lower)}, {_fmt(upper)}]"


def _against(limits: common.Limits) -> str:
    """``<= 0.01``, ``>= 0.5``, ``>= 0.5 and <= 2``."""
    lo, hi = limits
    parts = [f">= {lo:g}"] if lo is not None else []
    parts += [f"<= {hi:g}"] if hi is not None else []
    return " and ".join(parts)


def _result(
    name: str,
    outcome: sq.Shown,
    *,
    value: float | None,
    interval: sq.Interval,
    alpha: float,
    limits: common.Limits,
    reason: str,
    samples: float,
    need: Callable[[], float | None],
    unit: str,
) -> GateResult:
    """The gate's result: ``needed`` only while not yet shown (the engine then waits).

    Not yet shown is always "waiting for evidence" (``samples < neededSamples``), never
    missing data: when no amount of data within the horizon would decide (the rate sits
    at the limit), ``neededSamples`` is that horizon and the reason says so.
    """
    more = None
    if outcome == sq.Shown.NOT_YET:
        more = need()
        if samples <= 0:
            more = more or 1.0
            reason += f" (no {unit} so far)"
        elif more is None:
            more = samples * NEEDED_HORIZON
            reason += (
                f" ({samples:.0f} {unit} so far; at this rate not even "
                f"{NEEDED_HORIZON:g} times as many would decide: it sits at the limit)"
            )
        else:
            reason += f" (needs more {unit}: about {more:.0f} would decide at this rate, "
            reason += f"{samples:.0f} so far)"
    result = common.gate_result(
        name,
        _VERDICT[outcome],
        value=value,
        reason=reason,
        limits=limits,
        samples=samples,
        needed=more,
    )
    return result.model_copy(
        update={"lower": interval.lower, "upper": interval.upper, "alpha": alpha}
    )


def prior_for(limits: common.Limits) -> sq.Prior:
    """The Beta prior of a share test: centred on the limit (``max`` first), fixed before data."""
    lo, hi = limits
    limit = hi if hi is not None else lo
    return sq.DEFAULT_BETA_PRIOR if limit is None else sq.beta_prior_at(limit)


# ----------------------------------------------------------------------- shares


def judge_share(
    name: str,
    events: float,
    trials: float,
    limits: common.Limits,
    alpha: float,
    *,
    what: str = "error rate",
    window: str = "",
) -> GateResult:
    """``events`` of ``trials`` (errors of requests) against a limit on their share.

    ``binomial_cs`` with the Beta prior centred on the limit (``beta_prior_at``). Pass
    when the CS is wholly within the limits, Fail when wholly outside one; the value is
    the plug-in share. Zero trials is no data (Inconclusive, counted by the engine).
    """
    trials = max(0.0, trials)
    events = min(max(0.0, events), trials)
    if trials <= 0:
        since = f" in the last {window}" if window else ""
        raise common.NoVerdict(f"no requests to the candidate{since}")
    prior = prior_for(limits)
    interval = sq.binomial_cs(events, trials, alpha, prior=prior)
    outcome = shown(interval, limits)
    share = events / trials

    def need() -> float | None:
        def decides(sizes: Floats) -> Bools:
            lo, hi = sq.binomial_cs_many(share * sizes, sizes, alpha, prior=prior)
            good, bad = shown_many(lo, hi, limits)
            return good | bad

        return needed(decides, trials)

    reason = (
        f"{what} {_fmt(share)} ({events:.0f} of {trials:.0f}), {level_text(alpha)} anytime CS "
        f"{_span(*interval)} {_against(limits)}: {_SAYS[outcome]}"
    )
    return _result(
        name,
        outcome,
        value=share,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=trials,
        need=need,
        unit="requests",
    )


def window(gate: MetricGate, ctx: common.GateContext) -> str:
    """The window of every count test: since the stage start (else the interval)."""
    return common.since_stage(ctx, None)


def evaluate_share(
    gate: MetricGate, source: MetricSource, ctx: common.GateContext, *, events: str, what: str
) -> GateResult:
    """Read the candidate's events and requests since the stage start; judge their share.

    ``sum(increase(<events>{model,version}[<stage age>]))`` over the same of
    ``model_requests_total``. No series of either is no data: the metric conventions
    create both counters at 0, so a missing one is a wrong name, not "no errors yet".
    Call it from a ``guarded`` evaluator.
    """
    win = window(gate, ctx)
    sel = common.version_selector(ctx, "candidate")
    n = common.scalar(
        source, f"sum(increase({common.REQUESTS_METRIC}{sel}[{win}]))", "requests to the candidate"
    )
    x = common.scalar(source, f"sum(increase({events}{sel}[{win}]))", events)
    return judge_share(gate.name, x, n, common.own_limits(gate), ctx.alpha, what=what, window=win)


# ----------------------------------------------------------------------- latency


def histogram_quantile(q: float, edges: Sequence[float], counts: Sequence[float]) -> float:
    """The plug-in ``q``-quantile of per-bucket counts, interpolated as Prometheus does.

    In the first bucket whose cumulative count reaches rank ``q * total``: linear between
    its lower bound (0 for the first bucket when its bound is positive) and its bound;
    in the ``+Inf`` bucket, the largest finite bound. No observations: NaN.
    """
    total = float(sum(counts))
    if total <= 0:
        return math.nan
    rank = q * total
    below, lower_edge = 0.0, 0.0
    for i, (edge, c) in enumerate(zip(edges, counts, strict=True)):
        if below + c >= rank:
            if math.isinf(edge):
                return lower_edge
            if (i == 0 and edge <= 0) or c <= 0:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - below) / c
        below += c
        lower_edge = edge
    return lower_edge


def tail_interval(
    limit: float,
    edges: Sequence[float],
    cumulative: Sequence[float],
    total: float,
    alpha: float,
    prior: sq.Prior,
    scale: float | Floats = 1.0,
) -> tuple[Floats, Floats]:
    """A CS for the share of requests slower than ``limit``, from two boundaries.

    The lower end is the CS's lower end for the share above ``b_hi`` (the smallest
    boundary ``>= limit``: that share is at most the one above the limit), the upper end
    the CS's upper end for the share above ``b_lo`` (the largest ``<= limit``: at least
    it); ``resolve_bucket`` picks them and raises ``UnresolvableLimit`` when a side has
    none. ``scale`` multiplies every count (the ``neededSamples`` search).
    """
    b_lo, b_hi = sq.resolve_bucket(limit, edges)
    at = dict(zip(edges, cumulative, strict=True))
    above_lo, above_hi = total - at[b_lo], total - at[b_hi]
    s = np.atleast_1d(np.asarray(scale, dtype=float))
    lower, _ = sq.binomial_cs_many(above_hi * s, total * s, alpha, prior=prior)
    _, upper = sq.binomial_cs_many(above_lo * s, total * s, alpha, prior=prior)
    return lower, upper


def judge_latency(
    name: str,
    buckets: Mapping[str, float],
    quantile: float,
    limits: common.Limits,
    alpha: float,
    *,
    window: str = "",
) -> GateResult:
    """A latency quantile limit, judged on the share of requests slower than the limit.

    "The ``q``-quantile is at most ``L``" is "at most ``1 - q`` of requests are slower
    than ``L``". ``buckets`` are cumulative ``le`` counts since the stage start. The CS
    for the share slower than ``L`` comes from the boundaries next to ``L``
    (``tail_interval``); ``max: L`` passes when its upper end is ``<= 1 - q`` and fails
    when its lower end is ``> 1 - q``; ``min: L`` the other way round. ``lower`` and
    ``upper`` of the result are that share's CS (of the ``max`` limit when both are
    set); the value is the plug-in quantile in seconds, so users still see seconds.
    A limit no pair of boundaries brackets is Inconclusive, naming the buckets.
    """
    by_le: dict[str | float, float] = dict(buckets.items())
    binned = stats.bins_from_cumulative(by_le)
    if not binned.edges:
        since = f" in the last {window}" if window else ""
        raise common.NoVerdict(f"no latency buckets for the candidate{since}")
    if not math.isinf(binned.edges[-1]):
        raise common.NoVerdict("the histogram has no +Inf bucket: the total is unknown")
    total = float(sum(binned.counts))
    if total <= 0:
        since = f" in the last {window}" if window else ""
        raise common.NoVerdict(f"no requests to the candidate{since}")
    edges = [e for e in binned.edges if math.isfinite(e)]
    cumulative = list(np.cumsum(binned.counts)[: len(edges)])
    tail = 1 - quantile
    prior = sq.beta_prior_at(tail)
    lo_limit, hi_limit = limits
    claims: list[tuple[float, common.Limits]] = []
    claims += [(hi_limit, (None, tail))] if hi_limit is not None else []
    claims += [(lo_limit, (tail, None))] if lo_limit is not None else []
    try:
        intervals = [
            tail_interval(limit, edges, cumulative, total, alpha, prior) for limit, _ in claims
        ]
    except sq.UnresolvableLimit as exc:
        raise common.NoVerdict(f"{exc}: the gate can never decide") from None
    good, bad = True, False
    for (lo, hi), (_, share_limits) in zip(intervals, claims, strict=True):
        g, b = shown_many(lo, hi, share_limits)
        good, bad = good and bool(g[0]), bad or bool(b[0])
    outcome = sq.Shown.BAD if bad else sq.Shown.GOOD if good else sq.Shown.NOT_YET
    interval = sq.Interval(float(intervals[0][0][0]), float(intervals[0][1][0]))
    value = histogram_quantile(quantile, binned.edges, binned.counts)

    def need() -> float | None:
        def decides(sizes: Floats) -> Bools:
            good_ = np.ones(sizes.shape, dtype=bool)
            bad_ = np.zeros(sizes.shape, dtype=bool)
            for limit, share_limits in claims:
                lo, hi = tail_interval(limit, edges, cumulative, total, alpha, prior, sizes / total)
                g, b = shown_many(lo, hi, share_limits)
                good_, bad_ = good_ & g, bad_ | b
            return good_ | bad_

        return needed(decides, total)

    first_limit = claims[0][0]
    b_lo, b_hi = sq.resolve_bucket(first_limit, edges)
    between = f"bucket {b_lo:g}" if b_lo == b_hi else f"buckets {b_lo:g} and {b_hi:g}"
    reason = (
        f"p{quantile * 100:g} {_fmt(value)} s ({total:.0f} requests); share slower than "
        f"{first_limit:g} s (from {between}), {level_text(alpha)} anytime CS "
        f"{_span(*interval)} vs {_fmt(tail)}: {_SAYS[outcome]}"
    )
    return _result(
        name,
        outcome,
        value=value,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=total,
        need=need,
        unit="requests",
    )


# ----------------------------------------------------------------------- rates


def judge_rate(
    name: str,
    count: float,
    seconds: float,
    limits: common.Limits,
    alpha: float,
    *,
    unit: str = "requests",
) -> GateResult:
    """Events (``unit``: requests, tokens) per second over ``seconds`` against a ``min``
    (or ``max``) rate.

    ``poisson_rate_cs`` with the Gamma prior centred on the limit. The value is the
    plug-in rate; ``samples`` and ``neededSamples`` count the events.
    """
    if seconds <= 0:
        raise common.NoVerdict("no time in the stage yet")
    count = max(0.0, count)
    lo_limit, hi_limit = limits
    around = next(x for x in (lo_limit, hi_limit, 1.0) if x is not None and x > 0)
    interval = sq.poisson_rate_cs(count, seconds, alpha, around=around)
    outcome = shown(interval, limits)
    rate = count / seconds

    def need() -> float | None:
        if count <= 0:
            return 1.0  # no request yet: the first one is progress (time alone decides too)

        def decides(sizes: Floats) -> Bools:
            t = seconds * sizes / count
            lo, hi = sq.poisson_rate_cs_many(sizes, t, alpha, around=around)
            good, bad = shown_many(lo, hi, limits)
            return good | bad

        return needed(decides, count)

    reason = (
        f"{_fmt(rate)} {unit}/s ({count:.0f} in {seconds:.0f} s), {level_text(alpha)} "
        f"anytime CS {_span(*interval)} {_against(limits)}: {_SAYS[outcome]}"
    )
    return _result(
        name,
        outcome,
        value=rate,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=count,
        need=need,
        unit=unit,
    )


# ----------------------------------------------------------------------- query: sign test


def violations_so_far(name: str, previous: Sequence[GateResult]) -> tuple[int, int]:
    """(checks that broke the limit, checks) of this stage before this one.

    The newest earlier result of the gate that carries its test (``samples`` checks,
    its CS ``[lower, upper]`` and ``alpha``) holds the state: the count of violations is
    the ``x`` whose ``binomial_cs(x, samples, alpha)`` is that CS (the CS is strictly
    monotone in ``x``), so the state survives the ledger's bounded length without a
    field of its own. Earlier results without it (no data that check) are skipped;
    none at all is a fresh test.
    """
    for r in previous:
        if r.metric != name or r.samples is None or r.alpha is None:
            continue
        if r.lower is None or r.upper is None or not 0 < r.alpha < 1:
            continue
        n = round(r.samples)
        if n < 1:
            continue
        xs = np.arange(n + 1, dtype=float)
        lo, hi = sq.binomial_cs_many(xs, float(n), r.alpha)
        x = int(np.argmin(np.abs(lo - r.lower) + np.abs(hi - r.upper)))
        return x, n
    return 0, 0


def judge_checks(
    name: str,
    value: float,
    before: tuple[int, int],
    limits: common.Limits,
    alpha: float,
) -> GateResult:
    """A sequential sign test on a query gate's per-check values (slow by design).

    A PromQL value has no counts behind it, so the checks are the trials: ``x`` of the
    ``n`` checks of this stage (``before`` plus this one) broke the limit, and
    ``binomial_cs`` (Jeffreys prior) bounds the share of checks that would. Pass when
    the CS's upper end is below 1/2 (most checks hold the limit), Fail when its lower
    end is above 1/2. It needs several checks either way (about 10 at alpha 0.01),
    which is why counts are preferred where they exist. The value is this check's.
    """
    broke = common.within(value, limits) == Verdict.FAIL
    x, n = before[0] + int(broke), before[1] + 1
    interval = sq.binomial_cs(x, n, alpha)
    outcome = (
        sq.Shown.GOOD
        if interval.upper < 0.5
        else sq.Shown.BAD
        if interval.lower > 0.5
        else sq.Shown.NOT_YET
    )
    share = x / n

    def need() -> float | None:
        def decides(sizes: Floats) -> Bools:
            lo, hi = sq.binomial_cs_many(share * sizes, sizes, alpha)
            return np.asarray((hi < 0.5) | (lo > 0.5))

        return needed(decides, n)

    reason = (
        f"value {_fmt(value)} {'breaks' if broke else 'holds'} the limit {_against(limits)}; "
        f"{x} of {n} checks in this stage broke it, {level_text(alpha)} anytime CS of that "
        f"share {_span(*interval)} vs 0.5 (sign test): {_SAYS[outcome]}"
    )
    return _result(
        name,
        outcome,
        value=value,
        interval=interval,
        alpha=alpha,
        limits=limits,
        reason=reason,
        samples=n,
        need=need,
        unit="checks",
    )
