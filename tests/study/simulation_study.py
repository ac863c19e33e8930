"""The simulation study of issue 4: how often do the gates get it wrong, how fast do they catch?

Over many seeded runs in the real local environment (a real Prometheus scraping real
simulated model-server processes, the operator's own gate code and engine), this
measures:

* how often a **healthy** candidate is wrongly rolled back (aim: at most 1 %);
* how many check intervals it takes to catch a **20 % p99 latency regression**, a
  **2-point rise in the error rate** and an **input shift of PSI 0.25** on one feature
  (aim: within 3 intervals in 95 % of runs).

Set-up of one run (``study-<scenario>-<seed>``): two model-server processes (v1 stable,
v2 candidate, per-run seeds), one in-process :class:`TrafficGenerator` splitting 50/50
between them (a canary at 50 %, fixed split), Prometheus scraping both every second.
Every ``--interval`` seconds after traffic starts the gates are evaluated with
``modelrollout.analysis.gates.evaluate`` against that Prometheus, ``--checks`` times.
Afterwards each run's recorded results are replayed through the real engine
(``modelrollout.engine.decide``, failureLimit 2) once per gate and per gate bundle, which
gives the check at which the rollout would have been rolled back.

Before the runs, a calibration step fixes the faults and the p99 threshold:

* the latency fault ``latency_ms`` is solved on the model server's own service-time
  model (median ``--base-latency-ms``, lognormal jitter) so that v2's p99 is 1.2x v1's;
* the input shift is solved so that PSI(N(0,1), N(shift,1)) over the server's feature
  buckets is 0.25;
* the ``p99-max`` threshold is 1.1x the stable p99 that Prometheus shows
  (``histogram_quantile`` over a calibration window, at the study's load), which is
  what most users write.

Run: ``python -m tests.study.simulation_study`` (about 21 minutes on 2 cores); options
below. Writes ``docs/study-results.json`` and prints a summary. The numbers and their
discussion are in docs/analysis.md, "Simulation study".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

import modelrollout
import modelrollout_devenv as devenv
from modelrollout.analysis import stats
from modelrollout.analysis.gates import GateContext, evaluate
from modelrollout.analysis.source import PrometheusSource
from modelrollout.api.gates import MetricGate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import GateResult, ModelRolloutStatus, Phase, Verdict
from modelrollout.engine import Observations, Preflight, TrafficState, decide
from modelrollout_devenv.procs import Supervisor, http_probe, wait_until
from modelrollout_devenv.prometheus import PrometheusServer, Target
from modelrollout_devenv.sim.model_server import FEATURE_BUCKETS
from modelrollout_devenv.sim.traffic import Reply, Split, TrafficGenerator

SCENARIOS = ("healthy", "latency", "errors", "drift")
REGRESSIONS = ("latency", "errors", "drift")
NAMESPACE = "study"
STABLE, CANDIDATE = "v1", "v2"
FAILURE_LIMIT = 2
WITHIN = 3  # the aim: caught within 3 intervals
T0 = datetime(2026, 1, 1, 12, 0, 0)

#: Which gates are meant to catch which regression.
SIGNAL_GATES: dict[str, tuple[str, ...]] = {
    "latency": ("p99-max", "p99-vs-stable", "latency-mw", "latency-mw-025"),
    "errors": ("error-rate-max", "error-rate-3x", "error-msprt", "error-msprt-a01"),
    "drift": ("drift-psi", "drift-psi-150"),
}
#: Gate bundles a user would put in one rollout (each gate alone is replayed too).
BUNDLES: dict[str, tuple[str, ...]] = {
    "thresholds": ("p99-max", "error-rate-max", "drift-psi"),
    "judges": ("latency-mw", "error-msprt", "drift-psi"),
    "judges-a01": ("latency-mw", "error-msprt-a01", "drift-psi"),
    "variants": ("latency-mw-025", "error-rate-3x", "drift-psi-150"),
}


# ============================================================================ config


@dataclass(frozen=True)
class Config:
    interval: float
    checks: int
    rate: float
    concurrency: int
    base_latency_ms: float
    base_error_rate: float
    error_rise: float
    latency_ratio: float
    target_psi: float
    p99_margin: float
    calibration_seconds: float
    seed: int

    @property
    def interval_text(self) -> str:
        return f"{self.interval:g}s"


@dataclass(frozen=True)
class Calibration:
    latency_ms: float
    model_p99_ms: float
    model_p99_faulted_ms: float
    input_shift: float
    psi_of_shift: float
    p99_max_seconds: float
    calibration_p99_seconds: float | None
    calibration_runs: int


def solve_latency_fault(base_ms: float, ratio: float, seed: int) -> tuple[float, float, float]:
    """``latency_ms`` that makes the server's p99 ``ratio`` times its healthy p99.

    The server's service time is ``base * LN(0, 0.35) + latency_ms * LN(0, 0.1)``
    (``ModelServer._service_time``); solved by Monte Carlo with common random numbers.
    Returns (latency_ms, healthy p99, faulted p99) in milliseconds.
    """
    rng = np.random.default_rng(seed)
    n = 1_000_000
    base = base_ms * np.exp(rng.normal(0.0, 0.35, n))
    jitter = np.exp(rng.normal(0.0, 0.1, n))
    p99 = float(np.quantile(base, 0.99))

    def excess(fault: float) -> float:
        return float(np.quantile(base + fault * jitter, 0.99)) - ratio * p99

    fault = float(brentq(excess, 0.0, 10 * base_ms, xtol=0.01))
    return round(fault, 2), p99, float(np.quantile(base + round(fault, 2) * jitter, 0.99))


def feature_bin_probabilities(shift: float) -> np.ndarray:
    """P(bin) of N(shift, 1) over the model server's feature buckets (+Inf last)."""
    cdf = norm.cdf(np.asarray(FEATURE_BUCKETS) - shift)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def solve_input_shift(target_psi: float) -> tuple[float, float]:
    """The shift s with PSI(N(0,1), N(s,1)) = target over the server's buckets (stats.psi)."""
    reference = feature_bin_probabilities(0.0) * 1e6

    def psi(shift: float) -> float:
        return stats.psi(reference, feature_bin_probabilities(shift) * 1e6)

    shift = float(brentq(lambda s: psi(s) - target_psi, 1e-3, 3.0, xtol=1e-4))
    return round(shift, 3), psi(round(shift, 3))


def build_gates(cfg: Config, p99_max: float) -> list[MetricGate]:
    """The gates measured in every run, one realistic configuration or more per signal."""

    def buckets(version: str, window: str) -> str:
        return (
            "model_request_duration_seconds_bucket"
            f'{{model="{{{{model}}}}",version="{{{{{version}}}}}"}}[{{{{{window}}}}}]'
        )

    def p99(version: str) -> str:
        return f"histogram_quantile(0.99, sum by (le) (rate({buckets(version, 'interval')})))"

    window3 = f"{3 * cfg.interval:g}s"
    sel = '{model="{{model}}",version="{{version}}"}'
    errors, requests = f"model_request_errors_total{sel}", f"model_requests_total{sel}"
    docs: list[dict[str, Any]] = [
        # Latency, as most users write it: a fixed max a little above the healthy p99.
        {"name": "p99-max", "latency": {"quantile": 0.99}, "max": p99_max},
        # Latency relative to stable over the same interval.
        {
            "name": "p99-vs-stable",
            "query": f"{p99('candidateVersion')} / {p99('stableVersion')}",
            "max": 1.1,
        },
        # Kayenta-style: per-step p90 of candidate against stable, since the stage start.
        # minPoints 8 (default 10): two intervals give 9-10 finite points at step 2s.
        {
            "name": "latency-mw",
            "compare": {
                "mode": "mannWhitney",
                "direction": "increase",
                "query": "histogram_quantile(0.9, sum by (le) "
                f"(rate({buckets('version', 'step')})))",
                "step": "2s",
                "confidence": 0.98,
                "effectTolerance": 0.1,
                "minPoints": 8,
            },
        },
        # The same judge with its default effectTolerance (0.25).
        {
            "name": "latency-mw-025",
            "compare": {
                "mode": "mannWhitney",
                "direction": "increase",
                "query": "histogram_quantile(0.9, sum by (le) "
                f"(rate({buckets('version', 'step')})))",
                "step": "2s",
                "confidence": 0.98,
                "effectTolerance": 0.25,
                "minPoints": 8,
            },
        },
        {"name": "error-rate-max", "errorRate": {}, "max": 0.01},
        # The same limit over three intervals' requests instead of one.
        {
            "name": "error-rate-3x",
            "query": f"sum(increase({errors}[{window3}])) / sum(increase({requests}[{window3}]))",
            "max": 0.01,
        },
        {
            "name": "error-msprt",
            "compare": {
                "mode": "msprt",
                "direction": "increase",
                "successes": "model_request_errors_total",
                "trials": "model_requests_total",
                "tau": 0.02,
                "alpha": 0.05,
                "burnIn": 100,
            },
        },
        {
            "name": "error-msprt-a01",
            "compare": {
                "mode": "msprt",
                "direction": "increase",
                "successes": "model_request_errors_total",
                "trials": "model_requests_total",
                "tau": 0.02,
                "alpha": 0.01,
                "burnIn": 100,
            },
        },
        {
            "name": "drift-psi",
            "drift": {
                "metric": "model_input_feature",
                "labels": {"feature": "f0"},
                "method": "psi",
                "window": window3,
                "minSamples": 200,
            },
            "max": 0.2,
        },
        # The same with minSamples 150: a verdict one interval earlier.
        {
            "name": "drift-psi-150",
            "drift": {
                "metric": "model_input_feature",
                "labels": {"feature": "f0"},
                "method": "psi",
                "window": window3,
                "minSamples": 150,
            },
            "max": 0.2,
        },
    ]
    return [MetricGate.model_validate(d) for d in docs]


# ============================================================================ environment


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    roots = [str(Path(pkg.__file__ or "").resolve().parents[1]) for pkg in (modelrollout, devenv)]
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TargetRegistry:
    """Scrape targets of the live runs; every change re-renders and reloads, one at a time."""

    def __init__(self, prometheus: PrometheusServer) -> None:
        self.prometheus = prometheus
        self._targets: dict[str, list[Target]] = {}
        self._lock = threading.Lock()

    def all(self) -> list[Target]:
        return [t for ts in list(self._targets.values()) for t in ts]

    def put(self, owner: str, targets: list[Target]) -> None:
        with self._lock:
            self._targets[owner] = targets
            self.prometheus.refresh()

    def drop(self, owner: str) -> None:
        with self._lock:
            if self._targets.pop(owner, None) is not None and self.prometheus.running:
                with contextlib.suppress(Exception):
                    self.prometheus.refresh()


class TimedGenerator(TrafficGenerator):
    """The traffic generator, also timing every answered request as its client saw it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timings: dict[str, list[float]] = {b: [] for b in self.backends}

    def call(
        self, backend: str, request_id: str, features: Mapping[str, float], *, mirrored: bool
    ) -> Reply:
        started = time.perf_counter()
        reply = super().call(backend, request_id, features, mirrored=mirrored)
        if reply.status is not None:
            self.timings[backend].append(time.perf_counter() - started)
        return reply

    def counter_total(self, name: str, **labels: str) -> float:
        total = 0.0
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


@dataclass
class StudyEnv:
    cfg: Config
    prometheus_url: str
    targets: TargetRegistry
    work_dir: Path
    gates: list[MetricGate]
    base_faults: dict[str, float]
    stop: threading.Event
    started: float


# ============================================================================ one run


@dataclass(frozen=True)
class RunSpec:
    scenario: str
    seed: int
    faults: dict[str, float]
    checks: int
    hold_seconds: float = 0.0

    @property
    def model(self) -> str:
        return f"study-{self.scenario}-{self.seed}"


@dataclass
class RunOutcome:
    spec: RunSpec
    ok: bool = False
    error: str | None = None
    start_offset: float = 0.0
    setup_seconds: float = 0.0
    run_seconds: float = 0.0
    traffic_seconds: float = 0.0
    checks: list[list[GateResult]] = field(default_factory=list)
    check_at: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)
    failures: float = 0.0
    client: dict[str, list[float]] = field(default_factory=dict)
    latency_buckets: dict[str, dict[str, float]] = field(default_factory=dict)
    feature_buckets: dict[str, dict[str, float]] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    loadavg: float = 0.0


class Stopped(Exception):
    """The study was asked to stop."""


def _instant(source: PrometheusSource, promql: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for s in source.instant(promql)]


def _by_le(source: PrometheusSource, metric: str, selector: str, window: str) -> dict[str, float]:
    rows = _instant(source, f"sum by (le) (increase({metric}_bucket{{{selector}}}[{window}]))")
    return {labels["le"]: value for labels, value in rows if "le" in labels}


def _scalar(source: PrometheusSource, promql: str) -> float:
    rows = _instant(source, promql)
    return rows[0][1] if rows and math.isfinite(rows[0][1]) else 0.0


def start_servers(spec: RunSpec, env: StudyEnv, sup: Supervisor, work: Path) -> dict[str, str]:
    urls: dict[str, str] = {}
    lifetime = spec.checks * env.cfg.interval + spec.hold_seconds + 300
    for i, version in enumerate((STABLE, CANDIDATE)):
        faults = dict(env.base_faults)
        if version == CANDIDATE:
            faults.update(spec.faults)
        port_file = work / f"{version}.port"
        port_file.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "modelrollout_devenv.sim.model_server",
            "--model", spec.model, "--version", version,
            "--port", "0", "--port-file", str(port_file),
            "--seed", str(spec.seed * 10 + i),
            "--base-latency-ms", f"{env.cfg.base_latency_ms:g}",
            "--faults", json.dumps(faults),
            "--max-seconds", f"{lifetime:.0f}",
            "--log-level", "WARNING",
        ]  # fmt: skip
        proc = sup.start(f"{spec.model}-{version}", argv, env=child_env())
        wait_until(
            lambda pf=port_file: pf.exists() and pf.read_text().strip() != "",
            30,
            what=f"{spec.model}/{version} port file",
            process=proc,
        )
        url = f"http://127.0.0.1:{int(port_file.read_text().strip())}"
        wait_until(http_probe(url + "/healthz"), 30, what=f"{version} /healthz", process=proc)
        urls[version] = url
    return urls


def run_one(spec: RunSpec, env: StudyEnv) -> RunOutcome:
    """One rollout: start, let traffic flow, evaluate the gates every interval, measure, stop."""
    cfg = env.cfg
    out = RunOutcome(spec, start_offset=time.monotonic() - env.started)
    work = env.work_dir / "runs" / spec.model
    work.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(work)
    gen: TimedGenerator | None = None
    try:
        urls = start_servers(spec, env, sup, work)
        env.targets.put(
            spec.model,
            [Target(f"{spec.model}-{v}", url.removeprefix("http://")) for v, url in urls.items()],
        )
        source = PrometheusSource(env.prometheus_url, timeout=10)
        scraped = f'count by (version) (model_requests_total{{model="{spec.model}"}})'
        wait_until(lambda: len(source.instant(scraped)) == 2, 60, what=f"{spec.model} scraped")
        backends = {f"{spec.model}-{v}": url for v, url in urls.items()}
        split = Split({f"{spec.model}-{STABLE}": 50, f"{spec.model}-{CANDIDATE}": 50}, (), "50/50")
        duration = spec.checks * cfg.interval + spec.hold_seconds
        gen = TimedGenerator(
            lambda: split, backends, rate=cfg.rate, seed=spec.seed, max_seconds=duration + 30
        )
        gen.start()
        t0 = time.monotonic()
        out.setup_seconds = t0 - env.started - out.start_offset
        previous: list[GateResult] = []
        for k in range(1, spec.checks + 1):
            if env.stop.wait(max(0.0, t0 + k * cfg.interval - time.monotonic())):
                raise Stopped
            at = time.monotonic() - t0
            ctx = GateContext(
                model=spec.model,
                namespace=NAMESPACE,
                candidate_version=CANDIDATE,
                stable_version=STABLE,
                interval=cfg.interval_text,
                stage="canary",
                stage_seconds=at,
                previous=tuple(previous),
            )
            results = evaluate(env.gates, source, ctx)
            out.checks.append(results)
            out.check_at.append(round(at, 2))
            out.eval_seconds.append(round(time.monotonic() - t0 - at, 3))
            previous = [*results, *previous]
        if env.stop.wait(max(0.0, t0 + duration - time.monotonic())):
            raise Stopped
        out.traffic_seconds = time.monotonic() - t0
        gen.stop()
        time.sleep(2.5)  # one more scrape after the last request
        window = f"{math.ceil(time.monotonic() - t0) + 5}s"
        for version in (STABLE, CANDIDATE):
            sel = f'model="{spec.model}",version="{version}"'
            out.latency_buckets[version] = _by_le(
                source, "model_request_duration_seconds", sel, window
            )
            out.feature_buckets[version] = _by_le(
                source, "model_input_feature", f'{sel},feature="f0"', window
            )
            out.requests[version] = _scalar(
                source, f"sum(increase(model_requests_total{{{sel}}}[{window}]))"
            )
            out.errors[version] = _scalar(
                source, f"sum(increase(model_request_errors_total{{{sel}}}[{window}]))"
            )
            backend = f"{spec.model}-{version}"
            out.sent[version] = gen.counter_total("traffic_requests_sent_total", backend=backend)
            out.client[version] = gen.timings[backend]
        out.failures = gen.counter_total("traffic_request_failures_total")
        out.loadavg = os.getloadavg()[0]
        out.ok = True
    except Stopped:
        out.error = "stopped"
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    finally:
        if gen is not None:
            with contextlib.suppress(Exception):
                gen.stop(timeout=5)
        env.targets.drop(spec.model)
        sup.stop_all(timeout=5)
        out.run_seconds = time.monotonic() - env.started - out.start_offset
    return out


# ============================================================================ engine replay


def replay(gates: Sequence[MetricGate], checks: Sequence[Sequence[GateResult]], interval: float
           ) -> tuple[str, int | None, int | None]:  # fmt: skip
    """Feed one run's checks through the real engine with ``gates`` as the analysis.

    Returns (the engine's verdict of each check as P/F/I, the first failing check,
    the check at which the rollout was rolled back), checks counted from 1.
    """
    spec = ModelRolloutSpec.model_validate(
        {
            "model": "study",
            "stable": {"version": STABLE},
            "candidate": {"version": CANDIDATE},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "study"}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1h"}}]}},
            "analysis": {
                "interval": f"{interval:g}s",
                "failureLimit": FAILURE_LIMIT,
                "metrics": [g.dump() for g in gates],
            },
        }
    )
    names = {g.name for g in gates}
    # The first tick is the preflight of the gates' queries (they ran against the real
    # Prometheus, so it passes); the second sets the first weight.
    status = ModelRolloutStatus()
    for _ in range(2):
        first = Observations(traffic=TrafficState(0, 0), preflight=Preflight())
        status = ModelRolloutStatus.model_validate(decide(spec, status, first, T0).status)
    assert status.weights.candidate == 50, status.message
    route = TrafficState(50, 0)
    verdicts, first_fail, rollback = "", None, None
    for k, results in enumerate(checks, start=1):
        obs = Observations(analysis=[r for r in results if r.metric in names], traffic=route)
        d = decide(spec, status, obs, T0 + timedelta(seconds=k * interval))
        status = ModelRolloutStatus.model_validate(d.status)
        assert status.last_analysis is not None
        verdict = status.last_analysis.verdict
        verdicts += verdict.value[0]
        if verdict == Verdict.FAIL and first_fail is None:
            first_fail = k
        if status.phase == Phase.ROLLED_BACK:
            rollback = k
            break
        if d.traffic is not None:
            route = d.traffic.state
    return verdicts, first_fail, rollback


# ============================================================================ summaries


def bucket_quantile(q: float, cumulative: Mapping[str, float]) -> float | None:
    """``histogram_quantile`` of Prometheus, on cumulative ``le`` counts."""
    try:
        binned = stats.bins_from_cumulative(cumulative)
    except stats.DistributionMismatch:
        return None
    edges, counts = binned.edges, np.cumsum(binned.counts)
    if not edges or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = int(np.searchsorted(counts, rank, side="left"))
    if math.isinf(edges[i]):
        return edges[i - 1] if i > 0 else None
    lo_edge = edges[i - 1] if i > 0 else 0.0
    lo_count = counts[i - 1] if i > 0 else 0.0
    width = counts[i] - lo_count
    return float(lo_edge + (edges[i] - lo_edge) * ((rank - lo_count) / width if width else 1.0))


def add_buckets(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for p in parts:
        for le, v in p.items():
            key = f"{float(le):g}"
            total[key] = total.get(key, 0.0) + v
    return total


def psi_of(reference: Mapping[str, float], candidate: Mapping[str, float]) -> float | None:
    try:
        aligned = stats.align(
            stats.bins_from_cumulative(reference), stats.bins_from_cumulative(candidate)
        )
        return stats.psi(aligned.reference, aligned.candidate)
    except (stats.DistributionMismatch, ValueError):
        return None


def nearest_rank(values: Sequence[int | None], q: float) -> int | str | None:
    """The q-quantile by nearest rank; ``None`` (not caught) sorts last and reads "never"."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    v = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    return "never" if v is None else v


def share(k: int, n: int) -> dict[str, Any]:
    lo, hi = stats.wilson_interval(k, n, 0.95) if n else (0.0, 1.0)
    return {
        "k": k,
        "n": n,
        "rate": round(k / n, 4) if n else None,
        "ci95": [round(lo, 4), round(hi, 4)],
    }


def quantiles_ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50": round(float(np.quantile(a, 0.5)), 2),
        "p90": round(float(np.quantile(a, 0.9)), 2),
        "p99": round(float(np.quantile(a, 0.99)), 2),
    }


def _sig(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else float(f"{x:.{digits}g}")


@dataclass
class Replayed:
    verdicts: dict[str, str]
    first_fail: dict[str, int | None]
    rollback: dict[str, int | None]


def replay_all(out: RunOutcome, gates: list[MetricGate], interval: float) -> Replayed:
    by_name = {g.name: g for g in gates}
    configs = {g.name: (g.name,) for g in gates} | BUNDLES
    r = Replayed({}, {}, {})
    for name, members in configs.items():
        v, ff, rb = replay([by_name[m] for m in members], out.checks, interval)
        r.verdicts[name], r.first_fail[name], r.rollback[name] = v, ff, rb
    return r


def summarise(
    outcomes: list[RunOutcome], replays: list[Replayed], gates: list[MetricGate], cfg: Config
) -> dict[str, Any]:
    configs = [g.name for g in gates] + list(BUNDLES)
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        pairs = [
            (o, r) for o, r in zip(outcomes, replays, strict=True) if o.spec.scenario == scenario
        ]
        if not pairs:
            continue
        n = len(pairs)
        s: dict[str, Any] = {"runs": n}
        # What the runs measured, pooled over the scenario's runs.
        measured: dict[str, Any] = {}
        for version in (STABLE, CANDIDATE):
            client = [t for o, _ in pairs for t in o.client.get(version, [])]
            lat = add_buckets(o.latency_buckets.get(version, {}) for o, _ in pairs)
            per_run_p99 = [
                bucket_quantile(0.99, o.latency_buckets.get(version, {})) for o, _ in pairs
            ]
            req = sum(o.requests.get(version, 0.0) for o, _ in pairs)
            err = sum(o.errors.get(version, 0.0) for o, _ in pairs)
            measured[version] = {
                "client_ms": quantiles_ms(client),
                "server_histogram_p50_ms": _sig((bucket_quantile(0.5, lat) or math.nan) * 1000),
                "server_histogram_p99_ms": _sig((bucket_quantile(0.99, lat) or math.nan) * 1000),
                "server_histogram_p99_ms_per_run_median": _sig(
                    float(np.median([p for p in per_run_p99 if p is not None])) * 1000
                    if any(p is not None for p in per_run_p99)
                    else None
                ),
                "requests": round(req),
                "error_rate": _sig(err / req) if req else None,
            }
        c1, c2 = measured[STABLE]["client_ms"], measured[CANDIDATE]["client_ms"]
        if c1["p99"] and c2["p99"]:
            measured["client_p99_ratio"] = round(c2["p99"] / c1["p99"], 3)
            measured["client_p50_ratio"] = round(c2["p50"] / c1["p50"], 3)
        h1, h2 = (measured[v]["server_histogram_p99_ms"] for v in (STABLE, CANDIDATE))
        if h1 and h2:
            measured["server_histogram_p99_ratio"] = round(h2 / h1, 3)
        psis = [psi_of(o.feature_buckets.get(STABLE, {}), o.feature_buckets.get(CANDIDATE, {}))
                for o, _ in pairs]  # fmt: skip
        psis_ok = [p for p in psis if p is not None]
        measured["psi_f0_per_run"] = {
            "median": _sig(float(np.median(psis_ok))) if psis_ok else None,
            "p5": _sig(float(np.quantile(psis_ok, 0.05))) if psis_ok else None,
            "p95": _sig(float(np.quantile(psis_ok, 0.95))) if psis_ok else None,
        }
        measured["psi_f0_pooled"] = _sig(
            psi_of(
                add_buckets(o.feature_buckets.get(STABLE, {}) for o, _ in pairs),
                add_buckets(o.feature_buckets.get(CANDIDATE, {}) for o, _ in pairs),
            )
        )
        measured["candidate_requests_per_check_window"] = _sig(
            float(
                np.median(
                    [
                        o.requests.get(CANDIDATE, 0.0) / max(o.traffic_seconds, 1e-9)
                        for o, _ in pairs
                    ]
                )
            )
            * cfg.interval
        )
        s["measured"] = measured
        # Per-check verdicts of each gate alone (P/F/I) and of each bundle.
        per_check: dict[str, Any] = {}
        for name in configs:
            verdicts = "".join(r.verdicts[name] for _, r in pairs)
            raw = ""
            if name not in BUNDLES:
                raw = "".join(
                    res.verdict.value[0]
                    for o, _ in pairs
                    for check in o.checks
                    for res in check
                    if res.metric == name
                )
            per_check[name] = {
                "fail": share(raw.count("F"), len(raw)) if raw else None,
                "inconclusive_share": round(raw.count("I") / len(raw), 4) if raw else None,
                "engine_fail_until_rollback": share(verdicts.count("F"), len(verdicts)),
            }
        s["per_check"] = per_check
        outcomes_by: dict[str, Any] = {}
        for name in configs:
            ff = [r.first_fail[name] for _, r in pairs]
            rb = [r.rollback[name] for _, r in pairs]
            entry: dict[str, Any] = {"rolled_back": share(sum(x is not None for x in rb), n)}
            if scenario != "healthy":
                entry.update(
                    {
                        "first_fail_median": nearest_rank(ff, 0.5),
                        "first_fail_p95": nearest_rank(ff, 0.95),
                        "first_fail_within_3": share(
                            sum(x is not None and x <= WITHIN for x in ff), n
                        ),
                        "rollback_median": nearest_rank(rb, 0.5),
                        "rollback_p95": nearest_rank(rb, 0.95),
                        "rollback_within_3": share(
                            sum(x is not None and x <= WITHIN for x in rb), n
                        ),
                    }
                )
            outcomes_by[name] = entry
        s["outcomes"] = outcomes_by
        summary[scenario] = s
    return summary


# ============================================================================ report


def render_markdown(summary: dict[str, Any], cfg: Config) -> str:
    lines: list[str] = []
    healthy = summary.get("healthy")
    if healthy:
        lines += [
            f"Healthy candidate: {healthy['runs']} runs of {cfg.checks} checks",
            "",
            "| gate or bundle | rolled back | 95 % CI | per-check Fail | 95 % CI | inconclusive |",
            "|---|---|---|---|---|---|",
        ]
        for name, o in healthy["outcomes"].items():
            rb = o["rolled_back"]
            pc = healthy["per_check"][name]
            f = pc["fail"] or pc["engine_fail_until_rollback"]
            inc = pc["inconclusive_share"]
            lines.append(
                f"| {name} | {rb['k']}/{rb['n']} | {rb['ci95'][0]:.3f}-{rb['ci95'][1]:.3f} "
                f"| {f['k']}/{f['n']} ({f['rate']}) | {f['ci95'][0]:.3f}-{f['ci95'][1]:.3f} "
                f"| {'' if inc is None else inc} |"
            )
        lines.append("")
    for scenario in REGRESSIONS:
        s = summary.get(scenario)
        if not s:
            continue
        lines += [
            f"{scenario}: {s['runs']} runs of {cfg.checks} checks",
            "",
            "| gate or bundle | first Fail: median | p95 | within 3 | rollback: median | p95 "
            "| within 3 | 95 % CI |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, o in s["outcomes"].items():
            f3, r3 = o["first_fail_within_3"], o["rollback_within_3"]
            lines.append(
                f"| {name} | {o['first_fail_median']} | {o['first_fail_p95']} | {f3['rate']} "
                f"| {o['rollback_median']} | {o['rollback_p95']} | {r3['rate']} "
                f"| {r3['ci95'][0]:.3f}-{r3['ci95'][1]:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def run_json(out: RunOutcome, rep: Replayed) -> dict[str, Any]:
    values: dict[str, list[float | None]] = {}
    verdicts: dict[str, str] = {}
    for check in out.checks:
        for res in check:
            values.setdefault(res.metric, []).append(_sig(res.value, 3))
            verdicts[res.metric] = verdicts.get(res.metric, "") + res.verdict.value[0]
    return {
        "model": out.spec.model,
        "scenario": out.spec.scenario,
        "seed": out.spec.seed,
        "ok": out.ok,
        "error": out.error,
        "start_s": round(out.start_offset, 1),
        "setup_s": round(out.setup_seconds, 1),
        "run_s": round(out.run_seconds, 1),
        "sent": {v: round(x) for v, x in out.sent.items()},
        "failures": round(out.failures),
        "client_p99_ms": {v: quantiles_ms(t)["p99"] for v, t in out.client.items()},
        "server_p99_ms": {
            v: _sig((bucket_quantile(0.99, b) or math.nan) * 1000)
            for v, b in out.latency_buckets.items()
        },
        "errors": {v: round(out.errors.get(v, 0.0)) for v in out.requests},
        "requests": {v: round(x) for v, x in out.requests.items()},
        "psi_f0": _sig(
            psi_of(out.feature_buckets.get(STABLE, {}), out.feature_buckets.get(CANDIDATE, {}))
        ),
        "max_eval_s": max(out.eval_seconds, default=None),
        "gates": verdicts,
        "values": values,
        "rollback": {k: v for k, v in rep.rollback.items() if v is not None},
    }


def compact_json(doc: Mapping[str, Any], inline_depth: Mapping[str, int], default: int = 2) -> str:
    """JSON with nesting down to a depth per top-level key, then one line per value."""

    def dump(value: Any, depth: int, indent: str) -> str:
        if depth <= 0 or not isinstance(value, dict | list) or not value:
            return json.dumps(value, separators=(",", ":"))
        inner = indent + "  "
        if isinstance(value, list):
            items = [inner + dump(v, depth - 1, inner) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + indent + "]"
        items = [f"{inner}{json.dumps(k)}: {dump(v, depth - 1, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"

    lines = [
        f"  {json.dumps(k)}: {dump(v, inline_depth.get(k, default), '  ')}" for k, v in doc.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


# ============================================================================ driving


def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return sum(parts), parts[3] + parts[4]


def schedule(specs_by_scenario: Mapping[str, list[RunSpec]]) -> list[RunSpec]:
    """Interleave the scenarios so that each is spread evenly over the study's time."""
    keyed = [
        ((i + 0.5) / len(specs), SCENARIOS.index(name), spec)
        for name, specs in specs_by_scenario.items()
        for i, spec in enumerate(specs)
    ]
    return [spec for *_, spec in sorted(keyed, key=lambda t: (t[0], t[1]))]


def run_pool(
    specs: list[RunSpec], env: StudyEnv, concurrency: int, deadline: float, label: str
) -> list[RunOutcome]:
    pending = list(reversed(specs))
    lock = threading.Lock()
    done: list[RunOutcome] = []

    def slot(i: int) -> None:
        if env.stop.wait(i * 1.0):  # stagger the start-up bursts
            return
        while not env.stop.is_set() and time.monotonic() < deadline:
            with lock:
                if not pending:
                    return
                spec = pending.pop()
            out = run_one(spec, env)
            with lock:
                done.append(out)
                n = len(done)
            status = "ok" if out.ok else f"FAILED {out.error}"
            print(
                f"[{label} {n}/{len(specs)} {time.monotonic() - env.started:6.0f}s] "
                f"{spec.model}: {status}; load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )

    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(1.0)
    return done


def prometheus_version() -> str:
    try:
        text = subprocess.run(
            ["/usr/bin/prometheus", "--version"], capture_output=True, text=True, timeout=10
        )
        return (text.stdout or text.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.study.simulation_study",
        description="Seeded rollouts against a real Prometheus: false rollbacks and detection "
        "delays of the gates (issue 4).",
    )
    p.add_argument("--runs", type=int, default=32, help="runs per regression scenario")
    p.add_argument("--healthy-runs", type=int, help="healthy runs (default: 4 x --runs)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    p.add_argument("--checks", type=int, default=8, help="checks per run")
    p.add_argument("--concurrency", type=int, default=16, help="runs at the same time")
    p.add_argument("--rate", type=float, default=20.0, help="requests/s per run (50/50 split)")
    p.add_argument("--base-latency-ms", type=float, default=20.0)
    p.add_argument("--base-error-rate", type=float, default=0.001, help="on both versions")
    p.add_argument("--error-rise", type=float, default=0.02, help="added on v2 (errors)")
    p.add_argument("--latency-ratio", type=float, default=1.2, help="v2 p99 / v1 p99 (latency)")
    p.add_argument("--psi", type=float, default=0.25, help="PSI of the input shift (drift)")
    p.add_argument("--p99-margin", type=float, default=1.1, help="p99-max = margin x stable p99")
    p.add_argument("--calibration-seconds", type=float, default=40.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=40.0, help="start no run after this")
    p.add_argument("--out", type=Path, default=Path("docs/study-results.json"))
    p.add_argument("--keep-work", action="store_true", help="keep logs and the TSDB")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = Config(
        interval=args.interval,
        checks=args.checks,
        rate=args.rate,
        concurrency=args.concurrency,
        base_latency_ms=args.base_latency_ms,
        base_error_rate=args.base_error_rate,
        error_rise=args.error_rise,
        latency_ratio=args.latency_ratio,
        target_psi=args.psi,
        p99_margin=args.p99_margin,
        calibration_seconds=args.calibration_seconds,
        seed=args.seed,
    )
    healthy_runs = args.healthy_runs if args.healthy_runs is not None else 4 * args.runs
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    cpu0 = cpu_times()

    latency_ms, model_p99, model_p99_faulted = solve_latency_fault(
        cfg.base_latency_ms, cfg.latency_ratio, cfg.seed
    )
    shift, shift_psi = solve_input_shift(cfg.target_psi)
    print(
        f"calibration: latency_ms {latency_ms} (model p99 {model_p99:.2f} -> "
        f"{model_p99_faulted:.2f} ms), input_shift {shift} (PSI {shift_psi:.4f})",
        file=sys.stderr,
    )

    work_dir = Path(tempfile.mkdtemp(prefix="modelrollout-study-"))
    prometheus = PrometheusServer(scrape_interval="1s", work_dir=work_dir / "prometheus")
    targets = TargetRegistry(prometheus)
    prometheus.set_targets(targets.all)
    stop = threading.Event()
    base_faults = {"error_rate": cfg.base_error_rate} if cfg.base_error_rate else {}
    try:
        prometheus.start()
        env = StudyEnv(cfg, prometheus.url, targets, work_dir, [], base_faults, stop, started)

        # 1. The p99 a user would read off a dashboard, at the study's load.
        calib_specs = [
            RunSpec("calibration", cfg.seed * 100_000 + 90_000 + i, {}, 0, cfg.calibration_seconds)
            for i in range(cfg.concurrency)
        ]
        calib = run_pool(calib_specs, env, cfg.concurrency, deadline, "calibration")
        calib_ok = [o for o in calib if o.ok]
        pooled = add_buckets(o.latency_buckets.get(STABLE, {}) for o in calib_ok)
        calib_p99 = bucket_quantile(0.99, pooled)
        if calib_p99 is None:
            raise SystemExit("calibration failed: no latency data from the stable versions")
        p99_max = round(cfg.p99_margin * calib_p99, 4)
        calibration = Calibration(
            latency_ms=latency_ms,
            model_p99_ms=round(model_p99, 3),
            model_p99_faulted_ms=round(model_p99_faulted, 3),
            input_shift=shift,
            psi_of_shift=round(shift_psi, 4),
            p99_max_seconds=p99_max,
            calibration_p99_seconds=round(calib_p99, 5),
            calibration_runs=len(calib_ok),
        )
        print(f"calibration: stable p99 {calib_p99 * 1000:.1f} ms -> p99-max {p99_max}",
              file=sys.stderr)  # fmt: skip
        env.gates = build_gates(cfg, p99_max)

        # 2. The runs.
        faults = {
            "healthy": {},
            "latency": {"latency_ms": latency_ms},
            "errors": {"error_rate": cfg.base_error_rate + cfg.error_rise},
            "drift": {"input_shift": shift},
        }
        counts = {s: (healthy_runs if s == "healthy" else args.runs) for s in SCENARIOS}
        specs = schedule(
            {
                s: [
                    RunSpec(s, cfg.seed * 100_000 + j * 10_000 + i, faults[s], cfg.checks)
                    for i in range(counts[s])
                ]
                for j, s in enumerate(SCENARIOS)
                if counts[s] > 0
            }
        )
        outcomes = run_pool(specs, env, cfg.concurrency, deadline, "study")
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        stop.set()
        prometheus.stop()
        if not args.keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"work dir kept: {work_dir}", file=sys.stderr)
    cpu1 = cpu_times()
    wall = time.monotonic() - started

    ok = sorted((o for o in outcomes if o.ok), key=lambda o: (o.spec.scenario, o.spec.seed))
    failed = [o for o in outcomes if not o.ok]
    replays = [replay_all(o, env.gates, cfg.interval) for o in ok]
    summary = summarise(ok, replays, env.gates, cfg)
    sent = sum(sum(o.sent.values()) for o in ok)
    traffic_s = sum(o.traffic_seconds for o in ok)
    doc = {
        "study": {
            "started": started_wall.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_seconds": round(wall),
            "command": " ".join(
                ["python -m tests.study.simulation_study", *(argv or sys.argv[1:])]
            ),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "prometheus": prometheus_version(),
            },
            "cpu_busy_share": round(1 - (cpu1[1] - cpu0[1]) / max(1, cpu1[0] - cpu0[0]), 3),
            "loadavg_at_run_end": {
                "median": _sig(float(np.median([o.loadavg for o in ok]))) if ok else None,
                "max": _sig(max((o.loadavg for o in ok), default=0.0)),
            },
            "runs_ok": len(ok),
            "runs_failed": [{"model": o.spec.model, "error": o.error} for o in failed],
            "requests_per_run_per_s": _sig(sent / traffic_s) if traffic_s else None,
            "traffic_failures": round(sum(o.failures for o in ok)),
            "max_check_evaluation_s": max(
                (max(o.eval_seconds, default=0) for o in ok), default=None
            ),
        },
        "config": {
            "interval_s": cfg.interval,
            "checks": cfg.checks,
            "rate_rps": cfg.rate,
            "split": "50/50 (canary at 50 %)",
            "concurrency": cfg.concurrency,
            "scrape_interval": "1s",
            "base_latency_ms": cfg.base_latency_ms,
            "base_error_rate": cfg.base_error_rate,
            "failure_limit": FAILURE_LIMIT,
            "runs": {s: counts[s] for s in SCENARIOS},
            "seed": cfg.seed,
            "faults_on_v2": faults,
        },
        "calibration": calibration.__dict__,
        "gates": [g.dump() for g in env.gates],
        "bundles": {k: list(v) for k, v in BUNDLES.items()},
        "signal_gates": {k: list(v) for k, v in SIGNAL_GATES.items()},
        "summary": summary,
        "runs": [run_json(o, r) for o, r in zip(ok, replays, strict=True)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(compact_json(doc, inline_depth={"runs": 1, "summary": 3}) + "\n")
    print(render_markdown(summary, cfg))
    print(
        f"wall {wall:.0f}s; {len(ok)} runs ok, {len(failed)} failed; results in {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
