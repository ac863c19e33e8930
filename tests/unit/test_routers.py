"""Routers on real object shapes, as users write them.

The key promise: everything outside the model's rule or route comes back
exactly the same, and what the router writes it reads back.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from typing import Any

import pytest
import yaml

from modelrollout.api.spec import ModelRolloutSpec, TrafficRouting
from modelrollout.engine import TrafficIntent, TrafficState
from modelrollout.traffic import gateway_api, istio, registry, service
from modelrollout.traffic.base import Clients, Names, RouteError, Versions
from modelrollout.traffic.service import ServiceNames

HTTPROUTE = yaml.safe_load(
    """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fraud-detector, namespace: ml, resourceVersion: "7"}
spec:
  parentRefs: [{name: ml-gateway}]
  hostnames: [models.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: admin-ui, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /predict}
      headers: [{name: x-canary, value: "always"}]
    backendRefs: [{name: fraud-detector-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /predict}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-model, value: fraud}]}
    backendRefs:
    - {name: fraud-detector-v1, port: 80, weight: 100}
    - {name: legacy-fallback, port: 80, weight: 0}
    timeouts: {request: 2s}
"""
)

VIRTUALSERVICE = yaml.safe_load(
    """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fraud-detector, namespace: ml, resourceVersion: "3"}
spec:
  hosts: [fraud-detector.ml.svc.cluster.local]
  gateways: [mesh]
  http:
  - name: testers
    match: [{headers: {x-tester: {exact: "yes"}}}]
    route: [{destination: {host: fraud-detector-v2.ml.svc.cluster.local, port: {number: 80}}}]
  - name: primary
    retries: {attempts: 2, perTryTimeout: 1s}
    route:
    - destination: {host: fraud-detector-v1.ml.svc.cluster.local, port: {number: 80}}
      weight: 100
"""
)


def names(**kw: Any) -> Names:
    base: dict[str, Any] = {
        "namespace": "ml",
        "object_name": "fraud-detector",
        "stable": "fraud-detector-v1",
        "candidate": "fraud-detector-v2",
        "stable_version": "v1",
        "candidate_version": "v2",
    }
    base.update(kw)
    return Names(**base)


def intent(weight: int, mirror: int = 0, candidate: str | None = "v2") -> TrafficIntent:
    return TrafficIntent("v1", candidate, weight, mirror)


def canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


@pytest.mark.parametrize(
    ("weight", "mirror"),
    [
        pytest.param(0, 100, id="shadow"),
        pytest.param(25, 0, id="canary-25"),
        pytest.param(100, 0, id="switched"),
        pytest.param(0, 0, id="rolled-back"),
    ],
)
def test_httproute_changes_only_the_model_rule_and_reads_back_what_it_wrote(
    weight: int, mirror: int
) -> None:
    before = copy.deepcopy(HTTPROUTE)
    after = gateway_api.write(HTTPROUTE, names(), intent(weight, mirror))
    assert before == HTTPROUTE, "the input object must not be mutated"
    assert canon(after["metadata"]) == canon(before["metadata"])
    for key in ("parentRefs", "hostnames"):
        assert canon(after["spec"][key]) == canon(before["spec"][key])
    assert canon(after["spec"]["rules"][:2]) == canon(before["spec"]["rules"][:2])
    rule = after["spec"]["rules"][2]
    assert rule["timeouts"] == {"request": "2s"}
    assert rule["matches"] == before["spec"]["rules"][2]["matches"]
    assert {"name": "legacy-fallback", "port": 80, "weight": 0} in rule["backendRefs"]
    assert rule["filters"][0]["type"] == "RequestHeaderModifier"
    assert gateway_api.read(after, names()) == TrafficState(weight, mirror)


def test_httproute_shadow_adds_a_request_mirror_filter_with_a_percent() -> None:
    after = gateway_api.write(HTTPROUTE, names(), intent(0, 40))
    mirror = after["spec"]["rules"][2]["filters"][-1]
    assert mirror == {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "fraud-detector-v2", "port": 80}, "percent": 40},
    }
    cleared = gateway_api.write(after, names(), intent(10, 0))
    assert [f["type"] for f in cleared["spec"]["rules"][2]["filters"]] == ["RequestHeaderModifier"]


def test_httproute_retired_candidate_leaves_the_rule() -> None:
    mid = gateway_api.write(HTTPROUTE, names(), intent(30))
    after = gateway_api.write(
        mid,
        names(candidate="fraud-detector-v3", retired=("fraud-detector-v2",)),
        TrafficIntent("v1", "v3", 0, 0),
    )
    refs = [r["name"] for r in after["spec"]["rules"][2]["backendRefs"]]
    assert refs == ["fraud-detector-v1", "legacy-fallback", "fraud-detector-v3"]
    # the header-match rule for testers still points at v2: it is not the model's rule
    assert after["spec"]["rules"][1] == HTTPROUTE["spec"]["rules"][1]


def test_httproute_reads_a_hand_edit_of_the_weights() -> None:
    edited = copy.deepcopy(gateway_api.write(HTTPROUTE, names(), intent(10)))
    for ref in edited["spec"]["rules"][2]["backendRefs"]:
        if ref["name"] == "fraud-detector-v2":
            ref["weight"] = 40
        if ref["name"] == "fraud-detector-v1":
            ref["weight"] = 60
    assert gateway_api.read(edited, names()) == TrafficState(40, 0)


def test_httproute_without_a_rule_for_the_model_is_a_clear_error() -> None:
    with pytest.raises(RouteError, match="no rule with a backendRef"):
        gateway_api.read(HTTPROUTE, names(stable="other-v1", candidate="other-v2"))


@pytest.mark.parametrize(
    ("weight", "mirror"),
    [
        pytest.param(0, 50, id="shadow"),
        pytest.param(25, 0, id="canary-25"),
        pytest.param(100, 0, id="switched"),
        pytest.param(0, 0, id="rolled-back"),
    ],
)
def test_virtualservice_changes_only_the_default_route_after_a_header_match(
    weight: int, mirror: int
) -> None:
    before = copy.deepcopy(VIRTUALSERVICE)
    after = istio.write(VIRTUALSERVICE, names(), intent(weight, mirror))
    assert before == VIRTUALSERVICE
    assert canon(after["spec"]["http"][0]) == canon(before["spec"]["http"][0])
    assert canon({k: v for k, v in after["spec"].items() if k != "http"}) == canon(
        {k: v for k, v in before["spec"].items() if k != "http"}
    )
    route = after["spec"]["http"][1]
    assert route["retries"] == {"attempts": 2, "perTryTimeout": "1s"}
    hosts = [d["destination"]["host"] for d in route["route"]]
    assert hosts == [
        "fraud-detector-v1.ml.svc.cluster.local",
        "fraud-detector-v2.ml.svc.cluster.local",
    ]
    assert all(d["destination"]["port"] == {"number": 80} for d in route["route"])
    assert istio.read(after, names()) == TrafficState(weight, mirror)
    if mirror:
        assert route["mirrorPercentage"] == {"value": float(mirror)}


def test_virtualservice_mirror_is_removed_when_shadow_ends() -> None:
    shadow = istio.write(VIRTUALSERVICE, names(), intent(0, 100))
    after = istio.write(shadow, names(), intent(10, 0))
    assert "mirror" not in after["spec"]["http"][1]
    assert "mirrorPercentage" not in after["spec"]["http"][1]


SERVICE = {
    "spec": {"selector": {"app": "fraud-detector", "version": "v1"}, "ports": [{"port": 80}]}
}


def dep(replicas: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}}


def svc_names() -> ServiceNames:
    return ServiceNames(names(), stable_workload="fd-v1", candidate_workload="fd-v2")


def test_service_router_switches_the_selector_for_blue_green() -> None:
    selector, scale = service.plan_write(SERVICE, dep(3), dep(3), svc_names(), intent(100))
    assert selector == {"app": "fraud-detector", "version": "v2"}
    assert scale == {}


def test_service_router_canary_spans_both_versions_and_scales_by_ratio() -> None:
    selector, scale = service.plan_write(SERVICE, dep(4), dep(0), svc_names(), intent(25))
    assert selector == {"app": "fraud-detector"}
    assert scale == {"fd-v1": 3, "fd-v2": 1}
    moved = {"spec": {"selector": selector}}
    assert service.read(moved, dep(3), dep(1), svc_names()) == TrafficState(25, 0)


def test_service_router_rollback_pins_the_selector_to_stable() -> None:
    spanning = {"spec": {"selector": {"app": "fraud-detector"}}}
    selector, _ = service.plan_write(spanning, dep(3), dep(1), svc_names(), intent(0))
    assert selector == {"app": "fraud-detector", "version": "v1"}
    assert service.read({"spec": {"selector": selector}}, dep(3), dep(1), svc_names()) == (
        TrafficState(0, 0)
    )


def test_virtualservice_route_named_in_the_spec_is_the_one_that_changes() -> None:
    after = istio.write(VIRTUALSERVICE, names(section="testers"), intent(30))
    assert after["spec"]["http"][1] == VIRTUALSERVICE["spec"]["http"][1]
    hosts = [d["destination"]["host"] for d in after["spec"]["http"][0]["route"]]
    assert hosts == [
        "fraud-detector-v2.ml.svc.cluster.local",
        "fraud-detector-v1.ml.svc.cluster.local",
    ]


@pytest.mark.parametrize(
    ("read", "obj", "message"),
    [
        pytest.param(
            gateway_api.read,
            HTTPROUTE,
            "HTTPRoute fraud-detector has no rule named 'x'",
            id="httproute",
        ),
        pytest.param(
            istio.read,
            VIRTUALSERVICE,
            "VirtualService fraud-detector has no http route named 'x'",
            id="virtualservice",
        ),
    ],
)
def test_a_section_named_in_the_spec_that_is_missing_is_a_clear_error(
    read: Any, obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(RouteError, match=message):
        read(obj, names(section="x"))


def test_virtualservice_without_a_route_for_the_model_is_a_clear_error() -> None:
    with pytest.raises(RouteError, match="no http route to other-v1, other-v2"):
        istio.read(VIRTUALSERVICE, names(stable="other-v1", candidate="other-v2"))


def _field_model(annotation: Any) -> Any:
    (model,) = [a for a in typing.get_args(annotation) if a is not types.NoneType]
    return model


def test_every_traffic_routing_field_has_exactly_one_router_and_every_router_a_field() -> None:
    fields = {
        f.alias or name: _field_model(f.annotation)
        for name, f in TrafficRouting.model_fields.items()
    }
    routers = {kind: router.settings for kind, router in registry.ROUTERS.items()}
    assert routers == fields
    assert TrafficRouting.kinds() == tuple(fields)


def test_the_operator_builds_one_router_of_every_kind_on_the_shared_clients() -> None:
    clients = Clients(custom=object(), core=object(), apps=object())
    built = registry.build(clients)
    assert set(built) == set(registry.ROUTERS)
    assert all(isinstance(r, registry.ROUTERS[k]) for k, r in built.items())


def spec(routing: dict[str, Any]) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "model": "fraud-detector",
            "stable": {"version": "v1", "deployment": "fd-blue"},
            "candidate": {"version": "v2", "service": "fd-canary"},
            "trafficRouting": routing,
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
        }
    )


VERSIONS = Versions("v1", "v2", retired=("v0",))
ROUTE = {
    "namespace": "ml",
    "stable": "fraud-detector-v1",
    "candidate": "fd-canary",
    "retired": ("fraud-detector-v0",),
    "stable_version": "v1",
    "candidate_version": "v2",
}


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        pytest.param(
            {"gatewayAPI": {"httpRoute": "fd", "rule": "predict", "port": 8080}},
            Names(object_name="fd", section="predict", port=8080, **ROUTE),
            id="gatewayAPI",
        ),
        pytest.param(
            {"istio": {"virtualService": "fd-vs", "route": "primary", "port": 80}},
            Names(object_name="fd-vs", section="primary", port=80, **ROUTE),
            id="istio",
        ),
        pytest.param(
            {"service": {"name": "fd", "versionLabel": "track"}},
            ServiceNames(
                Names(object_name="fd", **ROUTE),
                stable_workload="fd-blue",
                candidate_workload="fraud-detector-v2",
                version_label="track",
            ),
            id="service",
        ),
    ],
)
def test_each_router_finds_its_route_and_the_versions_services_in_the_spec(
    routing: dict[str, Any], expected: object
) -> None:
    s = spec(routing)
    router = registry.ROUTERS[s.traffic_routing.kind]
    assert router.names(s, namespace="ml", versions=VERSIONS) == expected


class FakeCustomObjects:
    """A CustomObjectsApi that holds one object and records the patches sent to it."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[list[dict[str, Any]]] = []

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self.patches.append(args[5])


def test_custom_object_router_patches_only_the_model_rule_guarded_by_the_resource_version() -> None:
    api = FakeCustomObjects(HTTPROUTE)
    router = gateway_api.GatewayAPIRouter(api)
    assert router.apply(names(), intent(25)) is True
    (patch,) = api.patches
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert patch[1]["op"] == "replace"
    assert patch[1]["path"] == "/spec/rules/2"
    assert (
        patch[1]["value"] == gateway_api.write(HTTPROUTE, names(), intent(25))["spec"]["rules"][2]
    )


def test_custom_object_router_sends_no_patch_when_the_route_already_holds_the_intent() -> None:
    api = FakeCustomObjects(VIRTUALSERVICE)
    router = istio.IstioRouter(api)
    stable_only = names(candidate=None, candidate_version=None)
    assert router.apply(stable_only, intent(0, candidate=None)) is False
    assert api.patches == []
    assert router.read(stable_only) == TrafficState(0, 0)
