"""Limits on concurrent rollouts: who is admitted, who waits, and what the waiting ones say."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.engine import Admission, Observations, Preflight, Request, RequestVerb, decide
from modelrollout.engine.admission import Slot, admit, summarize, waiting_message

from .engine_harness import FAIL, Sim, make_spec


def slot(name: str, *, ns: str = "a", holds: bool = False, since: str = "") -> Slot:
    order = (0, since) if since else (1, f"2026-01-01T00:00:{name[-1]}0Z")
    return Slot(ns, name, holds=holds, waits=not holds, order=order)


RUNNING = [slot("r1", holds=True), slot("r2", ns="b", holds=True)]


@pytest.mark.parametrize(
    ("me", "others", "limits", "expected"),
    [
        pytest.param(slot("x1"), RUNNING, (0, 0), None, id="no-limit-admits-without-asking"),
        pytest.param(slot("x1"), RUNNING, (3, 0), Admission(True), id="room-operator-wide"),
        pytest.param(
            slot("x1"),
            RUNNING,
            (2, 0),
            Admission(False, 1, 2, "operator-wide"),
            id="full-operator-wide",
        ),
        pytest.param(
            slot("x2"),
            [*RUNNING, slot("x1")],
            (2, 0),
            Admission(False, 2, 2, "operator-wide"),
            id="second-in-line",
        ),
        pytest.param(
            slot("x1"),
            [*RUNNING, slot("x2", since="2026-01-01T00:00:00Z")],
            (2, 0),
            Admission(False, 2, 2, "operator-wide"),
            id="who-waited-first-goes-first-whatever-its-creation",
        ),
        pytest.param(
            slot("x1", holds=True),
            RUNNING,
            (1, 1),
            Admission(True),
            id="a-running-rollout-keeps-its-slot",
        ),
        pytest.param(
            slot("x1"),
            [*RUNNING, slot("x0")],
            (3, 0),
            Admission(False, 1, 3, "operator-wide"),
            id="the-one-free-slot-goes-to-the-one-ahead",
        ),
        pytest.param(
            slot("x1"),
            RUNNING,
            (0, 1),
            Admission(False, 1, 1, "in namespace a"),
            id="full-namespace",
        ),
        pytest.param(
            slot("x1", ns="c"),
            [*RUNNING, slot("x0")],
            (3, 1),
            Admission(True),
            id="a-rollout-held-by-its-namespace-does-not-block-another-namespace",
        ),
        pytest.param(
            slot("x1"),
            [*RUNNING, slot("x1", holds=True)],
            (2, 0),
            Admission(False, 1, 2, "operator-wide"),
            id="a-stale-copy-of-itself-is-left-out",
        ),
    ],
)
def test_admission_under_the_limits(
    me: Slot, others: list[Slot], limits: tuple[int, int], expected: Admission | None
) -> None:
    got = admit(me, others, limit=limits[0], per_namespace=limits[1])
    assert got == expected


def body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": "m", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"candidate": {"version": "v2"}, "stable": {"version": "v1"}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "holds", "waits"),
    [
        pytest.param({}, False, True, id="new"),
        pytest.param({"phase": "Progressing", "candidateVersion": "v2"}, True, False, id="running"),
        pytest.param({"phase": "Paused", "candidateVersion": "v2"}, True, False, id="paused"),
        pytest.param({"phase": "Succeeded", "candidateVersion": "v2"}, False, False, id="done"),
        pytest.param(
            {"phase": "Succeeded", "candidateVersion": "v1", "stableVersion": "v1"},
            False,
            True,
            id="done-with-a-new-candidate",
        ),
        pytest.param(
            {"phase": "Succeeded", "candidateVersion": "v0", "stableVersion": "v2"},
            False,
            False,
            id="candidate-is-stable",
        ),
    ],
)
def test_a_rollout_holds_or_waits_for_a_slot_by_its_status(
    status: dict[str, Any], holds: bool, waits: bool
) -> None:
    s = summarize(body(**status))
    assert (s.holds, s.waits) == (holds, waits)


def test_the_line_is_ordered_by_waiting_time_then_creation() -> None:
    assert summarize(body(waitingSince="2026-02-01T00:00:00Z")).order == (
        0,
        "2026-02-01T00:00:00Z",
    )
    assert summarize(body()).order == (1, "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("position", "text"),
    [
        pytest.param(1, "1st"),
        pytest.param(2, "2nd"),
        pytest.param(3, "3rd"),
        pytest.param(4, "4th"),
        pytest.param(11, "11th"),
        pytest.param(12, "12th"),
        pytest.param(22, "22nd"),
    ],
)
def test_the_waiting_message_names_the_place_in_line(position: int, text: str) -> None:
    a = Admission(False, position, 5, "operator-wide")
    assert waiting_message(a) == (
        f"waiting: {text} in line for a rollout slot (limit 5 operator-wide)"
    )


# ---------------------------------------------------------------------------- the engine

HELD = Admission(False, 3, 5, "operator-wide")


def test_the_engine_does_not_start_a_rollout_that_is_not_admitted() -> None:
    spec = make_spec()
    d = decide(spec, ModelRolloutStatus(), Observations(admission=HELD), Sim(spec).now)
    status = ModelRolloutStatus.model_validate(d.status)
    assert status.phase == Phase.PENDING
    assert status.candidate_version is None
    assert status.message == "waiting: 3rd in line for a rollout slot (limit 5 operator-wide)"
    assert status.waiting_since is not None
    assert [e.reason for e in d.events] == ["Waiting"]
    assert d.traffic is not None
    assert (d.traffic.candidate_version, d.traffic.stable_weight) == (None, 100)


def test_a_waiting_rollout_updates_its_place_quietly_and_starts_when_admitted() -> None:
    sim = Sim(make_spec())
    d = decide(sim.spec, sim.status, Observations(admission=HELD), sim.now)
    sim.status = ModelRolloutStatus.model_validate(d.status)
    since = sim.status.waiting_since
    closer = Admission(False, 1, 5, "operator-wide")
    d = decide(sim.spec, sim.status, Observations(admission=closer), sim.now)
    sim.status = ModelRolloutStatus.model_validate(d.status)
    assert d.events == [], "a new place in line is a status change, not an Event"
    assert sim.status.waiting_since == since, "the place in line keeps its time"
    assert sim.status.message is not None
    assert "1st in line" in sim.status.message
    d = decide(
        sim.spec,
        sim.status,
        Observations(admission=Admission(True), preflight=Preflight()),
        sim.now,
    )
    sim.status = ModelRolloutStatus.model_validate(d.status)
    assert sim.status.phase == Phase.PROGRESSING
    assert sim.status.waiting_since is None
    assert d.events[0].reason == "RolloutStarted"


def test_a_new_candidate_mid_rollout_keeps_the_slot_it_holds() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.spec = make_spec(candidate={"version": "v3"})
    d = decide(sim.spec, sim.status, Observations(admission=HELD, preflight=Preflight()), sim.now)
    assert d.events[0].reason == "CandidateReplaced"


def test_a_retry_without_a_free_slot_is_refused_with_the_place_in_line() -> None:
    sim = Sim(make_spec())
    sim.tick()
    sim.tick(seconds=30, results=FAIL)
    sim.tick(seconds=30, results=FAIL)
    assert sim.status.phase == Phase.ROLLED_BACK
    obs = Observations(request=Request(RequestVerb.RETRY, "1"), admission=HELD)
    d = decide(sim.spec, sim.status, obs, sim.now)
    assert ModelRolloutStatus.model_validate(d.status).phase == Phase.ROLLED_BACK
    (event,) = d.events
    assert event.reason == "RequestIgnored"
    assert "3rd in line" in event.message
