"""Table tests for every transition of the pure engine."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from modelrollout.api.status import GateResult, ModelRolloutStatus, Phase, Stage, Verdict
from modelrollout.engine import (
    GateRefusal,
    Observations,
    Preflight,
    RequestVerb,
    TrafficState,
    decide,
    plan,
)

from .engine_harness import BLUE_GREEN, FAIL, NODATA, PASS, T0, Sim, gate, make_spec

ANALYSIS: dict[str, Any] = {
    "interval": "30s",
    "failureLimit": 2,
    "metrics": [{"name": "p99-latency", "latency": {}, "max": 0.5}],
}

SHADOW_THEN_CANARY: dict[str, Any] = {
    "shadow": {"mirrorPercent": 50, "duration": "2m"},
    "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "1m"}}]},
}
HUMAN_GATE: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]}
}


def test_a_new_rollout_starts_at_the_first_step_with_stable_seeded_from_spec() -> None:
    sim = Sim(make_spec())
    d = sim.tick()
    assert sim.status.stable_version == "v1"
    assert sim.status.candidate_version == "v2"
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.weights.candidate == 10  # setWeight runs at once
    assert sim.status.step_index == 1
    assert [e.reason for e in d.events] == ["RolloutStarted", "WeightChanged"]


def test_a_timed_pause_holds_until_it_ends_then_the_next_weight_is_set() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(50)
    assert sim.status.weights.candidate == 10
    sim.run(20)
    assert sim.status.weights.candidate == 50


def test_a_healthy_candidate_goes_from_shadow_to_canary_to_promoted() -> None:
    sim = Sim(make_spec(strategy=SHADOW_THEN_CANARY))
    sim.tick()
    assert (sim.status.phase, sim.status.stage) == (Phase.SHADOWING, Stage.SHADOW)
    assert (sim.status.weights.candidate, sim.status.mirror_percent) == (0, 50)
    sim.run(130)
    assert sim.status.stage == Stage.CANARY
    assert (sim.status.weights.candidate, sim.status.mirror_percent) == (25, 0)
    sim.run(120)
    assert sim.status.phase == Phase.SUCCEEDED
    assert sim.status.stable_version == "v2"
    last = sim.decisions[-1].traffic
    assert last is not None
    assert (last.stable_version, last.candidate_version, last.stable_weight) == ("v2", None, 100)
    assert sim.reasons.count("Promoted") == 1
    assert sim.reasons.index("ShadowPassed") < sim.reasons.index("Promoted")


def test_failed_checks_up_to_the_limit_roll_back_and_say_which_gate_why() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=30, results=FAIL)
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.reasons[-1] == "AnalysisFailed"
    sim.tick(seconds=30, results=FAIL)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert (sim.status.weights.candidate, sim.status.mirror_percent) == (0, 0)
    assert sim.status.message is not None
    assert "p99-latency" in sim.status.message
    assert "0.9" in sim.status.message
    assert "<= 0.5" in sim.status.message


def test_a_pass_between_failures_resets_the_count() -> None:
    sim = Sim(make_spec())
    sim.tick()
    for results in (FAIL, PASS, FAIL):
        sim.tick(seconds=30, results=results)
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.consecutive_failures == 1


def test_no_data_is_inconclusive_and_pauses_at_the_limit_never_promotes() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(600, results=NODATA)
    assert sim.status.phase == Phase.PAUSED
    assert sim.status.pause_reason == "inconclusive"
    assert sim.status.weights.candidate == 10
    assert "Promoted" not in sim.reasons


def test_an_inconclusive_pause_lifts_itself_when_data_returns() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(120, results=NODATA)
    assert sim.status.phase == Phase.PAUSED
    sim.run(300, results=PASS)
    assert sim.status.phase == Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("policy", "phase"),
    [
        pytest.param("Hold", Phase.PAUSED, id="hold-pauses"),
        pytest.param("Fail", Phase.ROLLED_BACK, id="fail-rolls-back"),
        pytest.param("Ignore", Phase.SUCCEEDED, id="ignore-goes-on"),
    ],
)
def test_the_inconclusive_policy_of_a_gate_decides_what_no_data_leads_to(
    policy: str, phase: Phase
) -> None:
    spec = make_spec(
        analysis={
            "interval": "30s",
            "metrics": [
                {"name": "p99-latency", "latency": {}, "max": 0.5},
                {"name": "drift", "query": "x", "max": 0.2, "onInconclusive": policy},
            ],
        }
    )
    sim = Sim(spec)
    sim.tick()
    sim.run(400, results=[gate(Verdict.PASS), gate(Verdict.INCONCLUSIVE, None, "drift")])
    assert sim.status.phase == phase


def test_an_untimed_pause_is_a_human_gate_that_holds_until_promote() -> None:
    sim = Sim(make_spec(strategy=HUMAN_GATE))
    sim.tick()
    sim.run(600)
    assert sim.status.phase == Phase.PAUSED
    assert sim.status.awaiting_approval == "canary:1"
    assert sim.status.weights.candidate == 20
    sim.tick(request=RequestVerb.PROMOTE)
    assert sim.status.weights.candidate == 60
    sim.run(60)
    assert sim.status.phase == Phase.SUCCEEDED


def test_resume_does_not_pass_a_human_gate() -> None:
    sim = Sim(make_spec(strategy=HUMAN_GATE))
    sim.tick()
    sim.run(60)
    sim.tick(request=RequestVerb.RESUME)
    assert sim.status.phase == Phase.PAUSED
    assert sim.reasons[-1] == "RequestIgnored"


def test_abort_rolls_back_at_once() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=5, request=RequestVerb.ABORT)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.status.aborted is True
    assert sim.route == TrafficState(0, 0)


def test_promote_full_skips_every_remaining_step() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=5, request=RequestVerb.PROMOTE_FULL)
    assert sim.status.phase == Phase.SUCCEEDED
    assert sim.status.stable_version == "v2"


def test_promote_skips_a_timed_pause() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=5, request=RequestVerb.PROMOTE)
    assert sim.status.weights.candidate == 50


def test_pause_and_resume_by_command_hold_progress_in_between() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=5, request=RequestVerb.PAUSE)
    sim.run(300)
    assert (sim.status.phase, sim.status.weights.candidate) == (Phase.PAUSED, 10)
    sim.tick(request=RequestVerb.RESUME)
    assert sim.status.phase == Phase.PROGRESSING


def test_spec_paused_holds_and_the_resume_command_cannot_override_it() -> None:
    spec = make_spec(paused=True)
    sim = Sim(spec)
    sim.tick()
    sim.run(300)
    assert sim.status.phase == Phase.PAUSED
    sim.tick(request=RequestVerb.RESUME)
    assert sim.status.phase == Phase.PAUSED
    sim.spec = make_spec(paused=False)
    sim.tick()
    assert sim.status.phase == Phase.PROGRESSING


def test_a_new_candidate_mid_rollout_restarts_from_the_first_stage_and_retires_the_old() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(70)
    assert sim.status.weights.candidate == 50
    sim.spec = make_spec(candidate={"version": "v3"})
    d = sim.tick()
    assert sim.status.candidate_version == "v3"
    assert sim.status.step_index == 1
    assert sim.status.weights.candidate == 10
    assert d.traffic is not None
    assert d.traffic.retired_versions == ("v2",)
    assert "CandidateReplaced" in [e.reason for e in d.events]


def test_a_candidate_after_a_promotion_starts_a_new_rollout_from_the_new_stable() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(200)
    assert sim.status.stable_version == "v2"
    sim.spec = make_spec(candidate={"version": "v3"})
    sim.tick()
    assert (sim.status.stable_version, sim.status.candidate_version) == ("v2", "v3")
    assert sim.status.phase == Phase.PROGRESSING


def test_retry_after_a_rollback_starts_the_same_candidate_again() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(request=RequestVerb.ABORT)
    sim.tick(seconds=5, request=RequestVerb.RETRY)
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.weights.candidate == 10


def test_promote_on_a_finished_rollout_is_refused_with_an_event() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(request=RequestVerb.ABORT)
    sim.tick(request=RequestVerb.PROMOTE)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.reasons[-1] == "RequestIgnored"


def test_blue_green_previews_then_switches_all_traffic_in_one_move() -> None:
    sim = Sim(make_spec(strategy=BLUE_GREEN))
    sim.tick()
    assert (sim.status.stage, sim.status.weights.candidate, sim.status.mirror_percent) == (
        Stage.PREVIEW,
        0,
        100,
    )
    sim.run(70)
    assert (sim.status.phase, sim.status.weights.candidate) == (Phase.PROMOTING, 100)
    assert sim.status.scale_down_at is not None
    sim.run(130)
    assert sim.status.phase == Phase.SUCCEEDED
    assert sim.status.stable_version == "v2"


def test_blue_green_post_promotion_failure_switches_back_instantly() -> None:
    sim = Sim(make_spec(strategy=BLUE_GREEN))
    sim.tick()
    sim.run(70)
    assert sim.status.weights.candidate == 100
    sim.run(60, every=30, results=FAIL)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert sim.status.stable_version == "v1"
    assert sim.route == TrafficState(0, 0)


def test_blue_green_without_auto_promote_waits_for_a_human_to_switch() -> None:
    strategy = {"blueGreen": {**BLUE_GREEN["blueGreen"], "autoPromote": False}}
    sim = Sim(make_spec(strategy=strategy))
    sim.tick()
    sim.run(300)
    assert (sim.status.phase, sim.status.awaiting_approval) == (Phase.PAUSED, "preview:promotion")
    sim.tick(request=RequestVerb.PROMOTE)
    assert sim.status.weights.candidate == 100


def test_deleting_mid_rollout_sends_all_traffic_back_to_stable() -> None:
    sim = Sim(make_spec())
    sim.tick()
    d = sim.tick(seconds=5, deleting=True)
    assert d.release_finalizer
    assert d.traffic is not None
    assert (d.traffic.candidate_weight, d.traffic.mirror_percent) == (0, 0)
    assert d.traffic.stable_version == "v1"


def test_a_hand_edited_route_is_reported_and_the_intent_restored() -> None:
    sim = Sim(make_spec())
    sim.tick()
    d = sim.tick(seconds=5, route=TrafficState(40, 0))
    assert [e.reason for e in d.events] == ["TrafficDrift"]
    assert d.traffic is not None
    assert d.traffic.candidate_weight == 10
    cond = {c.type: c for c in sim.status.conditions}["TrafficInSync"]
    assert (cond.status, cond.reason) == ("False", "ManualEdit")


def test_without_any_stable_version_the_rollout_fails_with_a_clear_message() -> None:
    sim = Sim(make_spec(stable=None))
    d = sim.tick()
    assert sim.status.phase == Phase.FAILED
    assert "spec.stable.version" in (sim.status.message or "")
    assert d.traffic is None


@pytest.mark.parametrize(
    ("automation", "gate_key"),
    [
        pytest.param("AfterShadow", "shadow:end", id="after-shadow"),
        pytest.param("BeforePromotion", "canary:promotion", id="before-promotion"),
        pytest.param("EveryStep", "shadow:end", id="every-step-first-asks-after-shadow"),
    ],
)
def test_automation_stops_for_a_human_where_it_says(automation: str, gate_key: str) -> None:
    sim = Sim(make_spec(strategy=SHADOW_THEN_CANARY, automation=automation))
    sim.tick()
    sim.run(600)
    assert sim.status.phase == Phase.PAUSED
    assert sim.status.awaiting_approval == gate_key


def test_every_step_automation_asks_before_each_weight_increase() -> None:
    sim = Sim(make_spec(automation="EveryStep"))
    sim.tick()
    assert (sim.status.awaiting_approval, sim.status.weights.candidate) == ("canary:0", 0)
    sim.tick(request=RequestVerb.PROMOTE)
    assert sim.status.weights.candidate == 10
    sim.run(70)
    assert sim.status.awaiting_approval == "canary:2"


def test_full_automation_runs_to_promotion_without_a_human() -> None:
    sim = Sim(make_spec(strategy=SHADOW_THEN_CANARY, automation="Full"))
    sim.tick()
    sim.run(600)
    assert sim.status.phase == Phase.SUCCEEDED


def test_conditions_follow_kstatus_for_success_and_rollback() -> None:
    sim = Sim(make_spec())
    sim.tick()
    cond = {c.type: c.status for c in sim.status.conditions}
    assert cond == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
        "Paused": "False",
        "TrafficInSync": "True",
    }
    sim.tick(request=RequestVerb.ABORT)
    cond = {c.type: c.status for c in sim.status.conditions}
    assert (cond["Ready"], cond["Reconciling"], cond["Stalled"]) == ("False", "False", "True")


def test_a_tick_with_nothing_new_returns_the_same_status() -> None:
    sim = Sim(make_spec())
    sim.tick()
    before = sim.status.dump()
    sim.tick(seconds=1)
    assert sim.status.dump() == before


def test_the_analysis_ledger_is_bounded() -> None:
    sim = Sim(make_spec(strategy={"canary": {"steps": [{"setWeight": 5}, {"pause": {}}]}}))
    sim.tick()
    sim.run(3000, every=30)
    assert len(sim.status.analysis_ledger) == 20


def test_a_route_that_cannot_be_read_holds_the_rollout_and_warns_once() -> None:
    from modelrollout.engine import Observations, decide

    sim = Sim(make_spec())
    sim.tick()
    before = sim.status
    obs = Observations(traffic_error="httproutes fraud-detector not found")
    d1 = decide(sim.spec, before, obs, sim.now)
    assert d1.traffic is None
    assert [e.reason for e in d1.events] == ["RouteUnavailable"]
    from modelrollout.api.status import ModelRolloutStatus

    after = ModelRolloutStatus.model_validate(d1.status)
    assert after.weights == before.weights
    assert after.step_index == before.step_index
    d2 = decide(sim.spec, after, obs, sim.now)
    assert d2.events == []


def test_too_few_samples_holds_the_step_without_counting_as_inconclusive() -> None:
    spec = make_spec(
        strategy={
            "canary": {"steps": [{"setWeight": 5}, {"analysis": {"checks": 1}}, {"setWeight": 50}]}
        }
    )
    sim = Sim(spec)
    sim.tick()
    few = [
        gate(Verdict.INCONCLUSIVE, None).model_copy(update={"samples": 120, "needed_samples": 500})
    ]
    sim.run(600, results=few)
    assert (sim.status.phase, sim.status.weights.candidate) == (Phase.PROGRESSING, 5)
    assert sim.status.consecutive_inconclusive == 0
    assert "120 of 500 samples" in (sim.status.message or "")
    sim.tick(seconds=30, results=PASS)
    assert sim.status.weights.candidate == 50


def test_a_canary_through_a_plain_service_says_its_weights_are_approximate() -> None:
    sim = Sim(make_spec(trafficRouting={"service": {"name": "fraud-detector"}}))
    sim.tick()
    assert (sim.status.weights.candidate, sim.status.weights_approximate) == (10, True)
    sim.tick(request=RequestVerb.PROMOTE_FULL)
    assert sim.status.weights_approximate is None


def test_a_blue_green_preview_without_route_traffic_is_still_checked() -> None:
    strategy = {"blueGreen": {"previewDuration": "1m"}}
    sim = Sim(make_spec(strategy=strategy))
    sim.tick()
    assert (sim.status.weights.candidate, sim.status.mirror_percent) == (0, 0)
    sim.run(90)
    assert sim.status.phase == Phase.PROMOTING


def test_promote_after_a_blue_green_switch_ends_post_promotion_analysis() -> None:
    sim = Sim(make_spec(strategy=BLUE_GREEN))
    sim.tick()
    sim.run(70)
    assert sim.status.phase == Phase.PROMOTING
    sim.tick(request=RequestVerb.PROMOTE)
    assert (sim.status.phase, sim.status.stable_version) == (Phase.SUCCEEDED, "v2")


def test_an_inconclusive_pause_is_a_warning_a_human_gate_is_not() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(120, results=NODATA)
    paused = [e for d in sim.decisions for e in d.events if e.reason == "Paused"]
    assert [e.type.value for e in paused] == ["Warning"]
    gate_sim = Sim(make_spec(strategy=HUMAN_GATE))
    gate_sim.tick()
    gate_sim.run(60)
    paused = [e for d in gate_sim.decisions for e in d.events if e.reason == "Paused"]
    assert [e.type.value for e in paused] == ["Normal"]


# ------------------------------------------------------------- after a promotion: undo


WINDOW_GATE: dict[str, Any] = {
    "name": "error-rate-after",
    "errorRate": {},
    "max": 0.05,
    "stages": ["rollbackWindow"],
}


def promoted(window: str | None = "5m", **overrides: Any) -> Sim:
    """A canary of v2 over v1, run until it is promoted."""
    sim = Sim(make_spec(rollbackWindow=window, **overrides))
    sim.tick()
    while sim.status.phase != Phase.SUCCEEDED:
        sim.tick(seconds=10, auto_results=PASS)
        assert len(sim.decisions) < 200, "never promoted"
    return sim


def test_a_promotion_with_a_rollback_window_keeps_the_previous_version_for_an_undo() -> None:
    sim = promoted("5m")
    s = sim.status
    assert (s.phase, s.stage, s.stable_version) == (Phase.SUCCEEDED, Stage.ROLLBACK_WINDOW, "v2")
    assert s.previous_stable_version == "v1"
    assert s.undo_until == (sim.now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "v1 stays ready for an undo until" in (s.message or "")
    last = sim.decisions[-1].traffic
    assert last is not None
    assert (last.stable_version, last.candidate_version, last.stable_weight) == ("v2", None, 100)


def test_a_promotion_without_a_rollback_window_remembers_the_previous_version_only() -> None:
    sim = promoted(None)
    s = sim.status
    assert (s.phase, s.stage, s.previous_stable_version, s.undo_until) == (
        Phase.SUCCEEDED,
        Stage.DONE,
        "v1",
        None,
    )


def test_undo_in_the_window_sends_all_traffic_back_to_the_previous_version_at_once() -> None:
    sim = promoted("5m")
    d = sim.tick(seconds=60, request=RequestVerb.UNDO)
    s = sim.status
    assert (s.phase, s.stage, s.stable_version, s.candidate_version) == (
        Phase.ROLLED_BACK,
        Stage.DONE,
        "v1",
        "v2",
    )
    assert d.traffic is not None
    assert (d.traffic.stable_version, d.traffic.candidate_version) == ("v1", "v2")
    assert (d.traffic.stable_weight, d.traffic.mirror_percent) == (100, 0)
    assert (s.previous_stable_version, s.undo_until) == (None, None)
    assert s.history[-1].reason == "Undone"
    assert "undone after promotion" in (s.message or "")
    assert [(e.type.value, e.reason) for e in d.events] == [("Warning", "Undone")]
    cond = {c.type: c.status for c in s.conditions}
    assert (cond["Ready"], cond["Stalled"]) == ("False", "True")


def _in_progress() -> Sim:
    sim = Sim(make_spec(rollbackWindow="5m"))
    sim.tick()
    return sim


def _window_closed() -> Sim:
    sim = promoted("5m")
    sim.tick(seconds=301)
    return sim


def _aborted() -> Sim:
    sim = _in_progress()
    sim.tick(request=RequestVerb.ABORT)
    return sim


@pytest.mark.parametrize(
    ("given", "why"),
    [
        pytest.param(lambda: promoted(None), "spec.rollbackWindow was not set", id="no-window"),
        pytest.param(_window_closed, "the rollback window closed at", id="window-closed"),
        pytest.param(_in_progress, "abort stops a rollout in progress", id="in-progress"),
        pytest.param(
            _aborted, "undo only follows a promotion (phase RolledBack)", id="rolled-back"
        ),
    ],
)
def test_undo_outside_a_rollback_window_is_refused_with_a_warning(given: Any, why: str) -> None:
    sim = given()
    before = sim.status.model_copy(deep=True)
    d = sim.tick(request=RequestVerb.UNDO)
    assert [(e.type.value, e.reason) for e in d.events] == [("Warning", "UndoRefused")]
    assert why in d.events[0].message
    assert (sim.status.phase, sim.status.stable_version) == (before.phase, before.stable_version)
    assert sim.route == TrafficState(before.weights.candidate, before.mirror_percent)


def test_the_rollback_window_closes_at_undo_until_and_says_so() -> None:
    sim = promoted("5m")
    sim.tick(seconds=299)
    assert sim.status.stage == Stage.ROLLBACK_WINDOW
    d = sim.tick(seconds=1)
    assert (sim.status.phase, sim.status.stage) == (Phase.SUCCEEDED, Stage.DONE)
    assert [e.reason for e in d.events] == ["RollbackWindowClosed"]
    assert sim.status.history[-1].reason == "RollbackWindowClosed"
    assert sim.status.previous_stable_version == "v1"


def _window_analysis(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "interval": "30s",
        "failureLimit": 2,
        "metrics": [{"name": "p99-latency", "latency": {}, "max": 0.5}, *extra],
    }


def test_only_gates_that_list_rollback_window_are_checked_after_the_promotion() -> None:
    sim = promoted("5m", analysis=_window_analysis(WINDOW_GATE))
    p = plan(sim.spec, sim.status, sim.now + timedelta(seconds=30))
    assert p.check_due
    assert [g.name for g in p.gates] == ["error-rate-after"]
    assert (p.candidate_version, p.stable_version, p.stage) == ("v2", "v1", "rollbackWindow")
    without = promoted("5m")
    assert not plan(without.spec, without.status, without.now + timedelta(seconds=30)).check_due


def test_failed_checks_in_the_window_undo_the_promotion_automatically() -> None:
    sim = promoted("5m", analysis=_window_analysis(WINDOW_GATE))
    failing = [gate(Verdict.FAIL, 0.2, "error-rate-after")]
    sim.tick(seconds=30, results=failing)
    assert (sim.status.phase, sim.reasons[-1]) == (Phase.SUCCEEDED, "AnalysisFailed")
    d = sim.tick(seconds=30, results=failing)
    assert (sim.status.phase, sim.status.stable_version) == (Phase.ROLLED_BACK, "v1")
    assert "undone automatically: gate error-rate-after" in (sim.status.message or "")
    assert [e.reason for e in d.events] == ["Undone"]
    assert sim.status.analysis_ledger[-1].stage == Stage.ROLLBACK_WINDOW


def test_no_data_in_the_window_never_undoes_a_promotion() -> None:
    sim = promoted("5m", analysis=_window_analysis(WINDOW_GATE))
    sim.run(600, every=30, results=[gate(Verdict.INCONCLUSIVE, None, "error-rate-after")])
    assert (sim.status.phase, sim.status.stable_version) == (Phase.SUCCEEDED, "v2")
    assert "AnalysisInconclusive" in sim.reasons
    assert "Undone" not in sim.reasons


def test_a_new_candidate_ends_the_rollback_window() -> None:
    sim = promoted("5m")
    sim.spec = make_spec(rollbackWindow="5m", stable=None, candidate={"version": "v3"})
    sim.tick(seconds=5)
    s = sim.status
    assert (s.phase, s.stable_version, s.candidate_version) == (Phase.PROGRESSING, "v2", "v3")
    assert (s.previous_stable_version, s.undo_until) == (None, None)
    d = sim.tick(request=RequestVerb.UNDO)
    assert [e.reason for e in d.events] == ["UndoRefused"]


# ------------------------------------------------- blue-green: the old version scaled down


def blue_green(**changes: str) -> dict[str, Any]:
    return {"blueGreen": {**BLUE_GREEN["blueGreen"], **changes}}


def test_blue_green_scales_the_old_version_down_after_scale_down_delay() -> None:
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="5m")))
    sim.tick()
    sim.run(70)
    assert sim.status.stage == Stage.POST_PROMOTION
    switched = datetime.strptime(sim.status.stage_started_at or "", "%Y-%m-%dT%H:%M:%SZ")
    sim.run(130)
    assert sim.status.phase == Phase.SUCCEEDED
    assert sim.replicas["v1"] == 3
    assert sim.status.scale_down_at == (switched + timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    sim.run(200)
    assert sim.replicas == {"v1": 0, "v2": 3}
    assert sim.status.scaled_down is not None
    assert (sim.status.scaled_down.version, sim.status.scaled_down.replicas) == ("v1", 3)
    assert sim.status.scale_down_at is None
    assert sim.reasons.count("ScaledDown") == 1
    assert sim.status.history[-1].reason == "ScaledDown"


def test_blue_green_keeps_the_old_version_while_the_rollback_window_is_open() -> None:
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="1m"), rollbackWindow="10m"))
    sim.tick()
    sim.run(200)
    assert (sim.status.phase, sim.status.stage) == (Phase.SUCCEEDED, Stage.ROLLBACK_WINDOW)
    sim.run(500)
    assert sim.replicas["v1"] == 3, "an undo must find v1 ready to serve"
    sim.run(120)
    assert sim.status.stage == Stage.DONE
    assert sim.replicas["v1"] == 0


def test_a_rollback_after_the_old_version_was_scaled_down_restores_its_replicas() -> None:
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="30s")))
    sim.tick()
    sim.run(70)
    sim.run(40)
    assert (sim.status.phase, sim.replicas["v1"]) == (Phase.PROMOTING, 0)
    d = sim.tick(seconds=30, results=FAIL)
    d = sim.tick(seconds=30, results=FAIL)
    assert sim.status.phase == Phase.ROLLED_BACK
    assert d.scale == {"v1": 3}
    assert sim.status.scaled_down is None


def test_an_undo_restores_the_replicas_of_a_previous_version_scaled_down_before() -> None:
    # Given v1 scaled down during post-promotion, and then a rollback window set in the spec
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="30s")))
    sim.tick()
    sim.run(110)
    assert (sim.status.phase, sim.replicas["v1"]) == (Phase.PROMOTING, 0)
    sim.spec = make_spec(strategy=blue_green(scaleDownDelay="30s"), rollbackWindow="5m")
    sim.run(140)
    assert (sim.status.phase, sim.status.stage) == (Phase.SUCCEEDED, Stage.ROLLBACK_WINDOW)
    assert sim.replicas["v1"] == 0
    d = sim.tick(request=RequestVerb.UNDO)
    assert d.scale == {"v1": 3}
    assert (sim.status.stable_version, sim.replicas["v1"]) == ("v1", 3)


def test_a_missing_old_deployment_is_nothing_to_scale_down() -> None:
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="1m")), replicas={"v2": 3})
    sim.tick()
    sim.run(400)
    assert sim.status.scaled_down is None
    assert sim.status.scale_down_at is None
    events = [e for d in sim.decisions for e in d.events if e.reason == "ScaledDown"]
    assert [e.message for e in events] == ["no Deployment fraud-detector-v1 of v1 to scale down"]


def test_the_plan_asks_for_the_old_versions_replicas_only_when_a_scale_down_is_due() -> None:
    sim = Sim(make_spec(strategy=blue_green(scaleDownDelay="1m")))
    sim.tick()
    sim.run(70)
    assert plan(sim.spec, sim.status, sim.now).read_replicas == ()
    assert plan(sim.spec, sim.status, sim.now + timedelta(minutes=1)).read_replicas == ("v1",)


# ------------------------------------------------------------------ preflight and messages

REFUSED = Preflight(
    refused=(GateRefusal("p99-latency", "query refused: HTTP 400 bad_data: 1:7: parse error"),)
)
UNREACHABLE = Preflight(unreachable="prometheus at http://prom:9090: connection refused")


def test_a_new_candidate_is_preflighted_with_every_gate_of_every_stage_before_any_traffic() -> None:
    spec = make_spec(
        strategy=SHADOW_THEN_CANARY,
        analysis={
            "interval": "30s",
            "metrics": [
                {"name": "p99-latency", "latency": {}, "max": 0.5},
                {"name": "late", "query": "x", "max": 1, "stages": ["canary"]},
            ],
        },
    )
    p = plan(spec, Sim(spec).status, T0)
    assert (p.preflight, p.check_due) == (True, False)
    assert [g.name for g in p.gates] == ["p99-latency", "late"]
    assert (p.candidate_version, p.stable_version, p.stage) == ("v2", "v1", "shadow")


def test_a_rollout_without_gates_needs_no_preflight() -> None:
    spec = make_spec(analysis={"interval": "30s", "metrics": []})
    assert not plan(spec, Sim(spec).status, T0).preflight
    sim = Sim(spec)
    sim.tick(preflight=None)
    assert sim.status.phase == Phase.PROGRESSING


@pytest.mark.parametrize(
    ("preflight", "phase", "reason", "said", "events"),
    [
        pytest.param(
            REFUSED, Phase.FAILED, "InvalidGate", "gate p99-latency: query refused: HTTP 400",
            ["InvalidGate"], id="refused-query-fails-with-invalid-gate",
        ),
        pytest.param(
            UNREACHABLE, Phase.PENDING, "PrometheusUnreachable",
            "connection refused; retrying every 10s", ["PrometheusUnreachable"],
            id="no-answer-waits-pending",
        ),
        pytest.param(
            None, Phase.PENDING, "Preflight", "sending each gate's query to Prometheus",
            [], id="no-preflight-run-waits-pending",
        ),
    ],
)  # fmt: skip
def test_a_preflight_that_does_not_pass_moves_no_traffic_and_says_why(
    preflight: Preflight | None, phase: Phase, reason: str, said: str, events: list[str]
) -> None:
    sim = Sim(make_spec())
    if preflight is None:  # the shell ran none: the engine does not start without one
        obs = Observations(traffic=TrafficState(0, 0))
        d = decide(sim.spec, sim.status, obs, sim.now)
        sim.status = ModelRolloutStatus.model_validate(d.status)
    else:
        d = sim.tick(preflight=preflight)
    assert sim.status.phase == phase
    assert said in (sim.status.message or "")
    assert (sim.status.weights.candidate, sim.status.mirror_percent) == (0, 0)
    assert sim.status.candidate_version is None
    assert d.traffic is not None
    assert (d.traffic.candidate_version, d.traffic.candidate_weight) == (None, 0)
    assert [e.reason for e in d.events] == events
    ready = {c.type: c for c in sim.status.conditions}["Ready"]
    assert (ready.status, ready.reason) == ("False", reason)


def test_the_same_refusal_again_changes_nothing_and_a_fixed_gate_starts_the_rollout() -> None:
    sim = Sim(make_spec())
    sim.tick(preflight=REFUSED)
    again = sim.tick(seconds=5, preflight=REFUSED)
    assert again.events == []
    assert sim.status.phase == Phase.FAILED
    d = sim.tick(seconds=5)  # the manifest was fixed: the next preflight passes
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.weights.candidate == 10
    assert [e.reason for e in d.events] == ["RolloutStarted", "WeightChanged"]


def test_an_unreachable_prometheus_warns_once_and_the_rollout_starts_when_it_answers() -> None:
    sim = Sim(make_spec())
    sim.tick(preflight=UNREACHABLE)
    assert sim.tick(seconds=5, preflight=UNREACHABLE).events == []
    d = sim.tick(seconds=5)
    assert sim.status.phase == Phase.PROGRESSING
    assert [e.reason for e in d.events] == ["RolloutStarted", "WeightChanged"]
    assert sim.reasons.count("PrometheusUnreachable") == 1


def test_a_replacement_whose_gate_is_refused_sends_the_old_candidate_back_to_stable() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(70)
    assert sim.status.weights.candidate == 50
    sim.spec = make_spec(candidate={"version": "v3"})
    d = sim.tick(preflight=REFUSED)
    assert sim.status.phase == Phase.FAILED
    assert "v3 gets no traffic" in (sim.status.message or "")
    assert d.traffic is not None
    assert (d.traffic.candidate_version, d.traffic.candidate_weight) == (None, 0)
    assert d.traffic.retired_versions == ("v2",)


def test_a_replacement_waiting_for_prometheus_holds_the_old_split_then_replaces_it() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.run(70)
    sim.spec = make_spec(candidate={"version": "v3"})
    d = sim.tick(preflight=UNREACHABLE)
    assert sim.status.phase == Phase.PENDING
    assert d.traffic is not None
    assert (d.traffic.candidate_version, d.traffic.candidate_weight) == ("v2", 50)
    d = sim.tick(seconds=5)
    assert "CandidateReplaced" in [e.reason for e in d.events]
    assert d.traffic is not None
    assert (d.traffic.candidate_version, d.traffic.retired_versions) == ("v3", ("v2",))


def test_a_next_candidate_held_by_preflight_after_a_promotion_still_starts_as_a_new_rollout() -> (
    None
):
    sim = Sim(make_spec())
    sim.tick()
    sim.run(200)
    assert sim.status.phase == Phase.SUCCEEDED
    sim.spec = make_spec(candidate={"version": "v3"})
    sim.tick(preflight=UNREACHABLE)
    d = sim.tick(seconds=5)
    assert [e.reason for e in d.events] == ["RolloutStarted", "WeightChanged"]
    assert d.traffic is not None
    assert d.traffic.retired_versions == ()


def test_a_missing_route_leaves_pending_with_a_message_naming_it() -> None:
    sim = Sim(make_spec())
    d = sim.tick(traffic_error="HTTPRoute ml/fraud-detector not found")
    assert sim.status.phase == Phase.PENDING
    assert sim.status.message == "HTTPRoute ml/fraud-detector not found; retrying every 10s"
    assert d.traffic is None


def test_a_route_lost_mid_canary_is_the_message_until_it_is_back() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=5, traffic_error="HTTPRoute ml/fraud-detector not found")
    assert sim.status.message is not None
    assert sim.status.message.startswith("HTTPRoute ml/fraud-detector not found")
    sim.tick(seconds=5)
    assert sim.status.message == "canary step 1 of 4"


def _inconclusive(reason: str) -> list[GateResult]:
    return [GateResult(metric="p99-latency", verdict=Verdict.INCONCLUSIVE, reason=reason)]


@pytest.mark.parametrize(
    ("reason", "event"),
    [
        pytest.param("query refused: HTTP 400 bad_data: x", "QueryRefused", id="refused"),
        pytest.param("unreachable: connection refused", "PrometheusUnreachable", id="unreachable"),
        pytest.param("no data", "AnalysisInconclusive", id="no-data"),
    ],
)
def test_an_inconclusive_check_names_whose_problem_it_is_in_its_event(
    reason: str, event: str
) -> None:
    sim = Sim(make_spec(analysis={**ANALYSIS, "inconclusiveLimit": 2}))
    sim.tick()
    d = sim.tick(seconds=30, results=_inconclusive(reason))
    assert [e.reason for e in d.events] == [event]
    d = sim.tick(seconds=30, results=_inconclusive(reason))
    assert sim.status.phase == Phase.PAUSED
    expected = ["Paused"] + ([event] if event != "AnalysisInconclusive" else [])
    assert [e.reason for e in d.events] == expected
    assert reason in (sim.status.message or "")


def test_a_failed_check_under_the_failure_limit_holds_the_weight_until_the_next_check() -> None:
    """Never more traffic to a candidate whose last check failed (as Flagger halts).

    failureLimit 2: the first failed check warns; the timed pause then ends, and the
    canary holds at 10% instead of going to 50%. The next check decides: a second
    failure rolls back, a pass lets it go on.
    """
    for second, end in ((FAIL, ("RolledBack", 0)), (PASS, ("Progressing", 50))):
        sim = Sim(make_spec())
        sim.tick()  # weight 10, the 1m pause begins
        assert sim.status.weights.candidate == 10
        sim.tick(seconds=30, results=FAIL)
        assert sim.status.consecutive_failures == 1
        sim.tick(seconds=31)  # the pause is over
        assert sim.status.weights.candidate == 10, "held, not raised to 50"
        assert sim.status.message is not None
        assert sim.status.message.startswith("holding at 10% instead of ending the pause")
        sim.tick(seconds=1, results=second)
        assert (sim.status.phase.value, sim.status.weights.candidate) == end
