"""The kubectl plugin without a cluster: tables, the status view, history, rules, errors, reports.

Every object here is hand-written in the wire form the operator writes, so
these tests pin what a user sees for each state without running the engine.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from modelrollout.analysis import source
from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.cli import commands, render, report, view
from modelrollout.cli.kube import (
    EXIT_API_ERROR,
    EXIT_FORBIDDEN,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Call,
    CliError,
    Kube,
    translate,
)
from modelrollout.cli.main import build_parser
from modelrollout.engine.types import Request, RequestVerb

NOW = datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)
SERVER = "https://127.0.0.1:6443"


def at(minutes: float) -> str:
    """A wire timestamp ``minutes`` after 12:00 (the rollouts below start then)."""
    return (datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def gate(
    metric: str, verdict: str, value: float | None, *, max_: float | None = None, **extra: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {"metric": metric, "verdict": verdict, **extra}
    if value is not None:
        result["value"] = value
    if max_ is not None:
        result["max"] = max_
    return result


def hist(minute: float, reason: str, phase: str, stage: str, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"at": at(minute), "reason": reason, "phase": phase, "stage": stage}
    entry.setdefault("candidateVersion", "v2")
    entry.update({"weight": 0, "mirrorPercent": 0, **kw})
    return entry


def rollout(**status: Any) -> dict[str, Any]:
    """A canary rollout with a shadow stage and six steps, paused at the human gate (step 3)."""
    base_status: dict[str, Any] = {
        "phase": "Paused",
        "stage": "canary",
        "stepIndex": 3,
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "weights": {"stable": 80, "candidate": 20},
        "mirrorPercent": 0,
        "pauseReason": "gate",
        "awaitingApproval": "canary:3",
        "message": "human gate at step 3: promote to go on",
        "rolloutStartedAt": at(0),
        "observedGeneration": 1,
        "consecutiveFailures": 0,
        "consecutivePasses": 1,
        "lastAnalysis": {
            "at": at(20),
            "stage": "canary",
            "stepIndex": 3,
            "verdict": "Pass",
            "results": [
                gate("p99-latency", "Pass", 0.31, max_=0.5, samples=1200, neededSamples=500),
                gate("error-rate", "Pass", 0.009, max_=0.01),
            ],
        },
        "analysisLedger": [
            {
                "at": at(6),
                "stage": "shadow",
                "verdict": "Pass",
                "results": [gate("p99-latency", "Pass", 0.28, max_=0.5)],
            },
            {
                "at": at(12),
                "stage": "canary",
                "stepIndex": 1,
                "verdict": "Inconclusive",
                "results": [gate("p99-latency", "Inconclusive", None, max_=0.5, reason="no data")],
            },
            {
                "at": at(20),
                "stage": "canary",
                "stepIndex": 3,
                "verdict": "Pass",
                "results": [gate("p99-latency", "Pass", 0.31, max_=0.5)],
            },
        ],
        "history": [
            hist(0, "RolloutStarted", "Shadowing", "shadow", mirrorPercent=50),
            hist(6, "ShadowPassed", "Progressing", "shadow", mirrorPercent=50),
            hist(6, "WeightChanged", "Progressing", "canary", stepIndex=0, weight=10),
            hist(15, "WeightChanged", "Progressing", "canary", stepIndex=2, weight=20),
            hist(15, "Paused", "Paused", "canary", stepIndex=3, weight=20),
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Paused",
                "message": "",
                "lastTransitionTime": at(0),
            },
            {
                "type": "Paused",
                "status": "True",
                "reason": "gate",
                "message": "human gate at step 3",
                "lastTransitionTime": at(15),
            },
        ],
    }
    base_status.update(status)
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {
            "name": "fraud",
            "namespace": "risk",
            "generation": 1,
            "creationTimestamp": at(-60),
        },
        "spec": {
            "model": "fraud-detector",
            "stable": {"version": "v1"},
            "candidate": {"version": "v2"},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
            "strategy": {
                "shadow": {"mirrorPercent": 50, "duration": "5m"},
                "canary": {
                    "steps": [
                        {"setWeight": 10},
                        {"analysis": {"checks": 2}},
                        {"setWeight": 20},
                        {"pause": {}},
                        {"setWeight": 50},
                        {"pause": {"duration": "5m"}},
                    ]
                },
            },
            "analysis": {"failureLimit": 2, "inconclusiveLimit": 3, "metrics": []},
        },
        "status": base_status,
    }


def rolled_back() -> dict[str, Any]:
    """The same rollout rolled back by analysis at step 3 (weight 20%)."""
    obj = rollout(
        phase="RolledBack",
        stage="done",
        pauseReason=None,
        awaitingApproval=None,
        weights={"stable": 100, "candidate": 0},
        message="rolled back: gate p99-latency: 0.9 (limit <= 0.5)",
    )
    obj["status"]["history"][-1] = hist(
        15, "Resumed", "Progressing", "canary", stepIndex=3, weight=20
    )
    obj["status"]["history"].append(
        hist(22, "RolledBack", "RolledBack", "done", stepIndex=3, message="rolled back: p99")
    )
    obj["status"]["analysisLedger"].append(
        {
            "at": at(22),
            "stage": "canary",
            "stepIndex": 3,
            "verdict": "Fail",
            "results": [gate("p99-latency", "Fail", 0.9, max_=0.5)],
        }
    )
    return obj


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


# ---------------------------------------------------------------------------- basics


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5, "5s"), (119, "119s"), (200, "3m20s"), (600, "10m"), (7200, "120m"),
     (3 * 3600 + 600, "3h10m"), (30 * 3600, "30h"), (3 * 86400, "3d"), (400 * 86400, "400d"),
     (800 * 86400, "2y")],
)  # fmt: skip
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert view.human_age(seconds) == shown


@pytest.mark.parametrize(
    "text",
    ["2026-03-01T12:00:00Z", "2026-03-01T12:00:00.123456789Z", "2026-03-01T12:00:00+00:00"],
)
def test_api_timestamps_parse_in_every_form(text: str) -> None:
    parsed = view.parse_time(text)
    assert parsed is not None
    assert parsed.replace(microsecond=0) == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_bad_timestamps_are_none_not_errors() -> None:
    assert view.parse_time("yesterday") is None
    assert view.parse_time(None) is None


# ----------------------------------------------------------------------------- gates


def test_worst_gate_is_fail_over_inconclusive_over_pass() -> None:
    status = {
        "lastAnalysis": {
            "results": [
                gate("a", "Pass", 0.1, max_=0.5),
                gate("b", "Inconclusive", None, max_=1),
                gate("c", "Fail", 0.6, max_=0.5),
            ]
        }
    }
    assert view.worst_gate(status) == gate("c", "Fail", 0.6, max_=0.5)
    status["lastAnalysis"]["results"].pop()
    assert (view.worst_gate(status) or {})["metric"] == "b"
    status["lastAnalysis"]["results"].pop()
    assert (view.worst_gate(status) or {})["metric"] == "a"


def test_worst_among_equals_is_the_furthest_past_or_closest_to_its_limit() -> None:
    fails = [gate("slightly", "Fail", 0.51, max_=0.5), gate("badly", "Fail", 2.0, max_=0.5)]
    assert (view.worst_gate({"lastAnalysis": {"results": fails}}) or {})["metric"] == "badly"
    passes = [
        gate("roomy", "Pass", 0.1, max_=0.5),
        {"metric": "tight", "verdict": "Pass", "value": 0.91, "min": 0.9},
    ]
    assert (view.worst_gate({"lastAnalysis": {"results": passes}}) or {})["metric"] == "tight"


def test_no_analysis_means_no_worst_gate() -> None:
    assert view.worst_gate({}) is None
    assert view.worst_gate(None) is None
    assert view.gate_summary(None) == "-"


def test_gate_summary_shows_value_against_limit() -> None:
    assert view.gate_summary(gate("p99", "Fail", 0.62, max_=0.5)) == "Fail p99 0.62 (<= 0.5)"
    both = {"metric": "acc", "verdict": "Inconclusive", "min": 0.9, "max": 1}
    assert view.gate_summary(both) == "Inconclusive acc no data (>= 0.9 and <= 1)"


# ------------------------------------------------------------------------------ list


def test_list_row_has_every_column() -> None:
    obj = rollout(
        lastAnalysis={
            "at": at(20),
            "stage": "canary",
            "verdict": "Fail",
            "results": [gate("p99", "Pass", 0.3, max_=0.5), gate("err", "Fail", 0.05, max_=0.01)],
        }
    )
    row = view.list_row(obj, NOW)
    assert (row.namespace, row.name, row.model) == ("risk", "fraud", "fraud-detector")
    assert (row.stable, row.candidate, row.phase, row.stage) == ("v1", "v2", "Paused", "canary")
    assert (row.step, row.weight, row.mirror) == ("3/6", "20%", "0%")
    assert row.gate == "Fail err 0.05 (<= 0.01)"
    assert row.age == "90m"
    assert row.waiting == "canary:3"


def test_list_table_is_kubectl_style_and_namespaced_with_all_namespaces() -> None:
    text = render.list_table([rollout()], NOW)
    header, line = text.splitlines()
    assert header.split() == [
        "NAME", "MODEL", "STABLE", "CANDIDATE", "PHASE", "STAGE", "STEP", "WEIGHT", "MIRROR",
        "GATE", "AGE",
    ]  # fmt: skip
    assert line.startswith("fraud ")
    assert "3/6" in line
    assert "Pass error-rate 0.009 (<= 0.01)" in line
    every = render.list_table([rollout()], NOW, all_namespaces=True, wide=True)
    assert every.splitlines()[0].startswith("NAMESPACE")
    assert "MESSAGE" in every.splitlines()[0]
    assert "human gate at step 3" in every


@pytest.mark.parametrize(
    ("status", "step"),
    [
        ({"stage": "shadow", "stepIndex": None, "phase": "Shadowing"}, "-"),
        ({"stage": "canary", "stepIndex": 0, "phase": "Progressing"}, "0/6"),
        ({"stage": "canary", "stepIndex": 6, "phase": "Paused"}, "6/6"),
        ({"stage": "done", "stepIndex": None, "phase": "Succeeded"}, "6/6"),
        ({"stage": "done", "stepIndex": 3, "phase": "RolledBack"}, "3/6"),
    ],
)
def test_step_column(status: dict[str, Any], step: str) -> None:
    assert view.step_text(rollout(**status)) == step


def test_blue_green_has_no_step_column() -> None:
    obj = rollout(stage="preview", stepIndex=None)
    obj["spec"]["strategy"] = {"blueGreen": {}}
    assert view.step_text(obj) == "-"


# ----------------------------------------------------------------------------- steps


def states(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s.key, s.state) for s in view.strategy_steps(obj)]


def test_strategy_marks_the_current_step() -> None:
    assert states(rollout()) == [
        ("shadow", "done"), ("0", "done"), ("1", "done"), ("2", "done"), ("3", "current"),
        ("4", "pending"), ("5", "pending"), ("promote", "pending"),
    ]  # fmt: skip


def test_strategy_marks_where_a_rollback_stopped() -> None:
    marked = dict(states(rolled_back()))
    assert marked["3"] == "stopped"
    assert marked["2"] == "done"
    assert marked["4"] == "pending"


def test_strategy_of_a_shadow_rollback_stops_in_shadow() -> None:
    obj = rollout(phase="RolledBack", stage="done", stepIndex=None)
    obj["status"]["history"] = [
        hist(0, "RolloutStarted", "Shadowing", "shadow", mirrorPercent=50),
        hist(3, "RolledBack", "RolledBack", "done"),
    ]
    assert states(obj)[0] == ("shadow", "stopped")


def test_strategy_all_done_after_success_and_all_pending_before_start() -> None:
    assert {s for _, s in states(rollout(phase="Succeeded", stage="done", stepIndex=None))} == {
        "done"
    }
    assert {s for _, s in states(rollout(phase="Pending", stage=None, stepIndex=None))} == {
        "pending"
    }


def test_blue_green_strategy_lines() -> None:
    obj = rollout(phase="Progressing", stage="preview", stepIndex=None)
    obj["spec"]["strategy"] = {"blueGreen": {"previewDuration": "2m", "previewMirrorPercent": 20}}
    lines = view.strategy_steps(obj)
    assert [(s.key, s.state) for s in lines] == [
        ("preview", "current"),
        ("postPromotion", "pending"),
        ("promote", "pending"),
    ]
    assert "mirror 20% for 2m" in lines[0].label


# ---------------------------------------------------------------------------- status


def events() -> list[dict[str, Any]]:
    return [
        {"type": "Normal", "reason": "RolloutStarted", "message": "started",
         "lastTimestamp": at(0)},
        {"type": "Warning", "reason": "AnalysisInconclusive", "message": "no data",
         "eventTime": "2026-03-01T12:12:00.000000Z", "count": 3},
        {"type": "Normal", "reason": "Paused", "message": "human gate at step 3",
         "lastTimestamp": at(15)},
    ]  # fmt: skip


def test_status_view_shows_steps_gates_conditions_and_events() -> None:
    text = text_of(render.status_view(rollout(), events(), NOW))
    assert "ModelRollout risk/fraud" in text
    assert "Paused (gate)" in text
    assert "canary, step 3/6" in text
    assert "stable v1 80%" in text
    assert "candidate v2 20%" in text
    assert "mirror 0%" in text
    assert "kubectl modelrollout promote fraud" in text
    current = next(line for line in text.splitlines() if "▶" in line)
    assert "3 pause until promoted" in current
    assert "← here" in current
    done = [line for line in text.splitlines() if line.startswith("✓")]
    assert len(done) == 4  # shadow and steps 0-2
    gate_line = next(line for line in text.splitlines() if line.startswith("p99-latency"))
    assert gate_line.split()[:5] == ["p99-latency", "0.31", "<=", "0.5", "1200/500"]
    assert "Pass" in gate_line
    assert "1 passed" in text
    assert re.search(r"Paused\s+True\s+gate\s+15m\s+human gate at step 3", text)
    lines = text.splitlines()
    events_at = lines.index("Events")
    shown = lines[events_at + 2 :]
    assert [line.split()[0] for line in shown if line.strip()] == ["30m", "18m", "15m"]
    assert "18m (x3)  Warning  AnalysisInconclusive" in shown[1]


def test_status_view_keeps_only_the_most_recent_events() -> None:
    many = [
        {"type": "Normal", "reason": f"R{i}", "message": "", "lastTimestamp": at(i)}
        for i in range(15)
    ]
    text = text_of(render.status_view(rollout(), list(reversed(many)), NOW, max_events=5))
    assert "R14" in text
    assert "R10" in text
    assert "R9 " not in text


def test_status_view_of_a_rollback_says_where_and_what_next() -> None:
    text = text_of(render.status_view(rolled_back(), [], NOW))
    stopped = next(line for line in text.splitlines() if "✗" in line)
    assert "3 pause until promoted" in stopped
    assert "RolledBack here" in stopped
    assert "kubectl modelrollout retry fraud" in text
    assert "<none>" in text  # no events


def test_status_view_says_when_the_status_lags_the_spec() -> None:
    obj = rollout(phase="Succeeded", stage="done", candidateVersion="v2")
    obj["spec"]["candidate"]["version"] = "v3"
    obj["metadata"]["generation"] = 2
    text = text_of(render.status_view(obj, [], NOW))
    assert "spec asks for candidate v3" in text
    assert "status is from generation 1, the spec is at 2" in text


def test_status_line_for_logs() -> None:
    line = render.status_line(rollout())
    assert line.startswith("Paused stage=canary step=3/6 weight=20% mirror=0% gate=Pass error-rate")
    assert "awaiting=canary:3" in line
    assert line.endswith("| human gate at step 3: promote to go on")


def test_events_sort_by_last_timestamp_or_event_time() -> None:
    ordered = view.recent_events(list(reversed(events())), limit=2)
    assert [e["reason"] for e in ordered] == ["AnalysisInconclusive", "Paused"]


# --------------------------------------------------------------------------- history


def test_history_groups_rollouts_with_outcomes() -> None:
    history = [
        hist(0, "RolloutStarted", "Progressing", "canary", stepIndex=0),
        hist(5, "WeightChanged", "Progressing", "canary", stepIndex=0, weight=10),
        hist(9, "RolledBack", "RolledBack", "done", stepIndex=1, message="rolled back: p99"),
        hist(30, "Retried", "Progressing", "canary", stepIndex=0),
        hist(31, "WeightChanged", "Progressing", "canary", stepIndex=0, weight=10),
        hist(50, "Promoted", "Succeeded", "done", message="promoted v2"),
        hist(60, "RolloutStarted", "Progressing", "canary", candidateVersion="v3"),
        hist(61, "Aborted", "RolledBack", "done", candidateVersion="v3", message="aborted"),
        hist(70, "RolloutStarted", "Progressing", "canary", candidateVersion="v4"),
        hist(72, "CandidateReplaced", "Progressing", "canary", candidateVersion="v5"),
        hist(80, "WeightChanged", "Progressing", "canary", candidateVersion="v5", weight=10),
    ]
    later = datetime(2026, 3, 1, 13, 30, tzinfo=UTC)
    records = view.group_history({"phase": "Progressing", "history": history}, later)
    summary = [(r.candidate, r.started_by, r.outcome, r.duration_seconds) for r in records]
    assert summary == [
        ("v2", "RolloutStarted", "RolledBack", 9 * 60.0),
        ("v2", "Retried", "Promoted", 20 * 60.0),
        ("v3", "RolloutStarted", "Aborted", 60.0),
        ("v4", "RolloutStarted", "Replaced", 120.0),
        ("v5", "CandidateReplaced", "in progress", 18 * 60.0),
    ]
    assert records[0].reason == "rolled back: p99"
    assert records[1].reason == "promoted v2"
    table = render.history_table(records)
    assert table.splitlines()[0].split() == [
        "STARTED",
        "CANDIDATE",
        "OUTCOME",
        "DURATION",
        "REASON",
    ]
    assert "v2 (retry)" in table
    assert "18m so far" in table


def test_truncated_history_is_marked() -> None:
    history = [hist(5, "WeightChanged", "Progressing", "canary", stepIndex=0, weight=10)]
    (record,) = view.group_history({"phase": "Progressing", "history": history}, NOW)
    assert record.truncated
    assert record.started_by == "?"
    assert render.history_table([record]).splitlines()[1].startswith("≤ ")


def test_history_of_a_spec_failure() -> None:
    history = [hist(0, "Invalid", "Failed", "done", candidateVersion=None, message="no stable")]
    (record,) = view.group_history({"phase": "Failed", "history": history}, NOW)
    assert record.outcome == "Failed"
    assert record.reason == "no stable"


# ------------------------------------------------------------------------- the rules

R = RequestVerb


@pytest.mark.parametrize(
    ("verb", "phase", "reason", "refused"),
    [
        (R.PROMOTE, "Succeeded", None, "it has ended"),
        (R.PROMOTE, "RolledBack", None, "it has ended"),
        (R.PROMOTE_FULL, "Failed", None, "it has ended"),
        (R.ABORT, "Succeeded", None, "it has ended"),
        (R.PAUSE, "RolledBack", None, "it has ended"),
        (R.PROMOTE, "Paused", "spec", "spec.paused"),
        (R.PAUSE, "Paused", "user", "already Paused"),
        (R.RESUME, "Progressing", None, "not Paused"),
        (R.RESUME, "Succeeded", None, "not Paused"),
        (R.RESUME, "Paused", "spec", "spec.paused"),
        (R.RESUME, "Paused", "gate", "promote fraud"),
        (R.RETRY, "Progressing", None, "only follows a rollback"),
        (R.RETRY, "Succeeded", None, "only follows a rollback"),
        (R.PROMOTE, "Progressing", None, None),
        (R.PROMOTE, "Paused", "gate", None),
        (R.PROMOTE_FULL, "Shadowing", None, None),
        (R.ABORT, "Paused", "inconclusive", None),
        (R.PAUSE, "Progressing", None, None),
        (R.RESUME, "Paused", "user", None),
        (R.RESUME, "Paused", "inconclusive", None),
        (R.RETRY, "RolledBack", None, None),
        (R.RETRY, "Failed", None, None),
    ],
)
def test_commands_that_make_no_sense_are_refused(
    verb: RequestVerb, phase: str, reason: str | None, refused: str | None
) -> None:
    awaiting = "canary:3" if reason == "gate" else None
    why = commands.refusal(
        verb, rollout(phase=phase, pauseReason=reason, awaitingApproval=awaiting)
    )
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why
        assert '"fraud"' in why


UNDO_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        pytest.param(
            {
                "phase": "Succeeded",
                "previousStableVersion": "v1",
                "undoUntil": "2026-03-01T12:05:00Z",
            },
            None,
            id="in-the-window",
        ),
        pytest.param(
            {
                "phase": "Succeeded",
                "previousStableVersion": "v1",
                "undoUntil": "2026-03-01T12:00:00Z",
            },
            "the rollback window to v1 closed at 2026-03-01T12:00:00Z",
            id="window-closed",
        ),
        pytest.param(
            {"phase": "Succeeded", "previousStableVersion": "v1"},
            "spec.rollbackWindow was not set",
            id="no-window",
        ),
        pytest.param({"phase": "Progressing"}, "abort stops a rollout in progress", id="running"),
        pytest.param({"phase": "RolledBack"}, "undo only follows a promotion", id="rolled-back"),
    ],
)
def test_undo_is_sent_only_inside_the_rollback_window(
    status: dict[str, Any], refused: str | None
) -> None:
    obj = rollout()
    obj["status"] = status
    why = commands.refusal(RequestVerb.UNDO, obj, UNDO_NOW)
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why


def test_retry_needs_a_candidate_other_than_stable() -> None:
    obj = rollout(phase="RolledBack", candidateVersion="v1", pauseReason=None)
    assert "no candidate to retry" in (commands.refusal(RequestVerb.RETRY, obj) or "")


@pytest.mark.parametrize(
    ("phase", "code"), [("Succeeded", 0), ("RolledBack", 1), ("Failed", 2), ("Paused", None)]
)
def test_watch_outcome_by_phase(phase: str, code: int | None) -> None:
    assert commands.watch_outcome(rollout(phase=phase)) == code


def test_watch_waits_for_the_operator_to_catch_up() -> None:
    newer_spec = rollout(phase="Succeeded")
    newer_spec["metadata"]["generation"] = 2
    assert commands.watch_outcome(newer_spec) is None
    newer_spec["status"]["observedGeneration"] = 2
    assert commands.watch_outcome(newer_spec) == 0

    new_candidate = rollout(phase="Succeeded")
    new_candidate["spec"]["candidate"]["version"] = "v3"
    assert commands.watch_outcome(new_candidate) is None

    retry_sent = rollout(phase="RolledBack")
    retry_sent["metadata"]["annotations"] = {REQUEST_ANNOTATION: "retry:1"}
    assert commands.watch_outcome(retry_sent) is None
    retry_sent["status"]["handledRequest"] = "retry:1"
    assert commands.watch_outcome(retry_sent) == 1


def test_request_values_are_what_the_operator_parses() -> None:
    value = commands.request_value(RequestVerb.PROMOTE_FULL, NOW)
    assert re.fullmatch(r"promote-full:20260301T123000Z-[0-9a-f]{12}", value)
    parsed = Request.parse(value)
    assert parsed is not None
    assert parsed.verb == RequestVerb.PROMOTE_FULL
    assert commands.request_value(RequestVerb.ABORT, NOW) != commands.request_value(
        RequestVerb.ABORT, NOW
    )


def test_the_request_annotation_keeps_its_wire_name() -> None:
    # The CLI and the operator share api.base.REQUEST_ANNOTATION; older CLIs and scripts
    # (``kubectl annotate``) write the literal name, so it must never change.
    assert REQUEST_ANNOTATION == "modelrollout.io/request"


def test_timeouts_take_go_durations_or_seconds() -> None:
    assert commands.parse_timeout("90") == 90
    assert commands.parse_timeout("1m30s") == 90
    with pytest.raises(argparse.ArgumentTypeError):
        commands.parse_timeout("soon")


# ------------------------------------------------------------------------------ errors


def api_error(status: int, body: dict[str, Any] | str) -> ApiException:
    text = body if isinstance(body, str) else json.dumps(body)
    return ApiException(status=status, reason="x", body=text)


def test_not_found_names_the_rollout_and_namespace() -> None:
    exc = api_error(
        404,
        {"kind": "Status", "reason": "NotFound", "message": "not found",
         "details": {"name": "x", "group": "modelrollout.io", "kind": "modelrollouts"}},
    )  # fmt: skip
    err = translate(exc, Call("get", name="x", namespace="y"), SERVER)
    assert (err.code, err.message) == (
        EXIT_NOT_FOUND,
        'modelrollout "x" not found in namespace "y"',
    )


def test_a_missing_crd_is_said_plainly() -> None:
    err = translate(api_error(404, "404 page not found\n"), Call("list", namespace="y"), SERVER)
    assert err.code == EXIT_NOT_FOUND
    assert "ModelRollout API" in err.message
    assert "not installed" in err.message
    assert SERVER in err.message


def test_forbidden_says_which_verb_and_resource() -> None:
    body = {"kind": "Status", "reason": "Forbidden", "message": 'User "bob" cannot patch'}
    err = translate(api_error(403, body), Call("patch", name="x", namespace="y"), SERVER)
    assert err.code == EXIT_FORBIDDEN
    assert err.message.startswith(
        'forbidden by RBAC: cannot patch modelrollouts.modelrollout.io "x" in namespace "y"'
    )
    assert 'User "bob"' in err.message
    cluster = translate(api_error(403, body), Call("list"), SERVER)
    assert "at the cluster scope" in cluster.message


def test_bad_credentials_are_forbidden_too() -> None:
    err = translate(api_error(401, {"message": "Unauthorized"}), Call("get", name="x"), SERVER)
    assert err.code == EXIT_FORBIDDEN
    assert "refused the credentials" in err.message


def test_other_api_errors_keep_the_server_message() -> None:
    body = {"kind": "Status", "reason": "Invalid", "message": "spec.candidate.version: Too long"}
    err = translate(api_error(422, body), Call("patch", name="x", namespace="y"), SERVER)
    assert err.code == EXIT_API_ERROR
    assert "Too long" in err.message
    assert "\n" not in err.message


def test_connection_errors_name_the_server() -> None:
    refused = urllib3.exceptions.NewConnectionError(
        None,  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    exc = urllib3.exceptions.MaxRetryError(None, "/apis", reason=refused)  # type: ignore[arg-type]
    err = translate(exc, Call("get", name="x"), "https://127.0.0.1:1")
    assert err.code == EXIT_UNREACHABLE
    assert err.message.startswith(
        "cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused"
    )
    assert translate(ApiException(status=0), Call("get"), SERVER).code == EXIT_UNREACHABLE


def test_errors_become_stderr_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise CliError('modelrollout "x" not found in namespace "y"', EXIT_NOT_FOUND)

    assert commands._entry(handler)(argparse.Namespace()) == EXIT_NOT_FOUND
    out, err = capsys.readouterr()
    assert out == ""
    assert err == 'error: modelrollout "x" not found in namespace "y"\n'


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "-A", "-o", "wide"],
        ["status", "x", "--watch", "--timeout", "10m"],
        ["promote", "x", "--full"],
        ["abort", "x"],
        ["pause", "x"],
        ["resume", "x"],
        ["retry", "x"],
        ["set-candidate", "x", "v3"],
        ["history", "x", "-o", "yaml"],
        ["report", "x", "-o", "out.html"],
    ],
)
def test_every_command_takes_the_global_flags(argv: list[str]) -> None:
    args = build_parser().parse_args([*argv, "--kubeconfig", "/k", "--context", "c", "-n", "team"])
    assert (args.kubeconfig, args.context, args.namespace) == ("/k", "c", "team")
    assert callable(args.func)


class FakeKube:
    """Stands in for Kube: one object, and a record of the patches sent."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.namespace = "risk"
        self.patches: list[dict[str, Any]] = []

    def get(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body)
        return self.obj


def run(argv: list[str], kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(Kube, "connect", classmethod(lambda cls, *a: kube))
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def test_a_refused_command_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube(rollout(phase="Succeeded", pauseReason=None, awaitingApproval=None))
    assert run(["promote", "fraud"], kube, monkeypatch) == EXIT_REFUSED
    assert kube.patches == []
    err = capsys.readouterr().err
    assert err.startswith('error: refused: modelrollout "fraud" is Succeeded: it has ended')


def test_promote_patches_only_the_request_annotation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube(rollout())
    assert run(["promote", "fraud", "--full"], kube, monkeypatch) == 0
    (patch,) = kube.patches
    assert list(patch) == ["metadata"]
    value = patch["metadata"]["annotations"][REQUEST_ANNOTATION]
    assert value.startswith("promote-full:")
    assert value in capsys.readouterr().out


def test_set_candidate_warns_about_gitops(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube(rollout())
    assert run(["set-candidate", "fraud", "v3"], kube, monkeypatch) == 0
    assert kube.patches == [{"spec": {"candidate": {"version": "v3"}}}]
    out, err = capsys.readouterr()
    assert "GitOps" in err
    assert "v2 -> v3" in out
    assert run(["set-candidate", "fraud", "v2"], kube, monkeypatch) == EXIT_REFUSED


# ----------------------------------------------------------------------------- report


def test_marker_labels_say_what_and_where() -> None:
    weight = hist(6, "WeightChanged", "Progressing", "canary", stepIndex=0, weight=10)
    assert view.marker_label(weight) == "WeightChanged → 10% @ step 0"
    back = hist(22, "RolledBack", "RolledBack", "done", stepIndex=3)
    assert view.marker_label(back) == "RolledBack @ step 3"
    shadow_back = hist(3, "RolledBack", "RolledBack", "done")
    previous = hist(0, "RolloutStarted", "Shadowing", "shadow")
    assert view.marker_label(shadow_back, previous) == "RolledBack @ shadow"


def test_timeline_from_history_and_ledger() -> None:
    timeline = view.build_timeline(rolled_back(), NOW)
    assert [(w, m) for _, w, m in timeline.traffic] == [
        (0, 50), (0, 50), (10, 0), (20, 0), (20, 0), (0, 0),
    ]  # fmt: skip
    assert timeline.end == datetime(2026, 3, 1, 12, 22, tzinfo=UTC)  # ended: not "now"
    assert [p.verdict for p in timeline.gates["p99-latency"]] == [
        "Pass", "Inconclusive", "Pass", "Fail",
    ]  # fmt: skip
    assert timeline.gates["p99-latency"][1].value is None
    assert [m.label for m in timeline.markers][-1] == "RolledBack @ step 3"
    assert "Resumed @ step 3" in [m.label for m in timeline.markers]


def test_a_running_rollout_extends_to_now() -> None:
    assert view.build_timeline(rollout(), NOW).end == NOW


def test_report_writes_a_png_and_a_self_contained_html(tmp_path: Path) -> None:
    written = report.write_report(rolled_back(), str(tmp_path / "out"), NOW)
    assert written == [tmp_path / "out.png", tmp_path / "out.html"]
    png = (tmp_path / "out.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000
    page = (tmp_path / "out.html").read_text()
    assert "data:image/png;base64," in page
    assert "<script" not in page
    assert 'src="http' not in page  # nothing to fetch: it opens offline
    markers = page[page.index("<h2>Markers</h2>") : page.index("<h2>History</h2>")]
    assert "RolledBack @ step 3" in markers
    assert "rolled back: p99" in markers
    rollouts = page[page.index("<h2>Rollouts</h2>") : page.index("<h2>Markers</h2>")]
    assert "RolledBack" in rollouts
    assert "22m" in rollouts
    ledger = page[page.index("<h2>Analysis ledger</h2>") :]
    assert "p99-latency: 0.9 (&lt;= 0.5)" in ledger
    assert '<span class="Fail">Fail</span>' in ledger


@pytest.mark.parametrize(
    ("target", "files"),
    [("r.png", ["r.png"]), ("r.html", ["r.html"]), ("r.HTM", ["r.HTM"]), ("r", ["r.png", "r.html"]),
     ("r.v2", ["r.v2.png", "r.v2.html"])],
)  # fmt: skip
def test_the_extension_decides_the_format(target: str, files: list[str]) -> None:
    assert [str(p) for p in report.output_paths(target)] == files


def test_only_the_html_is_written_for_html(tmp_path: Path) -> None:
    (path,) = report.write_report(rollout(), str(tmp_path / "r.html"), NOW)
    assert path.read_text().startswith("<!doctype html>")
    assert not (tmp_path / "r.png").exists()


def test_an_empty_rollout_still_makes_a_report(tmp_path: Path) -> None:
    obj = rollout(history=[], analysisLedger=[], lastAnalysis=None)
    (path,) = report.write_report(obj, str(tmp_path / "empty.png"), NOW)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_prometheus_range_results_parse_and_drop_nan() -> None:
    data = [
        {"metric": {}, "values": [[1772366400, "0.25"], [1772366415, "NaN"], [1772366430, "x"]]}
    ]
    (series,) = source.parse_range(data)
    assert series == [(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), 0.25)]
    assert source.parse_range({"result": []}) == []
