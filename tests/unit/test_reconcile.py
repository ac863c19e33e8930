"""The reconcile's order of work, with fakes in the adapters' places.

Fakes stand in for the route, Prometheus, the status writer and the event
sink so the order of writes can be observed exactly; the same code runs
against the real API server and Prometheus in tests/e2e.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from modelrollout.analysis.policy import Refused
from modelrollout.analysis.source import QueryRefused, Sample, SourceUnreachable
from modelrollout.engine import Event, TrafficIntent, TrafficState
from modelrollout.operator.reconcile import Adapters, reconcile
from modelrollout.traffic.base import Names, RouteError

from .engine_harness import make_spec

NOW = datetime(2026, 1, 1, 12, 0, 0)


class Journal:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


class FakeRouter:
    kind = "gatewayAPI"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.state = TrafficState(0, 0)
        self.fail: str | None = None
        self.intents: list[TrafficIntent] = []

    def read(self, names: Names) -> TrafficState:
        if self.fail:
            raise RouteError(self.fail)
        return self.state

    def apply(self, names: Names, intent: TrafficIntent) -> bool:
        self.journal.calls.append(("route", (intent.candidate_weight, intent.mirror_percent)))
        self.intents.append(intent)
        self.state = intent.state
        return True


class FakeSource:
    def __init__(self, value: float) -> None:
        self.value = value

    def instant(self, query: str) -> list[Sample]:
        return [Sample({}, self.value)]


class FakeStatus:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.journal.calls.append(("status", patch))


class FakeEvents:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def emit(self, body: dict[str, Any], event: Event) -> None:
        self.journal.calls.append(("event", event.reason))


def setup(value: float = 0.1) -> tuple[Journal, FakeRouter, Adapters, dict[str, Any]]:
    journal = Journal()
    router = FakeRouter(journal)
    adapters = Adapters(
        routers={"gatewayAPI": router},
        source_for=lambda _: FakeSource(value),
        status=FakeStatus(journal),
        events=FakeEvents(journal),
        clock=lambda: NOW,
    )
    body = {
        "metadata": {"name": "fd", "namespace": "ml", "generation": 1},
        "spec": make_spec().dump(),
    }
    return journal, router, adapters, body


def follow(body: dict[str, Any], journal: Journal) -> None:
    """Apply the status patches the journal recorded, as the API server would."""
    for kind, patch in journal.calls:
        if kind == "status":
            status = body.setdefault("status", {})
            for key, value in patch["status"].items():
                if value is None:
                    status.pop(key, None)
                else:
                    status[key] = value


def test_the_route_changes_first_then_one_status_patch_then_the_events() -> None:
    journal, _, adapters, body = setup()
    reconcile(body, adapters)
    kinds = [k for k, _ in journal.calls]
    assert kinds == ["route", "status", "event", "event"]
    assert journal.calls[0] == ("route", (10, 0))
    assert [v for k, v in journal.calls if k == "event"] == ["RolloutStarted", "WeightChanged"]


def test_a_reconcile_that_changes_nothing_writes_nothing() -> None:
    journal, _, adapters, body = setup()
    reconcile(body, adapters)
    follow(body, journal)
    journal.calls.clear()
    reconcile(body, adapters)
    assert journal.calls == []


def test_an_undo_writes_the_route_in_the_reconcile_that_decides_it() -> None:
    """The weights read (candidate 0%) equal the intent's; the versions do not: v1 is back.

    The route was read under the promoted names (v2 stable, v1 retired), so only the
    versions tell that it must change. Deciding and not writing left the route on v2
    until some later reconcile, and an event-driven rollout, finished, has none.
    """
    journal, router, adapters, body = setup()
    spec = make_spec(rollbackWindow="5m")
    body["spec"] = spec.dump()
    body["metadata"]["annotations"] = {"modelrollout.io/request": "undo:r1"}
    body["status"] = {
        "phase": "Succeeded",
        "stage": "rollbackWindow",
        "stableVersion": "v2",
        "candidateVersion": "v2",
        "previousStableVersion": "v1",
        "undoUntil": "2026-01-01T12:05:00Z",
        "observedGeneration": 1,
        "weights": {"stable": 100, "candidate": 0},
    }
    reconcile(body, adapters)
    assert [(i.stable_version, i.candidate_weight) for i in router.intents] == [("v1", 0)]
    follow(body, journal)
    assert body["status"]["phase"] == "RolledBack"
    journal.calls.clear()
    reconcile(body, adapters)
    assert journal.calls == [], "and once written, nothing more"


def test_a_route_that_cannot_be_read_writes_no_weights_and_says_why() -> None:
    journal, router, adapters, body = setup()
    reconcile(body, adapters)
    follow(body, journal)
    journal.calls.clear()
    router.fail = "httproutes ml/fd not found"
    reconcile(body, adapters)
    assert [k for k, _ in journal.calls] == ["status", "event"]
    patch = journal.calls[0][1]["status"]
    assert "weights" not in patch
    assert journal.calls[1] == ("event", "RouteUnavailable")


def test_a_spec_the_models_refuse_fails_with_the_reason_in_status_and_an_event() -> None:
    journal, _, adapters, body = setup()
    body["spec"]["strategy"] = {"canary": {"steps": []}}
    assert reconcile(body, adapters) is None
    (kind, patch), (ekind, reason) = journal.calls
    assert (kind, ekind, reason) == ("status", "event", "InvalidSpec")
    assert patch["status"]["phase"] == "Failed"
    assert "spec.strategy.canary.steps" in patch["status"]["message"]


class FakeNotifier:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def submit(
        self,
        body: Any,
        receivers: Any,
        status: Any,
        events: list[Event],
        now: datetime,
    ) -> None:
        kinds = None if receivers is None else [r.dump() for r in receivers]
        self.journal.calls.append(("notify", (kinds, [e.reason for e in events])))


def test_the_decision_is_handed_to_the_notifier_last_with_the_spec_receivers() -> None:
    journal, _, adapters, body = setup()
    adapters.notifier = FakeNotifier(journal)
    body["spec"]["notifications"] = [{"slack": {"urlKey": "chat"}}]
    reconcile(body, adapters)
    assert [k for k, _ in journal.calls] == ["route", "status", "event", "event", "notify"]
    assert journal.calls[-1][1] == (
        [{"slack": {"urlKey": "chat"}}],
        ["RolloutStarted", "WeightChanged"],
    )


def test_a_refused_spec_is_still_notified_to_the_receivers_it_names() -> None:
    journal, _, adapters, body = setup()
    adapters.notifier = FakeNotifier(journal)
    body["spec"]["strategy"] = {"canary": {"steps": []}}
    body["spec"]["notifications"] = [{"slack": {"urlKey": "chat"}}]
    reconcile(body, adapters)
    assert journal.calls[-1] == ("notify", ([{"slack": {"urlKey": "chat"}}], ["InvalidSpec"]))


def test_a_reconcile_without_a_decision_to_tell_notifies_nothing() -> None:
    journal, _, adapters, body = setup()
    adapters.notifier = FakeNotifier(journal)
    reconcile(body, adapters)
    follow(body, journal)
    journal.calls.clear()
    reconcile(body, adapters)
    assert journal.calls == []


def test_an_address_the_policy_refuses_fails_the_rollout_before_anything_is_asked() -> None:
    # Given an operator whose policy refuses the address the rollout names
    journal, _, adapters, body = setup()
    asked: list[str | None] = []

    def source_for(address: str | None) -> FakeSource | Refused:
        asked.append(address)
        return Refused("analysis.prometheus.address 'http://trap' is not allowed")

    adapters.source_for = source_for
    body["spec"]["analysis"]["prometheus"] = {"address": "http://trap"}
    # When it reconciles
    assert reconcile(body, adapters) is None
    # Then nothing routed, the status says why, with the condition and a Warning Event
    (kind, patch), (ekind, reason) = journal.calls
    assert (kind, ekind, reason) == ("status", "event", "PrometheusNotAllowed")
    status = patch["status"]
    assert status["phase"] == "Failed"
    assert "not allowed" in status["message"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "PrometheusNotAllowed")
    assert asked == ["http://trap"]
    # and the next tick writes nothing more
    follow(body, journal)
    journal.calls.clear()
    reconcile(body, adapters)
    assert journal.calls == []


def test_a_deletion_asks_no_policy_and_sends_traffic_back_to_stable() -> None:
    journal, router, adapters, body = setup()
    reconcile(body, adapters)
    follow(body, journal)
    journal.calls.clear()
    adapters.source_for = lambda _: Refused("refused")
    reconcile(body, adapters, deleting=True)
    assert router.state == TrafficState(0, 0)


class FakeWorkloads:
    def __init__(self, journal: Journal, replicas: dict[str, int]) -> None:
        self.journal = journal
        self.deployments = dict(replicas)
        self.fail: str | None = None

    def replicas(self, namespace: str, name: str) -> int | None:
        return self.deployments.get(name)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        if self.fail:
            from modelrollout.traffic.workloads import WorkloadError

            raise WorkloadError(self.fail)
        self.journal.calls.append(("scale", (name, replicas)))
        self.deployments[name] = replicas


def switched_blue_green() -> tuple[Journal, FakeWorkloads, Adapters, dict[str, Any]]:
    """A blue-green whose old version (v1) is due to be scaled down."""
    journal, router, adapters, body = setup()
    workloads = FakeWorkloads(journal, {"fraud-detector-v1": 4, "fraud-detector-v2": 4})
    adapters.workloads = workloads
    body["spec"] = make_spec(strategy={"blueGreen": {"scaleDownDelay": "1m"}}).dump()
    body["status"] = {
        "phase": "Promoting",
        "stage": "postPromotion",
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "weights": {"stable": 0, "candidate": 100},
        "stageStartedAt": "2026-01-01T11:59:00Z",
        "stepStartedAt": "2026-01-01T11:59:00Z",
        "lastCheckAt": "2026-01-01T11:59:50Z",
        "scaleDownAt": "2026-01-01T12:00:00Z",
    }
    router.state = TrafficState(100, 0)
    return journal, workloads, adapters, body


def test_the_old_version_is_scaled_down_before_the_status_records_its_replicas() -> None:
    journal, workloads, adapters, body = switched_blue_green()
    reconcile(body, adapters)
    assert workloads.deployments == {"fraud-detector-v1": 0, "fraud-detector-v2": 4}
    assert [k for k, _ in journal.calls] == ["scale", "status", "event"]
    assert journal.calls[0] == ("scale", ("fraud-detector-v1", 0))
    assert journal.calls[1][1]["status"]["scaledDown"] == {"version": "v1", "replicas": 4}
    assert journal.calls[2] == ("event", "ScaledDown")


def test_a_scale_that_fails_records_nothing_and_is_decided_again() -> None:
    journal, workloads, adapters, body = switched_blue_green()
    workloads.fail = "403 forbidden"
    reconcile(body, adapters)
    assert journal.calls == []
    workloads.fail = None
    reconcile(body, adapters)
    assert [k for k, _ in journal.calls] == ["scale", "status", "event"]


class ScriptedSource:
    """A Prometheus that raises ``error`` for every query, or answers; it keeps the queries."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.queries: list[str] = []

    def instant(self, query: str) -> list[Sample]:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return [Sample({}, 0.1)]


def with_source(adapters: Adapters, source: ScriptedSource) -> ScriptedSource:
    adapters.source_for = lambda _: source
    adapters.retry_every = 5
    return source


@pytest.mark.parametrize(
    ("error", "phase", "said", "event"),
    [
        pytest.param(
            QueryRefused("prometheus at http://p: HTTP 400 bad_data: 1:9: parse error: unexpected "
                         "\x1b[31m", error_type="bad_data"),
            "Failed", "gate p99-latency: query refused: prometheus at http://p: HTTP 400 bad_data",
            "InvalidGate", id="bad-data-fails-invalid-gate",
        ),
        pytest.param(
            SourceUnreachable("prometheus at http://p: connection refused"),
            "Pending", "prometheus at http://p: connection refused; retrying every 5s",
            "PrometheusUnreachable", id="no-answer-waits",
        ),
    ],
)  # fmt: skip
def test_a_preflight_that_fails_moves_no_traffic_and_says_why(
    error: Exception, phase: str, said: str, event: str
) -> None:
    # Given a rollout about to start, and a Prometheus that refuses or does not answer
    journal, router, adapters, body = setup()
    source = with_source(adapters, ScriptedSource(error))
    # When it reconciles
    reconcile(body, adapters)
    # Then the route is never written, and status and Event say why
    assert [k for k, _ in journal.calls] == ["status", "event"]
    assert router.state == TrafficState(0, 0)
    status = journal.calls[0][1]["status"]
    assert status["phase"] == phase
    assert said in status["message"]
    assert "\x1b" not in status["message"]
    assert journal.calls[1] == ("event", event)
    assert len(source.queries) == 1
    assert 'version="v2"' in source.queries[0]


def test_a_passing_preflight_sends_each_rendered_query_once_then_starts() -> None:
    _, router, adapters, body = setup()
    body["spec"]["analysis"]["metrics"].append(
        {"name": "errors", "query": 'sum(x{version="{{version}}"})', "max": 1}
    )
    source = with_source(adapters, ScriptedSource())
    reconcile(body, adapters)
    assert router.state == TrafficState(10, 0)
    assert 'sum(x{version="v2"})' in source.queries
    assert 'sum(x{version="v1"})' in source.queries
    assert len(source.queries) == len(set(source.queries))


def test_an_execution_error_in_preflight_is_left_for_the_checks_to_report() -> None:
    _, router, adapters, body = setup()
    with_source(adapters, ScriptedSource(QueryRefused("x", error_type="execution")))
    reconcile(body, adapters)
    assert router.state == TrafficState(10, 0)


def test_a_template_with_an_unknown_placeholder_is_an_invalid_gate_before_any_query() -> None:
    journal, router, adapters, body = setup()
    body["spec"]["analysis"]["metrics"] = [
        {"name": "typo", "query": "sum(x{v='{{versoin}}'})", "max": 1}
    ]
    source = with_source(adapters, ScriptedSource())
    reconcile(body, adapters)
    status = journal.calls[0][1]["status"]
    assert status["phase"] == "Failed"
    assert "gate typo: unknown variable {{versoin}}" in status["message"]
    assert source.queries == []
    assert router.state == TrafficState(0, 0)


def test_every_kubernetes_call_gets_a_timeout_unless_it_names_its_own() -> None:
    from kubernetes.client import rest

    from modelrollout.operator import kube

    seen: list[object] = []
    original = rest.RESTClientObject.request

    def fake(self: object, *args: object, _request_timeout: object = None, **kw: object) -> None:
        seen.append(_request_timeout)

    rest.RESTClientObject.request = fake  # type: ignore[method-assign]
    try:
        kube.bound_every_request((1.0, 2.0))
        kube.bound_every_request((9.0, 9.0))  # idempotent: the first default stays
        client = object.__new__(rest.RESTClientObject)
        rest.RESTClientObject.request(client, "GET", "http://x")
        rest.RESTClientObject.request(client, "GET", "http://x", _request_timeout=7)
    finally:
        rest.RESTClientObject.request = original  # type: ignore[method-assign]
    assert seen == [(1.0, 2.0), 7]
