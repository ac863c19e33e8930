"""The CLI's view model: what each part of a page says, from a hand-written rollout.

The words of the domain come from the API and the engine; these tables pin
that the view reads them from there (a default changed in the API shows here)
and what a user reads for each state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from modelrollout.analysis import source
from modelrollout.api.base import format_ts, parse_ts
from modelrollout.api.spec import Analysis, ShadowStrategy
from modelrollout.api.status import Phase
from modelrollout.cli import report, view
from tests.unit.test_cli_render import NOW, at, events, rolled_back, rollout


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        pytest.param({"max": 0.5}, "<= 0.5", id="a-maximum"),
        pytest.param({"min": 0.9}, ">= 0.9", id="a-minimum"),
        pytest.param({"min": 0.9, "max": 1}, ">= 0.9 and <= 1", id="both"),
        pytest.param({}, "-", id="none-is-a-dash"),
        pytest.param({"max": True, "min": "x"}, "-", id="not-numbers-are-no-limit"),
    ],
)
def test_a_gate_limit_reads_as_the_operator_writes_it(result: dict[str, Any], shown: str) -> None:
    assert view.gate_limit(result) == shown


def test_a_gate_line_shows_samples_against_the_samples_needed() -> None:
    line = view.gate_line(
        {"metric": "drift", "verdict": "Inconclusive", "samples": 120, "neededSamples": 500}
    )
    assert line == view.GateLine("drift", "no data", "-", "120/500", "Inconclusive", "")


@pytest.mark.parametrize(
    ("status", "action"),
    [
        pytest.param(
            {"phase": "Paused", "pauseReason": "gate", "awaitingApproval": "canary:3"},
            "waiting for approval at canary:3: kubectl modelrollout promote fraud",
            id="paused-at-a-checkpoint",
        ),
        pytest.param(
            {"phase": "Paused", "pauseReason": "spec", "awaitingApproval": None},
            "paused by spec.paused: set it to false in the manifest to resume",
            id="paused-by-the-spec",
        ),
        pytest.param(
            {"phase": "Paused", "pauseReason": "inconclusive", "awaitingApproval": None},
            "resume with: kubectl modelrollout resume fraud",
            id="paused-for-no-data",
        ),
        pytest.param(
            {"phase": "RolledBack", "pauseReason": None, "awaitingApproval": None},
            "start this candidate again with: kubectl modelrollout retry fraud",
            id="rolled-back",
        ),
        pytest.param(
            {"phase": "Failed", "pauseReason": None, "awaitingApproval": None},
            "start this candidate again with: kubectl modelrollout retry fraud",
            id="failed",
        ),
        pytest.param(
            {"phase": "Progressing", "pauseReason": None, "awaitingApproval": None},
            None,
            id="running-needs-nobody",
        ),
        pytest.param(
            {"phase": "Succeeded", "pauseReason": None, "awaitingApproval": None},
            None,
            id="succeeded-needs-nobody",
        ),
        pytest.param(
            {
                "phase": "Succeeded",
                "stage": "rollbackWindow",
                "previousStableVersion": "v1",
                "undoUntil": "2026-03-01T12:05:00Z",
                "pauseReason": None,
                "awaitingApproval": None,
            },
            "back to v1 until 2026-03-01T12:05:00Z with: kubectl modelrollout undo fraud",
            id="succeeded-in-the-rollback-window",
        ),
    ],
)
def test_the_next_action_is_the_command_to_type(status: dict[str, Any], action: str | None) -> None:
    assert view.next_action(rollout(**status)) == action


@pytest.mark.parametrize(
    ("state", "phase", "note"),
    [
        pytest.param("current", "Progressing", "← here", id="here"),
        pytest.param("current", "Paused", "← here (paused)", id="here-and-paused"),
        pytest.param("stopped", "RolledBack", "← RolledBack here", id="stopped"),
        pytest.param("done", "Progressing", "", id="done-says-nothing"),
        pytest.param("pending", "Progressing", "", id="pending-says-nothing"),
    ],
)
def test_a_step_note_says_where_the_rollout_is(state: Any, phase: str, note: str) -> None:
    assert view.step_note(view.StepLine("3", "pause", state), phase) == note


def test_the_status_page_of_a_paused_rollout() -> None:
    page = view.status_page(rollout(), events(), NOW)
    assert (page.namespace, page.name, page.model) == ("risk", "fraud", "fraud-detector")
    assert (page.phase, page.pause_reason, page.stage) == ("Paused", "gate", "canary, step 3/6")
    assert page.traffic == view.Traffic("v1", "v2", 80, 20, 0, approximate=False)
    assert page.started == f"{at(0)} (30m ago)"
    assert page.notes == []
    assert [note for _, note in page.steps if note] == ["← here (paused)"]
    assert page.analysis is not None
    assert (page.analysis.age, page.analysis.where, page.analysis.verdict) == (
        "10m",
        "canary step 3",
        "Pass",
    )
    assert [g.limit for g in page.analysis.gates] == ["<= 0.5", "<= 0.01"]
    assert [(c.type, c.since) for c in page.conditions] == [("Ready", "30m"), ("Paused", "15m")]
    assert [e.when for e in page.events] == ["30m", "18m (x3)", "15m"]


def test_missing_limits_are_the_api_defaults() -> None:
    obj = rollout()
    obj["spec"]["analysis"] = {}
    summary = view.analysis_summary(obj, NOW)
    assert summary is not None
    defaults = Analysis()
    assert (summary.failure_limit, summary.inconclusive_limit) == (
        defaults.failure_limit,
        defaults.inconclusive_limit,
    )


def test_a_shadow_stage_without_settings_shows_the_api_defaults() -> None:
    obj = rollout()
    obj["spec"]["strategy"]["shadow"] = {}
    defaults = ShadowStrategy()
    (shadow, *_) = view.strategy_steps(obj)
    assert shadow.label == f"shadow: mirror {defaults.mirror_percent}% for {defaults.duration}"


@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        pytest.param({"metrics": [{"name": "p99"}]}, True, id="gates-but-no-check-yet"),
        pytest.param({"metrics": []}, False, id="no-gates"),
    ],
)
def test_the_page_says_when_a_check_is_still_to_come(
    analysis: dict[str, Any], expected: bool
) -> None:
    obj = rollout(lastAnalysis=None)
    obj["spec"]["analysis"] = analysis
    page = view.status_page(obj, [], NOW)
    assert page.analysis is None
    assert page.analysis_expected is expected


@pytest.mark.parametrize(
    ("phase", "terminal", "stopped"),
    [pytest.param(p.value, p.is_terminal, p.is_terminal and p != Phase.SUCCEEDED, id=p.value)
     for p in Phase],
)  # fmt: skip
def test_terminal_phases_are_the_apis(phase: str, terminal: bool, stopped: bool) -> None:
    assert (phase in view.TERMINAL_PHASES, phase in view.STOPPED_PHASES) == (terminal, stopped)


def test_every_marker_of_the_timeline_has_a_colour_in_the_report() -> None:
    assert set(report.MARKER_COLORS) == view.MARKER_REASONS
    labels = {m.reason for m in view.build_timeline(rolled_back(), NOW).markers}
    assert labels <= view.MARKER_REASONS


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime(2026, 3, 1, 12, 0, 5), "2026-03-01T12:00:05Z", id="naive-is-utc"),
        pytest.param(datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC), "2026-03-01T12:00:05Z", id="utc"),
    ],
)
def test_status_timestamps_are_utc_to_the_second(moment: datetime, text: str) -> None:
    assert format_ts(moment) == text
    assert parse_ts(text) == datetime(2026, 3, 1, 12, 0, 5)


# ------------------------------------------------------------------------ prometheus


class FakeSession:
    """Answers a range query with one series, or fails as a down Prometheus does."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[dict[str, str]] = []

    def get(self, url: str, *, params: dict[str, str], **_: Any) -> SimpleNamespace:
        self.asked.append(params)
        if self.fail:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        matrix = [{"metric": {}, "values": [[1772366400, "0.25"], [1772366415, "NaN"]]}]
        body = {"status": "success", "data": {"resultType": "matrix", "result": matrix}}
        return SimpleNamespace(status_code=200, json=lambda: body)


def prometheus(session: FakeSession) -> source.PrometheusSource:
    src = source.PrometheusSource("http://prometheus.test:9090")
    src._session = session  # type: ignore[assignment]
    return src


def test_a_range_series_keeps_its_times_and_drops_nan() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    (series,) = prometheus(FakeSession()).series("up", start=start, end=NOW, step=15)
    assert series == [(start, 0.25)]


def test_the_report_warns_per_gate_when_prometheus_is_down() -> None:
    session = FakeSession(fail=True)
    obj = rollout()
    obj["spec"]["analysis"]["metrics"] = [{"name": "p99", "query": "up", "max": 1}]
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    gathered = report.prometheus_series(obj, prometheus(session), start, NOW)
    assert gathered.series == {}
    assert gathered.warnings == [
        "gate p99: prometheus at http://prometheus.test:9090: connection refused"
    ]
    assert session.asked[0]["step"] == "4"  # whole seconds: ~500 points over 30 minutes


def test_an_undone_rollout_ends_as_undone_in_history() -> None:
    status = {
        "phase": "RolledBack",
        "history": [
            {"at": "2026-03-01T12:00:00Z", "reason": "RolloutStarted", "candidateVersion": "v2"},
            {"at": "2026-03-01T12:05:00Z", "reason": "Promoted", "candidateVersion": "v2"},
            {
                "at": "2026-03-01T12:07:00Z",
                "reason": "Undone",
                "candidateVersion": "v2",
                "message": "undone after promotion: all traffic back on v1",
            },
        ],
    }
    (record,) = view.group_history(status, datetime(2026, 3, 1, 12, 10, tzinfo=UTC))
    assert (record.outcome, record.duration_seconds) == ("Undone", 420)
    assert record.reason == "undone after promotion: all traffic back on v1"
