"""``modelrollout analyze``: the analysis gates by hand.

Three forms:

``--reference 100,200,400 --candidate 80,180,420 [--method psi|js|ks|chi2]``
    Drift between two count vectors on the same bins (offline).
``--agreement AGREE,DISAGREE,UNPAIRED``
    Shadow agreement from pair counts (offline).
``--errors EVENTS,REQUESTS`` / ``--latency-buckets LE=COUNT,...`` / ``--requests N
--seconds T`` / ``--checks V,V,...``
    The threshold kinds' sequential tests on counts since the stage start (offline):
    errorRate or nullRate, a latency quantile, throughput, a query gate's values per
    check. ``--alpha`` is the test's level (each result's ``alpha`` in the status).
``-f rollout.yaml --prometheus URL [--stage canary]``
    A dry run: every gate of the manifest's analysis block, once, against a live
    Prometheus; nothing is written anywhere.

Exit status: 0 every gate passed (shown good), 1 a gate failed (shown bad), 2 inconclusive
(not yet shown either way, or not measured; for a dry run, after each gate's
onInconclusive), 3 the input could not be used (argparse's own usage errors also exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from modelrollout.analysis import stats
from modelrollout.analysis.gates import context_for, counts, evaluate
from modelrollout.analysis.gates.agreement import judge_agreement
from modelrollout.analysis.gates.common import NoVerdict, within
from modelrollout.analysis.gates.drift import DEFAULT_DRIFT_LIMITS, judge_drift
from modelrollout.analysis.source import MetricSource
from modelrollout.api.base import parse_duration
from modelrollout.api.gates import AgreementGate, MetricGate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import GateResult, ModelRolloutStatus, Stage, Verdict

EXIT = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCONCLUSIVE: 2}
SEVERITY = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.FAIL: 2}
EXIT_USAGE = 3


class UsageError(Exception):
    """Input the command cannot use: a bad vector, an unreadable manifest."""


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="judge drift or agreement by hand, or dry-run a rollout's gates",
        description="Judge drift or shadow agreement from counts, or run every gate of a "
        "ModelRollout once against a live Prometheus (a dry run). Exit status: 0 pass, "
        "1 fail, 2 inconclusive, 3 unusable input.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--reference", metavar="N,N,...", help="reference counts per bin (offline drift)"
    )
    what.add_argument(
        "--agreement", metavar="AGREE,DISAGREE,UNPAIRED", help="shadow pair counts (offline)"
    )
    what.add_argument(
        "--errors",
        metavar="EVENTS,REQUESTS",
        help="errors (or null outputs) and requests since the stage start (errorRate, nullRate)",
    )
    what.add_argument(
        "--latency-buckets",
        metavar="LE=COUNT,...",
        help="cumulative request counts per bucket since the stage start, +Inf included",
    )
    what.add_argument(
        "--requests", type=float, metavar="N", help="requests since the stage start (throughput)"
    )
    what.add_argument(
        "--checks", metavar="V,V,...", help="a query gate's value at each check, oldest first"
    )
    what.add_argument("-f", "--filename", metavar="FILE", help="a ModelRollout manifest (dry run)")

    drift = p.add_argument_group("offline drift")
    drift.add_argument("--candidate", metavar="N,N,...", help="candidate counts per bin")
    drift.add_argument("--method", choices=["psi", "js", "ks", "chi2"], default="psi")
    drift.add_argument(
        "--min-samples",
        type=int,
        default=stats.DEFAULT_MIN_SAMPLES,
        help="observations needed per side (default %(default)s)",
    )

    agree = p.add_argument_group("offline agreement")
    agree.add_argument(
        "--confidence", type=float, default=0.95, help="kept for old scripts; unused (see --alpha)"
    )
    agree.add_argument("--max-unpaired", type=float, default=0.1, metavar="FRACTION")
    agree.add_argument("--min-pairs", type=int, default=200)

    counted = p.add_argument_group("the test's level and the offline threshold tests")
    counted.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="the test's level: falseRollbackBudget over the rollout's (gate, stage) tests, "
        "as each result's alpha shows (default %(default)s: the whole default budget)",
    )
    counted.add_argument("--quantile", type=float, default=0.99, help="with --latency-buckets")
    counted.add_argument("--seconds", type=float, help="with --requests: seconds in the stage")

    limits = p.add_argument_group("limits (offline)")
    limits.add_argument(
        "--max", type=float, help="fail above (default: psi, js, ks 0.1; agreement none)"
    )
    limits.add_argument(
        "--min",
        type=float,
        help="fail below (default: chi2 p-value 0.01, agreement 0.95); "
        "with ks, --min makes it a p-value method",
    )

    dry = p.add_argument_group("dry run")
    dry.add_argument(
        "--prometheus",
        default=None,
        help="Prometheus URL (default: the manifest's spec.analysis.prometheus.address, "
        "then $MODELROLLOUT_PROMETHEUS)",
    )
    dry.add_argument(
        "--stage",
        choices=[s.value for s in Stage if s != Stage.DONE],
        help="check only the gates of this stage (default: every gate)",
    )
    dry.add_argument("-n", "--namespace", help="default: the manifest's, else default")
    dry.add_argument("--stable-version", help="default: spec.stable.version or status")
    dry.add_argument("--candidate-version", help="default: spec.candidate.version")
    dry.add_argument(
        "--since",
        default="10m",
        help="how long ago the stage started: windows 'since the stage start' use it "
        "(default %(default)s)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=analyze)


def analyze(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.reference is not None:
            return _drift(args, out)
        if args.agreement is not None:
            return _agreement(args, out)
        if args.filename is None:
            return _counted(args, out)
        return _dry_run(args, out)
    except UsageError as exc:
        print(f"modelrollout analyze: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ----------------------------------------------------------------------- offline


def _numbers(text: str, what: str, size: int | None = None) -> list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UsageError(f"{what}: not a comma-separated list of numbers: {text!r}") from None
    if not values:
        raise UsageError(f"{what}: no numbers")
    if size is not None and len(values) != size:
        raise UsageError(f"{what}: {len(values)} numbers, need {size}")
    return values


def _drift(args: argparse.Namespace, out: TextIO) -> int:
    if args.candidate is None:
        raise UsageError("--reference needs --candidate")
    reference = _numbers(args.reference, "--reference")
    candidate = _numbers(args.candidate, "--candidate")
    lo, hi = args.min, args.max
    if lo is None and hi is None:
        lo, hi = DEFAULT_DRIFT_LIMITS[args.method]
    _check_alpha(args.alpha)
    try:
        result = judge_drift(
            args.method, reference, candidate, args.method, args.min_samples, (lo, hi), args.alpha
        )
    except (stats.DistributionMismatch, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return _report_one(result, args.output, out)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")


def _agreement(args: argparse.Namespace, out: TextIO) -> int:
    agree, disagree, unpaired = _numbers(args.agreement, "--agreement", 3)
    _check_alpha(args.alpha)
    try:
        opts = AgreementGate(
            confidence=args.confidence,
            max_unpaired_fraction=args.max_unpaired,
            min_pairs=args.min_pairs,
        )
        lo = 0.95 if args.min is None and args.max is None else args.min
        result = judge_agreement(
            "agreement", agree, disagree, unpaired, opts, (lo, args.max), args.alpha
        )
    except (ValidationError, ValueError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    return _report_one(result, args.output, out)


def _counted(args: argparse.Namespace, out: TextIO) -> int:
    """The threshold kinds' tests on counts, as ``analysis.gates.counts`` judges them."""
    limits = (args.min, args.max)
    if args.min is None and args.max is None:
        raise UsageError("a threshold test needs --max or --min")
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha}")
    name = (
        "errors"
        if args.errors is not None
        else "latency"
        if args.latency_buckets is not None
        else "throughput"
        if args.requests is not None
        else "query"
    )
    try:
        if args.errors is not None:
            x, n = _numbers(args.errors, "--errors", 2)
            result = counts.judge_share(name, x, n, limits, args.alpha)
        elif args.latency_buckets is not None:
            if not 0 < args.quantile < 1:
                raise UsageError(f"--quantile must be in (0, 1), got {args.quantile}")
            result = counts.judge_latency(
                name, _buckets(args.latency_buckets), args.quantile, limits, args.alpha
            )
        elif args.requests is not None:
            if args.seconds is None:
                raise UsageError("--requests needs --seconds")
            result = counts.judge_rate(
                "throughput", args.requests, args.seconds, limits, args.alpha
            )
        else:
            values = _numbers(args.checks, "--checks")
            *earlier, last = values
            broke = sum(within(v, limits) == Verdict.FAIL for v in earlier)
            result = counts.judge_checks(name, last, (broke, len(earlier)), limits, args.alpha)
    except NoVerdict as exc:
        result = GateResult(
            metric=name,
            verdict=Verdict.INCONCLUSIVE,
            reason=exc.reason,
            min=args.min,
            max=args.max,
        )
    except (stats.DistributionMismatch, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return _report_one(result, args.output, out)


def _buckets(text: str) -> dict[str, float]:
    """``0.1=900,0.25=990,+Inf=1000`` -> ``{"0.1": 900, ...}``."""
    out: dict[str, float] = {}
    for part in text.replace(" ", "").split(","):
        le, sep, value = part.partition("=")
        if not sep or not le:
            raise UsageError(f"--latency-buckets: {part!r} is not LE=COUNT")
        try:
            out[le] = float(value)
        except ValueError:
            raise UsageError(f"--latency-buckets: {value!r} is not a count") from None
    return out


def _report_one(result: GateResult, output: str, out: TextIO) -> int:
    if output == "json":
        json.dump(result.dump(), out, indent=2)
        out.write("\n")
    else:
        value = "-" if result.value is None else f"{result.value:.6g}"
        limit = f" (limit {result.limit_text})" if result.limit_text else ""
        out.write(f"{result.metric}: {value}{limit}: {result.verdict.value}\n")
        if result.samples is not None:
            out.write(f"samples: {_samples(result)}\n")
        if result.reason:
            out.write(f"{result.reason}\n")
    return EXIT[result.verdict]


def _samples(r: GateResult) -> str:
    if r.samples is None:
        return "-"
    if r.needed_samples is None:
        return f"{r.samples:.0f}"
    return f"{r.samples:.0f}/{r.needed_samples:.0f}"


# ----------------------------------------------------------------------- dry run


def _load(path: str) -> list[tuple[dict[str, Any], ModelRolloutSpec]]:
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    rollouts = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelRollout"]
    if not rollouts:
        raise UsageError(f"{path}: no ModelRollout in the file")
    loaded = []
    for doc in rollouts:
        try:
            loaded.append((doc, ModelRolloutSpec.model_validate(doc.get("spec") or {})))
        except ValidationError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            raise UsageError(f"{path}: ModelRollout {name}: {exc}") from None
    return loaded


def _source(url: str) -> MetricSource:
    from modelrollout.analysis.source import PrometheusSource

    return PrometheusSource(url)


def overall(results: Sequence[GateResult], gates: Sequence[MetricGate]) -> Verdict:
    """One verdict from a check's results, after each gate's onInconclusive (as the engine)."""
    from modelrollout.engine.decide import judge_check

    return judge_check(list(results), list(gates))[0]


def _dry_run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    reports: list[dict[str, Any]] = []
    worst = Verdict.PASS
    for doc, spec in _load(args.filename):
        meta = doc.get("metadata") or {}
        status = doc.get("status") or {}
        stable = args.stable_version or (spec.stable.version if spec.stable else None)
        stable = stable or status.get("stableVersion")
        if not stable:
            raise UsageError(
                f"ModelRollout {meta.get('name', '?')}: no stable version "
                "(set spec.stable.version or pass --stable-version)"
            )
        url = (
            args.prometheus
            or spec.analysis.prometheus.address
            or os.environ.get("MODELROLLOUT_PROMETHEUS")
        )
        if not url:
            raise UsageError("no Prometheus: pass --prometheus URL")
        stage = Stage(args.stage) if args.stage else None
        gates = [
            g
            for g in spec.analysis.metrics
            if stage is None or g.stages is None or stage in g.stages
        ]
        ctx = context_for(
            spec,
            ModelRolloutStatus(),  # a dry run of the manifest: nothing measured yet
            namespace=args.namespace or meta.get("namespace") or "default",
            now=datetime.now(UTC),
            candidate_version=args.candidate_version or spec.candidate.version,
            stable_version=stable,
            stage=stage.value if stage else "",
            seconds_in_stage=since,
        )
        results = evaluate(gates, _source(url), ctx)
        verdict = overall(results, gates)
        worst = max(worst, verdict, key=SEVERITY.__getitem__)
        reports.append(
            {
                "name": meta.get("name"),
                "model": spec.model,
                "stableVersion": ctx.stable_version,
                "candidateVersion": ctx.candidate_version,
                "stage": ctx.stage or None,
                "prometheus": url,
                "verdict": verdict.value,
                "results": [r.dump() for r in results],
            }
        )
    if args.output == "json":
        json.dump(reports if len(reports) > 1 else reports[0], out, indent=2)
        out.write("\n")
    else:
        for report in reports:
            _table(report, out)
    return EXIT[worst]


def _table(report: dict[str, Any], out: TextIO) -> None:
    stage = f", stage {report['stage']}" if report["stage"] else ""
    out.write(
        f"{report['name'] or report['model']}: candidate {report['candidateVersion']} vs "
        f"stable {report['stableVersion']}{stage} ({report['prometheus']})\n"
    )
    rows = [("GATE", "VERDICT", "VALUE", "LIMIT", "SAMPLES", "REASON")]
    for raw in report["results"]:
        r = GateResult.model_validate(raw)
        rows.append(
            (
                r.metric,
                r.verdict.value,
                "-" if r.value is None else f"{r.value:.4g}",
                r.limit_text or "-",
                _samples(r),
                r.reason or "",
            )
        )
    if len(rows) == 1:
        out.write("no gates to check\n")
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows if len(rows) > 1 else []:
        cells = [c.ljust(w) for c, w in zip(row[:5], widths, strict=True)]
        out.write(("  ".join(cells) + "  " + row[5]).rstrip() + "\n")
    out.write(f"verdict: {report['verdict']}\n")
