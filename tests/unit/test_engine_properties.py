"""Invariants of the engine over random strategies, check outcomes and requests."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout.api.status import Phase, Stage, Verdict
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
machine_requests = st.sampled_from([None, None, None, RequestVerb.PAUSE, RequestVerb.RESUME])
actions = st.lists(
    st.tuples(st.integers(1, 90), verdicts, machine_requests, st.booleans()), max_size=40
)
automation = st.sampled_from(["Full", "AfterShadow", "BeforePromotion", "EveryStep"])

ORDER = {Stage.SHADOW: 0, Stage.CANARY: 1, Stage.PREVIEW: 1, Stage.POST_PROMOTION: 2, Stage.DONE: 3}


def run(strategy: dict[str, Any], auto: str, acts: list[Any], humans: bool = False) -> Sim:
    sim = Sim(make_spec(strategy=strategy, automation=auto))
    sim.tick()
    for seconds, verdict, request, promote in acts:
        due = plan(sim.spec, sim.status, sim.now).check_due
        if humans and promote:
            request = RequestVerb.PROMOTE
        sim.tick(seconds=seconds, results=[gate(verdict)] if due else None, request=request)
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
@given(strategies, automation, actions)
def test_progress_never_goes_backwards_except_by_rollback(
    strategy: dict[str, Any], auto: str, acts: list[Any]
) -> None:
    sim = run(strategy, auto, acts, humans=True)
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
