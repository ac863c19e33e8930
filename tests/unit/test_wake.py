"""``next_wake``: when a rollout next needs the operator, as a table and as a schedule.

The table pins each rule. The schedule tests drive the engine twice, once
every second (what a tick did) and once only at the times ``next_wake``
names, and require the same decisions at the same moments: a due time that
``next_wake`` forgot would show as a step taken late or never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import Condition, GateResult, ModelRolloutStatus
from modelrollout.engine import Decision, next_wake
from modelrollout.engine.wake import ROUTE_RETRY

from .engine_harness import BLUE_GREEN, FAIL, NODATA, PASS, T0, Sim, make_spec

CANARY: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]}
}
SHADOW: dict[str, Any] = {
    "shadow": {"mirrorPercent": 50, "duration": "2m"},
    "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "45s"}}]},
}
HUMAN_GATE: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
NO_GATES: dict[str, Any] = {"interval": "30s", "metrics": []}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(**fields: Any) -> ModelRolloutStatus:
    base: dict[str, Any] = {
        "phase": "Progressing",
        "stage": "canary",
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "observedGeneration": 1,
    }
    base.update(fields)
    return ModelRolloutStatus.model_validate(base)


def spec(strategy: dict[str, Any] = CANARY, **kw: Any) -> ModelRolloutSpec:
    return make_spec(strategy=strategy, **kw)


ROUTE_DOWN = [
    Condition(
        type="TrafficInSync",
        status="False",
        reason="RouteUnavailable",
        last_transition_time=ts(0),
    ).model_dump(by_alias=True)
]


@pytest.mark.parametrize(
    ("the_spec", "the_status", "now", "generation", "expected"),
    [
        pytest.param(spec(), status(phase="Succeeded", stage="done", candidateVersion="v2"),
                     at(0), 1, None, id="a-succeeded-rollout-sleeps-until-woken"),
        pytest.param(spec(), status(phase="RolledBack", stage="done"), at(0), 1, None,
                     id="a-rolled-back-rollout-sleeps-until-woken"),
        pytest.param(spec(stable=None), status(phase="Failed", stableVersion=None),
                     at(0), 1, None, id="no-stable-anywhere-sleeps-until-the-spec-changes"),
        pytest.param(spec(), status(phase="Succeeded", stage="done"), at(0), 2, at(0),
                     id="an-unseen-generation-is-due-now"),
        pytest.param(spec(), status(phase="Succeeded", stage="done", candidateVersion="v1"),
                     at(0), 1, at(0), id="a-new-candidate-is-due-now"),
        pytest.param(spec(), ModelRolloutStatus(), at(0), None, at(0),
                     id="a-new-rollout-with-a-stable-in-its-spec-is-due-now"),
        pytest.param(spec(), status(conditions=ROUTE_DOWN), at(5), 1, at(5) + ROUTE_RETRY,
                     id="a-route-that-could-not-be-read-is-tried-again-later"),
        pytest.param(spec(), status(stepIndex=1, stepStartedAt=ts(0), weights={"candidate": 10},
                                    lastCheckAt=ts(20)),
                     at(25), 1, at(50), id="the-next-check-before-the-pause-ends"),
        pytest.param(spec(analysis=NO_GATES),
                     status(stepIndex=1, stepStartedAt=ts(0), weights={"candidate": 10}),
                     at(25), 1, at(60), id="a-timed-pause-ends"),
        pytest.param(spec(), status(stepIndex=1, stepStartedAt=ts(0), weights={"candidate": 10},
                                    lastCheckAt=ts(60)),
                     at(60), 1, at(90),
                     id="a-pause-that-ended-but-waits-for-a-pass-waits-for-the-next-check"),
        pytest.param(spec(), status(stepIndex=1, stepStartedAt=ts(0), weights={"candidate": 0}),
                     at(10), 1, at(60), id="no-candidate-traffic-no-check-only-the-pause"),
        pytest.param(spec(HUMAN_GATE), status(phase="Paused", pauseReason="gate", stepIndex=1,
                                              stepStartedAt=ts(0), weights={"candidate": 20},
                                              lastCheckAt=ts(40)),
                     at(40), 1, at(70), id="a-human-gate-with-candidate-traffic-keeps-its-checks"),
        pytest.param(spec(HUMAN_GATE, analysis=NO_GATES),
                     status(phase="Paused", pauseReason="gate", stepIndex=1,
                            stepStartedAt=ts(0), weights={"candidate": 20}),
                     at(40), 1, None, id="a-human-gate-with-nothing-to-measure-sleeps"),
        pytest.param(spec(), status(phase="Paused", pauseReason="user", stepIndex=1,
                                    stepStartedAt=ts(0), weights={"candidate": 0}),
                     at(70), 1, None, id="paused-by-a-human-with-no-candidate-traffic-sleeps"),
        pytest.param(spec(), status(phase="Paused", pauseReason="user", stepIndex=1,
                                    stepStartedAt=ts(0), weights={"candidate": 10},
                                    lastCheckAt=ts(70)),
                     at(70), 1, at(100),
                     id="paused-by-a-human-a-canary-still-serving-is-still-measured"),
        pytest.param(spec(SHADOW), status(phase="Shadowing", stage="shadow", stageStartedAt=ts(0),
                                          stepStartedAt=ts(0), mirrorPercent=50,
                                          lastCheckAt=ts(100)),
                     at(110), 1, at(120), id="the-shadow-stage-ends"),
        pytest.param(spec(BLUE_GREEN, analysis=NO_GATES),
                     status(stage="preview", stageStartedAt=ts(0), stepStartedAt=ts(0)),
                     at(1), 1, at(60), id="a-blue-green-preview-ends"),
        pytest.param(spec(BLUE_GREEN, analysis=NO_GATES),
                     status(phase="Promoting", stage="postPromotion", stageStartedAt=ts(0),
                            stepStartedAt=ts(0), scaleDownAt=ts(600), weights={"candidate": 100}),
                     at(1), 1, at(120), id="post-promotion-ends-before-scale-down"),
        pytest.param(spec(BLUE_GREEN, analysis=NO_GATES),
                     status(phase="Promoting", stage="postPromotion", stageStartedAt=ts(0),
                            stepStartedAt=ts(0), scaleDownAt=ts(60), weights={"candidate": 100}),
                     at(1), 1, at(60), id="a-scale-down-time-before-the-end-is-a-wake"),
    ],
)  # fmt: skip
def test_next_wake(
    the_spec: ModelRolloutSpec,
    the_status: ModelRolloutStatus,
    now: datetime,
    generation: int | None,
    expected: datetime | None,
) -> None:
    assert next_wake(the_spec, the_status, now, generation=generation) == expected


# ------------------------------------------------------------------ as a schedule


@dataclass
class TimedSim(Sim):
    """A Sim that remembers when each decision was taken."""

    times: list[datetime] = field(default_factory=list)

    def tick(self, **kw: Any) -> Decision:
        d = super().tick(**kw)
        self.times.append(self.now)
        return d

    def events(self) -> list[tuple[datetime, str]]:
        """Every event with the moment it was decided."""
        return [
            (t, e.reason) for t, d in zip(self.times, self.decisions, strict=True) for e in d.events
        ]

    def end(self) -> tuple[str, int]:
        return self.status.phase.value, self.status.weights.candidate


def drive_by_tick(sim: TimedSim, seconds: int, results: list[GateResult]) -> None:
    sim.tick(auto_results=results)
    for _ in range(seconds):
        sim.tick(seconds=1, auto_results=results)


def drive_by_wake(sim: TimedSim, seconds: int, results: list[GateResult]) -> None:
    end = sim.now + timedelta(seconds=seconds)
    sim.tick(auto_results=results)
    while (due := next_wake(sim.spec, sim.status, sim.now, generation=1)) is not None:
        if due > end:
            break
        assert due > sim.now, "a due time after a decision is always ahead of it"
        sim.tick(seconds=(due - sim.now).total_seconds(), auto_results=results)


@pytest.mark.parametrize(
    ("strategy", "results", "window"),
    [
        pytest.param(CANARY, [], False, id="a-canary-with-no-gates-runs-on-its-pauses-alone"),
        pytest.param(CANARY, PASS, False, id="a-healthy-canary"),
        pytest.param(CANARY, FAIL, False, id="a-failing-canary-rolls-back-at-the-same-check"),
        pytest.param(CANARY, NODATA, False, id="no-data-pauses-at-the-same-check"),
        pytest.param(SHADOW, PASS, False, id="shadow-then-canary"),
        pytest.param(BLUE_GREEN, PASS, False, id="blue-green"),
        pytest.param(HUMAN_GATE, PASS, False, id="a-human-gate-holds-in-both"),
        pytest.param(CANARY, PASS, True, id="a-rollback-window-checks-then-closes"),
        pytest.param(CANARY, FAIL, True, id="a-failing-canary-never-opens-a-window"),
        pytest.param(BLUE_GREEN, PASS, True, id="blue-green-with-a-rollback-window"),
    ],
)
def test_an_event_driven_schedule_takes_the_same_decisions_as_a_one_second_tick(
    strategy: dict[str, Any], results: list[GateResult], window: bool
) -> None:
    analysis = NO_GATES if not results else make_spec().analysis.model_dump(by_alias=True)
    extra: dict[str, Any] = {}
    if window:
        # Checked before and after the promotion; the window stays open 3 minutes.
        extra["rollbackWindow"] = "3m"
        for g in analysis["metrics"]:
            g["stages"] = ["shadow", "canary", "preview", "postPromotion", "rollbackWindow"]
    the_spec = make_spec(strategy=strategy, analysis=analysis, **extra)
    by_tick, by_wake = TimedSim(the_spec), TimedSim(the_spec)
    seconds = 700 if extra else 400
    drive_by_tick(by_tick, seconds, results)
    drive_by_wake(by_wake, seconds, results)
    assert by_wake.events() == by_tick.events()
    if window and results is PASS:
        assert "RollbackWindowClosed" in [reason for _, reason in by_tick.events()]
    assert by_wake.end() == by_tick.end()
    assert len(by_wake.decisions) < len(by_tick.decisions) / 4, "and wakes far less often"
