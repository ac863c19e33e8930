"""Undo after a promotion, and blue-green's scale-down of the old version, in the real cluster.

No model servers run here: the rollouts have no gates, so they promote on
their steps alone, and what is under test is what the operator writes to the
HTTPRoute and the Deployments. Route writes are counted from the API
server's own record: a watch that starts at the route's resourceVersion just
before the undo replays every change made after it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.cli.kube import EXIT_REFUSED
from modelrollout.cli.main import main
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import wait_for

from .world import World

pytestmark = pytest.mark.e2e

NO_GATES: dict[str, Any] = {"interval": "2s", "metrics": []}
QUICK_CANARY: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}]}
}


def route_writes_since(world: World, route: str, resource_version: str) -> list[dict[str, Any]]:
    """Every version of the HTTPRoute written after ``resource_version``, oldest first."""
    from kubernetes import client, config, watch

    api = config.new_client_from_config(config_file=str(world.cluster.kubeconfig))  # type: ignore[no-untyped-call]
    try:
        stream = watch.Watch().stream(
            client.CustomObjectsApi(api).list_namespaced_custom_object,
            "gateway.networking.k8s.io", "v1", world.ns, "httproutes",
            field_selector=f"metadata.name={route}",
            resource_version=resource_version,
            timeout_seconds=2,
        )  # fmt: skip
        return [e["object"] for e in stream if e["type"] == "MODIFIED"]
    finally:
        api.close()


def weights(obj: dict[str, Any]) -> dict[str, int]:
    rule = obj["spec"]["rules"][-1]
    return {r["name"]: r.get("weight", 1) for r in rule["backendRefs"]}


def cli(world: World, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--kubeconfig", str(world.cluster.kubeconfig), "-n", world.ns])
    out, err = capsys.readouterr()
    return code, out, err


def replicas(world: World, deployment: str) -> int:
    return int(world.get("deployment", deployment)["spec"]["replicas"])


def test_undo_in_the_rollback_window_sends_all_traffic_back_in_one_route_write(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a canary of v2 promoted with a five-minute rollback window
    world.apply(*m.model_objects("undo", world.ns))
    world.operator()
    world.apply(
        m.rollout("undo", world.ns, strategy=QUICK_CANARY, analysis=NO_GATES, rollbackWindow="5m")
    )
    status = world.wait_status(
        "undo", lambda s: s.get("stage") == "rollbackWindow", 60, "the rollback window"
    )
    assert (status["phase"], status["stableVersion"]) == ("Succeeded", "v2")
    assert status["previousStableVersion"] == "v1"
    assert "undoUntil" in status
    assert world.route_backends("undo") == {"undo-v2": 100}
    before = world.get("httproute", "undo")["metadata"]["resourceVersion"]

    # When a human runs `kubectl modelrollout undo`
    code, out, err = cli(world, capsys, "undo", "undo")
    assert code == 0, err
    assert "undo requested" in out

    # Then all traffic is back on v1, written to the route in one write
    status = world.wait_phase("undo", "RolledBack", timeout=30)
    time.sleep(3)  # three more operator ticks: none of them may write the route again
    writes = route_writes_since(world, "undo", before)
    assert [weights(w) for w in writes] == [{"undo-v2": 0, "undo-v1": 100}]
    assert world.route_backends("undo") == {"undo-v2": 0, "undo-v1": 100}
    # and the status and history say it was undone after the promotion
    assert (status["stableVersion"], status["candidateVersion"]) == ("v1", "v2")
    assert status["message"].startswith("undone after promotion: all traffic back on v1")
    assert status["history"][-1]["reason"] == "Undone"
    assert "previousStableVersion" not in status
    assert "Undone" in world.reasons("undo")

    # and a second undo is refused by the CLI, with the reason
    code, _, err = cli(world, capsys, "undo", "undo")
    assert code == EXIT_REFUSED
    assert "undo only follows a promotion" in err


def test_undo_after_the_rollback_window_is_refused_with_a_warning_event(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a canary promoted with a rollback window of three seconds, now closed
    world.apply(*m.model_objects("late", world.ns))
    world.operator()
    world.apply(
        m.rollout("late", world.ns, strategy=QUICK_CANARY, analysis=NO_GATES, rollbackWindow="3s")
    )
    status = world.wait_status(
        "late",
        lambda s: s.get("phase") == "Succeeded" and s.get("stage") == "done",
        60,
        "the rollback window to close",
    )
    assert status["history"][-1]["reason"] == "RollbackWindowClosed"
    # When undo is asked for through the CLI, it is refused there and nothing is sent
    code, _, err = cli(world, capsys, "undo", "late")
    assert code == EXIT_REFUSED
    assert f"the rollback window to v1 closed at {status['undoUntil']}" in err
    assert REQUEST_ANNOTATION not in (
        world.get("modelrollout", "late")["metadata"].get("annotations") or {}
    )
    # and when it is asked for with the annotation itself, the operator refuses with an Event
    request = f"undo:{uuid.uuid4().hex[:8]}"
    world.cluster.kubectl(
        "annotate", "modelrollout", "late", "-n", world.ns, f"{REQUEST_ANNOTATION}={request}"
    )
    world.wait_status("late", lambda s: s.get("handledRequest") == request, 30, "the request")
    refused = [e for e in world.events("late") if e["reason"] == "UndoRefused"]
    assert [e["type"] for e in refused] == ["Warning"]
    assert "the rollback window closed at" in refused[0]["message"]
    assert world.status("late")["stableVersion"] == "v2"
    assert world.route_backends("late") == {"late-v2": 100}


def test_blue_green_scales_the_old_deployment_to_zero_after_scale_down_delay(
    world: World,
) -> None:
    # Given a blue-green of v2 over v1 (3 replicas), scaleDownDelay 2s, a rollback window of 8s
    world.apply(*m.model_objects("bg", world.ns, replicas=(3, 3)))
    world.operator()
    strategy = {
        "blueGreen": {
            "previewDuration": "2s",
            "postPromotionDuration": "2s",
            "scaleDownDelay": "2s",
        }
    }
    world.apply(
        m.rollout("bg", world.ns, strategy=strategy, analysis=NO_GATES, rollbackWindow="8s")
    )
    status = world.wait_status(
        "bg", lambda s: s.get("stage") == "rollbackWindow", 60, "the promotion"
    )
    assert world.route_backends("bg") == {"bg-v2": 100}
    # Then while the rollback window is open, v1 keeps its replicas (scaleDownDelay has passed)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and world.status("bg").get("stage") == "rollbackWindow":
        assert replicas(world, "bg-v1") == 3
        time.sleep(0.5)
    # and after it, the operator scales v1's Deployment to zero and records what it had
    wait_for(lambda: replicas(world, "bg-v1") == 0, 30, "bg-v1 scaled to 0")
    status = world.wait_status("bg", lambda s: "scaledDown" in s, 10, "scaledDown")
    assert status["scaledDown"] == {"version": "v1", "replicas": 3}
    assert replicas(world, "bg-v2") == 3
    scaled = [e for e in world.events("bg") if e["reason"] == "ScaledDown"]
    assert len(scaled) == 1
    assert "scaled down v1 (Deployment bg-v1, 3 replicas recorded" in scaled[0]["message"]
    assert status["history"][-1]["reason"] == "ScaledDown"
