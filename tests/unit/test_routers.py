"""Routers on real object shapes, as users write them.

The key promise: everything outside the model's rule or route comes back
exactly the same, and what the router writes it reads back.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from modelrollout.engine import TrafficIntent, TrafficState
from modelrollout.traffic import gateway_api, istio, service
from modelrollout.traffic.base import Names, RouteError

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


def svc_names() -> Names:
    return names(stable_workload="fd-v1", candidate_workload="fd-v2")


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
