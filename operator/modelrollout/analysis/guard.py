"""The fast guard: every active rollout's count gates, judged between checks in few queries.

A check runs every ``analysis.interval``; a candidate that breaks badly right after one
would keep its traffic until the next, and ``failureLimit`` checks after that. The
guard looks at every active rollout at a short, operator-wide cadence (``--guard-interval``)
and sends a candidate whose gate is *shown bad* to 0% at once.

It is the same test as the check, looked at more often. For each guarded gate it reads
the same counts (since the stage start, the window of the count kinds) and calls the
same pure judge (``counts.judge_share``, ``counts.judge_latency``) at the gate's level
``alpha``. A confidence sequence holds at every look at once, so extra looks add no
false rollbacks (docs/analysis.md, "The fast guard"). Only *shown bad* acts: a guard
that sees "shown good" or "not yet shown" does nothing, and the scheduled checks go on
deciding promotion as before.

Cheap at scale: the queries are batched. One PromQL query per gate kind carries every
rollout's expression, each tagged with ``label_replace`` (label ``guard``) so that the
answers can be told apart, in chunks of :data:`CHUNK` rollouts so that a URL stays
short. 1,000 active rollouts with error-rate and latency gates cost 20 queries a round.

Guarded kinds: ``errorRate``, ``nullRate`` and ``latency`` (the counts that a hard
breach moves within seconds). The others (drift, agreement, comparisons, LLM and query
gates) are judged at the scheduled checks only. Everything here is pure: the shell
(``operator/guard.py``) reads the rollouts, asks Prometheus and wakes the rollout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from modelrollout.analysis.gates import common, counts, error_rate, latency, null_rate
from modelrollout.analysis.gates.registry import kind_name
from modelrollout.analysis.source import Sample
from modelrollout.api.gates import MetricGate
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import GateResult, ModelRolloutStatus, Phase, Verdict
from modelrollout.engine.decide import active_gates
from modelrollout.engine.types import GuardFinding

#: The kinds the guard judges, with what their share counts ("error rate").
SHARES: dict[str, tuple[str, str]] = {
    "error_rate": (error_rate.ERRORS_METRIC, "error rate"),
    "null_rate": (null_rate.NULL_OUTPUTS_METRIC, "null rate"),
}
GUARDED = (*SHARES, "latency")

#: Rollouts per query: a chunk's query is about 300 characters per rollout.
CHUNK = 100

#: The label each rollout's series carry in a batched answer.
LABEL = "guard"

#: What a guard's reason starts with, so the user tells it from a scheduled check's.
PREFIX = "fast guard: "


@dataclass(frozen=True)
class Target:
    """One gate of one rollout that the guard judges this round."""

    key: str
    """The rollout (its uid): the guard's answer is keyed by it."""
    gate: MetricGate
    ctx: common.GateContext


def targets_of(
    key: str, spec: ModelRolloutSpec, status: ModelRolloutStatus, namespace: str, now: datetime
) -> list[Target]:
    """The rollout's gates the guard judges now: none unless its candidate takes traffic.

    The candidate must be the one running (a new one is preflighted first), in a stage
    that is not over, with live or mirrored traffic (a blue-green preview gets requests
    no route shows, which the scheduled checks judge), and at least a second into it.
    """
    if status.phase.is_terminal or status.phase == Phase.PENDING:
        return []
    if status.candidate_version is None or status.candidate_version != spec.candidate.version:
        return []
    if status.weights.candidate == 0 and status.mirror_percent == 0:
        return []
    gates = [g for g in active_gates(spec, status) if kind_name(g) in GUARDED]
    if not gates:
        return []
    ctx = common.context_for(spec, status, namespace=namespace, now=now)
    if ctx.stage_seconds < 1:
        return []
    return [Target(key, gate, ctx) for gate in gates]


# ----------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Batch:
    """One query: the expressions of several targets, each tagged ``guard="<i>..."``."""

    promql: str
    targets: tuple[Target, ...]


def _tag(expr: str, tag: str) -> str:
    return f'label_replace({expr}, "{LABEL}", "{tag}", "", "")'


def _expressions(i: int, t: Target) -> list[str]:
    win = counts.window(t.gate, t.ctx)
    sel = common.version_selector(t.ctx, "candidate")
    kind = kind_name(t.gate)
    if kind in SHARES:
        spec = getattr(t.gate, kind)
        events = spec.metric or SHARES[kind][0]
        return [
            _tag(f"sum(increase({common.REQUESTS_METRIC}{sel}[{win}]))", f"{i}:n"),
            _tag(f"sum(increase({events}{sel}[{win}]))", f"{i}:x"),
        ]
    return [_tag(latency.buckets_query(t.gate, t.ctx, win), f"{i}:b")]


def batches(targets: Iterable[Target], chunk: int = CHUNK) -> list[Batch]:
    """Queries for every target: one per gate kind, per ``chunk`` targets of it."""
    by_kind: dict[str, list[Target]] = {}
    for t in targets:
        by_kind.setdefault(kind_name(t.gate), []).append(t)
    out: list[Batch] = []
    for kind in sorted(by_kind):
        group = by_kind[kind]
        for start in range(0, len(group), chunk):
            part = tuple(group[start : start + chunk])
            exprs = [e for i, t in enumerate(part) for e in _expressions(i, t)]
            out.append(Batch(" or ".join(exprs), part))
    return out


# ----------------------------------------------------------------------- judging


def judge(batch: Batch, samples: Sequence[Sample]) -> list[tuple[Target, GateResult]]:
    """Each target's result from the batch's answer; a target without data has none.

    The same judges as the scheduled check, on the same counts: no answer for a target
    (no requests yet, a metric missing) is no result, never a verdict.
    """
    got: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        index, _, part = str(s.labels.get(LABEL, "")).partition(":")
        if index.isdigit():
            got.setdefault((int(index), part), []).append(s)
    out: list[tuple[Target, GateResult]] = []
    for i, t in enumerate(batch.targets):
        result = _judge_one(t, {part: got.get((i, part), []) for part in ("n", "x", "b")})
        if result is not None:
            out.append((t, result))
    return out


def _judge_one(t: Target, parts: Mapping[str, list[Sample]]) -> GateResult | None:
    kind = kind_name(t.gate)
    win = counts.window(t.gate, t.ctx)
    limits = common.own_limits(t.gate)
    try:
        if kind in SHARES:
            if len(parts["n"]) != 1 or len(parts["x"]) != 1:
                return None
            n, x = parts["n"][0].value, parts["x"][0].value
            if t.gate.min_samples is not None and n < t.gate.min_samples:
                return None
            result = counts.judge_share(
                t.gate.name, x, n, limits, t.ctx.alpha, what=SHARES[kind][1], window=win
            )
        else:
            buckets = {str(s.labels.get("le")): s.value for s in parts["b"] if "le" in s.labels}
            if not buckets:
                return None
            assert t.gate.latency is not None
            result = counts.judge_latency(
                t.gate.name, buckets, t.gate.latency.quantile, limits, t.ctx.alpha, window=win
            )
            if t.gate.min_samples is not None and (result.samples or 0) < t.gate.min_samples:
                return None
    except common.NoVerdict:
        return None
    return result.model_copy(update={"reason": PREFIX + (result.reason or "")})


def findings(
    judged: Iterable[tuple[Target, GateResult]], statuses: Mapping[str, ModelRolloutStatus]
) -> dict[str, GuardFinding]:
    """The rollouts with a gate shown bad, each with what the guard saw of it.

    ``statuses`` (by key) are the statuses the targets were built from: the finding
    names their candidate and stage, so the engine acts on it only while they still hold.
    """
    failed: dict[str, list[GateResult]] = {}
    for t, result in judged:
        if result.verdict == Verdict.FAIL:
            failed.setdefault(t.key, []).append(result)
    out: dict[str, GuardFinding] = {}
    for key, results in failed.items():
        status = statuses[key]
        assert status.candidate_version is not None  # targets_of: a running candidate
        out[key] = GuardFinding(
            candidate_version=status.candidate_version,
            stage=status.stage.value if status.stage else "",
            stage_started_at=status.stage_started_at,
            results=tuple(results),
        )
    return out


__all__ = [
    "CHUNK",
    "GUARDED",
    "LABEL",
    "PREFIX",
    "Batch",
    "Target",
    "batches",
    "findings",
    "judge",
    "targets_of",
]
