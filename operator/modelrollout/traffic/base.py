"""The traffic router seam.

A router turns a :class:`~modelrollout.engine.TrafficIntent` into a change of
the user's own object and reads back what is in force. Each router is one
module with two pure functions over the object as a dict:

- ``read(obj, names) -> TrafficState``: the candidate's share and mirror share;
- ``write(obj, names, intent) -> obj``: a copy with only the model's rule or
  route changed; everything else comes back exactly as it was.

:class:`CustomObjectRouter` does the I/O for routers whose object is one
custom resource: GET, then a JSON patch that replaces only the model's rule,
guarded by a ``test`` of ``resourceVersion`` so a concurrent edit is never
overwritten blindly (the next tick reads it and reports it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modelrollout.engine import RouteBackend, TrafficIntent, TrafficState

Obj = dict[str, Any]


JSON_PATCH = "application/json-patch+json"


def api_error(exc: Exception) -> str:
    """One line from an ApiException (its str() carries every response header)."""
    import json

    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if status is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        message = json.loads(body)["message"] if body else getattr(exc, "reason", "")
    except (ValueError, KeyError, TypeError):
        message = getattr(exc, "reason", "")
    return f"{status} {message}"


class RouteError(Exception):
    """The route cannot be read or changed: missing object, no rule for the model, ..."""


@dataclass(frozen=True)
class Names:
    """Service names of the versions the router deals with."""

    namespace: str
    object_name: str
    stable: str
    candidate: str | None
    retired: tuple[str, ...] = ()
    section: str | None = None
    """The rule or route name that belongs to the model (None: find it by its backends)."""
    port: int | None = None
    stable_version: str = ""
    candidate_version: str | None = None
    stable_workload: str | None = None
    """Deployment of the stable version (service router only)."""
    candidate_workload: str | None = None
    version_label: str = "version"

    @property
    def model_services(self) -> set[str]:
        names = {self.stable, *self.retired}
        if self.candidate:
            names.add(self.candidate)
        return names


class Router(Protocol):
    """What the operator shell needs from a router."""

    kind: str

    def read(self, names: Names) -> TrafficState: ...

    def apply(self, names: Names, intent: TrafficIntent) -> bool:
        """Make the route hold the intent; True when something was changed."""
        ...

    def backends(self, names: Names) -> tuple[RouteBackend, ...]:
        """The backends of the rules that may be the model's, before any version is known.

        ``names`` carries only the object, the section and the namespace. Each backend
        says which rule it is in; the engine picks the model's rule by its backends'
        names and seeds the first stable version from it.
        """
        ...


def split(weight: int) -> tuple[int, int]:
    """(stable, candidate) weights for a candidate share in percent."""
    return 100 - weight, weight


def share(candidate: float, stable: float) -> int:
    total = candidate + stable
    return 0 if total <= 0 else round(100 * candidate / total)


class CustomObjectRouter:
    """GET the object, compute the new one with a pure function, patch only what changed."""

    kind = "custom"
    group = ""
    version = ""
    plural = ""
    section_path = ""
    """JSON pointer of the list that holds rules/routes, e.g. ``/spec/rules``."""

    read_fn: Callable[[Obj, Names], TrafficState]
    backends_fn: Callable[[Obj, Names], tuple[RouteBackend, ...]]
    write_fn: Callable[[Obj, Names, TrafficIntent], Obj]
    find_fn: Callable[[Obj, Names], int]

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi

    def get(self, names: Names) -> Obj:
        try:
            obj: Obj = self.api.get_namespaced_custom_object(
                self.group, self.version, names.namespace, self.plural, names.object_name
            )
        except Exception as exc:  # ApiException and transport errors alike
            status = getattr(exc, "status", None)
            if status == 404:
                raise RouteError(
                    f"{self.plural}.{self.group} {names.namespace}/{names.object_name} not found"
                ) from exc
            raise RouteError(
                f"cannot read {self.plural} {names.object_name}: {api_error(exc)}"
            ) from exc
        return obj

    def read(self, names: Names) -> TrafficState:
        return self.read_fn(self.get(names), names)

    def backends(self, names: Names) -> tuple[RouteBackend, ...]:
        return self.backends_fn(self.get(names), names)

    def apply(self, names: Names, intent: TrafficIntent) -> bool:
        obj = self.get(names)
        index = self.find_fn(obj, names)
        new = self.write_fn(obj, names, intent)
        parts = [p for p in self.section_path.split("/") if p]
        old_list, new_list = _dig(obj, parts), _dig(new, parts)
        if old_list[index] == new_list[index]:
            return False
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": obj["metadata"]["resourceVersion"],
            },
            {"op": "replace", "path": f"{self.section_path}/{index}", "value": new_list[index]},
        ]
        try:
            self.api.patch_namespaced_custom_object(
                self.group,
                self.version,
                names.namespace,
                self.plural,
                names.object_name,
                patch,
                _content_type=JSON_PATCH,
            )
        except Exception as exc:
            raise RouteError(
                f"cannot patch {self.plural} {names.object_name}: {api_error(exc)}"
            ) from exc
        return True


def candidate_rules(
    rules: list[Obj], names: Names, plain: Callable[[Obj], bool], what: str
) -> list[tuple[int, Obj]]:
    """The rule named ``names.section``, else every rule without a header or query match.

    Used before any version is known: the engine picks the model's rule among these by
    the names of its backends (``spec.serviceTemplate``).
    """
    if names.section:
        for i, rule in enumerate(rules):
            if rule.get("name") == names.section:
                return [(i, rule)]
        raise RouteError(f"{names.object_name} has no {what} named {names.section!r}")
    return [(i, r) for i, r in enumerate(rules) if plain(r)]


def _dig(obj: Obj, parts: list[str]) -> list[Any]:
    node: Any = obj
    for p in parts:
        node = node[p]
    assert isinstance(node, list)
    return node


def copy_obj(obj: Obj) -> Obj:
    return copy.deepcopy(obj)
