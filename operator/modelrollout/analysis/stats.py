"""The statistics behind the ML-specific gates: drift, shadow agreement, Kayenta-style
comparison, a sequential test that is safe to check every interval, sample sizes.

Every function here is pure: values in, values out, no I/O, no clock. Results are small
frozen dataclasses that carry the value, the sample sizes it rests on and, when there is
no value, the reason. Too little data is a result (``value=None, reason="not enough
samples: ..."``) that the caller turns into an inconclusive check; only malformed input
raises (``DistributionMismatch`` for histograms and count vectors, ``ValueError`` for other
arguments).

Counts are counts of observations (``increase(x_bucket[w])``), not rates: the smoothing,
the sample-size checks and the p-values all read the totals as numbers of requests.

The formulas, the defaults and why they were chosen: ``docs/analysis-statistics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = [
    "DEFAULT_BURN_IN",
    "DEFAULT_MIN_POINTS",
    "DEFAULT_MIN_SAMPLES",
    "PSI_PSEUDOCOUNT",
    "AgreementResult",
    "Aligned",
    "Binned",
    "DistributionMismatch",
    "DriftResult",
    "Interval",
    "MSPRTResult",
    "MSPRTState",
    "MeanSummary",
    "MetricComparison",
    "ProportionSummary",
    "RunScore",
    "ScoredMetric",
    "StatTestResult",
    "agreement",
    "align",
    "bins_from_cumulative",
    "chi2_homogeneity",
    "drift",
    "expected_psi_under_null",
    "hodges_lehmann",
    "js_distance",
    "ks_from_bins",
    "mann_whitney_judge",
    "msprt_update",
    "psi",
    "psi_null_exceedance",
    "required_samples_two_proportions",
    "rule_of_three_upper",
    "score_run",
    "wilson_interval",
]

Counts: TypeAlias = Sequence[float] | NDArray[Any]
DriftMethod: TypeAlias = Literal["psi", "js", "ks", "chi2"]
Direction: TypeAlias = Literal["increase", "decrease", "either"]
"""The harmful direction: ``increase`` means only a higher candidate value is bad."""
Classification: TypeAlias = Literal["Pass", "High", "Low", "NoData"]
ScoreOutcome: TypeAlias = Literal["Pass", "Marginal", "Fail", "NoData"]
"""A score run's outcome (not the API's ``Verdict``: it has Marginal and NoData)."""
MSPRTOutcome: TypeAlias = Literal["continue", "reject"]
"""What one mSPRT look decides (not the engine's ``Decision``)."""

#: Minimum observations per version before a drift measure is reported. With k <= 20
#: buckets the PSI expected under no drift is then <= 0.038 and P(PSI > 0.1) <= 1.3e-4.
DEFAULT_MIN_SAMPLES = 1000
#: Pseudo-count added to every bin of both vectors when a bin is empty on one side (PSI).
PSI_PSEUDOCOUNT = 0.5
#: Minimum points per series for the Mann-Whitney judge.
DEFAULT_MIN_POINTS = 10
#: Minimum observations per arm before the mSPRT updates.
DEFAULT_BURN_IN = 100
#: Above this many pairs the Hodges-Lehmann estimate is found by selection, not by
#: materialising every pairwise difference.
HL_MAX_PAIRS = 1_000_000


class DistributionMismatch(ValueError):
    """Two distributions that cannot be compared, or counts that are not counts."""


# --------------------------------------------------------------------------- histograms


class Binned(NamedTuple):
    """Per-bucket counts of one Prometheus histogram.

    ``edges`` are the upper bounds (``le``) in ascending order, usually ending in
    ``inf``; ``counts[i]`` counts observations in ``(edges[i-1], edges[i]]``.
    """

    edges: tuple[float, ...]
    counts: tuple[float, ...]


class Aligned(NamedTuple):
    """Two histograms on the same edges."""

    edges: tuple[float, ...]
    reference: tuple[float, ...]
    candidate: tuple[float, ...]


def _parse_le(key: str | float) -> float:
    try:
        le = float(key.strip()) if isinstance(key, str) else float(key)
    except ValueError:
        raise DistributionMismatch(f"bucket bound le={key!r} is not a number") from None
    if math.isnan(le):
        raise DistributionMismatch(f"bucket bound le={key!r} is NaN")
    return le


def bins_from_cumulative(
    buckets: Mapping[str | float, float], *, tolerance: float = 0.01
) -> Binned:
    """Per-bucket counts from Prometheus' cumulative ``le`` buckets.

    Keys are ``le`` labels as strings or floats (``"+Inf"``, ``"1"``, ``"1.0"``, ``0.5``).
    A cumulative count that falls below an earlier bucket's (counter resets and
    ``increase()`` extrapolation do this by small amounts) is raised to the running
    maximum, as ``histogram_quantile`` does, so the counts still sum to the last bucket.
    A fall larger than ``tolerance`` times the largest count is not a histogram and
    raises ``DistributionMismatch``, as do negative or non-finite counts and a bound given
    twice (``"1"`` and ``"1.0"``). No buckets at all give empty edges and counts.
    """
    parsed: dict[float, float] = {}
    for key, value in buckets.items():
        le = _parse_le(key)
        if le in parsed:
            raise DistributionMismatch(f"bucket bound le={key!r} appears twice (as {le:g})")
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise DistributionMismatch(f"bucket le={key!r} has count {value!r}: not a count")
        parsed[le] = v
    edges = sorted(parsed)
    if not edges:
        return Binned((), ())
    cumulative = np.array([parsed[e] for e in edges], dtype=float)
    running = np.maximum.accumulate(cumulative)
    fall = running - cumulative
    worst = int(np.argmax(fall))
    if fall[worst] > tolerance * running[-1] + 1e-9:
        raise DistributionMismatch(
            f"cumulative count falls from {running[worst]:g} to {cumulative[worst]:g} "
            f"at le={edges[worst]:g}: not a cumulative histogram"
        )
    counts = np.diff(running, prepend=0.0)
    return Binned(tuple(edges), tuple(float(x) for x in counts))


def _fmt_edges(edges: Iterable[float]) -> str:
    return "[" + ", ".join(f"{e:g}" for e in sorted(edges)) + "]"


def align(reference: Binned, candidate: Binned) -> Aligned:
    """The two histograms on their common edges; refuses edges that differ.

    A side with no buckets at all (no series yet) is read as zero counts on the other
    side's edges, so that ``drift`` reports "not enough samples" rather than a mismatch.
    """
    if not reference.edges:
        reference = Binned(candidate.edges, (0.0,) * len(candidate.edges))
    if not candidate.edges:
        candidate = Binned(reference.edges, (0.0,) * len(reference.edges))
    for side in (reference, candidate):
        if len(side.edges) != len(side.counts):
            raise DistributionMismatch(
                f"{len(side.edges)} edges but {len(side.counts)} counts in one histogram"
            )
    if reference.edges != candidate.edges:
        only_r = set(reference.edges) - set(candidate.edges)
        only_c = set(candidate.edges) - set(reference.edges)
        raise DistributionMismatch(
            "bucket edges differ between reference and candidate: "
            f"only in reference {_fmt_edges(only_r)}, only in candidate {_fmt_edges(only_c)}; "
            "both versions must export the same histogram buckets"
        )
    return Aligned(reference.edges, reference.counts, candidate.counts)


# --------------------------------------------------------------------------- drift


class StatTestResult(NamedTuple):
    """A test statistic with its p-value (and degrees of freedom where they apply)."""

    statistic: float
    p_value: float
    dof: int | None = None


@dataclass(frozen=True)
class DriftResult:
    """One drift measure between reference and candidate.

    ``value`` is None when there was not enough data; ``reason`` then says why.
    ``p_value`` is set for ``ks`` and ``chi2``.
    """

    value: float | None
    method: DriftMethod
    reference_n: float
    candidate_n: float
    p_value: float | None = None
    reason: str | None = None


def _counts(x: Counts, name: str) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise DistributionMismatch(f"{name} counts must be a flat vector, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DistributionMismatch(f"{name} counts contain a non-finite value")
    if np.any(a < 0):
        raise DistributionMismatch(
            f"{name} counts contain a negative count at bin {int(np.argmax(a < 0))}"
        )
    return a


def _pair(reference: Counts, candidate: Counts) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r, c = _counts(reference, "reference"), _counts(candidate, "candidate")
    if r.shape != c.shape:
        raise DistributionMismatch(
            f"reference has {r.size} bins, candidate has {c.size}: align the histograms first"
        )
    return r, c


def _nonempty(
    reference: Counts, candidate: Counts
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r, c = _pair(reference, candidate)
    for name, a in (("reference", r), ("candidate", c)):
        if a.sum() <= 0:
            raise DistributionMismatch(f"{name} has no observations (use drift() for a result)")
    return r, c


def psi(reference: Counts, candidate: Counts) -> float:
    """Population stability index, ``sum (q - p) ln(q / p)``.

    Bins empty in both vectors are dropped (they carry no information). If a remaining bin
    is empty on one side, ``PSI_PSEUDOCOUNT`` (0.5) is added to every remaining bin of both
    vectors before normalising; with no empty bin the formula is applied as is.
    Symmetric, >= 0, and 0 exactly when the proportions agree.
    """
    r, c = _nonempty(reference, candidate)
    keep = (r > 0) | (c > 0)
    r, c = r[keep], c[keep]
    if np.any(r == 0) or np.any(c == 0):
        r, c = r + PSI_PSEUDOCOUNT, c + PSI_PSEUDOCOUNT
    p, q = r / r.sum(), c / c.sum()
    return max(0.0, float(np.sum((q - p) * np.log(q / p))))


def js_distance(reference: Counts, candidate: Counts) -> float:
    """Jensen-Shannon distance, base 2: ``sqrt(JSD)``, in [0, 1]; no smoothing needed."""
    r, c = _nonempty(reference, candidate)
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2

    def kl(a: NDArray[np.float64]) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    jsd = 0.5 * kl(p) + 0.5 * kl(q)
    return math.sqrt(min(1.0, max(0.0, jsd)))


def _scipy_stats() -> Any:
    """``scipy.stats``, imported on first use: it holds about 45 MiB resident, which an
    operator whose rollouts never run a KS or Mann-Whitney test should not pay for."""
    from scipy import stats

    return stats


def ks_from_bins(reference: Counts, candidate: Counts) -> StatTestResult:
    """Kolmogorov-Smirnov statistic ``max |F_p - F_q|`` over the bucket edges.

    The empirical CDFs are known exactly only at the edges, so this is a LOWER BOUND of the
    KS statistic D of the unbinned samples (the supremum may fall inside a bucket). The
    p-value is the two-sample KS distribution at the effective size ``n*m/(n+m)``
    (``scipy.stats.kstwo``, as ``ks_2samp`` does asymptotically); for binned data it is
    approximate and on the conservative side (a smaller D gives a larger p).
    """
    r, c = _nonempty(reference, candidate)
    n, m = float(r.sum()), float(c.sum())
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    d = min(1.0, max(0.0, d))
    n_eff = max(1, round(n * m / (n + m)))
    p = float(_scipy_stats().kstwo.sf(d, n_eff))
    return StatTestResult(d, min(1.0, max(0.0, p)))


def chi2_homogeneity(reference: Counts, candidate: Counts) -> StatTestResult:
    """Pearson chi-square test of homogeneity on the 2 x k table, no continuity correction.

    Bins empty in both rows are dropped; ``dof = k' - 1`` for the ``k'`` bins left. With a
    single bin left the distributions are identical: statistic 0, p-value 1.
    """
    r, c = _nonempty(reference, candidate)
    keep = (r > 0) | (c > 0)
    table = np.vstack([r[keep], c[keep]])
    k = table.shape[1]
    if k < 2:
        return StatTestResult(0.0, 1.0, 0)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return StatTestResult(statistic, float(special.chdtrc(k - 1, statistic)), k - 1)


def drift(
    reference: Counts,
    candidate: Counts,
    method: DriftMethod,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftResult:
    """One drift measure, or ``value=None`` with a reason when a side has too few samples.

    ``reference`` and ``candidate`` are per-bucket counts on the same edges (see
    ``align``). ``value`` is PSI, JS distance, KS D, or the chi-square statistic; for
    ``ks`` and ``chi2`` gate on ``p_value`` (the chi-square statistic grows with n).
    """
    if method not in ("psi", "js", "ks", "chi2"):
        raise ValueError(f"unknown drift method {method!r}: use psi, js, ks or chi2")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")
    r, c = _pair(reference, candidate)
    n_r, n_c = float(r.sum()), float(c.sum())
    floor = max(min_samples, 1)
    for side, n in (("reference", n_r), ("candidate", n_c)):
        if n < floor:
            return DriftResult(
                None, method, n_r, n_c, reason=f"not enough samples: {n:g} < {floor} ({side})"
            )
    if method == "psi":
        return DriftResult(psi(r, c), method, n_r, n_c)
    if method == "js":
        return DriftResult(js_distance(r, c), method, n_r, n_c)
    test = ks_from_bins(r, c) if method == "ks" else chi2_homogeneity(r, c)
    return DriftResult(test.statistic, method, n_r, n_c, p_value=test.p_value)


def expected_psi_under_null(k: int, n_ref: float, n_cand: float) -> float:
    """PSI expected with no drift: ``(k - 1) * (1/n_ref + 1/n_cand)``.

    ``N * PSI`` with ``N = 1 / (1/n_ref + 1/n_cand)`` is approximately chi-square with
    ``k - 1`` degrees of freedom when nothing drifted (PSI is the symmetrised KL divergence,
    whose second-order expansion is the chi-square statistic); this is its mean over N.
    Good when every bin expects a handful of observations.
    """
    if k < 1 or n_ref <= 0 or n_cand <= 0:
        raise ValueError("need k >= 1 bins and positive sample sizes")
    return (k - 1) * (1.0 / n_ref + 1.0 / n_cand)


def psi_null_exceedance(k: int, n_ref: float, n_cand: float, threshold: float) -> float:
    """P(PSI > threshold) with no drift, by the same chi-square approximation."""
    if k < 2 or n_ref <= 0 or n_cand <= 0 or threshold < 0:
        raise ValueError("need k >= 2 bins, positive sample sizes and threshold >= 0")
    n_eff = 1.0 / (1.0 / n_ref + 1.0 / n_cand)
    return float(special.chdtrc(k - 1, threshold * n_eff))


# --------------------------------------------------------------------------- agreement


class Interval(NamedTuple):
    lower: float
    upper: float


def _z_two_sided(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(special.ndtri(1 - (1 - confidence) / 2))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion; ``(0, 1)`` when ``n == 0``."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z_two_sided(confidence)
    if n == 0:
        return Interval(0.0, 1.0)
    z2 = z * z
    centre = (successes + z2 / 2) / (n + z2)
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4) / (n + z2)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class AgreementResult:
    """Shadow agreement: the share of paired requests whose answers agree.

    ``rate``, ``lower`` and ``upper`` are None when ``reason`` is set.
    """

    rate: float | None
    lower: float | None
    upper: float | None
    n: float
    unpaired_fraction: float | None
    reason: str | None = None


def agreement(
    agree: float,
    disagree: float,
    unpaired: float,
    confidence: float = 0.95,
    max_unpaired_fraction: float = 0.1,
    min_pairs: float = 1,
) -> AgreementResult:
    """Agreement rate of primary and shadow answers with its Wilson interval.

    ``unpaired`` counts mirrored requests that have no partner (dropped mirror, timeout):
    when they exceed ``max_unpaired_fraction`` of all requests, the paired ones may be a
    biased sample, so there is no rate. Gate on ``lower``.
    """
    if min(agree, disagree, unpaired) < 0:
        raise ValueError("agree, disagree and unpaired must be >= 0")
    if not 0 <= max_unpaired_fraction <= 1:
        raise ValueError(f"max_unpaired_fraction must be in [0, 1], got {max_unpaired_fraction}")
    _z_two_sided(confidence)
    n = agree + disagree
    total = n + unpaired
    if total == 0:
        return AgreementResult(None, None, None, 0, None, reason="no requests")
    unpaired_fraction = unpaired / total
    if unpaired_fraction > max_unpaired_fraction:
        return AgreementResult(
            None,
            None,
            None,
            n,
            unpaired_fraction,
            reason=f"too many unpaired requests: {unpaired_fraction:.3g} > "
            f"{max_unpaired_fraction:g}",
        )
    if n < max(min_pairs, 1):
        return AgreementResult(
            None,
            None,
            None,
            n,
            unpaired_fraction,
            reason=f"not enough samples: {n:g} < {max(min_pairs, 1):g}",
        )
    lower, upper = wilson_interval(agree, n, confidence)
    return AgreementResult(agree / n, lower, upper, n, unpaired_fraction)


# --------------------------------------------------------------------------- Kayenta-style


def _finite(values: Sequence[float] | NDArray[Any]) -> NDArray[np.float64]:
    a: NDArray[np.float64] = np.asarray(values, dtype=float).ravel()
    kept: NDArray[np.float64] = a[np.isfinite(a)]
    return kept


def _kth_difference(c: NDArray[np.float64], e: NDArray[np.float64], k: int) -> float:
    """k-th smallest (1-based) of ``e_j - c_i`` over all pairs; ``c`` sorted.

    Bisection on the value with a counting step of O(n log m): memory O(n + m).
    """
    m = c.size

    def count_le(d: float) -> int:
        return int(np.sum(m - np.searchsorted(c, e - d, side="left")))

    lo, hi = float(e.min() - c[-1]), float(e.max() - c[0])
    if count_le(lo) >= k:
        return lo
    for _ in range(200):  # count_le(lo) < k <= count_le(hi)
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            break
        if count_le(mid) >= k:
            hi = mid
        else:
            lo = mid
    # Snap to the pairwise difference nearest to hi, so the result is a real difference.
    idx = np.searchsorted(c, e - hi)
    cand = np.concatenate([e - c[np.clip(idx, 0, m - 1)], e - c[np.clip(idx - 1, 0, m - 1)]])
    return float(cand[np.argmin(np.abs(cand - hi))])


def hodges_lehmann(
    control: Sequence[float] | NDArray[Any],
    experiment: Sequence[float] | NDArray[Any],
    *,
    max_pairs: int = HL_MAX_PAIRS,
) -> float:
    """Hodges-Lehmann shift: median of all ``experiment_j - control_i``.

    Up to ``max_pairs`` pairs the differences are materialised; above it the two middle
    order statistics are found by bisection with counting, in O(n + m) memory.
    """
    c = np.sort(np.asarray(control, dtype=float))
    e = np.asarray(experiment, dtype=float)
    if c.size == 0 or e.size == 0:
        raise ValueError("Hodges-Lehmann needs at least one point on each side")
    total = c.size * e.size
    if total <= max_pairs:
        return float(np.median(np.subtract.outer(e, c)))
    if total % 2:
        return _kth_difference(c, e, total // 2 + 1)
    return (_kth_difference(c, e, total // 2) + _kth_difference(c, e, total // 2 + 1)) / 2


def pairwise_difference(
    control: Sequence[float] | NDArray[Any], experiment: Sequence[float] | NDArray[Any], k: int
) -> float:
    """The ``k``-th smallest (1-based) of all ``experiment_j - control_i``.

    The order statistics of these differences are the ends of the Hodges-Lehmann shift's
    confidence interval (Moses); found in O(n + m) memory as ``hodges_lehmann`` does.
    """
    c = np.sort(np.asarray(control, dtype=float))
    e = np.asarray(experiment, dtype=float)
    if c.size == 0 or e.size == 0:
        raise ValueError("need at least one point on each side")
    if not 1 <= k <= c.size * e.size:
        raise ValueError(f"k must be in [1, {c.size * e.size}], got {k}")
    return _kth_difference(c, e, k)


@dataclass(frozen=True)
class MetricComparison:
    """Experiment (candidate) vs control for one metric, Kayenta-style.

    ``classification`` reports what was observed (High/Low: significantly and materially
    higher/lower); whether that is a failure depends on ``direction`` (see ``failed``).
    """

    classification: Classification
    direction: Direction
    p_value: float | None
    hodges_lehmann: float | None
    control_median: float | None
    experiment_median: float | None
    n_control: int
    n_experiment: int
    reason: str | None = None

    @property
    def failed(self) -> bool:
        """High when increases are harmful, or Low when decreases are."""
        if self.classification == "High":
            return self.direction in ("increase", "either")
        if self.classification == "Low":
            return self.direction in ("decrease", "either")
        return False


def mann_whitney_judge(
    control: Sequence[float] | NDArray[Any],
    experiment: Sequence[float] | NDArray[Any],
    direction: Direction = "either",
    confidence: float = 0.98,
    effect_tolerance: float = 0.25,
    min_points: int = DEFAULT_MIN_POINTS,
) -> MetricComparison:
    """Classify experiment vs control as Pass, High, Low or NoData.

    Non-finite points (NaN from 0/0 queries) are dropped first; fewer than ``min_points``
    left on either side is NoData. With ``alpha = 1 - confidence``, ``p`` the two-sided
    Mann-Whitney p-value and ``HL`` the Hodges-Lehmann shift (experiment - control):

        High  if p <= alpha and HL >  effect_tolerance * |median(control)|
        Low   if p <= alpha and HL < -effect_tolerance * |median(control)|
        Pass  otherwise

    No division: a control median of 0 leaves no tolerance, so any significant non-zero
    shift counts. Identical constant samples give p = 1.
    """
    if not effect_tolerance >= 0:
        raise ValueError(f"effect_tolerance must be >= 0, got {effect_tolerance}")
    alpha = 1 - confidence
    _z_two_sided(confidence)
    c, e = _finite(control), _finite(experiment)
    for side, a in (("control", c), ("experiment", e)):
        if a.size < max(min_points, 1):
            return MetricComparison(
                "NoData",
                direction,
                None,
                None,
                None,
                None,
                int(c.size),
                int(e.size),
                reason=f"not enough points: {a.size} < {max(min_points, 1)} ({side})",
            )
    control_median, experiment_median = float(np.median(c)), float(np.median(e))
    hl = hodges_lehmann(c, e)
    both = np.concatenate([c, e])
    if np.all(both == both[0]):
        p = 1.0
    else:
        test = _scipy_stats().mannwhitneyu(e, c, alternative="two-sided", method="auto")
        p = float(test.pvalue)
    tolerance = effect_tolerance * abs(control_median)
    classification: Classification = "Pass"
    if p <= alpha and hl > tolerance:
        classification = "High"
    elif p <= alpha and hl < -tolerance:
        classification = "Low"
    return MetricComparison(
        classification,
        direction,
        p,
        hl,
        control_median,
        experiment_median,
        int(c.size),
        int(e.size),
    )


@dataclass(frozen=True)
class ScoredMetric:
    """One metric's comparison with its weight in the score and its critical flag."""

    name: str
    comparison: MetricComparison
    weight: float = 1.0
    critical: bool = False


@dataclass(frozen=True)
class RunScore:
    score: float | None
    verdict: ScoreOutcome
    failed_metrics: tuple[str, ...]
    critical_failed: tuple[str, ...]
    no_data_metrics: tuple[str, ...] = ()
    reason: str | None = None


def score_run(
    metrics: Sequence[ScoredMetric],
    pass_threshold: float = 95,
    marginal_threshold: float = 75,
) -> RunScore:
    """Weighted share (0-100) of the metrics with data that did not fail.

    A metric scores unless it ``failed`` (so Low latency passes when only increases are
    harmful). NoData metrics are left out of the denominator; when no metric has data, the
    verdict is NoData and the score None (not 100). A critical metric that failed fails the
    run whatever the score; a critical metric with NoData makes the run NoData (inconclusive),
    since it can neither pass nor be shown to fail. Otherwise: score >= pass_threshold is
    Pass, >= marginal_threshold Marginal, else Fail.
    """
    if not 0 <= marginal_threshold <= pass_threshold <= 100:
        raise ValueError("need 0 <= marginal_threshold <= pass_threshold <= 100")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError("metric names must be unique")
    for m in metrics:
        if not (math.isfinite(m.weight) and m.weight > 0):
            raise ValueError(f"metric {m.name!r} needs a positive weight, got {m.weight}")
    judged = [m for m in metrics if m.comparison.classification != "NoData"]
    failed = tuple(m.name for m in judged if m.comparison.failed)
    critical_failed = tuple(m.name for m in judged if m.critical and m.comparison.failed)
    no_data = tuple(m.name for m in metrics if m.comparison.classification == "NoData")
    if not judged:
        reason = "no metrics" if not metrics else "no metric has data"
        return RunScore(None, "NoData", (), (), no_data, reason)
    total = sum(m.weight for m in judged)
    score = 100.0 * sum(m.weight for m in judged if not m.comparison.failed) / total
    if critical_failed:
        reason = "critical metric failed: " + ", ".join(critical_failed)
        return RunScore(score, "Fail", failed, critical_failed, no_data, reason)
    critical_no_data = [m.name for m in metrics if m.critical and m.name in no_data]
    if critical_no_data:
        reason = "critical metric has no data: " + ", ".join(critical_no_data)
        return RunScore(score, "NoData", failed, (), no_data, reason)
    verdict: ScoreOutcome = (
        "Pass" if score >= pass_threshold else "Marginal" if score >= marginal_threshold else "Fail"
    )
    return RunScore(score, verdict, failed, (), no_data)


# --------------------------------------------------------------------------- mSPRT


@dataclass(frozen=True)
class MeanSummary:
    """Cumulative count, sum and sum of squares of one arm's observations."""

    n: float
    sum: float
    sum_sq: float

    @property
    def mean(self) -> float:
        return self.sum / self.n

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator), clipped at 0 against rounding."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1))


@dataclass(frozen=True)
class ProportionSummary:
    """Cumulative events (``successes``, e.g. errors) out of ``trials`` (requests)."""

    successes: float
    trials: float


Summary: TypeAlias = MeanSummary | ProportionSummary


@dataclass(frozen=True)
class MSPRTState:
    """What the caller keeps between looks: the running always-valid p-value."""

    always_valid_p: float = 1.0


@dataclass(frozen=True)
class MSPRTResult:
    """One look of the mSPRT.

    ``statistic`` is the mixture likelihood ratio Lambda at this look (None when the look
    did not update); ``effect`` is experiment - control (means or proportions).
    ``decision`` is "reject" once ``always_valid_p <= alpha``, and stays so.
    """

    always_valid_p: float
    statistic: float | None
    effect: float | None
    n_control: float
    n_experiment: float
    decision: MSPRTOutcome
    reason: str | None = None

    @property
    def state(self) -> MSPRTState:
        return MSPRTState(self.always_valid_p)


def _check_summary(s: Summary, arm: str) -> float:
    if isinstance(s, MeanSummary):
        if not (math.isfinite(s.n) and math.isfinite(s.sum) and math.isfinite(s.sum_sq)):
            raise ValueError(f"{arm} summary has a non-finite value")
        if s.n < 0 or s.sum_sq < 0:
            raise ValueError(f"{arm} summary has a negative count or sum of squares")
        return s.n
    if not (math.isfinite(s.successes) and math.isfinite(s.trials)):
        raise ValueError(f"{arm} summary has a non-finite value")
    if s.trials < 0 or not 0 <= s.successes <= s.trials:
        raise ValueError(f"{arm} summary needs 0 <= successes <= trials")
    return s.trials


def msprt_update(
    state: MSPRTState | None,
    control: Summary,
    experiment: Summary,
    *,
    tau: float,
    alpha: float = 0.05,
    direction: Direction = "increase",
    burn_in: float = DEFAULT_BURN_IN,
) -> MSPRTResult:
    """One look of a mixture SPRT (Johari et al. 2017) on cumulative summaries.

    The effect ``theta = experiment - control`` (difference of means, or of proportions)
    is estimated by ``d`` with variance ``V`` (Welch plug-in ``s_c^2/n_c + s_e^2/n_e`` for
    means; pooled ``p(1-p)(1/n_c + 1/n_e)`` for proportions). With a N(0, tau^2) mixture
    over theta the two-sided statistic is

        Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))).

    One-sided (``increase``: candidate higher is bad) mixes over the half-normal on
    theta > 0 only, which multiplies Lambda by ``2 Phi(s tau d / sqrt(V (V + tau^2)))``
    with s = +1 (or -1 for ``decrease``); under any theta on the harmless side it is a
    supermartingale, so the test stays valid for the composite null. The always-valid
    p-value is ``min(previous p, 1 / Lambda)``; store ``result.state`` and pass it in
    next time. Below ``burn_in`` observations on either arm, or with zero variance, the
    look does not update. ``tau`` is in the units of theta: set it near the smallest
    effect worth catching.
    """
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be positive, got {tau}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if type(control) is not type(experiment):
        raise ValueError("control and experiment must be the same kind of summary")
    previous = 1.0 if state is None else min(1.0, max(0.0, state.always_valid_p))
    n_c, n_e = _check_summary(control, "control"), _check_summary(experiment, "experiment")

    def result(
        p: float, statistic: float | None, effect: float | None, reason: str | None = None
    ) -> MSPRTResult:
        decision: MSPRTOutcome = "reject" if p <= alpha else "continue"
        return MSPRTResult(p, statistic, effect, n_c, n_e, decision, reason)

    for arm, n in (("control", n_c), ("experiment", n_e)):
        if n < max(burn_in, 2):
            return result(previous, None, None, f"burn-in: {n:g} < {max(burn_in, 2):g} ({arm})")
    if isinstance(control, MeanSummary) and isinstance(experiment, MeanSummary):
        effect = experiment.mean - control.mean
        v = control.variance / n_c + experiment.variance / n_e
    elif isinstance(control, ProportionSummary) and isinstance(experiment, ProportionSummary):
        effect = experiment.successes / n_e - control.successes / n_c
        pooled = (control.successes + experiment.successes) / (n_c + n_e)
        v = pooled * (1 - pooled) * (1 / n_c + 1 / n_e)
    else:  # pragma: no cover - excluded by the type check above
        raise ValueError("unsupported summary")
    if not v > 0:
        return result(previous, None, effect, "zero variance: no information in this look")
    t2 = tau * tau
    log_lambda = 0.5 * math.log(v / (v + t2)) + t2 * effect * effect / (2 * v * (v + t2))
    if direction != "either":
        sign = 1.0 if direction == "increase" else -1.0
        z = sign * tau * effect / math.sqrt(v * (v + t2))
        log_lambda += math.log(2.0) + float(special.log_ndtr(z))
    statistic = math.inf if log_lambda > 700 else math.exp(log_lambda)
    p = min(previous, 1.0, math.exp(-log_lambda) if log_lambda > -700 else 1.0)
    return result(p, statistic, effect)


# --------------------------------------------------------------------------- sample sizes


def required_samples_two_proportions(
    p0: float, p1: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Per-arm sample size of a one-sided two-proportion z-test (normal approximation).

    ``n = (z_{1-alpha} sqrt(2 pbar (1 - pbar)) + z_power sqrt(p0 q0 + p1 q1))^2
    / (p1 - p0)^2`` with ``pbar = (p0 + p1) / 2``, rounded up. For a fixed-sample test;
    the mSPRT needs more on average for the same power but may stop earlier.
    """
    if not (0 < p0 < 1 and 0 < p1 < 1) or p0 == p1:
        raise ValueError("need 0 < p0, p1 < 1 and p0 != p1")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    za, zb = float(special.ndtri(1 - alpha)), float(special.ndtri(power))
    pbar = (p0 + p1) / 2
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return math.ceil(root * root / (p1 - p0) ** 2)


def rule_of_three_upper(n: float) -> float:
    """95% upper bound on a rate after ``n`` trials with no event: ``3 / n`` (1 if n <= 3).

    The exact (Clopper-Pearson, one-sided) bound ``1 - 0.05^(1/n)`` is always below it.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return 1.0 if n <= 3 else 3.0 / n
