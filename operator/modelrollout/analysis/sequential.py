"""Tests that stay valid however often they are looked at: the judge's statistical core.

Every gate asks one question of the counts gathered since its stage started: is the
quantity shown to be on the good side of its limit, shown to be on the bad side, or not
yet shown either way? The tools here answer it with *confidence sequences* (CS): intervals
``C_n`` with ``P(exists n: truth not in C_n) <= alpha``, so the answer may be read after
every request, every interval, as often as one likes (Howard, Ramdas, McAuliffe, Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021).

All of them rest on Ville's inequality: a nonnegative martingale ``M_n`` with ``M_0 = 1``
crosses ``1/alpha`` with probability at most ``alpha``, ever. For a parameter ``theta``
each CS here is ``{theta : M_n(theta) < 1/alpha}`` for a *mixture* martingale (Robbins
1970): the likelihood of the data averaged over a prior on the parameter, divided by the
likelihood at ``theta``. Under the truth that ratio is a martingale of mean 1.
Testing on request counts (errors, bucket counts, category counts) rather than on
per-interval summaries follows Lindon, Sanden and Shirikian, "Rapid regression detection
in software deployments through sequential testing" (KDD 2022); the mixture likelihood
ratio for a difference is the mSPRT of Johari, Pekelis and Walsh, "Always valid
inference" (2017).

Pure: numbers in, numbers out; numpy and scipy only. The functions that the simulation
calls many times take arrays (``*_many``); the scalar versions wrap them.

Contents:

- ``binomial_cs``: a share (error rate, tail share of a latency histogram, agreement).
- ``poisson_rate_cs``: a rate of events per second (throughput).
- ``normal_mixture_cs``: a difference with a plug-in variance (accuracy drop, mSPRT).
- ``psi_bounds``, ``js_bounds``, ``ks_bounds``: lower and upper bounds of a drift measure
  from per-bin CS; ``homogeneity_e_value`` for chi2-style "the distributions differ".
- ``psi_cs``, ``js_cs``: asymptotic (delta-method) CS of PSI and JS distance, much
  tighter than the per-bin bounds; what the drift gate uses.
- ``Shown``, ``ThreeWay``, ``judge_upper_limit``, ``judge_lower_limit``: interval +
  limit -> shown good, shown bad, not yet.
- ``budget_split``, ``spent_alpha``: splitting the false-rollback budget over tests and
  over looks; ``effective_sample_size`` for autocorrelated series; ``shift_interval``
  for the Hodges-Lehmann shift of two such series.
- ``resolve_bucket``: which histogram boundaries can decide a latency limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from modelrollout.analysis.stats import Interval, hodges_lehmann, pairwise_difference

__all__ = [
    "DEFAULT_BETA_PRIOR",
    "SHARE_SMOOTHING",
    "Bounds",
    "Interval",
    "Shown",
    "ThreeWay",
    "UnresolvableLimit",
    "beta_prior_at",
    "binomial_cs",
    "binomial_cs_many",
    "budget_split",
    "effective_sample_size",
    "homogeneity_e_value",
    "homogeneity_log_e_many",
    "js_bounds",
    "js_bounds_many",
    "js_cs",
    "js_cs_many",
    "judge_lower_limit",
    "judge_upper_limit",
    "ks_bounds",
    "ks_bounds_many",
    "mean_difference",
    "normal_mixture_cs",
    "poisson_rate_cs",
    "poisson_rate_cs_many",
    "proportion_difference",
    "psi_bounds",
    "psi_bounds_many",
    "psi_cs",
    "psi_cs_many",
    "resolve_bucket",
    "shift_interval",
    "smoothed_psi",
    "spent_alpha",
]

Floats: TypeAlias = NDArray[np.float64]
Prior: TypeAlias = tuple[float, float]

#: Beta(1/2, 1/2), Jeffreys' prior: the default mixing prior of ``binomial_cs`` when no
#: limit is known. Near the limit a prior centred on it is tighter (``beta_prior_at``).
DEFAULT_BETA_PRIOR: Prior = (0.5, 0.5)
#: Pseudo-observations of the limit-centred Beta prior (``beta_prior_at``); see there.
DEFAULT_PRIOR_STRENGTH = 50.0
#: Every bin share ``s`` of a drift histogram is read as ``(s + eta) / (1 + k eta)``
#: before PSI takes logs: shares below about 0.1% count as 0.1%. See ``psi_bounds``.
SHARE_SMOOTHING = 1e-3
#: Bisection steps: the interval [0, 1] halves to 2^-64, below float resolution.
_STEPS = 64


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


# ----------------------------------------------------------------------------- shares


def beta_prior_at(limit: float, strength: float = DEFAULT_PRIOR_STRENGTH) -> Prior:
    """A Beta prior with mean ``limit`` worth ``strength`` pseudo-observations.

    The mixture is tightest for truths the prior weighs most, so a prior centred on the
    limit (known before any data) decides soonest for truths near it: its spread,
    ``sqrt(m (1 - m) / (strength + 1))``, is about the distance from the limit at which
    deciding matters (for ``m = 0.01`` and strength 50: 0.014). Any prior fixed before the
    data keeps the CS valid; the choice only moves where it is tight. The limit is clamped
    to [0.001, 0.999] so both parameters stay positive and the prior proper.
    """
    if not (math.isfinite(limit) and math.isfinite(strength) and strength > 0):
        raise ValueError(f"need a finite limit and strength > 0, got {limit}, {strength}")
    m = min(0.999, max(0.001, limit))
    return (strength * m, strength * (1 - m))


def _check_prior(prior: Prior) -> None:
    a, b = prior
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        raise ValueError(f"the Beta prior needs a, b > 0, got {prior}")


def _log_mixture_binomial(p: Floats, x: Floats, n: Floats, log_marginal: Floats) -> Floats:
    """``log M_n(p)``: the Beta-mixture likelihood over the likelihood at ``p``."""
    out: Floats = log_marginal - special.xlogy(x, p) - special.xlog1py(n - x, -p)
    return out


def binomial_cs_many(
    x: ArrayLike, n: ArrayLike, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR
) -> tuple[Floats, Floats]:
    """``binomial_cs`` over arrays (broadcast): ``(lower, upper)``."""
    _check_alpha(alpha)
    _check_prior(prior)
    n_ = np.maximum(np.asarray(n, dtype=float), 0.0)
    x_ = np.clip(np.asarray(x, dtype=float), 0.0, n_)
    x_, n_ = np.broadcast_arrays(x_, n_)
    a, b = prior
    log_marginal = special.betaln(x_ + a, n_ - x_ + b) - special.betaln(a, b)
    threshold = math.log(1 / alpha)
    share = np.divide(x_, n_, out=np.zeros_like(x_), where=n_ > 0)

    def outside(p: Floats) -> NDArray[np.bool_]:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = _log_mixture_binomial(p, x_, n_, log_marginal)
        return np.asarray(~(value < threshold))  # NaN counts as outside: conservative

    # log M is convex in p with its minimum (<= 0) at x/n: one crossing on each side.
    lo_out, lo_in = np.zeros_like(share), share.copy()
    hi_in, hi_out = share.copy(), np.ones_like(share)
    for _ in range(_STEPS):
        mid = (lo_out + lo_in) / 2
        o = outside(mid)
        lo_out, lo_in = np.where(o, mid, lo_out), np.where(o, lo_in, mid)
        mid = (hi_in + hi_out) / 2
        o = outside(mid)
        hi_out, hi_in = np.where(o, mid, hi_out), np.where(o, hi_in, mid)
    # The end itself may be inside (x = 0 or x = n): then the CS reaches it.
    lower = np.where(outside(np.zeros_like(share)), lo_out, 0.0)
    upper = np.where(outside(np.ones_like(share)), hi_out, 1.0)
    lower = np.where(n_ > 0, lower, 0.0)
    upper = np.where(n_ > 0, upper, 1.0)
    return lower, upper


def binomial_cs(x: float, n: float, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR) -> Interval:
    """Beta-binomial mixture confidence sequence for a share ``p`` (Robbins' mixture).

    ``x`` events in ``n`` trials, counted from the start of the test. With a
    ``Beta(a, b)`` prior the mixture likelihood ratio against a share ``p`` is

        M_n(p) = B(x + a, n - x + b) / B(a, b) / (p^x (1 - p)^(n - x)),

    a nonnegative martingale of mean 1 when ``p`` is the truth (Howard et al. 2021,
    conjugate mixtures), so ``{p : M_n(p) < 1/alpha}`` misses the truth at
    some ``n`` with probability at most ``alpha`` (Ville). ``log M_n`` is convex in ``p``
    and at most 0 at ``p = x/n`` (a mixture is never above the best fit), so the set is
    an interval that holds ``x/n``; its ends are found by bisection on each side, the
    outer point kept (the interval errs wide). No trials: ``(0, 1)``.

    ``x`` and ``n`` may be fractional (``increase()`` extrapolates); ``x`` is clamped to
    ``[0, n]``. The prior moves only where the CS is tight, never its validity, as long
    as it is fixed before the data: ``beta_prior_at(limit)`` for a gate with a limit.
    """
    lower, upper = binomial_cs_many(x, n, alpha, prior=prior)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- rates


def poisson_rate_cs_many(
    count: ArrayLike,
    exposure_seconds: ArrayLike,
    alpha: float,
    *,
    around: float,
    shape: float = 4.0,
) -> tuple[Floats, Floats]:
    """``poisson_rate_cs`` over arrays (broadcast): ``(lower, upper)`` per second."""
    _check_alpha(alpha)
    if not (math.isfinite(around) and around > 0 and math.isfinite(shape) and shape > 0):
        raise ValueError(f"the Gamma prior needs around > 0 and shape > 0, got {around}, {shape}")
    t_ = np.maximum(np.asarray(exposure_seconds, dtype=float), 0.0)
    n_ = np.maximum(np.asarray(count, dtype=float), 0.0)
    n_, t_ = np.broadcast_arrays(n_, t_)
    a, b = shape, shape / around  # Gamma(shape a, rate b): mean `around`
    log_marginal = (
        a * math.log(b) + special.gammaln(n_ + a) - special.gammaln(a) - (n_ + a) * np.log(b + t_)
    )
    threshold = math.log(1 / alpha)
    rate = np.divide(n_, t_, out=np.zeros_like(n_), where=t_ > 0)

    def outside(lam: Floats) -> NDArray[np.bool_]:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = log_marginal + lam * t_ - special.xlogy(n_, lam)
        return np.asarray(~(value < threshold))

    # Bracket the upper end by doubling: log M grows linearly in lambda.
    hi_out = np.maximum(2 * rate, (n_ + 1 + threshold) / np.maximum(t_, 1e-300))
    for _ in range(200):
        short = ~outside(hi_out) & (t_ > 0)
        if not short.any():
            break
        hi_out = np.where(short, 2 * hi_out, hi_out)
    lo_out, lo_in = np.zeros_like(rate), rate.copy()
    hi_in = rate.copy()
    for _ in range(_STEPS):
        mid = (lo_out + lo_in) / 2
        o = outside(mid)
        lo_out, lo_in = np.where(o, mid, lo_out), np.where(o, lo_in, mid)
        mid = (hi_in + hi_out) / 2
        o = outside(mid)
        hi_out, hi_in = np.where(o, mid, hi_out), np.where(o, hi_in, mid)
    lower = np.where(outside(np.zeros_like(rate)), lo_out, 0.0)
    lower = np.where(t_ > 0, lower, 0.0)
    upper = np.where(t_ > 0, hi_out, math.inf)
    return lower, upper


def poisson_rate_cs(
    count: float,
    exposure_seconds: float,
    alpha: float,
    *,
    around: float,
    shape: float = 4.0,
) -> Interval:
    """Gamma-Poisson mixture confidence sequence for an event rate (per second).

    ``count`` events in ``exposure_seconds``. For a Poisson process of rate ``lambda``
    mixed over ``mu ~ Gamma(shape a, rate b)`` the likelihood ratio is

        M_T(lambda) = b^a Gamma(N + a) / (Gamma(a) (b + T)^(N + a)) * e^(lambda T) / lambda^N,

    a martingale of mean 1 in continuous time under ``lambda`` (Howard et al. 2021,
    gamma-Poisson conjugate mixture), so ``{lambda : M_T(lambda) < 1/alpha}`` is a CS;
    convex in ``lambda`` with its minimum at ``N/T``, found by bisection.

    The prior has mean ``around`` (use the gate's limit: known before the data) and
    shape 4 (relative spread 1/2: tight for rates within a factor of about 2 of the
    limit). No exposure: ``(0, inf)``.
    """
    lower, upper = poisson_rate_cs_many(count, exposure_seconds, alpha, around=around, shape=shape)
    return Interval(float(lower), float(upper))


# ----------------------------------------------------------------------------- differences


def normal_mixture_cs(estimate: float, variance: float, alpha: float, *, tau: float) -> Interval:
    """The normal-mixture CS (the mSPRT inverted) for a parameter with a Gaussian estimate.

    With an estimate ``est`` of ``theta`` of variance ``V`` and a ``N(0, tau^2)`` mixture
    over the effect ``theta - theta0``, the mixture likelihood ratio of Johari, Pekelis
    and Walsh ("Always valid inference", 2017) against ``theta0`` is, with
    ``d = est - theta0``,

        Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))).

    ``Lambda(theta0) < 1/alpha``  <=>  ``tau^2 d^2 / (2 V (V + tau^2)) < log(1/alpha)
    + 1/2 log((V + tau^2) / V)``  <=>  ``|d| < r`` with the radius

        r = sqrt( 2 V (V + tau^2) / tau^2 * ( log(1/alpha) + 1/2 log((V + tau^2) / V) ) ),

    so the CS is ``est +- r`` (Howard et al. 2021, the normal-mixture boundary with
    rho = tau^2, written in the units of the estimate rather than of the sum). Exact for
    Gaussian increments with known variance; with a plug-in variance it holds
    asymptotically (Waudby-Smith et al., "Time-uniform central limit theory", 2021),
    which is why callers floor the variance (see ``proportion_difference``). ``tau`` is
    the mixing scale, in the units of the estimate: set it to the margin of the test, the
    smallest effect worth catching, as ``stats.msprt_update`` does. Zero or non-finite
    variance: ``(-inf, inf)``.

    For a comparison, judge the harm (the difference signed so that positive is worse)
    with ``judge_upper_limit(cs, tau)``: good when harm <= tau is shown, bad when harm >
    tau is shown, the same three-way rule as every other gate.
    """
    _check_alpha(alpha)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be positive, got {tau}")
    if not (math.isfinite(estimate) and math.isfinite(variance) and variance > 0):
        return Interval(-math.inf, math.inf)
    t2 = tau * tau
    log_term = math.log(1 / alpha) + 0.5 * math.log1p(t2 / variance)
    radius = math.sqrt(2 * variance * (variance + t2) / t2 * log_term)
    return Interval(estimate - radius, estimate + radius)


def proportion_difference(
    x_candidate: float, n_candidate: float, x_reference: float, n_reference: float
) -> tuple[float, float]:
    """``(estimate, variance)`` of ``p_candidate - p_reference`` for ``normal_mixture_cs``.

    The variance is the unpooled plug-in ``p1 q1 / n1 + p2 q2 / n2`` read at the smoothed
    shares ``(x + 0.5) / (n + 1)``, so that no events (or only events) on a side does not
    read as "no uncertainty". Both ``n`` must be positive.
    """
    if n_candidate <= 0 or n_reference <= 0:
        raise ValueError("both sides need trials")

    def shares(x: float, n: float) -> tuple[float, float]:
        x = min(max(x, 0.0), n)
        smoothed = (x + 0.5) / (n + 1)
        return x / n, smoothed * (1 - smoothed) / n

    p1, v1 = shares(x_candidate, n_candidate)
    p2, v2 = shares(x_reference, n_reference)
    return p1 - p2, v1 + v2


def mean_difference(
    candidate: tuple[float, float, float], reference: tuple[float, float, float]
) -> tuple[float, float]:
    """``(estimate, variance)`` of ``mean_candidate - mean_reference`` (Welch plug-in).

    Each side is ``(count, sum, sum of squares)``; each needs a count of at least 2.
    """
    out: list[tuple[float, float]] = []
    for n, s, ss in (candidate, reference):
        if n < 2:
            raise ValueError("each side needs at least 2 observations")
        mean = s / n
        var = max(0.0, (ss - s * s / n) / (n - 1))
        out.append((mean, var / n))
    (m1, v1), (m2, v2) = out
    return m1 - m2, v1 + v2


# ----------------------------------------------------------------------------- drift


class Bounds(NamedTuple):
    """A drift measure: its plug-in estimate and a lower and an upper bound that hold,
    with the other bounds of the same test, at all looks with probability ``1 - alpha``."""

    lower: float
    estimate: float
    upper: float

    @property
    def interval(self) -> Interval:
        return Interval(self.lower, self.upper)


def _as_rows(counts: ArrayLike, name: str) -> Floats:
    a = np.asarray(counts, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} counts must be a vector (or rows of vectors) of bins")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} counts must be finite and >= 0")
    return a


def _pair_rows(reference: ArrayLike, candidate: ArrayLike) -> tuple[Floats, Floats]:
    r, c = _as_rows(reference, "reference"), _as_rows(candidate, "candidate")
    if r.shape[1] != c.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} bins, candidate has {c.shape[1]}")
    r, c = np.broadcast_arrays(r, c)
    return r, c


def _share_boxes(counts: Floats, alpha_each: float, prior: Prior) -> tuple[Floats, Floats, Floats]:
    """Per-bin shares with their CS: ``(share, lower, upper)`` with the bins' shape."""
    n = counts.sum(axis=-1, keepdims=True)
    lower, upper = binomial_cs_many(counts, n, alpha_each, prior=prior)
    share = np.divide(counts, n, out=np.zeros_like(counts), where=n > 0)
    return share, lower, upper


def _psi_terms(c: Floats, r: Floats, k: int, eta: float) -> Floats:
    cs, rs = (c + eta) / (1 + k * eta), (r + eta) / (1 + k * eta)
    out: Floats = (cs - rs) * np.log(cs / rs)
    return out


def _js_terms(c: Floats, r: Floats) -> Floats:
    m = (c + r) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = np.where(c > 0, c * np.log2(np.where(c > 0, c, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        tr = np.where(r > 0, r * np.log2(np.where(r > 0, r, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
    out: Floats = 0.5 * (tc + tr)
    return out


def _corner_bounds(
    term: Any, cl: Floats, ch: Floats, rl: Floats, rh: Floats
) -> tuple[Floats, Floats]:
    """Per-bin min and max of a jointly convex term that is 0 on the diagonal and grows
    away from it: the min is 0 when the intervals overlap, else at the nearest corners;
    the max of a convex function over a box is at one of its four corners."""
    low = np.where(ch < rl, term(ch, rl), np.where(cl > rh, term(cl, rh), 0.0))
    high = np.maximum.reduce([term(cl, rl), term(cl, rh), term(ch, rl), term(ch, rh)])
    return np.maximum(low, 0.0), np.maximum(high, 0.0)


def _bins_alpha(alpha: float, k: int) -> float:
    """Bonferroni over the 2k per-bin CS (k bins on each side)."""
    _check_alpha(alpha)
    return alpha / (2 * k)


def psi_bounds_many(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    smoothing: float = SHARE_SMOOTHING,
    prior: Prior = DEFAULT_BETA_PRIOR,
) -> tuple[Floats, Floats, Floats]:
    """``psi_bounds`` over rows of bins: ``(lower, estimate, upper)`` per row."""
    r, c = _pair_rows(reference, candidate)
    k = r.shape[1]
    a = _bins_alpha(alpha, k)
    c_hat, cl, ch = _share_boxes(c, a, prior)
    r_hat, rl, rh = _share_boxes(r, a, prior)

    def term(x: Floats, y: Floats) -> Floats:
        return _psi_terms(x, y, k, smoothing)

    low, high = _corner_bounds(term, cl, ch, rl, rh)
    estimate = np.maximum(term(c_hat, r_hat).sum(axis=-1), 0.0)
    return low.sum(axis=-1), estimate, high.sum(axis=-1)


def psi_bounds(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    smoothing: float = SHARE_SMOOTHING,
    prior: Prior = DEFAULT_BETA_PRIOR,
) -> Bounds:
    """Bounds of the population stability index from per-bin confidence sequences.

    Each bin's share, on each side, gets a ``binomial_cs`` at ``alpha / (2k)`` (k bins):
    with probability ``1 - alpha`` every true share lies in its interval at every look
    (Bonferroni), so the true shares lie in the box of intervals, and any function of
    them lies between its minimum and its maximum over the box. PSI is
    ``sum f(c_i, r_i)`` with ``f(c, r) = (c - r) ln(c / r)``, jointly convex, zero on
    ``c = r`` and growing with the gap on each side, so per bin:

    - lower: 0 if the two intervals overlap, else ``f`` at the two nearest corners;
    - upper: the largest ``f`` over the four corners (a convex function's maximum over a
      box is at a corner).

    Minimising or maximising each bin on its own ignores that shares sum to 1, so the
    bounds are valid and somewhat loose.

    The measure bounded is PSI of smoothed shares ``(s + eta) / (1 + k eta)`` with
    ``eta = SHARE_SMOOTHING`` (0.1%): without it a share whose interval reaches 0 makes
    the upper bound infinite. Smoothing only shrinks each term (``|ln((c+eta)/(r+eta))|
    <= |ln(c/r)|``), so ``lower`` is also a lower bound of the unsmoothed PSI: a Fail
    ("PSI > max shown") is a claim about plain PSI; a Pass bounds the smoothed one.
    ``estimate`` is the smoothed plug-in, which always lies between the bounds.
    """
    lo, est, hi = psi_bounds_many(reference, candidate, alpha, smoothing=smoothing, prior=prior)
    return Bounds(float(lo[0]), float(est[0]), float(hi[0]))


def smoothed_psi(reference: ArrayLike, candidate: ArrayLike, eta: float = SHARE_SMOOTHING) -> float:
    """The plug-in PSI of ``psi_bounds``: shares smoothed by ``eta`` before the logs."""
    r, c = _pair_rows(reference, candidate)
    k = r.shape[1]
    rs, cs = (
        r / np.maximum(r.sum(-1, keepdims=True), 1e-300),
        c / np.maximum(c.sum(-1, keepdims=True), 1e-300),
    )
    return float(max(0.0, _psi_terms(cs, rs, k, eta).sum()))


def js_bounds_many(
    reference: ArrayLike, candidate: ArrayLike, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR
) -> tuple[Floats, Floats, Floats]:
    """``js_bounds`` over rows of bins: ``(lower, estimate, upper)`` per row."""
    r, c = _pair_rows(reference, candidate)
    a = _bins_alpha(alpha, r.shape[1])
    c_hat, cl, ch = _share_boxes(c, a, prior)
    r_hat, rl, rh = _share_boxes(r, a, prior)
    low, high = _corner_bounds(_js_terms, cl, ch, rl, rh)

    def distance(jsd: Floats) -> Floats:
        out: Floats = np.sqrt(np.clip(jsd, 0.0, 1.0))
        return out

    return (
        distance(low.sum(axis=-1)),
        distance(_js_terms(c_hat, r_hat).sum(axis=-1)),
        distance(high.sum(axis=-1)),
    )


def js_bounds(
    reference: ArrayLike, candidate: ArrayLike, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR
) -> Bounds:
    """Bounds of the Jensen-Shannon distance (base 2) from per-bin confidence sequences.

    As ``psi_bounds``, with the per-bin JS term ``g(c, r) = (c log2(2c/(c+r)) + r
    log2(2r/(c+r))) / 2`` (jointly convex: a perspective of a convex function; zero on
    ``c = r``; finite at 0, so no smoothing). The distance is ``sqrt`` of the summed
    terms, clipped to [0, 1]; ``sqrt`` is increasing, so the bounds carry over.
    """
    lo, est, hi = js_bounds_many(reference, candidate, alpha, prior=prior)
    return Bounds(float(lo[0]), float(est[0]), float(hi[0]))


def ks_bounds_many(
    reference: ArrayLike, candidate: ArrayLike, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR
) -> tuple[Floats, Floats, Floats]:
    """``ks_bounds`` over rows of bins: ``(lower, estimate, upper)`` per row."""
    r, c = _pair_rows(reference, candidate)
    k = r.shape[1]
    if k < 2:
        zero = np.zeros(r.shape[0])
        return zero, zero, zero
    a = _bins_alpha(alpha, k - 1)
    rc, cc = np.cumsum(r, axis=-1)[:, :-1], np.cumsum(c, axis=-1)[:, :-1]
    rn, cn = r.sum(-1, keepdims=True), c.sum(-1, keepdims=True)
    rl, rh = binomial_cs_many(rc, rn, a, prior=prior)
    cl, ch = binomial_cs_many(cc, cn, a, prior=prior)
    gap = np.maximum(np.maximum(cl - rh, rl - ch), 0.0)
    widest = np.maximum(np.abs(ch - rl), np.abs(rh - cl))
    r_hat = np.divide(rc, rn, out=np.zeros_like(rc), where=rn > 0)
    c_hat = np.divide(cc, cn, out=np.zeros_like(cc), where=cn > 0)
    return gap.max(-1), np.abs(c_hat - r_hat).max(-1), widest.max(-1)


def ks_bounds(
    reference: ArrayLike, candidate: ArrayLike, alpha: float, *, prior: Prior = DEFAULT_BETA_PRIOR
) -> Bounds:
    """Bounds of the Kolmogorov-Smirnov distance D on the histogram's boundaries.

    Each of the ``k - 1`` finite boundaries has a cumulative share on each side
    (``binomial_cs`` of the count at or below it, at ``alpha / (2 (k - 1))``). D on the
    boundaries is ``max_j |F_c(j) - F_r(j)|``: at least the largest gap between two
    intervals at one boundary (``lower``), at most the largest distance between their
    far ends (``upper``). D between the unbinned distributions is at least D on the
    boundaries, so ``lower`` bounds it too; ``upper`` bounds only the binned D.
    """
    lo, est, hi = ks_bounds_many(reference, candidate, alpha, prior=prior)
    return Bounds(float(lo[0]), float(est[0]), float(hi[0]))


def _normal_mixture_many(
    estimate: Floats, variance: Floats, alpha: float, tau: float
) -> tuple[Floats, Floats]:
    """``normal_mixture_cs`` over arrays: ``(lower, upper)``; variance must be > 0."""
    t2 = tau * tau
    log_term = math.log(1 / alpha) + 0.5 * np.log1p(t2 / variance)
    radius = np.sqrt(2 * variance * (variance + t2) / t2 * log_term)
    return estimate - radius, estimate + radius


def _shares_and_sizes(
    reference: ArrayLike, candidate: ArrayLike, smoothing: float
) -> tuple[Floats, Floats, Floats, Floats, Floats]:
    """Smoothed shares ``(r, c)``, the sizes ``(n_r, n_c)`` (>= 1) and the number of bins
    with any count (the degrees of freedom + 1 of the no-drift law), per row."""
    r, c = _pair_rows(reference, candidate)
    k = r.shape[1]
    n_r = np.maximum(r.sum(-1), 1.0)
    n_c = np.maximum(c.sum(-1), 1.0)
    used = np.maximum(((r + c) > 0).sum(-1).astype(float), 1.0)
    rs = (r / n_r[:, None] + smoothing) / (1 + k * smoothing)
    cs = (c / n_c[:, None] + smoothing) / (1 + k * smoothing)
    return rs, cs, n_r, n_c, used


def _delta_variance(
    grad_c: Floats, cs: Floats, n_c: Floats, grad_r: Floats, rs: Floats, n_r: Floats
) -> Floats:
    """``g' (diag(s) - s s') g / n`` on each side, summed: the multinomial delta method."""

    def side(g: Floats, s: Floats, n: Floats) -> Floats:
        out: Floats = ((s * g * g).sum(-1) - (s * g).sum(-1) ** 2) / n
        return out

    return np.maximum(side(grad_c, cs, n_c), 0.0) + np.maximum(side(grad_r, rs, n_r), 0.0)


def _plug_in_cs(
    plug_in: Floats,
    gradient_variance: Floats,
    scale: Floats,
    used: Floats,
    alpha: float,
    tau: float,
) -> tuple[Floats, Floats, Floats]:
    """The asymptotic CS of a drift divergence whose no-drift law is ``scale chi2_{k-1}``.

    ``scale chi2_{k-1}`` has mean ``(k-1) scale`` (the bias removed from the plug-in) and
    variance ``2 (k-1) scale^2``, added to the delta-method variance (which vanishes at
    no drift, where the divergence is flat). Returns ``(lower, plug-in, upper)`` with
    the lower end clamped at 0.
    """
    _check_alpha(alpha)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be positive, got {tau}")
    dof = np.maximum(used - 1, 0.0)
    centre = plug_in - dof * scale
    floor = 2 * np.maximum(dof, 1.0) * scale * scale
    variance = gradient_variance + floor
    lower, upper = _normal_mixture_many(centre, variance, alpha, tau)
    return np.maximum(lower, 0.0), plug_in, np.maximum(upper, 0.0)


def psi_cs_many(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    tau: float = 0.1,
    smoothing: float = SHARE_SMOOTHING,
) -> tuple[Floats, Floats, Floats]:
    """``psi_cs`` over rows of bins: ``(lower, estimate, upper)`` per row."""
    rs, cs, n_r, n_c, used = _shares_and_sizes(reference, candidate, smoothing)
    log_ratio = np.log(cs / rs)
    plug_in = np.maximum(((cs - rs) * log_ratio).sum(-1), 0.0)
    grad_c = log_ratio + 1 - rs / cs
    grad_r = -log_ratio + 1 - cs / rs
    variance = _delta_variance(grad_c, cs, n_c, grad_r, rs, n_r)
    return _plug_in_cs(plug_in, variance, 1 / n_c + 1 / n_r, used, alpha, tau)


def psi_cs(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    tau: float = 0.1,
    smoothing: float = SHARE_SMOOTHING,
) -> Bounds:
    """An asymptotic confidence sequence for the population stability index.

    The plug-in PSI (smoothed shares, as ``smoothed_psi``) is a smooth function of two
    multinomial share vectors, so as counts grow it is close to normal around the true
    PSI with the delta-method variance

        V = (sum_i c_i g_i^2 - (sum_i c_i g_i)^2) / n_c + (the same for the reference),

    ``g_i = ln(c_i / r_i) + 1 - r_i / c_i`` for the candidate's shares (symmetric for
    the reference's): the multinomial covariance ``(diag(c) - c c') / n`` on each side.
    At no drift the gradient vanishes and the plug-in is instead ``(1/n_c + 1/n_r)
    chi2_{k-1}`` (analysis-statistics.md, "Minimum sample sizes"), so the estimate is
    corrected by that law's mean ``(k-1)(1/n_c + 1/n_r)`` and its variance
    ``2 (k-1) (1/n_c + 1/n_r)^2`` is added to ``V`` (``k``: bins with any count): the
    linear and the quadratic parts of the plug-in's error, both present for small drifts. The
    normal-mixture boundary (``normal_mixture_cs``, mixing scale ``tau``: the gate's
    limit) on that centre and variance gives the interval, clamped at 0.

    **Asymptotic**: valid as the counts grow (Waudby-Smith et al. 2021, time-uniform
    central limit theory); with few observations per bin the normal and chi-square laws
    are poor, which is what the drift gate's ``minSamples`` floor guards. It replaces the
    Bonferroni per-bin ``psi_bounds``, which are exact but too wide to decide at the
    traffic a rollout sees (healthy upper bound 0.3 at 3,000 requests a side).
    """
    lo, est, hi = psi_cs_many(reference, candidate, alpha, tau=tau, smoothing=smoothing)
    return Bounds(float(lo[0]), float(est[0]), float(hi[0]))


def js_cs_many(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    tau: float = 0.1,
    smoothing: float = SHARE_SMOOTHING,
) -> tuple[Floats, Floats, Floats]:
    """``js_cs`` over rows of bins: ``(lower, estimate, upper)`` of the JS distance."""
    rs, cs, n_r, n_c, used = _shares_and_sizes(reference, candidate, smoothing)
    m = (cs + rs) / 2
    grad_c = 0.5 * np.log2(cs / m)
    grad_r = 0.5 * np.log2(rs / m)
    r, c = _pair_rows(reference, candidate)
    raw_r = r / np.maximum(r.sum(-1, keepdims=True), 1e-300)
    raw_c = c / np.maximum(c.sum(-1, keepdims=True), 1e-300)
    divergence = np.maximum(_js_terms(raw_c, raw_r).sum(-1), 0.0)  # JS needs no smoothing
    variance = _delta_variance(grad_c, cs, n_c, grad_r, rs, n_r)
    scale = (1 / n_c + 1 / n_r) / (8 * math.log(2))
    lo, est, hi = _plug_in_cs(divergence, variance, scale, used, alpha, tau * tau)

    def distance(x: Floats) -> Floats:
        out: Floats = np.sqrt(np.clip(x, 0.0, 1.0))
        return out

    return distance(lo), distance(est), distance(hi)


def js_cs(
    reference: ArrayLike,
    candidate: ArrayLike,
    alpha: float,
    *,
    tau: float = 0.1,
    smoothing: float = SHARE_SMOOTHING,
) -> Bounds:
    """An asymptotic confidence sequence for the Jensen-Shannon distance (base 2).

    As ``psi_cs``, on the JS divergence ``sum_i (c_i log2(2c_i/(c_i+r_i)) + r_i
    log2(2r_i/(c_i+r_i))) / 2``, whose gradient is ``log2(2 c_i / (c_i + r_i)) / 2`` in
    the candidate's shares (symmetric for the reference) and whose no-drift law is
    ``(1/n_c + 1/n_r) / (8 ln 2) chi2_{k-1}`` (half a chi-square's worth of symmetric
    KL, in bits). The interval of the divergence (mixing scale ``tau^2``, ``tau`` the
    limit on the distance) becomes one of the distance through ``sqrt``, which is
    increasing. Asymptotic, like ``psi_cs``.
    """
    lo, est, hi = js_cs_many(reference, candidate, alpha, tau=tau, smoothing=smoothing)
    return Bounds(float(lo[0]), float(est[0]), float(hi[0]))


def homogeneity_log_e_many(
    reference: ArrayLike, candidate: ArrayLike, *, concentration: float = 0.5
) -> Floats:
    """``log`` of ``homogeneity_e_value`` over rows of bins."""
    if not (math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"concentration must be > 0, got {concentration}")
    r, c = _pair_rows(reference, candidate)
    k = r.shape[1]
    beta = concentration

    def log_dm(x: Floats) -> Floats:
        n = x.sum(axis=-1)
        out: Floats = (
            special.gammaln(k * beta)
            - special.gammaln(n + k * beta)
            + np.sum(special.gammaln(x + beta) - special.gammaln(beta), axis=-1)
        )
        return out

    pooled = r + c
    total = pooled.sum(axis=-1, keepdims=True)
    shares = np.divide(pooled, total, out=np.zeros_like(pooled), where=total > 0)
    log_null = np.sum(special.xlogy(pooled, shares), axis=-1)
    log_e: Floats = log_dm(c) + log_dm(r) - log_null
    return log_e


def homogeneity_e_value(
    reference: ArrayLike, candidate: ArrayLike, *, concentration: float = 0.5
) -> float:
    """An e-value against "the candidate's bin shares equal the reference's".

    Universal inference (Wasserman, Ramdas, Balakrishnan, PNAS 2020) with a
    Dirichlet-multinomial alternative:

        E = DM(x_c; beta) DM(x_r; beta) / prod_i p_i^(x_ci + x_ri),

    where ``DM(x; beta) = Gamma(k beta) / Gamma(n + k beta) prod_i Gamma(x_i + beta) /
    Gamma(beta)`` is the Dirichlet(beta, ..., beta) mixture likelihood of one side's
    sequence, and ``p_i`` are the pooled shares, the best fit under the null. For any
    common shares ``q`` the null likelihood is at most the pooled fit's, so ``E`` is at
    most the mixture ratio against ``q``, a martingale of mean 1 under ``q``: ``E`` is an
    e-process, and "reject when ``E >= 1/alpha``" keeps its level at every look (the same
    holds when the reference is a fixed baseline window: a martingale stopped early).
    Sequence likelihoods: the multinomial coefficients cancel. ``concentration`` is the
    Dirichlet's ``beta`` (1/2: Jeffreys). Returns ``inf`` on overflow; no data gives 1.

    It is conservative: with no difference ``log E`` drifts down by about
    ``(k - 1)/2 log n`` per side (the price of fitting k shares twice), so it rejects
    only a clear difference. It shows "different", never "within a margin".
    """
    log_e = float(homogeneity_log_e_many(reference, candidate, concentration=concentration)[0])
    return math.inf if log_e > 700 else math.exp(log_e)


# ----------------------------------------------------------------------------- verdicts


class Shown(StrEnum):
    """What a test has shown so far about its limit."""

    GOOD = "pass"
    """The whole interval is on the good side of the limit."""
    BAD = "fail"
    """The whole interval is on the bad side of the limit."""
    NOT_YET = "undecided"
    """The interval still straddles the limit: neither shown; keep looking."""


@dataclass(frozen=True)
class ThreeWay:
    """A test's outcome with the interval it rests on and a short reason."""

    shown: Shown
    interval: Interval
    reason: str


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _span(interval: Interval) -> str:
    return f"[{_fmt(interval.lower)}, {_fmt(interval.upper)}]"


def judge_upper_limit(interval: Interval, limit: float) -> ThreeWay:
    """For a quantity that must stay at or below ``limit`` (``max``).

    GOOD when the upper end is at or below the limit, BAD when the lower end is above it.
    """
    if not math.isfinite(limit):
        raise ValueError(f"limit must be finite, got {limit}")
    span = _span(interval)
    if interval.upper <= limit:
        return ThreeWay(Shown.GOOD, interval, f"{span} is at or below the max {_fmt(limit)}")
    if interval.lower > limit:
        return ThreeWay(Shown.BAD, interval, f"{span} is above the max {_fmt(limit)}")
    return ThreeWay(Shown.NOT_YET, interval, f"{span} straddles the max {_fmt(limit)}")


def judge_lower_limit(interval: Interval, limit: float) -> ThreeWay:
    """For a quantity that must stay at or above ``limit`` (``min``).

    GOOD when the lower end is at or above the limit, BAD when the upper end is below it.
    """
    if not math.isfinite(limit):
        raise ValueError(f"limit must be finite, got {limit}")
    span = _span(interval)
    if interval.lower >= limit:
        return ThreeWay(Shown.GOOD, interval, f"{span} is at or above the min {_fmt(limit)}")
    if interval.upper < limit:
        return ThreeWay(Shown.BAD, interval, f"{span} is below the min {_fmt(limit)}")
    return ThreeWay(Shown.NOT_YET, interval, f"{span} straddles the min {_fmt(limit)}")


# ----------------------------------------------------------------------------- budgets


def budget_split(budget: float, tests: int) -> float:
    """The level of each test when ``tests`` tests share a false-rollback ``budget``.

    Bonferroni: P(any test errs) <= sum of the tests' levels = ``budget``. A test here is
    one gate in one stage (sum over stages of the gates active in each).
    """
    _check_alpha(budget)
    if tests < 1:
        raise ValueError(f"need at least one test, got {tests}")
    return budget / tests


def spent_alpha(alpha: float, look: int) -> float:
    """The level of the ``look``-th look (1-based) of a test that is not anytime-valid.

    ``alpha * 6 / (pi^2 look^2)``: the levels sum to ``alpha`` over infinitely many looks
    (``sum 1/k^2 = pi^2/6``), so by the union bound the test errs at any look with
    probability at most ``alpha``, however many looks there are.
    """
    _check_alpha(alpha)
    if look < 1:
        raise ValueError(f"looks count from 1, got {look}")
    return alpha * 6 / (math.pi**2 * look * look)


def effective_sample_size(values: Sequence[float] | NDArray[Any]) -> float:
    """The number of independent points a lag-1 autocorrelated series is worth.

    ``n (1 - rho) / (1 + rho)`` with ``rho`` the lag-1 autocorrelation (AR(1): the
    variance of a mean of ``n`` points is ``(1 + rho) / (1 - rho)`` times the independent
    one). ``rho`` is clipped to [0, 0.99]: negative correlation is not taken as extra
    information. Non-finite points are dropped; fewer than 3 points or a constant series
    count as they are.
    """
    a = np.asarray(values, dtype=float).ravel()
    a = a[np.isfinite(a)]
    n = a.size
    if n < 3:
        return float(n)
    d = a - a.mean()
    denominator = float(np.dot(d, d))
    if denominator <= 0:
        return float(n)
    rho = min(0.99, max(0.0, float(np.dot(d[:-1], d[1:])) / denominator))
    return float(n * (1 - rho) / (1 + rho))


def shift_interval(
    control: Sequence[float] | NDArray[Any],
    experiment: Sequence[float] | NDArray[Any],
    alpha: float,
) -> Bounds:
    """The Hodges-Lehmann shift (experiment - control) with its level-``1 - alpha`` interval.

    The interval is Moses' distribution-free one: the ``C``-th smallest and largest of the
    ``n m`` pairwise differences, ``C = n m (1/2 - z sqrt((n' + m' + 1) / (12 n' m')))``
    with ``z`` the two-sided normal quantile, from the normal law of the Mann-Whitney U.
    ``n'``, ``m'`` are the effective sample sizes (``effective_sample_size``): per-step
    points are autocorrelated, and counting them as independent makes the interval too
    narrow. Not anytime-valid on its own: a gate spends its level over looks
    (``spent_alpha``). Too few points for the level: ``(-inf, inf)``.
    """
    _check_alpha(alpha)
    c = np.asarray(control, dtype=float).ravel()
    e = np.asarray(experiment, dtype=float).ravel()
    c, e = c[np.isfinite(c)], e[np.isfinite(e)]
    if c.size == 0 or e.size == 0:
        raise ValueError("need at least one point on each side")
    total = c.size * e.size
    estimate = hodges_lehmann(c, e)
    n_eff, m_eff = max(effective_sample_size(c), 1.0), max(effective_sample_size(e), 1.0)
    z = float(special.ndtri(1 - alpha / 2))
    spread = z * math.sqrt((n_eff + m_eff + 1) / (12 * n_eff * m_eff))
    index = math.floor(total * (0.5 - spread))
    if index < 1:
        return Bounds(-math.inf, estimate, math.inf)
    lower = pairwise_difference(c, e, index)
    upper = pairwise_difference(c, e, total - index + 1)
    return Bounds(lower, estimate, upper)


# ----------------------------------------------------------------------------- latency buckets


class UnresolvableLimit(ValueError):
    """A latency limit that no pair of finite histogram boundaries brackets."""


def resolve_bucket(limit: float, boundaries: Sequence[float]) -> tuple[float, float]:
    """The boundaries that decide "quantile <= limit" from bucket counts: ``(b_lo, b_hi)``.

    "The q-quantile is at most L" is "the share of requests slower than L is at most
    ``1 - q``". Bucket counts give the share above a boundary, not above L, so:

    - Pass uses ``b_lo``, the largest boundary ``<= L``: share(> b_lo) >= share(> L), so
      showing share(> b_lo) <= 1 - q proves the claim;
    - Fail uses ``b_hi``, the smallest boundary ``>= L``: share(> b_hi) <= share(> L),
      so showing share(> b_hi) > 1 - q proves it broken.

    A limit on a boundary gives ``b_lo == b_hi == L``; between two boundaries a truth in
    the gap can stay undecided for ever. A limit below the smallest finite boundary has
    no ``b_lo`` (it can never pass), above the largest none has ``b_hi`` (it can never
    fail): both raise ``UnresolvableLimit`` with the message for preflight.
    """
    finite = sorted({float(b) for b in boundaries if math.isfinite(float(b))})
    text = ", ".join(f"{b:g}" for b in finite)
    if not math.isfinite(limit):
        raise UnresolvableLimit(f"limit {limit} is not a finite number")
    below = [b for b in finite if b <= limit]
    above = [b for b in finite if b >= limit]
    if not below or not above:
        raise UnresolvableLimit(f"no bucket resolves limit {limit:g} (buckets: {text})")
    return below[-1], above[0]
