"""Invariants of the engine over random strategies, check outcomes and requests."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout.api.status import ModelRolloutStatus, Phase, Stage, Verdict
from modelrollout.engine import GateRefusal, Preflight, RequestVerb, plan

from .engine_harness import Sim, gate, make_spec

steps = st.lists(
    st.one_of(
        st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
        st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(1, 120)),
        st.just({"pause": {}}),
        st.builds(lambda n: {"analysis": {"checks": n}}, st.integers(1, 3)),
    ),
    min_size=1,
    max_size=6,
)
strategies = st.one_of(
    st.builds(lambda s: {"canary": {"steps": s}}, steps),
    st.builds(
        lambda s, m: {"shadow": {"mirrorPercent": m, "duration": "60s"}, "canary": {"steps": s}},
        steps,
        st.integers(0, 100),
    ),
    st.builds(
        lambda w, m: {
            "blueGreen": {
                "previewDuration": "60s",
                "previewWeight": w,
                "previewMirrorPercent": m,
                "postPromotionDuration": "60s",
            }
        },
        st.integers(0, 100),
        st.integers(0, 100),
    ),
)
verdicts = st.sampled_from([Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE])
machine_requests = st.sampled_from(
    [None, None, None, RequestVerb.PAUSE, RequestVerb.RESUME, RequestVerb.UNDO]
)
actions = st.lists(
    st.tuples(st.integers(1, 90), verdicts, machine_requests, st.booleans()), max_size=40
)
automation = st.sampled_from(["Full", "AfterShadow", "BeforePromotion", "EveryStep"])
windows = st.sampled_from([None, "90s", "10m"])

ORDER = {
    Stage.SHADOW: 0,
    Stage.CANARY: 1,
    Stage.PREVIEW: 1,
    Stage.POST_PROMOTION: 2,
    Stage.ROLLBACK_WINDOW: 3,
    Stage.DONE: 4,
}
#: Every gate is checked in every stage, the rollback window included.
ALL_STAGES = [s.value for s in Stage]


def run(
    strategy: dict[str, Any],
    auto: str,
    acts: list[Any],
    humans: bool = False,
    window: str | None = None,
    seen: list[tuple[ModelRolloutStatus, dict[str, int]]] | None = None,
) -> Sim:
    analysis = {
        "interval": "30s",
        "failureLimit": 2,
        "inconclusiveLimit": 2,
        "metrics": [{"name": "p99-latency", "latency": {}, "max": 0.5, "stages": ALL_STAGES}],
    }
    sim = Sim(
        make_spec(strategy=strategy, automation=auto, rollbackWindow=window, analysis=analysis)
    )
    sim.tick()
    for seconds, verdict, request, promote in acts:
        due = plan(sim.spec, sim.status, sim.now).check_due
        if humans and promote:
            request = RequestVerb.PROMOTE
        sim.tick(seconds=seconds, results=[gate(verdict)] if due else None, request=request)
        if seen is not None:
            seen.append((sim.status, dict(sim.replicas)))
    return sim


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions)
def test_weights_stay_in_range_and_sum_to_100(
    strategy: dict[str, Any], auto: str, acts: list[Any]
) -> None:
    sim = run(strategy, auto, acts, humans=True)
    for d in sim.decisions:
        w = d.status["weights"]
        assert isinstance(w, dict)
        assert 0 <= w["candidate"] <= 100
        assert w["stable"] + w["candidate"] == 100
        assert d.traffic is not None
        assert 0 <= d.traffic.mirror_percent <= 100


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions)
def test_after_a_rollback_the_candidate_gets_nothing_and_no_mirror(
    strategy: dict[str, Any], auto: str, acts: list[Any]
) -> None:
    sim = run(strategy, auto, acts, humans=True)
    for d in sim.decisions:
        if d.status["phase"] == Phase.ROLLED_BACK.value:
            assert d.traffic is not None
            assert (d.traffic.candidate_weight, d.traffic.mirror_percent) == (0, 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions)
def test_never_a_promotion_without_a_passing_check_when_no_human_steps_in(
    strategy: dict[str, Any], auto: str, acts: list[Any]
) -> None:
    sim = run(strategy, auto, acts, humans=False)
    for d in sim.decisions:
        if any(e.reason == "Promoted" for e in d.events):
            last = d.status.get("lastAnalysis")
            assert isinstance(last, dict)
            assert last["verdict"] == Verdict.PASS.value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions, windows)
def test_progress_never_goes_backwards_except_by_rollback_or_undo(
    strategy: dict[str, Any], auto: str, acts: list[Any], window: str | None
) -> None:
    sim = run(strategy, auto, acts, humans=True, window=window)
    prev: tuple[int, int] | None = None
    for d in sim.decisions:
        st_ = d.status
        if st_["phase"] == Phase.ROLLED_BACK.value:
            prev = None
            continue
        stage = Stage(st_.get("stage", "done"))
        pos = (ORDER[stage], int(st_.get("stepIndex") or 0))
        if prev is not None:
            assert pos >= prev, (prev, pos)
        prev = pos


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions, windows)
def test_an_undo_happens_only_in_a_rollback_window_and_puts_all_traffic_on_the_previous(
    strategy: dict[str, Any], auto: str, acts: list[Any], window: str | None
) -> None:
    sim = run(strategy, auto, acts, humans=True, window=window)
    before: dict[str, object] | None = None
    for d in sim.decisions:
        if any(e.reason == "Undone" for e in d.events):
            assert window is not None
            assert before is not None
            assert before["phase"] == Phase.SUCCEEDED.value
            assert before["stage"] == Stage.ROLLBACK_WINDOW.value
            assert d.traffic is not None
            assert d.traffic.stable_version == before["previousStableVersion"]
            assert (d.traffic.candidate_weight, d.traffic.mirror_percent) == (0, 0)
            assert d.status["phase"] == Phase.ROLLED_BACK.value
        before = d.status


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, actions, windows)
def test_the_previous_version_keeps_its_replicas_while_it_can_be_undone_to(
    strategy: dict[str, Any], auto: str, acts: list[Any], window: str | None
) -> None:
    seen: list[tuple[ModelRolloutStatus, dict[str, int]]] = []
    run(strategy, auto, acts, humans=True, window=window, seen=seen)
    for status, replicas in seen:
        if status.stage == Stage.ROLLBACK_WINDOW:
            assert status.previous_stable_version is not None
            assert replicas[status.previous_stable_version] > 0
        if status.phase in (Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SHADOWING):
            assert status.stable_version is not None
            assert replicas[status.stable_version] > 0, "traffic on a scaled-down version"


preflights = st.sampled_from(
    [
        Preflight(),
        Preflight(),
        Preflight(unreachable="prometheus at http://prom:9090: connection refused"),
        Preflight(refused=(GateRefusal("p99-latency", "query refused: HTTP 400 bad_data"),)),
    ]
)
troubled = st.lists(
    st.tuples(
        st.integers(1, 90),
        verdicts,
        st.sampled_from([None, None, *RequestVerb]),
        st.sampled_from([None, None, None, "HTTPRoute ml/fraud-detector not found"]),
        preflights,
        st.sampled_from([None, None, None, None, "v3", "v4", "v1"]),
    ),
    min_size=1,
    max_size=40,
)
WAITING = (Phase.PENDING, Phase.PAUSED, Phase.FAILED)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies, automation, troubled)
def test_a_rollout_that_does_not_progress_always_says_why(
    strategy: dict[str, Any], auto: str, acts: list[Any]
) -> None:
    sim = Sim(make_spec(strategy=strategy, automation=auto))
    for seconds, verdict, request, route_error, preflight, candidate in acts:
        if candidate is not None:
            sim.spec = make_spec(
                strategy=strategy, automation=auto, candidate={"version": candidate}
            )
        due = plan(sim.spec, sim.status, sim.now).check_due
        sim.tick(
            seconds=seconds,
            results=[gate(verdict)] if due and route_error is None else None,
            request=request,
            traffic_error=route_error,
            preflight=preflight,
        )
    for d in sim.decisions:
        if d.status["phase"] in WAITING:
            assert d.status.get("message"), d.status
