"""The reconcile's order of work, with fakes in the adapters' places.

Fakes stand in for the route, Prometheus, the status writer and the event
sink so the order of writes can be observed exactly; the same code runs
against the real API server and Prometheus in tests/e2e.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelrollout.analysis.policy import Refused
from modelrollout.analysis.source import Sample
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

    def read(self, names: Names) -> TrafficState:
        if self.fail:
            raise RouteError(self.fail)
        return self.state

    def apply(self, names: Names, intent: TrafficIntent) -> bool:
        self.journal.calls.append(("route", (intent.candidate_weight, intent.mirror_percent)))
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
