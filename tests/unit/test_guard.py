"""The fast guard: who it looks at, the batched queries, its verdicts, and what the engine does.

The guard must be the scheduled check's own test looked at more often, or the
false-rollback budget would not hold: the property test below gives the guard's judge
and the ``errorRate`` / ``latency`` gates the same counts and requires the same verdict.
The fake Prometheus here answers the guard's batched query by reading back each tagged
expression; against a real Prometheus the queries run in tests/e2e/test_fast_guard.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.analysis import guard
from modelrollout.analysis.gates import context_for, evaluate
from modelrollout.analysis.policy import Refused
from modelrollout.analysis.source import Sample
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import GateResult, ModelRolloutStatus, Verdict
from modelrollout.engine import GuardFinding, Observations, TrafficState, decide
from modelrollout.operator.guard import Guard, measuring
from modelrollout.operator.reconcile import Adapters

from .engine_harness import make_spec

NOW = datetime(2026, 1, 1, 12, 0, 0)
STARTED = NOW - timedelta(seconds=40)

GATES: list[dict[str, Any]] = [
    {"name": "errors", "errorRate": {}, "max": 0.05},
    {"name": "p99", "latency": {"quantile": 0.99}, "max": 0.5},
    {"name": "drift", "drift": {"metric": "model_input_amount"}, "max": 0.2},
]


def spec_with(
    gates: list[dict[str, Any]] = GATES, address: str | None = None, **kw: Any
) -> ModelRolloutSpec:
    analysis: dict[str, Any] = {"interval": "1m", "failureLimit": 3, "metrics": gates}
    if address is not None:
        analysis["prometheus"] = {"address": address}
    return make_spec(analysis=analysis, **kw)


def running(**fields: Any) -> ModelRolloutStatus:
    base: dict[str, Any] = {
        "phase": "Progressing",
        "stage": "canary",
        "stepIndex": 0,
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "observedGeneration": 1,
        "weights": {"stable": 90, "candidate": 10},
        "stageStartedAt": STARTED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stepStartedAt": STARTED.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    base.update(fields)
    return ModelRolloutStatus.model_validate(base)


# ----------------------------------------------------------------------- who


@pytest.mark.parametrize(
    ("status", "kinds"),
    [
        pytest.param(running(), ["errors", "p99"], id="a-canary-with-traffic"),
        pytest.param(running(weights={"stable": 100, "candidate": 0}, mirrorPercent=50),
                     ["errors", "p99"], id="shadow-traffic-counts"),
        pytest.param(running(weights={"stable": 100, "candidate": 0}), [], id="no-traffic"),
        pytest.param(running(phase="Succeeded", stage="done"), [], id="finished"),
        pytest.param(running(phase="RolledBack", stage="done"), [], id="rolled-back"),
        pytest.param(running(phase="Pending"), [], id="pending"),
        pytest.param(running(candidateVersion="v0"), [], id="another-candidate-than-the-spec"),
        pytest.param(running(stageStartedAt=NOW.strftime("%Y-%m-%dT%H:%M:%SZ")), [],
                     id="a-stage-not-a-second-old"),
    ],
)  # fmt: skip
def test_the_guard_looks_at_running_candidates_with_traffic_and_its_count_gates(
    status: ModelRolloutStatus, kinds: list[str]
) -> None:
    targets = guard.targets_of("uid-1", spec_with(), status, "team", NOW)
    assert [t.gate.name for t in targets] == kinds


def test_gates_staged_elsewhere_are_not_guarded() -> None:
    gates = [{"name": "errors", "errorRate": {}, "max": 0.05, "stages": ["shadow"]}]
    assert guard.targets_of("u", spec_with(gates), running(), "team", NOW) == []


# ----------------------------------------------------------------------- queries

TAGGED = re.compile(
    r"label_replace\(sum(?: by \(le\) )?\(increase\((?P<metric>\w+)"
    r'\{model="(?P<model>[^"]+)",version="(?P<version>[^"]+)"\}\[(?P<window>\d+)s\]\)\), '
    r'"guard", "(?P<tag>[^"]+)", "", ""\)'
)


class BatchedPrometheus:
    """Answers a batched query from a table of counts per (model, version, metric)."""

    def __init__(self, counts: dict[tuple[str, str, str], Any]) -> None:
        self.counts = counts
        self.queries: list[str] = []

    def instant(self, query: str) -> list[Sample]:
        self.queries.append(query)
        out: list[Sample] = []
        for m in TAGGED.finditer(query):
            value = self.counts.get((m["model"], m["version"], m["metric"]))
            if value is None:
                continue
            if isinstance(value, dict):  # histogram buckets
                out += [Sample({"le": le, "guard": m["tag"]}, v, None) for le, v in value.items()]
            else:
                out.append(Sample({"guard": m["tag"]}, float(value), None))
        return out

    def range(self, *_: Any, **__: Any) -> Any:  # pragma: no cover - the guard asks instants
        raise AssertionError("the guard never asks a range")


def rollouts(n: int) -> list[guard.Target]:
    out: list[guard.Target] = []
    for i in range(n):
        spec = spec_with(model=f"model-{i}")
        out += guard.targets_of(f"uid-{i}", spec, running(), "team", NOW)
    return out


def test_one_query_per_gate_kind_carries_every_rollout() -> None:
    batches = guard.batches(rollouts(30))
    assert len(batches) == 2  # errorRate and latency, for all 30 rollouts
    for b in batches:
        tags = re.findall(r'"guard", "([^"]+)"', b.promql)
        assert len(tags) == len(set(tags)), "each expression is told apart by its tag"
        assert all("[40s]" in e for e in b.promql.split(" or ")), "the window: since the stage"


def test_many_rollouts_are_asked_in_chunks() -> None:
    batches = guard.batches(rollouts(250), chunk=100)
    assert sorted(len(b.targets) for b in batches) == [50, 50, 100, 100, 100, 100]


def test_a_shown_bad_error_rate_and_a_slow_tail_are_found_and_a_healthy_one_is_not() -> None:
    targets = rollouts(3)
    hist = "model_request_duration_seconds_bucket"
    prom = BatchedPrometheus(
        {
            ("model-0", "v2", "model_requests_total"): 400,  # 100% errors
            ("model-0", "v2", "model_request_errors_total"): 400,
            ("model-1", "v2", "model_requests_total"): 4000,  # healthy
            ("model-1", "v2", "model_request_errors_total"): 0,
            ("model-1", "v2", hist): {"0.25": 4000, "0.5": 4000, "+Inf": 4000},
            ("model-2", "v2", "model_requests_total"): 400,  # every request 2 s
            ("model-2", "v2", "model_request_errors_total"): 0,
            ("model-2", "v2", hist): {"0.25": 0, "0.5": 0, "+Inf": 400},
        }
    )
    judged = [r for b in guard.batches(targets) for r in guard.judge(b, prom.instant(b.promql))]
    verdicts = {(t.key, r.metric): r.verdict for t, r in judged}
    assert verdicts == {
        ("uid-0", "errors"): Verdict.FAIL,
        ("uid-1", "errors"): Verdict.PASS,
        ("uid-1", "p99"): Verdict.PASS,
        ("uid-2", "errors"): Verdict.PASS,
        ("uid-2", "p99"): Verdict.FAIL,
    }, "model-0 has no histogram: no latency result, never a verdict"
    statuses = {t.key: running() for t in targets}
    found = guard.findings(judged, statuses)
    assert sorted(found) == ["uid-0", "uid-2"]
    assert found["uid-0"].results[0].reason.startswith("fast guard: error rate 1")


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=5000),
    share=st.floats(min_value=0, max_value=1),
    limit=st.sampled_from([0.001, 0.01, 0.05, 0.2]),
)
def test_the_guard_gives_the_error_rate_gates_own_verdict_on_the_same_counts(
    n: int, share: float, limit: float
) -> None:
    x = round(n * share)
    spec = spec_with([{"name": "errors", "errorRate": {}, "max": limit}])
    [target] = guard.targets_of("u", spec, running(), "team", NOW)
    prom = BatchedPrometheus(
        {
            ("fraud-detector", "v2", "model_requests_total"): n,
            ("fraud-detector", "v2", "model_request_errors_total"): x,
        }
    )
    [batch] = guard.batches([target])
    judged = guard.judge(batch, prom.instant(batch.promql))

    class Scalars:
        def instant(self, query: str) -> list[Sample]:
            metric = "model_request_errors_total" if "errors" in query else "model_requests_total"
            value = x if metric == "model_request_errors_total" else n
            return [Sample({}, float(value), None)]

    ctx = context_for(spec, running(), namespace="team", now=NOW)
    [checked] = evaluate(list(spec.analysis.metrics), Scalars(), ctx)  # type: ignore[arg-type]
    if n == 0:
        assert judged == []
        assert checked.verdict == Verdict.INCONCLUSIVE
    else:
        [(_, seen)] = judged
        assert (seen.verdict, seen.lower, seen.upper) == (
            checked.verdict,
            checked.lower,
            checked.upper,
        )


# ----------------------------------------------------------------------- the engine


def finding(status: ModelRolloutStatus, verdict: Verdict = Verdict.FAIL) -> GuardFinding:
    result = GateResult(metric="errors", value=1.0, max=0.05, verdict=verdict, reason="fast guard")
    return GuardFinding(
        candidate_version=status.candidate_version or "",
        stage=status.stage.value if status.stage else "",
        stage_started_at=status.stage_started_at,
        results=(result,),
    )


def traffic(candidate: int) -> TrafficState:
    return TrafficState(candidate_weight=candidate, mirror_percent=0)


def test_a_finding_rolls_back_at_once_whatever_the_failure_limit() -> None:
    spec, status = spec_with(), running()
    d = decide(spec, status, Observations(traffic=traffic(10), guard=finding(status)), NOW)
    assert d.status["phase"] == "RolledBack"
    assert d.traffic is not None
    assert d.traffic.candidate_weight == 0
    assert "rolled back by the fast guard" in d.status["message"]
    assert d.status["analysisLedger"][-1]["results"][0]["metric"] == "errors"


@pytest.mark.parametrize(
    ("stale", "status"),
    [
        pytest.param({"stage_started_at": "2026-01-01T11:00:00Z"}, running(), id="an-older-stage"),
        pytest.param({"candidate_version": "v0"}, running(), id="another-candidate"),
        pytest.param({}, running(phase="Succeeded", stage="done"), id="already-promoted"),
        pytest.param({}, running(weights={"stable": 100, "candidate": 0}), id="no-traffic-now"),
    ],
)  # fmt: skip
def test_a_finding_about_what_no_longer_runs_changes_nothing(
    stale: dict[str, Any], status: ModelRolloutStatus
) -> None:
    spec = spec_with()
    seen = finding(running())
    seen = GuardFinding(**{**seen.__dict__, **stale})
    weight = status.weights.candidate
    with_guard = decide(spec, status, Observations(traffic=traffic(weight), guard=seen), NOW)
    without = decide(spec, status, Observations(traffic=traffic(weight)), NOW)
    assert with_guard.status == without.status


# ----------------------------------------------------------------------- the shell


def adapters(source: Any) -> Adapters:
    def source_for(address: str | None) -> Any:
        return Refused("PrometheusNotAllowed", "not allowed") if address else source

    return Adapters(routers={}, source_for=source_for, status=None, events=None)  # type: ignore[arg-type]


def body(uid: int, status: ModelRolloutStatus, **spec_kw: Any) -> dict[str, Any]:
    spec = spec_with(model=f"model-{uid}", **spec_kw)
    return {
        "metadata": {"name": f"r{uid}", "namespace": "team", "uid": f"uid-{uid}"},
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
        "status": status.dump(),
    }


def test_a_round_asks_one_query_per_kind_and_never_a_refused_address() -> None:
    counts: dict[tuple[str, str, str], Any] = {}
    for i in range(40):
        counts[(f"model-{i}", "v2", "model_requests_total")] = 300
        counts[(f"model-{i}", "v2", "model_request_errors_total")] = 300 if i == 7 else 0
    prom = BatchedPrometheus(counts)
    g = Guard(adapters(prom), interval=1)
    bodies = {f"uid-{i}": body(i, running()) for i in range(40)}
    bodies["uid-99"] = body(99, running(), address="http://evil:9090")
    bodies["uid-98"] = body(98, running(phase="Succeeded", stage="done"))
    found = g.round({k: v for k, v in bodies.items() if measuring(v)}, NOW)
    assert sorted(found) == ["uid-7"]
    assert len(prom.queries) == 2
    asked = " ".join(prom.queries)
    assert "model-99" not in asked, "an address the policy refuses is never asked"
    assert "model-98" not in asked, "a finished rollout is not looked at"
