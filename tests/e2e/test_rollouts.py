"""The operator as a real process, against the real API server and a real Prometheus.

Each test reads as Given / When / Then. Manifests are applied with kubectl,
model servers export real metrics that Prometheus scrapes every second, and
the traffic generator splits requests as the HTTPRoute says at that moment.
"""

from __future__ import annotations

import pytest

from modelrollout.cli.main import main
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import wait_for

from .world import World, history

pytestmark = pytest.mark.e2e


def test_a_healthy_candidate_goes_through_shadow_and_every_step_to_promotion(world: World) -> None:
    # Given a model with v1 serving and v2 healthy, and the operator running
    world.model("fraud")
    world.operator()
    # When a rollout with a shadow stage and two canary steps is applied
    world.apply(m.rollout("fraud", world.ns))
    # Then v2 is first mirrored, never weighted, while in shadow
    shadow = world.wait_status("fraud", lambda s: s.get("stage") == "shadow", 30, "shadow")
    assert shadow["weights"]["candidate"] == 0
    assert world.route_mirror("fraud") == 100
    assert world.route_backends("fraud").get("fraud-v2", 0) == 0
    # and it ends promoted with all traffic on v2
    status = world.wait_phase("fraud", "Succeeded", timeout=150)
    assert status["stableVersion"] == "v2"
    assert world.route_backends("fraud") == {"fraud-v2": 100}
    assert world.route_mirror("fraud") == 0
    # and the steps and the Events came in order
    assert [w for r, w in history(status) if r == "WeightChanged"] == [25, 50]
    reasons = [r for r in world.reasons("fraud") if r != "AnalysisInconclusive"]
    assert reasons == [
        "RolloutStarted",
        "ShadowPassed",
        "WeightChanged",
        "WeightChanged",
        "Promoted",
    ]
    # and the route's unrelated rule is untouched
    assert world.get("httproute", "fraud")["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "docs-site", "port": 80, "weight": 1}
    ]


SLOW_CANARY = {
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"pause": {"duration": "10s"}},
            {"setWeight": 25},
            {"pause": {"duration": "5m"}},
            {"setWeight": 50},
        ]
    }
}


def weight_is(w: int) -> object:
    return lambda s: s.get("weights", {}).get("candidate") == w


def test_a_latency_regression_at_25_percent_is_rolled_back_within_the_failure_limit(
    world: World,
) -> None:
    # Given a canary that holds at 25%, judged at its scheduled checks alone (the fast
    # guard, which would act on the first shown-bad look, is tested in test_fast_guard)
    stack = world.model("lat")
    world.operator(extra=["--guard-interval", "0s"])
    world.apply(m.rollout("lat", world.ns, strategy=SLOW_CANARY))
    world.wait_status("lat", weight_is(25), 90, "weight 25")
    # When v2 turns slow (p99 well above the 0.25 s limit)
    stack.set_faults("v2", latency_ms=400)
    # Then it is rolled back after failureLimit (2) failed checks in a row
    status = world.wait_phase("lat", "RolledBack", timeout=90)
    assert world.route_backends("lat") == {"lat-v1": 100, "lat-v2": 0}
    message = status["message"]
    assert "gate p99-latency" in message
    assert "limit <= 0.25" in message
    assert "2 failed checks in a row" in message
    fails = [run["verdict"] for run in status["analysisLedger"]][-2:]
    assert fails == ["Fail", "Fail"]
    failed_values = [
        r["value"] for r in status["lastAnalysis"]["results"] if r["metric"] == "p99-latency"
    ]
    assert failed_values[0] > 0.25
    assert "RolledBack" in world.reasons("lat")
    # and the report of the run puts the rollback marker at the step where it happened
    out = world.work_dir / "report"
    args = ["report", "lat", "-n", world.ns, "--kubeconfig", str(world.cluster.kubeconfig)]
    assert main([*args, "-o", str(out)]) == 0
    html = (world.work_dir / "report.html").read_text()
    assert f"RolledBack @ step {status['stepIndex']}" in html
    assert status["stepIndex"] == 3  # the pause after setWeight 25
    assert "WeightChanged → 25% @ step 2" in html  # the setWeight step itself
    assert (world.work_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_candidate_that_fails_in_shadow_never_receives_live_traffic(world: World) -> None:
    # Given v2 answers half its requests with errors
    world.model("bad", faults={"v2": {"error_rate": 0.5}})
    world.operator()
    # When the rollout starts with a shadow stage
    world.apply(m.rollout("bad", world.ns))
    # Then it is rolled back from shadow
    status = world.wait_phase("bad", "RolledBack", timeout=90)
    assert all(h.get("weight", 0) == 0 for h in status["history"])
    assert world.route_backends("bad") == {"bad-v1": 100, "bad-v2": 0}
    # and v2 never answered a live (non-mirrored) request, by its own metrics
    live = world.prometheus.query(
        f'sum(model_requests_total{{model="bad",version="v2",mirrored="false",namespace="{world.ns}"}})'
    )
    assert not live or float(live[0]["value"][1]) == 0
    mirrored = world.prometheus.query(
        f'sum(model_requests_total{{model="bad",version="v2",mirrored="true",namespace="{world.ns}"}})'
    )
    assert mirrored, "v2 saw mirrored traffic"
    assert float(mirrored[0]["value"][1]) > 0


BLUE_GREEN = {
    "blueGreen": {
        "previewDuration": "12s",
        "previewMirrorPercent": 100,
        "postPromotionDuration": "5m",
        "scaleDownDelay": "10m",
    }
}


def test_blue_green_switches_then_switches_back_instantly_on_a_post_promotion_failure(
    world: World,
) -> None:
    # Given a blue-green rollout whose preview is healthy
    stack = world.model("bg")
    world.operator()
    world.apply(m.rollout("bg", world.ns, strategy=BLUE_GREEN))
    preview = world.wait_status("bg", lambda s: s.get("stage") == "preview", 30, "preview")
    assert preview["weights"]["candidate"] == 0
    # When it switches all traffic to v2 in one move
    world.wait_status("bg", weight_is(100), 90, "the switch")
    assert world.route_backends("bg") == {"bg-v1": 0, "bg-v2": 100}
    # and v2 then starts failing
    stack.set_faults("v2", error_rate=0.6)
    # Then traffic goes back to v1 in one move, while v1 still serves
    status = world.wait_phase("bg", "RolledBack", timeout=90)
    assert world.route_backends("bg") == {"bg-v1": 100, "bg-v2": 0}
    assert status["stableVersion"] == "v1"
    reasons = world.reasons("bg")
    assert reasons.index("Switched") < reasons.index("RolledBack")
    # and v1, kept warm through the switch, answers live traffic again at once
    query = (
        f'sum(model_requests_total{{model="bg",version="v1",mirrored="false",'
        f'namespace="{world.ns}"}})'
    )

    def v1_served() -> float:
        result = world.prometheus.query(query)
        return float(result[0]["value"][1]) if result else 0.0

    before = v1_served()
    wait_for(lambda: v1_served() > before + 20, 30, "v1 serving live requests again")


def annotate(world: World, name: str, verb: str, request_id: str) -> None:
    world.cluster.kubectl(
        "annotate", "modelrollout", name, "-n", world.ns, "--overwrite",
        f"modelrollout.io/request={verb}:{request_id}",
    )  # fmt: skip


def test_a_human_gate_holds_the_rollout_paused_until_someone_promotes_it(world: World) -> None:
    world.model("gate")
    world.operator()
    strategy = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}}
    world.apply(m.rollout("gate", world.ns, strategy=strategy))
    status = world.wait_phase("gate", "Paused", timeout=60)
    assert status["awaitingApproval"] == "canary:1"
    # it stays there: time alone does not pass a human gate
    for _ in range(3):
        world.wait_status("gate", weight_is(20), 5, "still 20%")
    assert world.status("gate")["phase"] == "Paused"
    annotate(world, "gate", "promote", "1")
    world.wait_status("gate", weight_is(50), 30, "weight 50 after promote")
    world.wait_phase("gate", "Succeeded", timeout=60)


def test_a_restarted_operator_carries_on_from_the_same_step(world: World) -> None:
    world.model("restart")
    op = world.operator()
    strategy = {
        "canary": {
            "steps": [
                {"setWeight": 20},
                {"pause": {"duration": "15s"}},
                {"setWeight": 40},
                {"pause": {"duration": "20s"}},
                {"setWeight": 60},
                {"pause": {"duration": "10s"}},
            ]
        }
    }
    world.apply(m.rollout("restart", world.ns, strategy=strategy))
    world.wait_status("restart", weight_is(40), 90, "weight 40")
    # When the operator is killed mid-step and comes back a few seconds later
    op.stop(kill=True)
    before = world.status("restart")
    world.wait_status("restart", weight_is(40), 5, "nothing moves while it is down")
    op.start()
    # Then it carries on: no step repeated, none skipped
    status = world.wait_phase("restart", "Succeeded", timeout=120)
    weights = [w for r, w in history(status) if r == "WeightChanged"]
    assert weights == [20, 40, 60]
    assert before["stepIndex"] == 3


def test_a_prometheus_outage_pauses_the_rollout_and_it_carries_on_when_prometheus_returns(
    world: World,
) -> None:
    world.model("outage")
    world.operator()
    strategy = {
        "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50}]}
    }
    world.apply(m.rollout("outage", world.ns, strategy=strategy))
    world.wait_status("outage", weight_is(25), 60, "weight 25")
    world.prometheus.stop()
    try:
        status = world.wait_phase("outage", "Paused", timeout=90)
        assert "inconclusive" in status["message"]
        assert status["weights"]["candidate"] == 25
        assert "Promoted" not in world.reasons("outage")
    finally:
        world.prometheus.start()
    world.wait_phase("outage", "Succeeded", timeout=120)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"strategy": {"canary": {"steps": [{"setWeight": 150}]}}},
            "should be less than or equal to 100",
            id="weight-150",
        ),
        pytest.param(
            {
                "trafficRouting": {
                    "gatewayAPI": {"httpRoute": "x"},
                    "istio": {"virtualService": "x"},
                }
            },
            "trafficRouting needs exactly one of gatewayAPI, istio, service",
            id="two-routers",
        ),
        pytest.param(
            {"strategy": {"rolling": {"maxSurge": 1}}},
            'unknown field "spec.strategy.rolling"',
            id="unknown-strategy",
        ),
        pytest.param(
            {"strategy": {"canary": {"steps": [{"pause": {"duration": "ten minutes"}}]}}},
            "spec.strategy.canary.steps[0].pause.duration",
            id="bad-duration",
        ),
    ],
)
def test_an_invalid_manifest_is_refused_by_the_api_server_with_a_clear_message(
    world: World, change: dict[str, object], expected: str
) -> None:
    obj = m.rollout("invalid", world.ns)
    obj["spec"].update(change)
    result = world.kubectl_apply(obj)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_a_manual_edit_of_the_route_weights_is_reported_and_undone(world: World) -> None:
    world.model("edit")
    world.operator()
    world.apply(m.rollout("edit", world.ns, strategy=SLOW_CANARY))
    world.wait_status("edit", weight_is(25), 90, "weight 25")
    route = world.get("httproute", "edit")
    for ref in route["spec"]["rules"][-1]["backendRefs"]:
        ref["weight"] = 50
    world.cluster.kubectl(
        "patch", "httproute", "edit", "-n", world.ns, "--type=json", "-p",
        '[{"op":"replace","path":"/spec/rules/1/backendRefs",'
        f'"value":{__import__("json").dumps(route["spec"]["rules"][-1]["backendRefs"])}}}]',
    )  # fmt: skip
    wait_for(lambda: "TrafficDrift" in world.reasons("edit"), 30, "a TrafficDrift event")
    wait_for(
        lambda: world.route_backends("edit") == {"edit-v1": 75, "edit-v2": 25},
        30,
        "the route restored to 75/25",
    )
    drift = next(e for e in world.events("edit") if e["reason"] == "TrafficDrift")
    assert drift["type"] == "Warning"
    assert "50%" in drift["message"]


def test_deleting_a_rollout_mid_canary_returns_all_traffic_to_stable(world: World) -> None:
    world.model("gone")
    world.operator()
    world.apply(m.rollout("gone", world.ns, strategy=SLOW_CANARY))
    world.wait_status("gone", weight_is(25), 90, "weight 25")
    world.cluster.kubectl("delete", "modelrollout", "gone", "-n", world.ns, "--timeout=60s")
    assert world.route_backends("gone") == {"gone-v1": 100, "gone-v2": 0}
    assert world.route_mirror("gone") == 0
