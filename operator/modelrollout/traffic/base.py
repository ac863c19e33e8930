"""The traffic router seam.

A router turns a :class:`~modelrollout.engine.TrafficIntent` into a change of
the user's own object and reads back what is in force. Each router is one
module with one :class:`BaseRouter` subclass, which says which field of
``spec.trafficRouting`` it serves (``kind``, ``settings``), builds its target
from the spec (``names``) and does the I/O (``read``, ``apply``). Routers over
one object keep two pure functions over the object as a dict:

- ``read(obj, names) -> TrafficState``: the candidate's share and mirror share;
- ``write(obj, names, intent) -> obj``: a copy with only the model's rule or
  route changed; everything else comes back exactly as it was.

:class:`CustomObjectRouter` does the I/O for routers whose object is one
custom resource: GET, then a JSON patch that replaces only the model's rule,
guarded by a ``test`` of ``resourceVersion`` so a concurrent edit is never
overwritten blindly (the next tick reads it and reports it). Which rule is the
model's is decided once for such objects, by :meth:`Sections.find`.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel

from modelrollout.api.spec import ModelRolloutSpec, VersionRef
from modelrollout.engine import TrafficIntent, TrafficState

Obj = dict[str, Any]
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
S = TypeVar("S", bound=BaseModel)

JSON_PATCH = "application/json-patch+json"


def api_error(exc: Exception) -> str:
    """One line from an ApiException (its str() carries every response header)."""
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
class Versions:
    """The versions a route deals with, as the engine names them (not yet Services)."""

    stable: str
    candidate: str | None = None
    retired: tuple[str, ...] = ()


@dataclass(frozen=True)
class Names:
    """Where the model's route is, and the Services of the versions it deals with.

    What every router needs; a router that needs more (the service router's
    Deployments) wraps this in a target of its own.
    """

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

    @classmethod
    def of(
        cls,
        spec: ModelRolloutSpec,
        *,
        namespace: str,
        versions: Versions,
        object_name: str,
        section: str | None = None,
        port: int | None = None,
    ) -> Names:
        """The versions' Services by the spec's templates, on the route a router names."""

        def service(version: str) -> str:
            return spec.service_for(version_ref(spec, version))

        return cls(
            namespace=namespace,
            object_name=object_name,
            stable=service(versions.stable),
            candidate=service(versions.candidate) if versions.candidate else None,
            retired=tuple(service(v) for v in versions.retired),
            section=section,
            port=port,
            stable_version=versions.stable,
            candidate_version=versions.candidate,
        )

    @property
    def model_services(self) -> set[str]:
        names = {self.stable, *self.retired}
        if self.candidate:
            names.add(self.candidate)
        return names


def version_ref(spec: ModelRolloutSpec, version: str) -> VersionRef:
    """The spec's entry for a version; a version it no longer names goes by the templates."""
    if spec.candidate.version == version:
        return spec.candidate
    if spec.stable is not None and spec.stable.version == version:
        return spec.stable
    return VersionRef(version=version)


def routing_of(spec: ModelRolloutSpec, model: type[S]) -> S:
    """The spec's router settings, as the router that serves them reads them."""
    settings = spec.traffic_routing.settings
    if not isinstance(settings, model):
        raise TypeError(f"trafficRouting.{spec.traffic_routing.kind} is not a {model.__name__}")
    return settings


@dataclass(frozen=True)
class Clients:
    """The Kubernetes API clients the routers are built from, shared by all of them."""

    custom: Any  # kubernetes.client.CustomObjectsApi
    core: Any  # kubernetes.client.CoreV1Api
    apps: Any  # kubernetes.client.AppsV1Api


class Router(Protocol[T_contra]):
    """What the operator shell needs from a router: the target is opaque to it."""

    def read(self, names: T_contra) -> TrafficState: ...

    def apply(self, names: T_contra, intent: TrafficIntent) -> bool:
        """Make the route hold the intent; True when something was changed."""
        ...


class BaseRouter(ABC, Generic[T]):
    """One router: the field of ``spec.trafficRouting`` it serves, and the I/O on its object.

    ``T`` is the router's target, built by :meth:`names` and read only by the router.
    """

    kind: ClassVar[str]
    """The wire name of the ``trafficRouting`` field this router serves, e.g. ``gatewayAPI``."""
    settings: ClassVar[type[BaseModel]]
    """The pydantic model of that field."""

    @classmethod
    @abstractmethod
    def build(cls, clients: Clients) -> Self:
        """The router, on the shared Kubernetes clients."""

    @classmethod
    @abstractmethod
    def names(cls, spec: ModelRolloutSpec, *, namespace: str, versions: Versions) -> T:
        """Where the model's route is and what it sends to, from a spec this router serves."""

    @abstractmethod
    def read(self, names: T) -> TrafficState: ...

    @abstractmethod
    def apply(self, names: T, intent: TrafficIntent) -> bool:
        """Make the route hold the intent; True when something was changed."""


def share(candidate: float, stable: float) -> int:
    total = candidate + stable
    return 0 if total <= 0 else round(100 * candidate / total)


def copy_obj(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


@dataclass(frozen=True)
class Sections:
    """A custom resource that splits traffic in a list of rules or routes, one of them the model's.

    HTTPRoute ``rules`` and VirtualService ``http`` routes differ only in where
    the list is, how a section names its backends, and what a match looks like.
    """

    group: str
    version: str
    plural: str
    kind: str
    """The object's kind, for messages: ``HTTPRoute``."""
    path: str
    """JSON pointer of the list, e.g. ``/spec/rules``."""
    noun: str
    """What one entry is called in messages: ``rule``."""
    to: str
    """How an entry reaches a Service, in messages: ``with a backendRef to``."""
    backends: Callable[[Obj, str], Iterable[str | None]]
    """The Services an entry sends to (entry, namespace)."""
    plain: Callable[[Obj], bool]
    """An entry without header or query match: the default route."""

    def items(self, obj: Obj) -> list[Obj]:
        node: Any = obj
        for part in (p for p in self.path.split("/") if p):
            node = node.get(part) if isinstance(node, dict) else None
        return list(node or [])

    def find(self, obj: Obj, names: Names) -> int:
        """Index of the model's entry.

        The one named ``names.section``; else the first plain entry that sends
        to one of the model's Services (so a header-match route for testers in
        front of the default one is left alone); else the first that does.
        """
        entries = self.items(obj)
        where = f"{self.kind} {names.object_name}"
        if names.section:
            for i, entry in enumerate(entries):
                if entry.get("name") == names.section:
                    return i
            raise RouteError(f"{where} has no {self.noun} named {names.section!r}")
        services = names.model_services
        hits = [
            i
            for i, entry in enumerate(entries)
            if any(s in services for s in self.backends(entry, names.namespace))
        ]
        if not hits:
            raise RouteError(f"{where} has no {self.noun} {self.to} {', '.join(sorted(services))}")
        plain = [i for i in hits if self.plain(entries[i])]
        return (plain or hits)[0]


class CustomObjectRouter(BaseRouter[Names]):
    """GET the object, compute the new one with a pure function, patch only what changed."""

    sections: ClassVar[Sections]
    read_fn: Callable[[Obj, Names], TrafficState]
    write_fn: Callable[[Obj, Names, TrafficIntent], Obj]

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(clients.custom)

    @classmethod
    @abstractmethod
    def where(cls, spec: ModelRolloutSpec) -> tuple[str, str | None, int | None]:
        """(object name, rule or route name, port) from a spec this router serves."""

    @classmethod
    def names(cls, spec: ModelRolloutSpec, *, namespace: str, versions: Versions) -> Names:
        object_name, section, port = cls.where(spec)
        return Names.of(
            spec,
            namespace=namespace,
            versions=versions,
            object_name=object_name,
            section=section,
            port=port,
        )

    def get(self, names: Names) -> Obj:
        s = self.sections
        try:
            obj: Obj = self.api.get_namespaced_custom_object(
                s.group, s.version, names.namespace, s.plural, names.object_name
            )
        except Exception as exc:  # ApiException and transport errors alike
            status = getattr(exc, "status", None)
            if status == 404:
                raise RouteError(
                    f"{s.plural}.{s.group} {names.namespace}/{names.object_name} not found"
                ) from exc
            raise RouteError(
                f"cannot read {s.plural} {names.object_name}: {api_error(exc)}"
            ) from exc
        return obj

    def read(self, names: Names) -> TrafficState:
        return self.read_fn(self.get(names), names)

    def apply(self, names: Names, intent: TrafficIntent) -> bool:
        s = self.sections
        obj = self.get(names)
        index = s.find(obj, names)
        new = self.write_fn(obj, names, intent)
        old_entry, new_entry = s.items(obj)[index], s.items(new)[index]
        if old_entry == new_entry:
            return False
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": obj["metadata"]["resourceVersion"],
            },
            {"op": "replace", "path": f"{s.path}/{index}", "value": new_entry},
        ]
        try:
            self.api.patch_namespaced_custom_object(
                s.group,
                s.version,
                names.namespace,
                s.plural,
                names.object_name,
                patch,
                _content_type=JSON_PATCH,
            )
        except Exception as exc:
            raise RouteError(
                f"cannot patch {s.plural} {names.object_name}: {api_error(exc)}"
            ) from exc
        return True
