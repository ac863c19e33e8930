"""A plain ``Service``, for users without a mesh.

- Blue-green and the ends of a canary: the Service's selector names one
  version (``selector[versionLabel]``), so a switch is one atomic change.
- Between the ends of a canary: the selector spans both versions and the
  weight is carried by the replica ratio of the two Deployments. Kubernetes
  balances per connection over ready endpoints, so the share is approximate
  and moves in steps of ``100 / replicas``; the status says so.
- No mirroring: the CRD refuses shadow with this router.

The Deployments' total replica count is kept: the candidate gets
``round(total * weight / 100)`` (at least one while its weight is above 0),
the stable the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrollout.api.spec import ModelRolloutSpec, ServiceRouting
from modelrollout.engine import TrafficIntent, TrafficState
from modelrollout.traffic.base import (
    JSON_PATCH,
    BaseRouter,
    Clients,
    Names,
    Obj,
    RouteError,
    Versions,
    api_error,
    routing_of,
    share,
    version_ref,
)


@dataclass(frozen=True)
class ServiceNames:
    """The service router's target: the Service as a route, and what only this router needs."""

    route: Names
    stable_workload: str | None = None
    """Deployment of the stable version."""
    candidate_workload: str | None = None
    version_label: str = "version"
    """Pod label that tells the versions apart, as the Service's selector uses it."""


def _replicas(dep: Obj | None) -> int:
    if dep is None:
        return 0
    return int((dep.get("spec") or {}).get("replicas", 1))


def read(
    service: Obj, stable_dep: Obj | None, candidate_dep: Obj | None, names: ServiceNames
) -> TrafficState:
    selector = (service.get("spec") or {}).get("selector") or {}
    pinned = selector.get(names.version_label)
    if pinned == names.route.stable_version:
        return TrafficState(0, 0)
    if pinned is not None and pinned == names.route.candidate_version:
        return TrafficState(100, 0)
    if pinned is not None:
        return TrafficState(100, 0)  # pinned to a version that is not stable: all off stable
    return TrafficState(share(_replicas(candidate_dep), _replicas(stable_dep)), 0)


def plan_write(
    service: Obj,
    stable_dep: Obj | None,
    candidate_dep: Obj | None,
    names: ServiceNames,
    intent: TrafficIntent,
) -> tuple[dict[str, Any] | None, dict[str, int]]:
    """(selector to set or None, replicas per Deployment name to set)."""
    selector = dict((service.get("spec") or {}).get("selector") or {})
    scale: dict[str, int] = {}
    w = intent.candidate_weight
    if w <= 0 or not names.route.candidate_version:
        selector[names.version_label] = names.route.stable_version
    elif w >= 100:
        selector[names.version_label] = names.route.candidate_version
    else:
        if stable_dep is None or candidate_dep is None:
            raise RouteError(
                "a canary through a plain Service needs both Deployments: "
                f"{names.stable_workload} and {names.candidate_workload}"
            )
        selector.pop(names.version_label, None)
        total = max(_replicas(stable_dep) + _replicas(candidate_dep), 2)
        cand = min(total - 1, max(1, round(total * w / 100)))
        if names.stable_workload and _replicas(stable_dep) != total - cand:
            scale[names.stable_workload] = total - cand
        if names.candidate_workload and _replicas(candidate_dep) != cand:
            scale[names.candidate_workload] = cand
    current = (service.get("spec") or {}).get("selector") or {}
    return (selector if selector != current else None), scale


class ServiceRouter(BaseRouter[ServiceNames]):
    kind = "service"
    settings = ServiceRouting

    def __init__(self, core: Any, apps: Any) -> None:
        self.core = core  # kubernetes.client.CoreV1Api
        self.apps = apps  # kubernetes.client.AppsV1Api

    @classmethod
    def build(cls, clients: Clients) -> ServiceRouter:
        return cls(clients.core, clients.apps)

    @classmethod
    def names(cls, spec: ModelRolloutSpec, *, namespace: str, versions: Versions) -> ServiceNames:
        routing = routing_of(spec, ServiceRouting)

        def workload(version: str | None) -> str | None:
            return spec.deployment_for(version_ref(spec, version)) if version else None

        return ServiceNames(
            route=Names.of(spec, namespace=namespace, versions=versions, object_name=routing.name),
            stable_workload=workload(versions.stable),
            candidate_workload=workload(versions.candidate),
            version_label=routing.version_label,
        )

    def _objects(self, names: ServiceNames) -> tuple[Obj, Obj | None, Obj | None]:
        route = names.route
        try:
            svc = self.core.read_namespaced_service(route.object_name, route.namespace).to_dict()
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                raise RouteError(
                    f"Service {route.namespace}/{route.object_name} not found"
                ) from exc
            raise RouteError(f"cannot read Service {route.object_name}: {api_error(exc)}") from exc
        return (
            svc,
            self._dep(names.stable_workload, route.namespace),
            self._dep(names.candidate_workload, route.namespace),
        )

    def _dep(self, name: str | None, namespace: str) -> Obj | None:
        if not name:
            return None
        try:
            dep: Obj = self.apps.read_namespaced_deployment(name, namespace).to_dict()
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise RouteError(f"cannot read Deployment {name}: {api_error(exc)}") from exc
        return dep

    def read(self, names: ServiceNames) -> TrafficState:
        return read(*self._objects(names), names)

    def apply(self, names: ServiceNames, intent: TrafficIntent) -> bool:
        route = names.route
        svc, stable_dep, candidate_dep = self._objects(names)
        selector, scale = plan_write(svc, stable_dep, candidate_dep, names, intent)
        try:
            # Scale before widening the selector, so the candidate never gets a burst.
            for dep, replicas in scale.items():
                self.apps.patch_namespaced_deployment_scale(
                    dep, route.namespace, {"spec": {"replicas": replicas}}
                )
            if selector is not None:
                self.core.patch_namespaced_service(
                    route.object_name,
                    route.namespace,
                    [{"op": "replace", "path": "/spec/selector", "value": selector}],
                    _content_type=JSON_PATCH,
                )
        except Exception as exc:
            raise RouteError(
                f"cannot change Service {route.object_name}: {api_error(exc)}"
            ) from exc
        return bool(scale) or selector is not None
