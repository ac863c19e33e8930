"""How the judge's tests behave on the simulated world, before any gate code uses them.

Run: ``python -m tests.calibration.primitives_study`` (a few minutes on 2 cores).

Straight from ``World.totals`` (no PromQL, no gate code), counts cumulative since the
stage start, one look per interval, three tests at a false-rollback budget of 0.01 split
over them (``alpha_i = 0.01 / 3``):

- errorRate ``max 0.01``: ``binomial_cs`` on errors / requests, prior at the limit;
- latency p99 ``max 0.5``: ``binomial_cs`` on the share of requests slower than the
  bucket boundaries ``resolve_bucket(0.5)`` picks (``le="0.5"``), against ``1 - 0.99``;
- input drift ``psi max 0.2``: ``psi_bounds`` on the feature histograms, candidate
  against stable over the same time.

Healthy runs (default 2,000 x 30 checks): a false rollback is a run in which any of the
three tests is shown bad at any check; its rate comes with the exact (Clopper-Pearson,
two-sided 95%) upper bound. Regressions (default 500 runs each, from the first
interval): the share shown bad within 3 intervals, the median interval of the first bad,
and the **fixed-n power bound**: the power of the most powerful level-``alpha_i`` test
that sees all the data of the first 3 intervals at once (Neyman-Pearson against the
nearest point of the null; for drift with the stable distribution known exactly). No
test that stops within 3 intervals can catch more often than that, sequential or not.
The shadow agreement test (``min 0.95``) runs on the agreement regression at the same
``alpha_i``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from modelrollout.analysis import sequential as sq
from tests.calibration.world import (
    Kind,
    Regression,
    World,
    WorldConfig,
    feature_probs,
    shift_for_psi,
)

Floats = NDArray[np.float64]
BAD, NOT_YET, GOOD = -1, 0, 1

ERROR_MAX = 0.01
LATENCY_MAX, QUANTILE = 0.5, 0.99
PSI_MAX = 0.2
AGREEMENT_MIN = 0.95
CATCH_WITHIN = 3


@dataclass
class Recorded:
    """Cumulative candidate and stable counts of many runs: arrays (runs, checks, ...)."""

    requests: Floats
    errors: Floats
    latency: Floats
    feature: Floats
    stable_feature: Floats
    agree: Floats
    pairs: Floats
    truth: list[dict[str, float]]
    edges: tuple[float, ...]


def record(runs: int, checks: int, seed: int, regression: Regression | None) -> Recorded:
    cfg = WorldConfig(record_series=False)
    c, s = cfg.candidate_version, cfg.stable_version
    kb, kf = len(cfg.buckets), len(cfg.feature_buckets)
    requests = np.zeros((runs, checks))
    errors = np.zeros((runs, checks))
    latency = np.zeros((runs, checks, kb))
    feature = np.zeros((runs, checks, kf))
    stable_feature = np.zeros((runs, checks, kf))
    agree = np.zeros((runs, checks))
    pairs = np.zeros((runs, checks))
    truth = []
    for r in range(runs):
        world = World(seed + r, cfg, regression)
        for t in range(checks):
            world.step()
            cand, stab = world.totals[c], world.totals[s]
            requests[r, t], errors[r, t] = cand.requests, cand.errors
            latency[r, t], feature[r, t] = cand.latency, cand.feature
            stable_feature[r, t] = stab.feature
            agree[r, t], pairs[r, t] = cand.agree, cand.agree + cand.disagree
        truth.append(world.truth())
    return Recorded(
        requests, errors, latency, feature, stable_feature, agree, pairs, truth, cfg.buckets
    )


# ----------------------------------------------------------------------------- the tests


def _three_way(good: NDArray[np.bool_], bad: NDArray[np.bool_]) -> NDArray[np.int_]:
    out: NDArray[np.int_] = np.where(bad, BAD, np.where(good, GOOD, NOT_YET))
    return out


def error_rate_test(rec: Recorded, alpha: float) -> NDArray[np.int_]:
    lo, hi = sq.binomial_cs_many(rec.errors, rec.requests, alpha, prior=sq.beta_prior_at(ERROR_MAX))
    return _three_way(hi <= ERROR_MAX, lo > ERROR_MAX)


def latency_test(rec: Recorded, alpha: float) -> NDArray[np.int_]:
    b_lo, b_hi = sq.resolve_bucket(LATENCY_MAX, rec.edges)
    share = 1 - QUANTILE
    total = rec.latency.sum(axis=-1)
    cumulative = np.cumsum(rec.latency, axis=-1)
    prior = sq.beta_prior_at(share)

    def above(b: float) -> Floats:
        out: Floats = total - cumulative[..., rec.edges.index(b)]
        return out

    _, hi = sq.binomial_cs_many(above(b_lo), total, alpha, prior=prior)
    lo, _ = sq.binomial_cs_many(above(b_hi), total, alpha, prior=prior)
    return _three_way(hi <= share, lo > share)


def drift_test(rec: Recorded, alpha: float) -> NDArray[np.int_]:
    k = rec.feature.shape[-1]
    lo, _, hi = sq.psi_bounds_many(
        rec.stable_feature.reshape(-1, k), rec.feature.reshape(-1, k), alpha
    )
    shape = rec.feature.shape[:2]
    return _three_way(hi.reshape(shape) <= PSI_MAX, lo.reshape(shape) > PSI_MAX)


def agreement_test(rec: Recorded, alpha: float) -> NDArray[np.int_]:
    lo, hi = sq.binomial_cs_many(rec.agree, rec.pairs, alpha, prior=sq.beta_prior_at(AGREEMENT_MIN))
    return _three_way(lo >= AGREEMENT_MIN, hi < AGREEMENT_MIN)


TESTS: dict[str, Callable[[Recorded, float], NDArray[np.int_]]] = {
    "errorRate max 0.01": error_rate_test,
    "latency p99 max 0.5 s": latency_test,
    "drift psi max 0.2": drift_test,
}
REGRESSIONS: dict[Kind, tuple[str, str, Callable[[Recorded, float], NDArray[np.int_]]]] = {
    Kind.LATENCY: ("p99 +20%", "latency p99 max 0.5 s", latency_test),
    Kind.ERRORS: ("errors +2 points", "errorRate max 0.01", error_rate_test),
    Kind.DRIFT: ("input shift PSI 0.25", "drift psi max 0.2", drift_test),
    Kind.AGREEMENT: ("agreement 98% -> 93%", "agreement min 0.95", agreement_test),
}


# ----------------------------------------------------------------------------- bounds


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """Upper end of the exact two-sided Clopper-Pearson interval for k of n."""
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1 - (1 - confidence) / 2, k + 1, n - k))


def ump_binomial_power(n: int, p0: float, p1: float, alpha: float) -> float:
    """Power at ``p1`` of the randomised most powerful level-``alpha`` test of ``p0``.

    One-sided towards ``p1`` (upper tail if ``p1 > p0``): by Neyman-Pearson no test of
    ``p = p0`` at level ``alpha`` on ``n`` trials has more power at ``p1``.
    """
    if p1 < p0:
        return ump_binomial_power(n, 1 - p0, 1 - p1, alpha)
    x = np.arange(n + 1)
    tail0 = stats.binom.sf(x, n, p0)  # P0(X > x)
    c = int(np.argmax(tail0 <= alpha))  # smallest c with P0(X > c) <= alpha
    gamma = (alpha - tail0[c]) / stats.binom.pmf(c, n, p0)
    return float(stats.binom.sf(c, n, p1) + min(1.0, gamma) * stats.binom.pmf(c, n, p1))


def np_multinomial_power(
    n: int, q0: Floats, q1: Floats, alpha: float, *, draws: int, seed: int
) -> float:
    """Power at ``q1`` of the most powerful level-``alpha`` test of ``q0`` (Monte Carlo)."""
    rng = np.random.default_rng(seed)
    weights = np.log(q1 / q0)
    t0 = rng.multinomial(n, q0, size=draws) @ weights
    t1 = rng.multinomial(n, q1, size=draws) @ weights
    critical = float(np.quantile(t0, 1 - alpha))
    return float(np.mean(t1 > critical))


def _mean_truth(rec: Recorded) -> dict[str, float]:
    return {k: float(np.mean([t[k] for t in rec.truth])) for k in rec.truth[0]}


def power_bound(what: str, rec: Recorded, check: int, alpha: float, seed: int) -> float:
    """The fixed-n power bound at ``check`` (1-based) for deciding ``what``.

    ``what`` is a regression kind (showing the limit broken) or ``good:<test>`` (showing
    a healthy run within its limit); the truth is the mean over the runs.
    """
    n = round(float(np.mean(rec.requests[:, check - 1])))
    pairs = round(float(np.mean(rec.pairs[:, check - 1])))
    truth = _mean_truth(rec)
    if what in (Kind.ERRORS, "good:errorRate"):
        return ump_binomial_power(n, ERROR_MAX, truth["error_rate"], alpha)
    if what in (Kind.LATENCY, "good:latency"):
        return ump_binomial_power(n, 1 - QUANTILE, truth["share_above"], alpha)
    if what == Kind.AGREEMENT:
        return ump_binomial_power(pairs, AGREEMENT_MIN, truth["agreement"], alpha)
    q0 = feature_probs(shift_for_psi(PSI_MAX))
    q1 = feature_probs(shift_for_psi(truth["psi"]) if truth["psi"] > 1e-9 else 0.0)
    return np_multinomial_power(n, q0, q1, alpha, draws=100_000, seed=seed)


BOUND_ASSUMES = {
    Kind.ERRORS: "binomial UMP, 0.01 vs the mean true rate",
    Kind.LATENCY: "binomial UMP on the share > 0.5 s, 0.01 vs the mean true share",
    Kind.AGREEMENT: "binomial UMP on pairs, 0.95 vs 0.93",
    Kind.DRIFT: "multinomial NP, stable known exactly, PSI 0.2 vs 0.25 (mean shifts)",
}
GOOD_BOUND = {
    "errorRate max 0.01": "good:errorRate",
    "latency p99 max 0.5 s": "good:latency",
    "drift psi max 0.2": "good:drift",
}


# ----------------------------------------------------------------------------- report


def first(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """1-based check of the first True per run; inf when never."""
    out: NDArray[np.float64] = np.where(mask.any(axis=1), mask.argmax(axis=1) + 1.0, math.inf)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="healthy runs")
    parser.add_argument("--checks", type=int, default=30, help="checks per run")
    parser.add_argument("--regression-runs", type=int, default=500)
    parser.add_argument("--budget", type=float, default=0.01)
    parser.add_argument("--gates", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    alpha = sq.budget_split(args.budget, args.gates)
    started = time.monotonic()
    out: dict[str, object] = {"alpha_i": alpha, "budget": args.budget, "gates": args.gates}

    healthy = record(args.runs, args.checks, 1_000_000 * args.seed, None)
    simulated = time.monotonic() - started
    shown = {name: test(healthy, alpha) for name, test in TESTS.items()}
    any_bad = np.zeros(args.runs, dtype=bool)
    breaching = sum(
        t["error_rate"] > ERROR_MAX or t["share_above"] > 1 - QUANTILE for t in healthy.truth
    )
    lines = [
        f"Healthy: {args.runs} runs x {args.checks} checks, budget {args.budget:g} over "
        f"{args.gates} gates (alpha_i = {alpha:.5f}); runs whose truth breaks a limit: "
        f"{breaching}",
        "",
        "| Test | Runs shown bad (any check) | Rate | CP 95% upper | Shown good by check "
        f"{args.checks} | Fixed-n bound on good by {args.checks} | Median check to good |",
        "|---|---|---|---|---|---|---|",
    ]
    healthy_out = {}
    for name, s in shown.items():
        bad = (s == BAD).any(axis=1)
        any_bad |= bad
        good_at = first(s == GOOD)
        k = int(bad.sum())
        median = float(np.median(good_at))
        good_bound = power_bound(GOOD_BOUND[name], healthy, args.checks, alpha, args.seed)
        lines.append(
            f"| {name} | {k} | {k / args.runs:.4f} | {clopper_pearson_upper(k, args.runs):.4f} "
            f"| {np.isfinite(good_at).mean():.1%} | {good_bound:.1%} | "
            f"{'>' + str(args.checks) if math.isinf(median) else f'{median:.0f}'} |"
        )
        healthy_out[name] = {
            "false_fail": k,
            "shown_good": float(np.isfinite(good_at).mean()),
            "good_bound": good_bound,
        }
    k = int(any_bad.sum())
    lines.append(
        f"| **any of the three (false rollback)** | {k} | {k / args.runs:.4f} | "
        f"{clopper_pearson_upper(k, args.runs):.4f} | | | |"
    )
    out["healthy"] = {
        "runs": args.runs,
        "checks": args.checks,
        "false_rollbacks": k,
        "cp95_upper": clopper_pearson_upper(k, args.runs),
        "tests": healthy_out,
        "truth_breaching": breaching,
    }
    lines += [
        "",
        f"Regressions: {args.regression_runs} runs each, from the first interval, "
        f"{args.checks} checks, alpha_i = {alpha:.5f}",
        "",
        f"| Regression | Test | Shown bad within {CATCH_WITHIN} | Median check to bad | "
        f"Fixed-n bound at {CATCH_WITHIN} | Shown bad by check {args.checks} | "
        f"Fixed-n bound at {args.checks} | Bound assumes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    regressions_out = {}
    for i, (kind, (label, test_name, test)) in enumerate(REGRESSIONS.items()):
        rec = record(
            args.regression_runs, args.checks, 2_000_000 * args.seed + 10_000 * i, Regression(kind)
        )
        bad_at = first(test(rec, alpha) == BAD)
        within = float(np.mean(bad_at <= CATCH_WITHIN))
        median = float(np.median(bad_at))
        bound = power_bound(kind, rec, CATCH_WITHIN, alpha, seed=args.seed + i)
        bound_end = power_bound(kind, rec, args.checks, alpha, seed=args.seed + i)
        lines.append(
            f"| {label} | {test_name} | {within:.1%} | "
            f"{'>' + str(args.checks) if math.isinf(median) else f'{median:.0f}'} | "
            f"{bound:.1%} | {np.isfinite(bad_at).mean():.1%} | {bound_end:.1%} | "
            f"{BOUND_ASSUMES[kind]} |"
        )
        regressions_out[kind.value] = {
            "within": within,
            "median_check": None if math.isinf(median) else median,
            "caught_by_end": float(np.isfinite(bad_at).mean()),
            "power_bound": bound,
            "power_bound_end": bound_end,
            "bound_assumes": BOUND_ASSUMES[kind],
            "mean_truth": _mean_truth(rec),
        }
    out["regressions"] = regressions_out
    elapsed = time.monotonic() - started
    out["seconds"] = elapsed
    lines += ["", f"Time: {elapsed:.0f} s (healthy world simulation {simulated:.0f} s)."]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
