"""A seeded simulated world: one model rollout's metrics, interval by interval.

The calibration of the judge (``make calibrate``) feeds the gates' pure code synthetic
Prometheus answers, far faster than real time. This module is the world those answers
come from; ``fake_prometheus`` answers PromQL from it.

One run (one ``World``) has two versions of one model: the stable one and the candidate.
Every interval (60 s by default) each version serves a Poisson number of requests
(about 100 to the candidate, three times that to the stable version), split evenly over
its 3 to 5 pods. Each pod has its own lognormal multipliers on the latency scale and on
the error rate (mean 1), drawn once per run, and a slow diurnal sinusoid (random phase)
moves the load and the latency together. Per request:

- latency: lognormal, nominal p99 0.45 s (median ``p99 / exp(2.326 sigma)``,
  ``sigma = 0.35``), counted into the Prometheus default buckets;
- errors: 0.5% (``model_request_errors_total``), null outputs 0.1%;
- one input feature, N(0, 1), counted into 12 buckets (``model_input_feature``);
- a predicted class out of four (``model_predictions_total{class}``);
- for the candidate, a shadow pair with the stable answer: 1% unpaired, the rest
  agreeing 98% of the time (``model_shadow_comparisons_total{result}``).

Bucket counts are drawn as multinomials with the exact lognormal (or normal) bucket
probabilities: the same counts as drawing each request and bucketing it, far faster.

A ``Regression`` changes the candidate from a given interval on: p99 +20% (latency scale
x1.2), errors +2 points, an input shift of PSI 0.25 (a mean shift solved on the feature
buckets), or agreement 98% -> 93%. ``World.truth`` reports the true values the tests are
about, so a study can say whether a "healthy" run really was within its limits.

Counters are cumulative and start at 0 at time 0; the value at time t is the value at
the last interval boundary at or before t (a scrape every interval).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

PROMETHEUS_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)
"""The Prometheus client libraries' default histogram buckets (``le``)."""
FEATURE_BUCKETS: tuple[float, ...] = (
    -2.5,
    -2.0,
    -1.5,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
    math.inf,
)
"""The input feature's histogram buckets (``le``)."""
Z99 = float(special.ndtri(0.99))

REQUESTS = "model_requests_total"
ERRORS = "model_request_errors_total"
NULLS = "model_null_outputs_total"
LATENCY = "model_request_duration_seconds"
FEATURE = "model_input_feature"
PREDICTIONS = "model_predictions_total"
COMPARISONS = "model_shadow_comparisons_total"
UNPAIRED = "model_shadow_unpaired_total"

Labels = frozenset[tuple[str, str]]


class Kind(StrEnum):
    """What a regression breaks."""

    LATENCY = "latency"
    """p99 +20%: the candidate's latency scale x1.2."""
    ERRORS = "errors"
    """The candidate's error rate +2 points."""
    DRIFT = "drift"
    """The candidate's input feature shifted to PSI 0.25 against the stable's."""
    AGREEMENT = "agreement"
    """Shadow agreement 98% -> 93%."""


def _share_probs(edges: tuple[float, ...], cdf: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-bucket probabilities from the CDF at the ``le`` edges (last edge +Inf)."""
    cumulative = np.append(cdf[:-1], 1.0) if math.isinf(edges[-1]) else cdf
    probs = np.diff(np.concatenate([[0.0], cumulative]))
    probs = np.clip(probs, 0.0, None)
    out: NDArray[np.float64] = probs / probs.sum()
    return out


def feature_probs(shift: float, edges: tuple[float, ...] = FEATURE_BUCKETS) -> NDArray[np.float64]:
    """Bucket probabilities of N(shift, 1) on ``edges``."""
    finite = np.array([e if math.isfinite(e) else 0.0 for e in edges])
    return _share_probs(edges, special.ndtr(finite - shift))


def binned_psi(p: NDArray[np.float64], q: NDArray[np.float64]) -> float:
    """Plain PSI of two bucket probability vectors (no smoothing: all bins positive)."""
    return float(np.sum((q - p) * np.log(q / p)))


def shift_for_psi(target: float, edges: tuple[float, ...] = FEATURE_BUCKETS) -> float:
    """The mean shift of N(0, 1) whose bucketed PSI against N(0, 1) is ``target``."""
    base = feature_probs(0.0, edges)
    return float(
        optimize.brentq(lambda d: binned_psi(base, feature_probs(d, edges)) - target, 1e-6, 5.0)
    )


@dataclass(frozen=True)
class Regression:
    """A fault in the candidate from interval ``start`` on (0: from the first)."""

    kind: Kind
    start: int = 0
    latency_factor: float = 1.2
    error_points: float = 0.02
    psi: float = 0.25
    agreement: float = 0.93


@dataclass(frozen=True)
class WorldConfig:
    """The world's knobs; the defaults are the calibration's healthy rollout."""

    model: str = "demo"
    stable_version: str = "v1"
    candidate_version: str = "v2"
    interval_seconds: float = 60.0
    candidate_requests: float = 100.0
    """Mean requests per interval to the candidate (Poisson)."""
    stable_ratio: float = 3.0
    pods: tuple[int, int] = (3, 5)
    """Pods per version: drawn uniformly between the two, inclusive."""
    pod_latency_sigma: float = 0.03
    pod_error_sigma: float = 0.3
    diurnal_load: float = 0.3
    """Relative amplitude of the daily load cycle."""
    diurnal_latency: float = 0.03
    """Relative amplitude of the daily latency cycle (in phase with the load)."""
    day_seconds: float = 86_400.0
    latency_p99: float = 0.45
    latency_sigma: float = 0.35
    buckets: tuple[float, ...] = PROMETHEUS_BUCKETS
    latency_limit: float = 0.5
    """The latency whose tail share ``World.truth`` reports (``share_above``)."""
    error_rate: float = 0.005
    null_rate: float = 0.001
    agreement: float = 0.98
    unpaired: float = 0.01
    feature_buckets: tuple[float, ...] = FEATURE_BUCKETS
    classes: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    record_series: bool = True
    """Keep every labelled series for ``fake_prometheus`` (off: totals only, faster)."""

    @property
    def latency_median(self) -> float:
        return self.latency_p99 / math.exp(Z99 * self.latency_sigma)


@dataclass
class Totals:
    """One version's cumulative counts since time 0, summed over its pods."""

    requests: float = 0.0
    errors: float = 0.0
    nulls: float = 0.0
    latency: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """Per-bucket (not cumulative) latency counts, on ``config.buckets``."""
    feature: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    agree: float = 0.0
    disagree: float = 0.0
    unpaired: float = 0.0

    def copy(self) -> Totals:
        return replace(self, latency=self.latency.copy(), feature=self.feature.copy())


@dataclass(frozen=True)
class _Pod:
    name: str
    latency: float
    errors: float


def _lognormal_mean_one(rng: np.random.Generator, sigma: float, size: int) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.exp(rng.normal(-sigma * sigma / 2, sigma, size))
    return out


class World:
    """One simulated rollout: call ``step()`` once per interval, read counters back."""

    def __init__(
        self,
        seed: int,
        config: WorldConfig | None = None,
        regression: Regression | None = None,
    ) -> None:
        self.config = config or WorldConfig()
        self.regression = regression
        self.rng = np.random.default_rng(seed)
        cfg = self.config
        self.phase = float(self.rng.uniform(0, cfg.day_seconds))
        self.pods: dict[str, tuple[_Pod, ...]] = {}
        for version in (cfg.stable_version, cfg.candidate_version):
            count = int(self.rng.integers(cfg.pods[0], cfg.pods[1] + 1))
            lat = _lognormal_mean_one(self.rng, cfg.pod_latency_sigma, count)
            err = _lognormal_mean_one(self.rng, cfg.pod_error_sigma, count)
            self.pods[version] = tuple(
                _Pod(f"{cfg.model}-{version}-{i}", float(lat[i]), float(err[i]))
                for i in range(count)
            )
        self.drift_shift = (
            shift_for_psi(regression.psi, cfg.feature_buckets)
            if regression is not None and regression.kind is Kind.DRIFT
            else 0.0
        )
        self.intervals = 0
        self.totals = {
            v: Totals(
                latency=np.zeros(len(cfg.buckets)), feature=np.zeros(len(cfg.feature_buckets))
            )
            for v in (cfg.stable_version, cfg.candidate_version)
        }
        self._current: dict[tuple[str, Labels], float] = {}
        self._series: dict[tuple[str, Labels], list[float]] = {}
        # name -> (labels, values) of every series of that name: what ``series`` reads.
        self._by_name: dict[str, list[tuple[dict[str, str], list[float]]]] = {}
        self._label_sets: dict[tuple[str, str, str], list[tuple[str, Labels]]] = {}
        self.series_added = 0
        """How many series exist: a reader may cache which series a selector matches."""
        self._truth: list[dict[str, float]] = []

    # ------------------------------------------------------------------ time

    @property
    def now(self) -> float:
        """Seconds since the world started (the end of the last interval)."""
        return self.intervals * self.config.interval_seconds

    def _diurnal(self, t: float) -> float:
        return math.sin(2 * math.pi * (t + self.phase) / self.config.day_seconds)

    def _active(self, kind: Kind, version: str) -> bool:
        r = self.regression
        return (
            r is not None
            and r.kind is kind
            and version == self.config.candidate_version
            and self.intervals >= r.start
        )

    # ------------------------------------------------------------------ one interval

    def _latency_probs(self, scale: float) -> NDArray[np.float64]:
        cfg = self.config
        finite = np.array([b if math.isfinite(b) else 1.0 for b in cfg.buckets])
        z = (np.log(finite) - math.log(scale)) / cfg.latency_sigma
        return _share_probs(cfg.buckets, special.ndtr(z))

    def _scales(self, version: str, t_mid: float) -> list[float]:
        cfg = self.config
        factor = 1 + cfg.diurnal_latency * self._diurnal(t_mid)
        if self._active(Kind.LATENCY, version):
            assert self.regression is not None
            factor *= self.regression.latency_factor
        return [cfg.latency_median * pod.latency * factor for pod in self.pods[version]]

    def _error_rates(self, version: str) -> list[float]:
        cfg = self.config
        extra = 0.0
        if self._active(Kind.ERRORS, version):
            assert self.regression is not None
            extra = self.regression.error_points
        return [min(1.0, cfg.error_rate * pod.errors + extra) for pod in self.pods[version]]

    def _agreement(self) -> float:
        if self._active(Kind.AGREEMENT, self.config.candidate_version):
            assert self.regression is not None
            return self.regression.agreement
        return self.config.agreement

    def step(self, intervals: int = 1) -> None:
        """Advance the world by ``intervals`` intervals."""
        for _ in range(intervals):
            self._step_once()

    def _step_once(self) -> None:
        cfg = self.config
        t_mid = self.now + cfg.interval_seconds / 2
        load = 1 + cfg.diurnal_load * self._diurnal(t_mid)
        truth: dict[str, float] = {}
        for version in (cfg.stable_version, cfg.candidate_version):
            candidate = version == cfg.candidate_version
            mean = cfg.candidate_requests * (1 if candidate else cfg.stable_ratio) * load
            pods = self.pods[version]
            per_pod = self.rng.multinomial(self.rng.poisson(mean), [1 / len(pods)] * len(pods))
            shift = self.drift_shift if self._active(Kind.DRIFT, version) else 0.0
            feature_p = feature_probs(shift, cfg.feature_buckets)
            scales = self._scales(version, t_mid)
            error_rates = self._error_rates(version)
            totals = self.totals[version]
            latency_probs = [self._latency_probs(s) for s in scales]
            for pod, n, scale_p, err_p in zip(
                pods, per_pod, latency_probs, error_rates, strict=True
            ):
                n = int(n)
                errors = int(self.rng.binomial(n, err_p))
                nulls = int(self.rng.binomial(n, cfg.null_rate))
                latency = self.rng.multinomial(n, scale_p).astype(float)
                feature = self.rng.multinomial(n, feature_p).astype(float)
                totals.requests += n
                totals.errors += errors
                totals.nulls += nulls
                totals.latency += latency
                totals.feature += feature
                if cfg.record_series:
                    classes = self.rng.multinomial(n, cfg.classes)
                    self._record_pod(version, pod.name, n, errors, nulls, latency, feature, classes)
            if candidate:
                n_c = int(per_pod.sum())
                unpaired = int(self.rng.binomial(n_c, cfg.unpaired))
                agree = int(self.rng.binomial(n_c - unpaired, self._agreement()))
                totals.agree += agree
                totals.disagree += n_c - unpaired - agree
                totals.unpaired += unpaired
                if cfg.record_series:
                    self._record_shadow(agree, n_c - unpaired - agree, unpaired)
            truth[f"{version}:load"] = mean
            truth[f"{version}:errors"] = float(np.mean(error_rates))
            z = [(math.log(cfg.latency_limit) - math.log(x)) / cfg.latency_sigma for x in scales]
            truth[f"{version}:above"] = float(np.mean(special.ndtr(-np.array(z))))
            truth[f"{version}:shift"] = shift
        truth["agreement"] = self._agreement()
        self._truth.append(truth)
        self.intervals += 1
        for key, value in self._current.items():
            values = self._series.get(key)
            if values is None:
                values = self._series[key] = [0.0] * self.intervals
                self._by_name.setdefault(key[0], []).append((dict(key[1]), values))
                self.series_added += 1
            values.append(value)

    # ------------------------------------------------------------------ series

    def _add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self._add_key((name, frozenset(labels.items())), value)

    def _add_key(self, key: tuple[str, Labels], value: float) -> None:
        self._current[key] = self._current.get(key, 0.0) + value

    def _bucket_keys(self, name: str, pod: str, version: str) -> list[tuple[str, Labels]]:
        """The keys of one pod's ``<name>_bucket`` series then ``<name>_count`` (built once)."""
        cache = (name, pod, version)
        keys = self._label_sets.get(cache)
        if keys is None:
            cfg = self.config
            base = {"model": cfg.model, "version": version, "pod": pod}
            edges, extra = (
                (cfg.buckets, {}) if name == LATENCY else (cfg.feature_buckets, {"feature": "f0"})
            )
            keys = [
                (f"{name}_bucket", frozenset({**base, **extra, "le": _le_text(le)}.items()))
                for le in edges
            ]
            keys.append((f"{name}_count", frozenset({**base, **extra}.items())))
            self._label_sets[cache] = keys
        return keys

    def _record_pod(
        self,
        version: str,
        pod: str,
        n: int,
        errors: int,
        nulls: int,
        latency: NDArray[np.float64],
        feature: NDArray[np.float64],
        classes: NDArray[np.int64],
    ) -> None:
        cfg = self.config
        base = {"model": cfg.model, "version": version, "pod": pod}
        self._add(REQUESTS, base, n)
        self._add(ERRORS, base, errors)
        self._add(NULLS, base, nulls)
        for name, counts in ((LATENCY, latency), (FEATURE, feature)):
            cumulative = np.cumsum(counts).tolist()
            keys = self._bucket_keys(name, pod, version)
            for key, c in zip(keys, [*cumulative, cumulative[-1]], strict=True):
                self._add_key(key, c)
        for i, c in enumerate(classes):
            self._add(PREDICTIONS, {**base, "class": f"c{i}"}, float(c))

    def _record_shadow(self, agree: int, disagree: int, unpaired: int) -> None:
        cfg = self.config
        pair = {
            "model": cfg.model,
            "stable_version": cfg.stable_version,
            "candidate_version": cfg.candidate_version,
        }
        self._add(COMPARISONS, {**pair, "result": "agree"}, agree)
        self._add(COMPARISONS, {**pair, "result": "disagree"}, disagree)
        self._add(
            UNPAIRED, {"model": cfg.model, "candidate_version": cfg.candidate_version}, unpaired
        )

    def series(self, name: str) -> Iterator[tuple[dict[str, str], list[float]]]:
        """Every series of ``name``: its labels and its value at each interval boundary.

        Both are the world's own (the values grow every step): read them, do not change them.
        """
        if not self.config.record_series:
            raise RuntimeError("this world does not record series (record_series=False)")
        yield from self._by_name.get(name, ())

    def value_index(self, t: float) -> int:
        """The boundary whose values hold at time ``t`` (clamped to the recorded ones)."""
        i = math.floor(t / self.config.interval_seconds + 1e-9)
        return min(max(i, 0), self.intervals)

    # ------------------------------------------------------------------ truth

    def truth(self, since: int = 0) -> dict[str, float]:
        """The true values since interval ``since``, load-weighted over the intervals.

        ``error_rate``, ``share_above`` (the share slower than ``latency_limit``) and
        ``agreement`` of the candidate;
        ``psi`` of the candidate's feature against the stable's.
        """
        cfg = self.config
        rows = self._truth[since:]
        if not rows:
            raise ValueError("no intervals yet")
        c, s = cfg.candidate_version, cfg.stable_version
        w = np.array([r[f"{c}:load"] for r in rows])
        w = w / w.sum()
        base = feature_probs(0.0, cfg.feature_buckets)
        cand = sum(
            wi * feature_probs(r[f"{c}:shift"], cfg.feature_buckets)
            for wi, r in zip(w, rows, strict=True)
        )
        return {
            "error_rate": float(np.dot(w, [r[f"{c}:errors"] for r in rows])),
            "stable_error_rate": float(np.mean([r[f"{s}:errors"] for r in rows])),
            "share_above": float(np.dot(w, [r[f"{c}:above"] for r in rows])),
            "agreement": float(np.dot(w, [r["agreement"] for r in rows])),
            "psi": binned_psi(base, np.asarray(cand)),
        }


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else f"{le:g}"
