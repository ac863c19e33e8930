"""Manifests for the local environment: a model's route, Services, Deployments and rollout.

The same shapes as ``examples/``, with short durations so a rollout ends in
about a minute; used by the end-to-end tests and ``make demo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Obj = dict[str, Any]

FAST_ANALYSIS: Obj = {
    "interval": "6s",
    "failureLimit": 2,
    "inconclusiveLimit": 3,
    "metrics": [
        {"name": "p99-latency", "latency": {"quantile": 0.99}, "max": 0.25},
        {"name": "error-rate", "errorRate": {}, "max": 0.05},
        {"name": "throughput", "throughput": {}, "min": 0.5},
    ],
}

FAST_CANARY: Obj = {
    "shadow": {"mirrorPercent": 100, "duration": "12s"},
    "canary": {
        "steps": [
            {"setWeight": 25},
            {"pause": {"duration": "12s"}},
            {"setWeight": 50},
            {"pause": {"duration": "12s"}},
        ]
    },
}


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str, ns: str, labels: dict[str, str], image: str, replicas: int = 1) -> Obj:
    """A Deployment of one container whose pods kwok's fake nodes run (their taint tolerated)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "model", "image": image}],
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                },
            },
        },
    }


def workload(model: str, version: str, ns: str, replicas: int = 1) -> list[Obj]:
    labels = {"app": model, "version": version}
    image = f"registry.example.com/{model}:{version}"
    return [
        deployment(f"{model}-{version}", ns, labels, image, replicas),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{model}-{version}", "namespace": ns},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80}]},
        },
    ]


def http_route(model: str, ns: str, stable: str) -> Obj:
    """An HTTPRoute with an unrelated rule first, as users have them."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": model, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "ml-gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                    "backendRefs": [{"name": "docs-site", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": f"{model}-{stable}", "port": 80, "weight": 100}],
                },
            ],
        },
    }


def rollout(
    model: str,
    ns: str,
    *,
    stable: str = "v1",
    candidate: str = "v2",
    strategy: Obj | None = None,
    analysis: Obj | None = None,
    routing: Obj | None = None,
    **spec: Any,
) -> Obj:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": model, "namespace": ns},
        "spec": {
            "model": model,
            "stable": {"version": stable},
            "candidate": {"version": candidate},
            "trafficRouting": routing or {"gatewayAPI": {"httpRoute": model}},
            "strategy": strategy or FAST_CANARY,
            "analysis": analysis or FAST_ANALYSIS,
            **spec,
        },
    }


def service(model: str, ns: str, version: str) -> Obj:
    """The one Service users without a mesh send traffic to, pinned to a version."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": model, "namespace": ns},
        "spec": {
            "selector": {"app": model, "version": version},
            "ports": [{"name": "http", "port": 80}],
        },
    }


def model_objects(
    model: str,
    ns: str,
    versions: Sequence[str] = ("v1", "v2"),
    *,
    router: str = "gatewayAPI",
    replicas: Sequence[int] = (),
) -> list[Obj]:
    """Everything but the rollout: Deployments, Services and the route object."""
    objs: list[Obj] = []
    for i, v in enumerate(versions):
        objs += workload(model, v, ns, replicas=replicas[i] if i < len(replicas) else 1)
    if router == "service":
        objs.append(service(model, ns, versions[0]))
    else:
        objs.append(http_route(model, ns, versions[0]))
    return objs


# --------------------------------------------------------------------------- KServe

#: The ServingRuntime the KServe manifests use: the simulated model server's image
#: (kwok runs no containers; the name says what the pods would run).
SIM_RUNTIME = "modelrollout-sim"


def serving_runtime(ns: str) -> Obj:
    """A namespaced ServingRuntime that takes sklearn models, for KServe to pick."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": SIM_RUNTIME, "namespace": ns},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v1"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "modelrollout/sim-model-server:dev",
                    "args": ["--model", "{{.Name}}", "--port", "8080"],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
        },
    }


def inference_service(name: str, ns: str, storage_uri: str) -> Obj:
    """An InferenceService (new predictor schema) on :data:`SIM_RUNTIME`."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 1,
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "runtime": SIM_RUNTIME,
                    "storageUri": storage_uri,
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                },
            }
        },
    }
