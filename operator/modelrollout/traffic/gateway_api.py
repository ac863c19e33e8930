"""Gateway API ``HTTPRoute``: backendRef weights, and a ``RequestMirror`` filter for shadow.

Only the rule that belongs to the model changes, and in it only the
backendRefs that name the model's Services and the mirror filter that
points at one of them. Other rules, matches, filters and backends are left
exactly as they were.
"""

from __future__ import annotations

from typing import Any

from modelrollout.api.spec import GatewayAPIRouting, ModelRolloutSpec
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

MIRROR = "RequestMirror"


def _weight(ref: dict[str, Any]) -> int:
    w = ref.get("weight", 1)
    return int(w) if w is not None else 1


def _plain(rule: dict[str, Any]) -> bool:
    """A rule that matches everything (no header or query match): the default route."""
    return not any(m.get("headers") or m.get("queryParams") for m in rule.get("matches") or [])


def _backends(rule: dict[str, Any], namespace: str) -> list[str | None]:
    return [ref.get("name") for ref in rule.get("backendRefs") or []]


RULES = Sections(
    group="gateway.networking.k8s.io",
    version="v1",
    plural="httproutes",
    kind="HTTPRoute",
    path="/spec/rules",
    noun="rule",
    to="with a backendRef to",
    backends=_backends,
    plain=_plain,
)


def _mirror_target(f: dict[str, Any]) -> str | None:
    if f.get("type") != MIRROR:
        return None
    name = ((f.get("requestMirror") or {}).get("backendRef") or {}).get("name")
    return str(name) if name else None


def _mirror_percent(f: dict[str, Any]) -> int:
    rm = f.get("requestMirror") or {}
    if "percent" in rm:
        return int(rm["percent"])
    if "fraction" in rm:
        frac = rm["fraction"]
        pct: float = 100 * frac.get("numerator", 0) / (frac.get("denominator") or 100)
        return round(pct)
    return 100


def read(obj: Obj, names: Names) -> TrafficState:
    rule = obj["spec"]["rules"][RULES.find(obj, names)]
    refs = rule.get("backendRefs") or []
    stable = sum(_weight(r) for r in refs if r.get("name") == names.stable)
    others = names.model_services - {names.stable}
    candidate = sum(_weight(r) for r in refs if r.get("name") in others)
    mirror = 0
    for f in rule.get("filters") or []:
        target = _mirror_target(f)
        if target in others:
            mirror = max(mirror, _mirror_percent(f))
    return TrafficState(share(candidate, stable), mirror)


def write(obj: Obj, names: Names, intent: TrafficIntent) -> Obj:
    new = copy_obj(obj)
    rule = new["spec"]["rules"][RULES.find(obj, names)]
    refs: list[dict[str, Any]] = list(rule.get("backendRefs") or [])
    template = next((r for r in refs if r.get("name") in names.model_services), {})
    port = names.port or template.get("port")

    def ref_for(service: str, weight: int) -> None:
        found = [r for r in refs if r.get("name") == service]
        if found:
            for r in found:
                r["weight"] = weight
            for extra in found[1:]:
                refs.remove(extra)
        else:
            ref: dict[str, Any] = {"name": service}
            for key in ("group", "kind"):
                if key in template:
                    ref[key] = template[key]
            if port is not None:
                ref["port"] = port
            ref["weight"] = weight
            refs.append(ref)

    refs[:] = [r for r in refs if r.get("name") not in names.retired]
    ref_for(names.stable, intent.stable_weight)
    if names.candidate:
        ref_for(names.candidate, intent.candidate_weight)
    rule["backendRefs"] = refs

    filters = [
        f for f in rule.get("filters") or [] if _mirror_target(f) not in names.model_services
    ]
    if names.candidate and intent.mirror_percent > 0:
        backend: dict[str, Any] = {"name": names.candidate}
        if port is not None:
            backend["port"] = port
        filters.append(
            {
                "type": MIRROR,
                "requestMirror": {"backendRef": backend, "percent": intent.mirror_percent},
            }
        )
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)
    return new


class GatewayAPIRouter(CustomObjectRouter):
    kind = "gatewayAPI"
    settings = GatewayAPIRouting
    sections = RULES
    read_fn = staticmethod(read)
    write_fn = staticmethod(write)

    @classmethod
    def where(cls, spec: ModelRolloutSpec) -> tuple[str, str | None, int | None]:
        routing = routing_of(spec, GatewayAPIRouting)
        return routing.http_route, routing.rule, routing.port
