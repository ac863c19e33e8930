"""Rolling out models served by KServe, with KServe's own controller in the loop.

KServe v0.16's controller (``cmd/manager``, built from Go modules) runs
against the local API server in RawDeployment mode, with its InferenceService
webhooks served on loopback: every InferenceService the operator writes goes
through KServe's schema, defaulter and validator, and KServe makes the
predictor Deployments and Services on kwok's nodes.

What is simulated, said openly: KServe's Serverless mode (Knative revisions)
cannot run here, and RawDeployment ignores ``canaryTrafficPercent``. For the
kserve router the traffic generator therefore splits requests the way
KServe's Knative reconciler would (last rolled-out revision and latest one, by
``canaryTrafficPercent``), reading the InferenceService from the API server.
The two-InferenceService mode needs no such stand-in: its HTTPRoute names the
Services KServe made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout_devenv import LocalCluster
from modelrollout_devenv import manifests as m
from modelrollout_devenv.kserve_controller import KServeController
from modelrollout_devenv.stack import wait_for

from .conftest import ARTIFACTS
from .world import World, history

pytestmark = pytest.mark.e2e

URI = "gs://models/{model}/{version}"
CANARY: dict[str, Any] = {
    "canary": {
        "steps": [
            {"setWeight": 25},
            {"pause": {"duration": "12s"}},
            {"setWeight": 50},
            {"pause": {"duration": "12s"}},
        ]
    }
}
HOLD_AT_25: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "5m"}}, {"setWeight": 50}]}
}


@pytest.fixture(scope="module")
def kserve(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KServeController]:
    """KServe's controller with its webhooks, for this module's tests."""
    controller = KServeController(cluster, tmp_path_factory.mktemp("kserve"))
    try:
        controller.start()
    except Exception as exc:
        kept = ARTIFACTS / "kserve-startup"
        kept.mkdir(parents=True, exist_ok=True)
        if controller.process is not None and controller.log_path.exists():
            (kept / "kserve-manager.log").write_bytes(controller.log_path.read_bytes())
        controller.stop()
        pytest.fail(f"KServe's controller did not start: {exc}\nlogs kept in {kept}")
    yield controller
    controller.stop()
    if request.session.testsfailed and controller.process is not None:
        kept = ARTIFACTS / "kserve-manager"
        kept.mkdir(parents=True, exist_ok=True)
        (kept / "kserve-manager.log").write_bytes(controller.log_path.read_bytes())


def ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serving(world: World, name: str, uri: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until KServe says the InferenceService is Ready and its Deployment runs ``uri``.

    Returns the Deployment's pod template metadata.
    """

    def probe() -> dict[str, Any] | None:
        # KServe leaves observedGeneration alone when a change makes no new Deployment
        # (canaryTrafficPercent, in this mode), so the Deployment is what tells.
        if not ready(world.get("inferenceservice", name)):
            return None
        dep = world.get("deployment", f"{name}-predictor")
        template = dep["spec"]["template"]["metadata"]
        held = [
            v
            for k, v in (template.get("annotations") or {}).items()
            if k.endswith("storage-initializer-sourceuri")
        ]
        up = dep["status"].get("updatedReplicas") == dep["status"].get("availableReplicas", 0) > 0
        return template if held == [uri] and up else None

    try:
        result: dict[str, Any] = wait_for(
            probe, timeout, f"InferenceService {name} Ready with its Deployment on {uri}"
        )
    except TimeoutError as exc:
        isvc = world.cluster.kubectl("get", "isvc", name, "-n", world.ns, "-o", "json", check=False)
        dep = world.cluster.kubectl(
            "get", "deployment", f"{name}-predictor", "-n", world.ns, "-o", "json", check=False
        )
        raise AssertionError(f"{exc}\n{isvc.stdout[-3000:]}\n{dep.stdout[-3000:]}") from None
    return result


def predictor(world: World, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = world.get("inferenceservice", name)["spec"]["predictor"]
    return spec


def kserve_rollout(world: World, model: str, strategy: dict[str, Any]) -> dict[str, Any]:
    return m.rollout(
        model,
        world.ns,
        strategy=strategy,
        routing={
            "kserve": {
                "inferenceService": model,
                "storageUriTemplate": URI.replace("{model}", model),
            }
        },
    )


def test_a_kserve_canary_is_promoted_and_kserve_rolls_the_new_model_out(
    world: World, kserve: KServeController
) -> None:
    # Given an InferenceService serving v1 that KServe reports Ready
    world.apply(
        m.serving_runtime(world.ns),
        m.inference_service("fraud", world.ns, URI.format(model="fraud", version="v1")),
    )
    serving(world, "fraud", "gs://models/fraud/v1")
    # and v1, v2 model servers behind a data plane that splits as KServe's canary does
    world.model(
        "fraud", objects=False, router="kserve", kserve_storage_uri="gs://models/fraud/{version}"
    )
    world.operator()
    # When a canary through the InferenceService is applied
    world.apply(kserve_rollout(world, "fraud", CANARY))
    # Then at 25% the predictor holds v2's model at canaryTrafficPercent 25
    world.wait_status("fraud", lambda s: s.get("weights", {}).get("candidate") == 25, 60, "25%")
    p = predictor(world, "fraud")
    assert (p["model"]["storageUri"], p["canaryTrafficPercent"]) == ("gs://models/fraud/v2", 25)
    # and it ends promoted: the percent dropped, KServe serves v2 alone
    status = world.wait_phase("fraud", "Succeeded", timeout=150)
    assert status["stableVersion"] == "v2"
    assert [w for r, w in history(status) if r == "WeightChanged"] == [25, 50]
    p = predictor(world, "fraud")
    assert p["model"]["storageUri"] == "gs://models/fraud/v2"
    assert "canaryTrafficPercent" not in p
    pods = serving(world, "fraud", "gs://models/fraud/v2")
    assert pods["labels"]["version"] == "v2"  # the version label reaches KServe's pods
    stack = world.stacks[0]
    wait_for(lambda: stack.split()["shares"] == {"fraud-v2": 100.0}, 10, "all traffic on v2")


def test_a_kserve_canary_failing_at_25_percent_goes_back_to_the_rolled_out_revision(
    world: World, kserve: KServeController
) -> None:
    # Given a KServe canary that holds at 25%
    world.apply(
        m.serving_runtime(world.ns), m.inference_service("risk", world.ns, "gs://models/risk/v1")
    )
    serving(world, "risk", "gs://models/risk/v1")
    stack = world.model(
        "risk", objects=False, router="kserve", kserve_storage_uri="gs://models/risk/{version}"
    )
    world.operator()
    world.apply(kserve_rollout(world, "risk", HOLD_AT_25))
    world.wait_status("risk", lambda s: s.get("weights", {}).get("candidate") == 25, 60, "25%")
    wait_for(lambda: stack.split()["shares"].get("risk-v2") == 25.0, 10, "25% on v2")
    # When v2 starts failing half of its requests (the error-rate gate allows 5%)
    stack.set_faults("v2", error_rate=0.5)
    # Then it is rolled back: canaryTrafficPercent 0 pins KServe's last rolled-out revision
    status = world.wait_phase("risk", "RolledBack", timeout=90)
    assert status["stableVersion"] == "v1"
    p = predictor(world, "risk")
    assert (p["model"]["storageUri"], p["canaryTrafficPercent"]) == ("gs://models/risk/v2", 0)
    wait_for(lambda: stack.split()["shares"] == {"risk-v1": 100.0}, 10, "all traffic on v1")
    # and KServe accepted every write (the object stays Ready)
    assert ready(world.get("inferenceservice", "risk"))
    assert "RolledBack" in world.reasons("risk")


def raw_route(model: str, ns: str) -> dict[str, Any]:
    """An HTTPRoute in front of KServe's RawDeployment Services, stable first."""
    route = m.http_route(model, ns, "v1")
    route["spec"]["rules"][1]["backendRefs"] = [
        {"name": f"{model}-v1-predictor", "port": 80, "weight": 100}
    ]
    return route


def test_rawdeployment_one_inference_service_per_version_behind_an_httproute_is_promoted(
    world: World, kserve: KServeController
) -> None:
    # Given one InferenceService per version, each Ready with the Service KServe made
    world.apply(
        m.serving_runtime(world.ns),
        m.inference_service("scorer-v1", world.ns, "gs://models/scorer/v1"),
        m.inference_service("scorer-v2", world.ns, "gs://models/scorer/v2"),
    )
    for v in ("v1", "v2"):
        serving(world, f"scorer-{v}", f"gs://models/scorer/{v}")
        assert world.get("service", f"scorer-{v}-predictor")["spec"]["ports"][0]["port"] == 80
    # and an HTTPRoute sending everything to v1's predictor Service
    world.apply(raw_route("scorer", world.ns))
    world.model("scorer", objects=False, service_template="{model}-{version}-predictor")
    world.operator()
    # When a rollout with shadow and canary goes through the HTTPRoute by KServe's names
    world.apply(
        m.rollout(
            "scorer",
            world.ns,
            serviceTemplate="{model}-{version}-predictor",
            routing={"gatewayAPI": {"httpRoute": "scorer"}},
        )
    )
    # Then v2's predictor is mirrored first, and in the end it takes all traffic
    world.wait_status("scorer", lambda s: s.get("stage") == "shadow", 30, "shadow")
    assert world.route_mirror("scorer") == 100
    status = world.wait_phase("scorer", "Succeeded", timeout=150)
    assert status["stableVersion"] == "v2"
    assert world.route_backends("scorer") == {"scorer-v2-predictor": 100}


def test_the_api_server_refuses_a_shadow_stage_with_the_kserve_router(world: World) -> None:
    # Given a rollout through an InferenceService that asks for a shadow stage
    rollout = kserve_rollout(world, "mirror", {"shadow": {"duration": "1m"}, **CANARY})
    # When a user applies it
    result = world.kubectl_apply(rollout)
    # Then the API server refuses it with the reason and the way out
    assert result.returncode != 0
    assert "KServe cannot mirror traffic to a candidate" in result.stderr
    assert "one InferenceService per version behind an HTTPRoute" in result.stderr
