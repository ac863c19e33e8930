"""Istio ``VirtualService``: route weights, and ``mirror`` with ``mirrorPercentage``.

Only the http route that belongs to the model changes: named by
``spec.trafficRouting.istio.route``, or else the first route without a
header or query match whose destinations name the model's Services (so a
header-match route for testers in front of the default one is left alone).
"""

from __future__ import annotations

from typing import Any

from modelrollout.api.spec import IstioRouting, ModelRolloutSpec
from modelrollout.engine import TrafficIntent, TrafficState
from modelrollout.traffic.base import (
    CustomObjectRouter,
    Names,
    Obj,
    Sections,
    copy_obj,
    routing_of,
    share,
)


def service_of(host: str | None, namespace: str) -> str | None:
    """``svc``, ``svc.ns`` and ``svc.ns.svc.cluster.local`` all name Service ``svc``."""
    if not host:
        return None
    parts = host.split(".")
    if len(parts) == 1 or (len(parts) >= 2 and parts[1] == namespace):
        return parts[0]
    return host


def _plain(route: dict[str, Any]) -> bool:
    return not any(
        m.get("headers") or m.get("queryParams") or m.get("withoutHeaders")
        for m in route.get("match") or []
    )


def _svc(dest: dict[str, Any], ns: str) -> str | None:
    return service_of((dest.get("destination") or {}).get("host"), ns)


def _backends(route: dict[str, Any], namespace: str) -> list[str | None]:
    return [_svc(d, namespace) for d in route.get("route") or []]


ROUTES = Sections(
    group="networking.istio.io",
    version="v1",
    plural="virtualservices",
    kind="VirtualService",
    path="/spec/http",
    noun="http route",
    to="to",
    backends=_backends,
    plain=_plain,
)


def read(obj: Obj, names: Names) -> TrafficState:
    route = obj["spec"]["http"][ROUTES.find(obj, names)]
    dests = route.get("route") or []
    ns = names.namespace
    others = names.model_services - {names.stable}
    if len(dests) == 1:
        stable = 100 if _svc(dests[0], ns) == names.stable else 0
        candidate = 100 if _svc(dests[0], ns) in others else 0
    else:
        stable = sum(int(d.get("weight", 0)) for d in dests if _svc(d, ns) == names.stable)
        candidate = sum(int(d.get("weight", 0)) for d in dests if _svc(d, ns) in others)
    mirror = 0
    target = service_of((route.get("mirror") or {}).get("host"), ns)
    if target in others:
        pct = route.get("mirrorPercentage")
        mirror = round(float(pct.get("value", 100))) if pct else 100
    return TrafficState(share(candidate, stable), mirror)


def write(obj: Obj, names: Names, intent: TrafficIntent) -> Obj:
    new = copy_obj(obj)
    ns = names.namespace
    route = new["spec"]["http"][ROUTES.find(obj, names)]
    dests: list[dict[str, Any]] = list(route.get("route") or [])
    template = next((d for d in dests if _svc(d, ns) in names.model_services), None)

    def dest_for(service: str, weight: int) -> None:
        found = [d for d in dests if _svc(d, ns) == service]
        if found:
            found[0]["weight"] = weight
            for extra in found[1:]:
                dests.remove(extra)
            return
        destination: dict[str, Any] = {"host": service}
        if template is not None:
            tdest = template.get("destination") or {}
            host = str(tdest.get("host", ""))
            suffix = host[len(_svc(template, ns) or "") :] if "." in host else ""
            destination["host"] = service + suffix
            if "port" in tdest:
                destination["port"] = tdest["port"]
        elif names.port:
            destination["port"] = {"number": names.port}
        dests.append({"destination": destination, "weight": weight})

    dests[:] = [d for d in dests if _svc(d, ns) not in names.retired]
    dest_for(names.stable, intent.stable_weight)
    if names.candidate:
        dest_for(names.candidate, intent.candidate_weight)
    route["route"] = dests

    current_mirror = service_of((route.get("mirror") or {}).get("host"), ns)
    if names.candidate and intent.mirror_percent > 0:
        mirror: dict[str, Any] = {"host": names.candidate}
        if template is not None and "port" in (template.get("destination") or {}):
            mirror["port"] = template["destination"]["port"]
        route["mirror"] = mirror
        route["mirrorPercentage"] = {"value": float(intent.mirror_percent)}
    elif current_mirror in names.model_services:
        route.pop("mirror", None)
        route.pop("mirrorPercentage", None)
    return new


class IstioRouter(CustomObjectRouter):
    kind = "istio"
    settings = IstioRouting
    sections = ROUTES
    read_fn = staticmethod(read)
    write_fn = staticmethod(write)

    @classmethod
    def where(cls, spec: ModelRolloutSpec) -> tuple[str, str | None, int | None]:
        routing = routing_of(spec, IstioRouting)
        return routing.virtual_service, routing.route, routing.port
