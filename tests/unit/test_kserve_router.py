"""The kserve router on InferenceServices as KServe users write them.

The promises: the predictor holds the candidate's rendering at its weight
while the canary runs; a rollback pins traffic to KServe's last rolled-out
revision (percent 0) without touching the candidate's spec; promotion drops
the percent; what it writes it reads back; nothing outside the templated
fields and the percent changes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelrollout.api.spec import KSERVE_NO_MIRROR, KServeRouting, ModelRolloutSpec
from modelrollout.engine import RouteBackend, TrafficIntent, TrafficState
from modelrollout.engine.seed import stable_from_route
from modelrollout.traffic import kserve, registry
from modelrollout.traffic.base import RouteError, Versions
from modelrollout.traffic.kserve import KServeRouter, KServeTarget, Rendering

ISVC = yaml.safe_load(
    """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: fraud, namespace: ml, resourceVersion: "11"}
spec:
  predictor:
    minReplicas: 2
    serviceAccountName: models
    model:
      modelFormat: {name: sklearn}
      runtime: kserve-sklearnserver
      storageUri: gs://models/fraud/v1
      resources: {requests: {cpu: 100m}}
"""
)

CUSTOM = yaml.safe_load(
    """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: fraud, namespace: ml, resourceVersion: "4"}
spec:
  predictor:
    containers:
    - name: kserve-container
      image: registry.example.com/fraud:v1
      args: [--port, "8080"]
    - name: sidecar
      image: registry.example.com/proxy:3
"""
)

ROUTING = KServeRouting(
    inference_service="fraud", storage_uri_template="gs://models/{model}/{version}"
)
TARGET = KServeTarget(
    namespace="ml",
    inference_service="fraud",
    stable=kserve.render(ROUTING, model="fraud", version="v1"),
    candidate=kserve.render(ROUTING, model="fraud", version="v2"),
)


def intent(weight: int, *, candidate: str | None = "v2", stable: str = "v1") -> TrafficIntent:
    return TrafficIntent(stable, candidate, weight if candidate else 0, 0)


def predictor(obj: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = obj["spec"]["predictor"]
    return p


@pytest.mark.parametrize(
    ("weight", "uri", "percent"),
    [
        pytest.param(0, "gs://models/fraud/v2", 0, id="candidate-warms-up-at-0"),
        pytest.param(5, "gs://models/fraud/v2", 5, id="first-step"),
        pytest.param(50, "gs://models/fraud/v2", 50, id="half"),
        pytest.param(100, "gs://models/fraud/v2", 100, id="all-before-promotion"),
    ],
)
def test_a_canary_step_holds_the_candidates_spec_at_its_weight(
    weight: int, uri: str, percent: int
) -> None:
    new = kserve.write(ISVC, TARGET, intent(weight))
    assert predictor(new)["model"]["storageUri"] == uri
    assert predictor(new)["canaryTrafficPercent"] == percent
    assert kserve.read(new, TARGET) == TrafficState(weight, 0)


def test_everything_but_the_templated_fields_the_percent_and_the_label_comes_back_unchanged() -> (
    None
):
    new = kserve.write(ISVC, TARGET, intent(25))
    expected = copy.deepcopy(ISVC)
    expected["spec"]["predictor"]["model"]["storageUri"] = "gs://models/fraud/v2"
    expected["spec"]["predictor"]["canaryTrafficPercent"] = 25
    expected["spec"]["predictor"]["labels"] = {"version": "v2"}
    assert new == expected
    assert ISVC["spec"]["predictor"]["model"]["storageUri"] == "gs://models/fraud/v1"


def test_a_rollback_pins_kserves_last_rolled_out_revision_and_keeps_the_candidate_spec() -> None:
    canary = kserve.write(ISVC, TARGET, intent(25))
    rolled_back = kserve.write(canary, TARGET, intent(0))
    assert predictor(rolled_back)["canaryTrafficPercent"] == 0
    assert predictor(rolled_back)["model"]["storageUri"] == "gs://models/fraud/v2"
    assert kserve.read(rolled_back, TARGET) == TrafficState(0, 0)


def test_promotion_writes_the_new_stable_and_lets_kserve_roll_it_out_at_100() -> None:
    canary = kserve.write(ISVC, TARGET, intent(50))
    promoted_target = KServeTarget("ml", "fraud", stable=TARGET.candidate or TARGET.stable)
    promoted = kserve.write(canary, promoted_target, intent(0, candidate=None, stable="v2"))
    assert "canaryTrafficPercent" not in predictor(promoted)
    assert predictor(promoted)["model"]["storageUri"] == "gs://models/fraud/v2"
    assert kserve.read(promoted, promoted_target) == TrafficState(0, 0)


def test_with_no_candidate_left_the_stable_spec_goes_back_without_a_percent() -> None:
    canary = kserve.write(ISVC, TARGET, intent(50))
    stable_only = KServeTarget("ml", "fraud", stable=TARGET.stable)
    back = kserve.write(canary, stable_only, intent(0, candidate=None))
    assert predictor(back) == predictor(ISVC) | {"labels": {"version": "v1"}}


def test_the_version_label_joins_the_users_pod_labels_or_is_left_out_when_unset() -> None:
    obj = copy.deepcopy(ISVC)
    predictor(obj)["labels"] = {"team": "risk", "track": "old"}
    target = KServeTarget("ml", "fraud", TARGET.stable, TARGET.candidate, version_label="track")
    new = kserve.write(obj, target, intent(5))
    assert predictor(new)["labels"] == {"team": "risk", "track": "v2"}
    assert predictor(obj)["labels"] == {"team": "risk", "track": "old"}
    unlabelled = KServeTarget("ml", "fraud", TARGET.stable, TARGET.candidate, version_label=None)
    assert "labels" not in predictor(kserve.write(ISVC, unlabelled, intent(5)))


@pytest.mark.parametrize(
    ("uri", "percent", "expected"),
    [
        pytest.param("gs://models/fraud/v1", None, 0, id="stable-as-found"),
        pytest.param("gs://models/fraud/v1", 30, 0, id="stable-whatever-the-percent"),
        pytest.param("gs://models/fraud/v2", None, 100, id="candidate-rolled-out"),
        pytest.param("gs://models/fraud/v2", 10, 10, id="candidate-at-10"),
        pytest.param("gs://models/fraud/v9", None, 100, id="unknown-version-is-off-stable"),
        pytest.param("gs://models/fraud/v9", 0, 0, id="unknown-version-pinned-back"),
    ],
)
def test_read_tells_the_candidates_share_from_the_spec_the_predictor_holds(
    uri: str, percent: int | None, expected: int
) -> None:
    obj = copy.deepcopy(ISVC)
    predictor(obj)["model"]["storageUri"] = uri
    if percent is not None:
        predictor(obj)["canaryTrafficPercent"] = percent
    assert kserve.read(obj, TARGET) == TrafficState(expected, 0)


def test_every_templated_field_must_match_for_a_version_to_be_held() -> None:
    routing = KServeRouting(
        inference_service="fraud",
        storage_uri_template="gs://models/fraud/{version}",
        runtime_version_template="1.5-{version}",
    )
    target = KServeTarget(
        "ml",
        "fraud",
        stable=kserve.render(routing, model="fraud", version="v1"),
        candidate=kserve.render(routing, model="fraud", version="v2"),
    )
    obj = copy.deepcopy(ISVC)  # storageUri of v1, no runtimeVersion at all
    assert kserve.held_version(obj, target) is None
    new = kserve.write(obj, target, intent(20))
    assert predictor(new)["model"]["runtimeVersion"] == "1.5-v2"
    assert kserve.held_version(new, target) == "v2"


def test_an_image_template_changes_a_custom_predictors_first_container_only() -> None:
    routing = KServeRouting(
        inference_service="fraud", image_template="registry.example.com/fraud:{version}"
    )
    target = KServeTarget(
        "ml",
        "fraud",
        stable=kserve.render(routing, model="fraud", version="v1"),
        candidate=kserve.render(routing, model="fraud", version="v2"),
    )
    assert kserve.read(CUSTOM, target) == TrafficState(0, 0)
    new = kserve.write(CUSTOM, target, intent(10))
    first, sidecar = predictor(new)["containers"]
    assert first["image"] == "registry.example.com/fraud:v2"
    assert sidecar == predictor(CUSTOM)["containers"][1]
    assert kserve.read(new, target) == TrafficState(10, 0)


def test_templates_are_replaced_as_text_never_formatted() -> None:
    routing = KServeRouting(
        inference_service="x", storage_uri_template="s3://b/{model}/{version.__class__}/{version}"
    )
    rendering = kserve.render(routing, model="m", version="v3")
    assert rendering == Rendering(version="v3", storage_uri="s3://b/m/{version.__class__}/v3")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param({"spec": {}}, "has no spec.predictor", id="no-predictor"),
        pytest.param(CUSTOM, "storageUri needs spec.predictor.model", id="custom-with-uri"),
    ],
)
def test_a_predictor_the_templates_cannot_fit_is_a_route_error(
    obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(RouteError, match=message):
        kserve.write(obj, TARGET, intent(5))


def test_a_mirror_is_refused_even_if_it_got_past_the_crd() -> None:
    with pytest.raises(RouteError, match="cannot mirror"):
        kserve.write(ISVC, TARGET, TrafficIntent("v1", "v2", 0, 50))


def spec(**strategy: Any) -> dict[str, Any]:
    return {
        "model": "fraud",
        "stable": {"version": "v1"},
        "candidate": {"version": "v2"},
        "trafficRouting": {
            "kserve": {
                "inferenceService": "fraud",
                "storageUriTemplate": "gs://models/fraud/{version}",
            }
        },
        "strategy": strategy or {"canary": {"steps": [{"setWeight": 10}]}},
    }


def test_the_router_builds_its_target_from_the_spec() -> None:
    s = ModelRolloutSpec.model_validate(spec())
    router = registry.ROUTERS[s.traffic_routing.kind]
    assert router is KServeRouter
    target = router.names(s, namespace="ml", versions=Versions("v1", "v2", retired=("v0",)))
    assert target == KServeTarget(
        "ml",
        "fraud",
        stable=Rendering("v1", storage_uri="gs://models/fraud/v1"),
        candidate=Rendering("v2", storage_uri="gs://models/fraud/v2"),
    )


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(
            {"shadow": {"mirrorPercent": 10}, "canary": {"steps": [{"setWeight": 5}]}},
            id="shadow",
        ),
        pytest.param({"blueGreen": {"previewMirrorPercent": 20}}, id="blue-green-mirror"),
    ],
)
def test_the_spec_refuses_a_mirror_with_kserve(strategy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="KServe cannot mirror"):
        ModelRolloutSpec.model_validate(spec(**strategy))
    assert "KServe cannot mirror" in KSERVE_NO_MIRROR


def test_the_spec_takes_blue_green_without_a_mirror_with_kserve() -> None:
    ModelRolloutSpec.model_validate(spec(blueGreen={"previewWeight": 10}))


def test_kserve_needs_a_template_that_tells_the_versions_apart() -> None:
    with pytest.raises(ValidationError, match="at least one of storageUriTemplate"):
        KServeRouting(inference_service="fraud")


class FakeCustomObjects:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[list[dict[str, Any]]] = []

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        assert args[:5] == ("serving.kserve.io", "v1beta1", "ml", "inferenceservices", "fraud")
        self.patches.append(args[5])


def test_the_router_patches_only_the_predictor_guarded_by_the_resource_version() -> None:
    api = FakeCustomObjects(ISVC)
    assert KServeRouter(api).apply(TARGET, intent(5)) is True
    (patch,) = api.patches
    assert patch == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "11"},
        {
            "op": "replace",
            "path": "/spec/predictor",
            "value": predictor(kserve.write(ISVC, TARGET, intent(5))),
        },
    ]


def test_the_router_sends_nothing_when_the_predictor_already_holds_the_intent() -> None:
    api = FakeCustomObjects(kserve.write(ISVC, TARGET, intent(5)))
    assert KServeRouter(api).apply(TARGET, intent(5)) is False
    assert api.patches == []


class Missing(Exception):
    status = 404


def test_a_missing_inference_service_is_a_route_error_that_names_it() -> None:
    class Gone(FakeCustomObjects):
        def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
            raise Missing()

    with pytest.raises(
        RouteError, match=r"inferenceservices\.serving\.kserve\.io ml/fraud not found"
    ):
        KServeRouter(Gone(ISVC)).read(TARGET)


# ------------------------------------------------ the first stable version, from the route


def adopted(**routing: Any) -> ModelRolloutSpec:
    """A spec without spec.stable: the InferenceService as found names the stable version."""
    raw = spec()
    del raw["stable"]
    raw["trafficRouting"]["kserve"].update(routing)
    return ModelRolloutSpec.model_validate(raw)


def with_predictor(**fields: Any) -> dict[str, Any]:
    obj = copy.deepcopy(ISVC)
    predictor(obj).update(fields)
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(ISVC, "v1", id="all-traffic-to-the-spec"),
        pytest.param(with_predictor(canaryTrafficPercent=100), "v1", id="percent-100"),
        pytest.param(
            with_predictor(canaryTrafficPercent=30),
            None,
            id="a-canary-split-is-not-guessed",
        ),
        pytest.param(
            with_predictor(canaryTrafficPercent=0),
            None,
            id="all-traffic-to-the-unnamed-rolled-out-revision",
        ),
    ],
)
def test_the_stable_version_is_read_back_from_the_predictors_templated_fields(
    obj: dict[str, Any], expected: str | None
) -> None:
    s = adopted()
    target = KServeRouter.route_names(s, namespace="ml")
    got = KServeRouter(FakeCustomObjects(obj)).backends(target)
    assert got[0] == RouteBackend("fraud", predictor(obj).get("canaryTrafficPercent", 100), "v1")
    version, _ = stable_from_route(s, got)
    assert version == expected


def test_a_predictor_no_version_renders_into_is_a_route_error_that_shows_it() -> None:
    s = adopted(imageTemplate="registry.example.com/{model}:{version}")
    target = KServeRouter.route_names(s, namespace="ml")
    obj = copy.deepcopy(ISVC)
    predictor(obj)["model"]["image"] = "registry.example.com/fraud:v7"
    with pytest.raises(RouteError, match="storageUri 'gs://models/fraud/v1', image"):
        kserve.backends(obj, target)
    predictor(obj)["model"]["image"] = "registry.example.com/fraud:v1"
    assert kserve.backends(obj, target) == (RouteBackend("fraud", 100, "v1"),)
