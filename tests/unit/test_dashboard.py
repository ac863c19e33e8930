"""The dashboard's data, its timeline SVG and its loopback server, without a cluster.

The page itself runs in a real browser in tests/e2e/test_dashboard.py; here
the JSON it reads, the SVG it shows and the server's rules are checked with
fakes in place of the Kubernetes client.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout.cli import dashboard, view
from modelrollout.cli.kube import EXIT_FORBIDDEN, EXIT_UNREACHABLE, CliError
from modelrollout.cli.timeline_svg import timeline_svg

from .test_cli_render import NOW, events, rollout


def involving(name: str, namespace: str = "risk") -> list[dict[str, Any]]:
    return [{**e, "involvedObject": {"name": name, "namespace": namespace}} for e in events()]


def test_each_rollout_gets_its_row_gates_events_and_timeline() -> None:
    other = rollout(phase="Succeeded", weights={"stable": 100, "candidate": 0})
    other["metadata"]["name"] = "other"
    data = dashboard.snapshot(
        [rollout(), other],
        involving("fraud") + involving("fraud", namespace="elsewhere"),
        NOW,
        scope="namespace risk",
        poll_seconds=2,
    )
    assert (data["scope"], data["at"], data["pollMs"]) == (
        "namespace risk",
        "2026-03-01T12:30:00Z",
        2000,
    )
    fraud, done = data["rollouts"]
    assert (fraud["key"], fraud["phase"], fraud["step"]) == ("risk/fraud", "Paused", "3/6")
    assert (fraud["weights"], fraud["mirror"]) == ({"stable": 80, "candidate": 20}, 0)
    assert fraud["gates"][0] == {
        "metric": "p99-latency",
        "value": "0.31",
        "limit": "<= 0.5",
        "verdict": "Pass",
    }
    assert fraud["nextAction"] == view.next_action(rollout())
    assert [e["reason"] for e in fraud["events"]] == [
        "Paused",
        "AnalysisInconclusive",
        "RolloutStarted",
    ]
    assert fraud["timelineSvg"].startswith("<svg ")
    assert (done["weights"], done["events"]) == ({"stable": 100, "candidate": 0}, [])
    json.dumps(data)  # what the server sends


def test_a_rollout_with_no_status_yet_is_pending_with_nothing_to_show() -> None:
    bare = {"metadata": {"name": "new", "namespace": "ml"}, "spec": {"model": "m"}}
    (card,) = dashboard.snapshot([bare], [], NOW, scope="s", poll_seconds=1)["rollouts"]
    assert (card["phase"], card["weights"], card["gates"]) == (
        "Pending",
        {"stable": 100, "candidate": 0},
        [],
    )
    assert "<svg" in card["timelineSvg"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        pytest.param("127.0.0.1:8080", True, id="loopback-address"),
        pytest.param("localhost:8080", True, id="localhost"),
        pytest.param("127.0.0.1:9090", False, id="another-port"),
        pytest.param("evil.example:8080", False, id="a-rebound-name"),
        pytest.param(None, False, id="no-host"),
    ],
)
def test_only_requests_addressed_to_the_loopback_listener_are_answered(
    host: str | None, allowed: bool
) -> None:
    assert dashboard.host_allowed(host, 8080) is allowed


def test_the_timeline_svg_draws_traffic_gates_and_markers_with_every_text_escaped() -> None:
    obj = rollout()
    obj["metadata"]["name"] = "<script>alert(1)</script>"
    obj["status"]["history"][-1]["message"] = 'paused "here" & <b>now</b>'
    timeline = view.build_timeline(obj, NOW)
    svg = timeline_svg(timeline)
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "&lt;b&gt;now&lt;/b&gt;" in svg
    assert svg.count('class="marker"') == len(timeline.markers) > 0
    assert svg.count('class="gate"') == len(timeline.gates) > 0
    assert 'class="weight"' in svg


def test_a_gate_without_data_is_a_hollow_square_not_a_point() -> None:
    timeline = view.build_timeline(rollout(), NOW)
    timeline.gates = {"g": [view.GatePoint(NOW, None, "Inconclusive", None, 0.5)]}
    svg = timeline_svg(timeline)
    assert '<rect x="' in svg
    assert 'data-verdict="Inconclusive"' in svg
    assert "<circle" not in svg


# --------------------------------------------------------------------------- the server


class FakeReader:
    def __init__(self) -> None:
        self.error: CliError | None = None

    def read(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return dashboard.snapshot([rollout()], [], NOW, scope="namespace risk", poll_seconds=1)


@pytest.fixture
def served() -> Iterator[tuple[FakeReader, int]]:
    reader = FakeReader()
    server = dashboard.make_server(reader, 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield reader, dashboard.port_of(server)
    server.shutdown()
    server.server_close()


def get(port: int, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(response.headers), body


def test_the_server_serves_the_page_its_assets_and_the_json(served: tuple[FakeReader, int]) -> None:
    _, port = served
    status, headers, body = get(port, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'<script src="dashboard.js"' in body
    for path, kind in (("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
        status, headers, _ = get(port, path)
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind)
    status, headers, body = get(port, "/api/rollouts?t=1")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body)["rollouts"][0]["key"] == "risk/fraud"
    assert get(port, "/nope")[0] == 404
    assert get(port, "/", host="evil.example")[0] == 403


def test_an_api_failure_is_a_502_with_the_clis_message(served: tuple[FakeReader, int]) -> None:
    reader, port = served
    reader.error = CliError("cannot reach the Kubernetes API server", EXIT_UNREACHABLE)
    status, _, body = get(port, "/api/rollouts")
    assert (status, json.loads(body)) == (502, {"error": "cannot reach the Kubernetes API server"})


class FakeKube:
    namespace = "risk"

    def __init__(self, events_error: CliError | None = None) -> None:
        self.events_error = events_error

    def list_rollouts(self, all_namespaces: bool = False, selector: str | None = None) -> list[Any]:
        return [rollout()]

    def rollout_events(self, all_namespaces: bool = False) -> list[Any]:
        if self.events_error is not None:
            raise self.events_error
        return involving("fraud")


def test_without_list_events_the_page_still_works_and_says_so() -> None:
    denied = CliError("forbidden by RBAC: cannot list events", EXIT_FORBIDDEN)
    reader = dashboard.Reader(
        FakeKube(denied),  # type: ignore[arg-type]
        all_namespaces=False,
        selector=None,
        poll_seconds=2,
        clock=lambda: NOW,
    )
    data = reader.read()
    assert data["eventsNote"] == "events not shown: forbidden by RBAC: cannot list events"
    assert data["rollouts"][0]["events"] == []
    allowed = dashboard.Reader(
        FakeKube(),
        all_namespaces=False,
        selector=None,
        poll_seconds=2,
        clock=lambda: NOW,  # type: ignore[arg-type]
    )
    assert len(allowed.read()["rollouts"][0]["events"]) == 3
