"""``make calibrate``: the judge measured end to end on the simulated world.

Run: ``python -m tests.calibration.calibrate`` (the full calibration: about 10 minutes on
2 cores), ``--quick`` for a smoke run of a few seconds.

Unlike ``primitives_study`` (the statistics on their own), this drives the operator's
real pure code path, check by check, faster than real time: ``engine.plan`` says whether
a check is due and of which gates, ``gates.context_for`` builds the gates' context from
the status, ``gates.evaluate`` (the registry) runs every gate against
``fake_prometheus.FakePrometheus``, which answers the gates' PromQL from a seeded
``world.World``, and ``engine.decide`` turns the results into the next status. The
clock is simulated: every tick advances the world by one analysis interval and the
engine's ``now`` is the world's time. Only those public surfaces and the API models are
used, so the harness measures whatever judge the gate modules implement today.

**The rollout** (:func:`rollout_spec`): a canary of three ``setWeight`` steps each
followed by a 10-minute pause, checks every minute, the default ``failureLimit``,
``inconclusiveLimit`` and ``falseRollbackBudget``, and three gates at their defaults:
``errorRate`` max 0.01, ``latency`` p99 max 0.5 s, input ``drift`` (PSI) max 0.2 against
stable. A healthy candidate can be promoted at the 30th check at the earliest; a run
ends at a terminal phase or after ``--max-checks`` checks (default 30: every healthy run
has 30 checks or is promoted at the 30th; a regression run stops after
``--regression-max-checks``, default 10). The world sends
about 100 requests per interval to the candidate whatever its weight.

**Regressions** (from the first interval; ``world.Regression``): p99 +20%, errors +2
points, an input shift of PSI 0.25, and shadow agreement 98% -> 93%. The last one runs
the same rollout behind a 30-minute shadow stage with a fourth gate, ``agreement`` min
0.95 in shadow only (so its budget is split over 3 x 2 + 1 tests). A regression counts
as caught when the engine rolls the rollout back; next to the share caught within 3
intervals stands the fixed-n power bound: the power of the most powerful level-alpha_i
test that sees all the data of the first 3 intervals at once (Neyman-Pearson, as in
``primitives_study``). No test, sequential or not, can catch more often than that; the
last column is the traffic per interval at which that bound reaches 95%, the least any
level-alpha_i test needs to catch 95% within 3 intervals.

Outputs: a markdown table between ``<!-- calibrate:begin -->`` and
``<!-- calibrate:end -->`` in docs/analysis.md (replaced in place), the numbers in
docs/calibration-results.json, and the wall time on stdout. Every run is seeded from
``--seed``, the scenario and its index, so the numbers do not depend on ``--processes``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from modelrollout.analysis.gates import context_for, evaluate
from modelrollout.api.gates import MetricGate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, Verdict
from modelrollout.engine import Observations, Preflight, TrafficState, decide, plan
from tests.calibration.fake_prometheus import FakePrometheus
from tests.calibration.primitives_study import (
    clopper_pearson_upper,
    np_multinomial_power,
    ump_binomial_power,
)
from tests.calibration.world import (
    Kind,
    Regression,
    World,
    WorldConfig,
    feature_probs,
    shift_for_psi,
)

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS_MD = ROOT / "docs" / "analysis.md"
RESULTS_JSON = ROOT / "docs" / "calibration-results.json"
BEGIN, END = "<!-- calibrate:begin -->", "<!-- calibrate:end -->"

NAMESPACE = "calibration"
START = datetime(2025, 1, 6, 0, 0, 0)  # naive UTC, as the engine works
CATCH_WITHIN = 3
ERROR_MAX, LATENCY_MAX, QUANTILE, PSI_MAX, AGREEMENT_MIN = 0.01, 0.5, 0.99, 0.2, 0.95


# ----------------------------------------------------------------------------- the rollout


def default_gates(*, agreement: bool = False) -> list[MetricGate]:
    """The three gates at their defaults, and the shadow agreement gate when asked."""
    raw: list[dict[str, Any]] = [
        {"name": "error-rate", "errorRate": {}, "max": ERROR_MAX},
        {"name": "p99", "latency": {"quantile": QUANTILE}, "max": LATENCY_MAX},
        {"name": "input-drift", "drift": {"metric": "model_input_feature"}, "max": PSI_MAX},
    ]
    if agreement:
        raw.append(
            {
                "name": "agreement",
                "agreement": {},
                "min": AGREEMENT_MIN,
                "stages": ["shadow"],
            }
        )
    return [MetricGate.model_validate(g) for g in raw]


def rollout_spec(*, shadow: bool = False, config: WorldConfig | None = None) -> ModelRolloutSpec:
    """The calibrated rollout: 3 x (setWeight, pause 10m), checks every minute."""
    cfg = config or WorldConfig()
    steps: list[dict[str, Any]] = []
    for weight in (10, 30, 60):
        steps += [{"setWeight": weight}, {"pause": {"duration": "10m"}}]
    strategy: dict[str, Any] = {"canary": {"steps": steps}}
    if shadow:
        strategy["shadow"] = {"mirrorPercent": 100, "duration": "30m"}
    seconds = cfg.interval_seconds
    interval = f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"
    return ModelRolloutSpec.model_validate(
        {
            "model": cfg.model,
            "stable": {"version": cfg.stable_version},
            "candidate": {"version": cfg.candidate_version},
            "trafficRouting": {"gatewayAPI": {"httpRoute": cfg.model}},
            "strategy": strategy,
            "analysis": {
                "interval": interval,
                "metrics": [
                    g.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for g in default_gates(agreement=shadow)
                ],
            },
        }
    )


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Scenario:
    """One row of the calibration: a world, a rollout and how many runs of it."""

    name: str
    label: str
    regression: Regression | None
    gate: str
    """The gate meant to catch it (the healthy scenario: every gate)."""
    shadow: bool = False


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario("healthy", "healthy", None, "any"),
    "latency": Scenario("latency", "p99 +20%", Regression(Kind.LATENCY), "p99"),
    "errors": Scenario("errors", "errors +2 points", Regression(Kind.ERRORS), "error-rate"),
    "drift": Scenario("drift", "input shift PSI 0.25", Regression(Kind.DRIFT), "input-drift"),
    "agreement": Scenario(
        "agreement", "agreement 98% -> 93%", Regression(Kind.AGREEMENT), "agreement", shadow=True
    ),
}


@dataclass
class RunResult:
    """What one simulated rollout did."""

    scenario: str
    seed: int
    phase: str
    checks: int
    """Checks run (analysis intervals with a check) until the end of the run."""
    rolled_back_at: int | None
    promoted_at: int | None
    failed_gates: list[str] = field(default_factory=list)
    """The gates that failed at the check that rolled the rollout back."""
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per gate: how many checks gave each verdict."""
    requests: float = 0.0
    """Requests the candidate served over the whole run."""
    intervals: int = 0
    truth: dict[str, float] = field(default_factory=dict)


def run_rollout(
    scenario: Scenario, seed: int, *, max_checks: int, config: WorldConfig | None = None
) -> RunResult:
    """One rollout through the engine and the gates, on a simulated clock."""
    world = World(seed, config or WorldConfig(), scenario.regression)
    spec = rollout_spec(shadow=scenario.shadow, config=world.config)
    source = FakePrometheus(world)
    status = ModelRolloutStatus()
    status = ModelRolloutStatus.model_validate(decide(spec, status, Observations(), START).status)
    checks, rolled_back_at, promoted_at = 0, None, None
    failed: list[str] = []
    verdicts: dict[str, Counter[str]] = {}
    # A check every interval once traffic flows; the tick cap only guards against a spec
    # in which no check ever becomes due.
    for _ in range(4 * max_checks):
        if status.phase.is_terminal or checks >= max_checks:
            break
        world.step()
        now = START + timedelta(seconds=world.now)
        p = plan(spec, status, now)
        results = None
        if p.check_due:
            ctx = context_for(
                spec,
                status,
                namespace=NAMESPACE,
                now=now,
                candidate_version=p.candidate_version,
                stable_version=p.stable_version,
                stage=p.stage or "",
            )
            results = evaluate(list(p.gates), source, ctx)
            checks += 1
            for r in results:
                verdicts.setdefault(r.metric, Counter())[r.verdict.value] += 1
        traffic = TrafficState(status.weights.candidate, status.mirror_percent)
        # Every gate's query is valid PromQL against the fake Prometheus: the preflight,
        # when the plan asks for one, passes.
        preflight = Preflight() if p.preflight else None
        observed = Observations(analysis=results, traffic=traffic, preflight=preflight)
        decision = decide(spec, status, observed, now)
        status = ModelRolloutStatus.model_validate(decision.status)
        if status.phase == Phase.ROLLED_BACK and results is not None:
            rolled_back_at = checks
            failed = [r.metric for r in results if r.verdict == Verdict.FAIL]
        elif status.phase == Phase.SUCCEEDED:
            promoted_at = checks
    return RunResult(
        scenario=scenario.name,
        seed=seed,
        phase=status.phase.value,
        checks=checks,
        rolled_back_at=rolled_back_at,
        promoted_at=promoted_at,
        failed_gates=failed,
        verdicts={k: dict(v) for k, v in verdicts.items()},
        requests=world.totals[world.config.candidate_version].requests,
        intervals=world.intervals,
        truth=world.truth() if world.intervals else {},
    )


def _run_job(job: tuple[str, int, int]) -> RunResult:
    name, seed, max_checks = job
    return run_rollout(SCENARIOS[name], seed, max_checks=max_checks)


def run_many(jobs: Sequence[tuple[str, int, int]], processes: int) -> list[RunResult]:
    """Every job, over ``processes`` worker processes (1: in this process)."""
    if processes <= 1:
        return [_run_job(j) for j in jobs]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        return list(pool.imap(_run_job, jobs, chunksize=8))


# ----------------------------------------------------------------------------- bounds


def power_bound(kind: Kind, n: float, truth: dict[str, float], alpha: float, seed: int) -> float:
    """The fixed-n power bound: the most powerful level-``alpha`` test on ``n`` requests.

    Against the nearest point of the null (the limit), at the runs' mean true value; for
    drift with the stable distribution known exactly (``primitives_study`` has the same).
    """
    size = max(1, round(n))
    if kind is Kind.ERRORS:
        return ump_binomial_power(size, ERROR_MAX, truth["error_rate"], alpha)
    if kind is Kind.LATENCY:
        return ump_binomial_power(size, 1 - QUANTILE, truth["share_above"], alpha)
    if kind is Kind.AGREEMENT:
        pairs = max(1, round(n * (1 - WorldConfig().unpaired)))
        return ump_binomial_power(pairs, AGREEMENT_MIN, truth["agreement"], alpha)
    q0 = feature_probs(shift_for_psi(PSI_MAX))
    q1 = feature_probs(shift_for_psi(truth["psi"]))
    return np_multinomial_power(size, q0, q1, alpha, draws=20_000, seed=seed)


def traffic_for_power(
    kind: Kind, truth: dict[str, float], alpha: float, *, target: float = 0.95, seed: int
) -> float:
    """Requests per interval at which the fixed-n bound over 3 intervals reaches ``target``.

    Bisection on the total (power grows with n: a most powerful test on more data can
    always ignore the extra); the answer is per interval, rounded up.
    """
    lo, hi = 1, 3
    while power_bound(kind, hi, truth, alpha, seed) < target:
        lo, hi = hi, hi * 2
        if hi > 10_000_000:
            return math.inf
    while hi - lo > max(1, lo // 200):
        mid = (lo + hi) // 2
        if power_bound(kind, mid, truth, alpha, seed) >= target:
            hi = mid
        else:
            lo = mid
    return math.ceil(hi / CATCH_WITHIN)


# ----------------------------------------------------------------------------- summaries


def _median(values: Iterable[float]) -> float | None:
    xs = list(values)
    return float(np.median(xs)) if xs else None


def _mean_truth(runs: list[RunResult]) -> dict[str, float]:
    keys = runs[0].truth.keys()
    return {k: float(np.mean([r.truth[k] for r in runs])) for k in keys}


def _verdict_shares(runs: list[RunResult]) -> dict[str, dict[str, float]]:
    totals: dict[str, Counter[str]] = {}
    for r in runs:
        for gate, counts in r.verdicts.items():
            totals.setdefault(gate, Counter()).update(counts)
    out = {}
    for gate, counts in totals.items():
        n = sum(counts.values())
        out[gate] = {v: counts[v] / n for v in ("Pass", "Fail", "Inconclusive")}
    return out


def summarise_healthy(runs: list[RunResult]) -> dict[str, Any]:
    n = len(runs)
    rolled = [r for r in runs if r.rolled_back_at is not None]
    promoted = [r for r in runs if r.promoted_at is not None]
    by_gate = Counter(g for r in rolled for g in r.failed_gates)
    breaching = sum(
        r.truth["error_rate"] > ERROR_MAX or r.truth["share_above"] > 1 - QUANTILE for r in runs
    )
    return {
        "runs": n,
        "min_checks": min(r.checks for r in runs),
        "false_rollbacks": len(rolled),
        "rate": len(rolled) / n,
        "cp95_upper": clopper_pearson_upper(len(rolled), n),
        "rolled_back_by": dict(by_gate),
        "median_checks_to_rollback": _median(r.rolled_back_at for r in rolled if r.rolled_back_at),
        "promoted": len(promoted),
        "median_checks_to_promotion": _median(r.promoted_at for r in promoted if r.promoted_at),
        "still_running": n - len(rolled) - len(promoted),
        "truth_breaching": breaching,
        "verdict_shares": _verdict_shares(runs),
    }


def summarise_regression(
    scenario: Scenario, runs: list[RunResult], alpha: float, seed: int
) -> dict[str, Any]:
    assert scenario.regression is not None
    kind = scenario.regression.kind
    n = len(runs)
    caught = [r.rolled_back_at for r in runs if r.rolled_back_at is not None]
    within = sum(1 for c in caught if c <= CATCH_WITHIN)
    own = sum(
        1
        for r in runs
        if r.rolled_back_at is not None
        and r.rolled_back_at <= CATCH_WITHIN
        and scenario.gate in r.failed_gates
    )
    truth = _mean_truth(runs)
    # Candidate requests in 3 intervals: the runs' mean rate (a run may stop sooner).
    n3 = CATCH_WITHIN * float(np.mean([r.requests / max(1, r.intervals) for r in runs]))
    bound = power_bound(kind, n3, truth, alpha, seed)
    needed = traffic_for_power(kind, truth, alpha, seed=seed)
    missed = n - len(caught)
    return {
        "runs": n,
        "label": scenario.label,
        "gate": scenario.gate,
        "alpha_i": alpha,
        "caught_within": within / n,
        "caught_within_count": within,
        "caught_within_by_own_gate": own / n,
        "promoted": sum(1 for r in runs if r.promoted_at is not None),
        "caught_by_end": len(caught) / n,
        # A run never caught counts as later than every caught one.
        "median_checks_to_catch": (
            float(np.median(caught + [math.inf] * missed)) if caught else None
        ),
        "rolled_back_by": dict(Counter(g for r in runs for g in r.failed_gates)),
        "requests_in_3_intervals": n3,
        "power_bound": bound,
        "traffic_for_95": needed,
        "mean_truth": truth,
        "verdict_shares": _verdict_shares(runs),
    }


# ----------------------------------------------------------------------------- the table


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _checks(x: float | None, cap: int | None = None) -> str:
    """A median number of checks; none (more than half never got there): past the cap."""
    if x is None or math.isinf(x):
        return "never" if cap is None else f"> {cap}"
    return f"{x:g}"


def _by_gate(counts: dict[str, int]) -> str:
    return ", ".join(f"`{g}` {n}" for g, n in sorted(counts.items())) or "none"


def render_table(out: dict[str, Any]) -> str:
    """The markdown that goes between the markers in docs/analysis.md."""
    h = out["healthy"]
    cfg = out["config"]
    lines = [
        f"Judge measured: `{out['judge']}`. {cfg['healthy_runs']} healthy rollouts and "
        f"{cfg['regression_runs']} per regression, about {cfg['candidate_requests']:g} "
        f"candidate requests per interval, checks every {cfg['interval']}, at most "
        f"{cfg['max_checks']} checks per healthy run and {cfg['regression_max_checks']} per "
        f"regression run; seed {cfg['seed']}; wall time "
        f"{out['seconds']:.0f} s on {cfg['processes']} processes.",
        "",
        "| Healthy rollouts | Runs | Rolled back | Rate | Exact 95% upper | Promoted "
        "| Median checks to promotion | Neither by the last check |",
        "|---|---|---|---|---|---|---|---|",
        f"| three gates at defaults (alpha_i {out['alpha_healthy']:.2g}) | {h['runs']} "
        f"| {h['false_rollbacks']} | {_pct(h['rate'])} | {_pct(h['cp95_upper'])} "
        f"| {h['promoted']} | {_checks(h['median_checks_to_promotion'])} "
        f"| {h['still_running']} |",
        "",
        f"Healthy rollbacks by gate: {_by_gate(h['rolled_back_by'])}; runs whose true error "
        f"rate or tail share breaks its limit: {h['truth_breaching']}.",
        "",
        f"| Regression | Gate | Runs | Caught within {CATCH_WITHIN} intervals "
        "| by its own gate | Median intervals to catch | Promoted "
        f"| Fixed-n bound at {CATCH_WITHIN} intervals | Traffic per interval for a 95% bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["regressions"].values():
        need = r["traffic_for_95"]
        lines.append(
            f"| {r['label']} | `{r['gate']}` (alpha_i {r['alpha_i']:.2g}) | {r['runs']} "
            f"| {_pct(r['caught_within'])} | {_pct(r['caught_within_by_own_gate'])} "
            f"| {_checks(r['median_checks_to_catch'], cfg['regression_max_checks'])} "
            f"| {r['promoted']} "
            f"| {_pct(r['power_bound'])} ({r['requests_in_3_intervals']:.0f} requests) "
            f"| {'unreachable' if math.isinf(need) else f'{need:.0f}'} |"
        )
    return "\n".join(lines)


def write_section(path: Path, table: str) -> None:
    """Replace what lies between the markers in ``path`` (append them when absent; a
    missing page is created)."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{table}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    elif text.strip():
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = block + "\n"
    path.write_text(text)


def _judge() -> str:
    """Which gate code was measured: the commit of the gate modules, when git knows it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", "--", "operator"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit.replace("|", "/")[:90] or "unknown"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="healthy rollouts")
    parser.add_argument("--regression-runs", type=int, default=500, help="runs per regression")
    parser.add_argument("--max-checks", type=int, default=30, help="checks per healthy run")
    parser.add_argument(
        "--regression-max-checks", type=int, default=10, help="checks per regression run"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 20 healthy runs of 10 checks, 3 per regression of 5",
    )
    parser.add_argument("--analysis-md", type=Path, default=ANALYSIS_MD)
    parser.add_argument("--json", type=Path, default=RESULTS_JSON)
    args = parser.parse_args(argv)
    if args.quick:  # the pipeline end to end, not numbers: a few seconds
        args.runs, args.regression_runs = min(args.runs, 20), min(args.regression_runs, 3)
        args.max_checks, args.regression_max_checks = 10, 5
    started = time.monotonic()

    jobs = [("healthy", 1_000_000 * args.seed + i, args.max_checks) for i in range(args.runs)]
    regressions = [s for s in SCENARIOS.values() if s.regression is not None]
    for k, s in enumerate(regressions):
        jobs += [
            (s.name, 1_000_000 * args.seed + 100_000 * (k + 1) + i, args.regression_max_checks)
            for i in range(args.regression_runs)
        ]
    results = run_many(jobs, args.processes)
    by_scenario: dict[str, list[RunResult]] = {}
    for r in results:
        by_scenario.setdefault(r.scenario, []).append(r)

    out: dict[str, Any] = {
        "judge": _judge(),
        "config": {
            "healthy_runs": args.runs,
            "regression_runs": args.regression_runs,
            "max_checks": args.max_checks,
            "regression_max_checks": args.regression_max_checks,
            "seed": args.seed,
            "processes": args.processes,
            "interval": rollout_spec().analysis.interval,
            "candidate_requests": WorldConfig().candidate_requests,
            "world": asdict(WorldConfig()),
            "spec": rollout_spec().model_dump(mode="json", by_alias=True, exclude_none=True),
            "spec_with_shadow": rollout_spec(shadow=True).model_dump(
                mode="json", by_alias=True, exclude_none=True
            ),
        },
        "alpha_healthy": rollout_spec().alpha_per_test(),
        "healthy": summarise_healthy(by_scenario["healthy"]),
        "regressions": {
            s.name: summarise_regression(
                s,
                by_scenario[s.name],
                rollout_spec(shadow=s.shadow).alpha_per_test(),
                seed=args.seed + k,
            )
            for k, s in enumerate(regressions)
        },
    }
    out["seconds"] = time.monotonic() - started
    # The numbers first: a page that cannot be written must not cost the run.
    args.json.write_text(json.dumps(_plain(out), indent=2, allow_nan=False) + "\n")
    table = render_table(out)
    print(table)
    write_section(args.analysis_md, table)
    print(f"\nWall time: {out['seconds']:.1f} s")
    return 0


def _plain(x: object) -> object:
    """JSON-safe: an infinite or NaN number (never caught, +Inf bucket) becomes null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


if __name__ == "__main__":
    sys.exit(main())
