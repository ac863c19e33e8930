"""A KServe ``InferenceService`` (``serving.kserve.io/v1beta1``), split by ``canaryTrafficPercent``.

KServe has one predictor spec per InferenceService and keeps revisions
behind it (Serverless mode, on Knative): the last *rolled-out* revision, the
one that last had 100% of traffic, and the latest one, the spec as it is now.
``spec.predictor.canaryTrafficPercent`` sends that share to the latest
revision and the rest to the last rolled-out one. So:

- the candidate is the predictor spec with the user's templated fields
  (``storageUriTemplate``, ``runtimeVersionTemplate``, ``imageTemplate``)
  rendered for the candidate's version; its weight is ``canaryTrafficPercent``;
- promotion writes the new stable's fields and drops the percent: KServe
  rolls the latest revision out at 100% and remembers it as rolled out;
- a rollback (and an abort) keeps the candidate's spec and sets the percent to
  0: KServe sends everything back to the last rolled-out revision, whose pods
  are still running, so the rollback is instant. Removing the candidate for
  good (a deleted ModelRollout) writes the stable's fields back.
- KServe cannot mirror; the CRD refuses shadow with this router.

Whatever it writes, the predictor's pods also get the version as a label
(``versionLabel``, in ``spec.predictor.labels``), so the metrics scraped from
each revision's pods can be told apart by the gates.

Which version the predictor holds is read back by comparing its templated
fields with each version's rendering; a spec that holds neither the stable nor
the candidate counts as off stable (its ``canaryTrafficPercent``, or all of it).
Before any version is known (``spec.stable`` omitted), the version is parsed
back out of the templated fields instead (:func:`backends`).

RawDeployment mode ignores ``canaryTrafficPercent`` (KServe replaces the one
Deployment): there, one InferenceService per version behind an HTTPRoute and
the ``gatewayAPI`` router do the split (docs/kserve.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from modelrollout.api.spec import KServeRouting, ModelRolloutSpec
from modelrollout.engine import RouteBackend, TrafficIntent, TrafficState
from modelrollout.engine.seed import version_of
from modelrollout.traffic.base import (
    JSON_PATCH,
    BaseRouter,
    Clients,
    Obj,
    RouteError,
    Versions,
    api_error,
    copy_obj,
    routing_of,
)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CANARY = "canaryTrafficPercent"


@dataclass(frozen=True)
class Rendering:
    """The predictor fields of one version, as the templates render them (None: not templated)."""

    version: str
    storage_uri: str | None = None
    runtime_version: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class KServeTarget:
    """The kserve router's target: the InferenceService and the versions' renderings."""

    namespace: str
    inference_service: str
    stable: Rendering
    candidate: Rendering | None = None
    version_label: str | None = "version"
    """Pod label the predictor gets with the version it holds (``spec.predictor.labels``)."""
    pattern: Rendering | None = None
    """The templated fields with ``{version}`` left in (set by ``route_names`` alone):
    :func:`backends` reads the version back out of the predictor with them."""


def render(routing: KServeRouting, *, model: str, version: str) -> Rendering:
    """A version's predictor fields. Plain replacement, not ``str.format``: a template is
    tenant input, and ``{version.__class__}`` must stay text."""

    def fill(template: str | None) -> str | None:
        if template is None:
            return None
        return template.replace("{model}", model).replace("{version}", version)

    return Rendering(
        version=version,
        storage_uri=fill(routing.storage_uri_template),
        runtime_version=fill(routing.runtime_version_template),
        image=fill(routing.image_template),
    )


def _predictor(isvc: Obj, name: str) -> dict[str, Any]:
    predictor = (isvc.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        raise RouteError(f"InferenceService {name} has no spec.predictor")
    return predictor


def _image_holder(predictor: dict[str, Any], name: str) -> dict[str, Any]:
    """Where a version's image goes: the model, or a custom predictor's first container."""
    if isinstance(predictor.get("model"), dict):
        model: dict[str, Any] = predictor["model"]
        return model
    containers = predictor.get("containers")
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        first: dict[str, Any] = containers[0]
        return first
    raise RouteError(
        f"InferenceService {name}: imageTemplate needs spec.predictor.model or "
        "spec.predictor.containers"
    )


def _model(predictor: dict[str, Any], name: str, field: str) -> dict[str, Any]:
    model = predictor.get("model")
    if not isinstance(model, dict):
        raise RouteError(
            f"InferenceService {name}: {field} needs spec.predictor.model "
            "(KServe's model spec since v0.8)"
        )
    return model


def _holder(predictor: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    return _image_holder(predictor, name) if key == "image" else _model(predictor, name, key)


def _fields(r: Rendering) -> dict[str, str]:
    return {
        k: v
        for k, v in (
            ("storageUri", r.storage_uri),
            ("runtimeVersion", r.runtime_version),
            ("image", r.image),
        )
        if v is not None
    }


def _holds(predictor: dict[str, Any], r: Rendering, name: str) -> bool:
    fields = _fields(r).items()
    return all(_holder(predictor, key, name).get(key) == value for key, value in fields)


def held_version(isvc: Obj, target: KServeTarget) -> str | None:
    """The version whose rendering the predictor holds now (None: neither)."""
    predictor = _predictor(isvc, target.inference_service)
    for r in (target.candidate, target.stable):
        if r is not None and _holds(predictor, r, target.inference_service):
            return r.version
    return None


def read(isvc: Obj, target: KServeTarget) -> TrafficState:
    predictor = _predictor(isvc, target.inference_service)
    held = held_version(isvc, target)
    if held == target.stable.version:
        return TrafficState(0, 0)
    percent = predictor.get(CANARY)
    return TrafficState(100 if percent is None else int(percent), 0)


LAST_ROLLED_OUT = "last rolled-out revision"


def backends(isvc: Obj, target: KServeTarget) -> tuple[RouteBackend, ...]:
    """The version the predictor's templated fields hold, before any version is known.

    Every templated field must parse back to one and the same version. With a
    ``canaryTrafficPercent`` below 100 the rest goes to KServe's last rolled-out
    revision, whose version the InferenceService does not say: a second backend
    without a version, so the engine reports the split instead of guessing.
    """
    name = target.inference_service
    assert target.pattern is not None, "backends needs the target of route_names"
    predictor = _predictor(isvc, name)
    found: set[str | None] = set()
    for key, pattern in _fields(target.pattern).items():
        held = _holder(predictor, key, name).get(key)
        found.add(version_of(pattern, model="", service=held) if isinstance(held, str) else None)
    if len(found) != 1 or None in found:
        fields = ", ".join(
            f"{key} {_holder(predictor, key, name).get(key)!r}" for key in _fields(target.pattern)
        )
        raise RouteError(
            f"InferenceService {name}: its predictor's {fields} is not what the templates "
            "make for any one version"
        )
    (version,) = found
    percent = predictor.get(CANARY)
    latest = 100 if percent is None else int(percent)
    if latest >= 100:
        return (RouteBackend(name, 100, version=version),)
    return (
        RouteBackend(name, latest, version=version),
        RouteBackend(f"{name} ({LAST_ROLLED_OUT})", 100 - latest),
    )


def write(isvc: Obj, target: KServeTarget, intent: TrafficIntent) -> Obj:
    """A copy of the InferenceService whose predictor holds the intent; nothing else changes."""
    if intent.mirror_percent > 0:
        raise RouteError("KServe cannot mirror traffic; shadow needs gatewayAPI or istio")
    new = copy_obj(isvc)
    predictor = _predictor(new, target.inference_service)
    if target.candidate is None or intent.candidate_version is None:
        rendering, percent = target.stable, None
    else:
        rendering, percent = target.candidate, intent.candidate_weight
    for key, value in _fields(rendering).items():
        _holder(predictor, key, target.inference_service)[key] = value
    if target.version_label:
        labels = predictor.get("labels")
        predictor["labels"] = {**(labels if isinstance(labels, dict) else {})}
        predictor["labels"][target.version_label] = rendering.version
    if percent is None:
        predictor.pop(CANARY, None)
    else:
        predictor[CANARY] = percent
    return new


class KServeRouter(BaseRouter[KServeTarget]):
    kind = "kserve"
    settings = KServeRouting

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi

    @classmethod
    def build(cls, clients: Clients) -> Self:
        return cls(clients.custom)

    @classmethod
    def names(cls, spec: ModelRolloutSpec, *, namespace: str, versions: Versions) -> KServeTarget:
        routing = routing_of(spec, KServeRouting)
        return KServeTarget(
            namespace=namespace,
            inference_service=routing.inference_service,
            stable=render(routing, model=spec.model, version=versions.stable),
            candidate=render(routing, model=spec.model, version=versions.candidate)
            if versions.candidate
            else None,
            version_label=routing.version_label or None,
        )

    @classmethod
    def route_names(cls, spec: ModelRolloutSpec, *, namespace: str) -> KServeTarget:
        routing = routing_of(spec, KServeRouting)
        # Plain replacement leaves "{version}" in place: the pattern to parse it back with.
        pattern = render(routing, model=spec.model, version="{version}")
        return KServeTarget(
            namespace=namespace,
            inference_service=routing.inference_service,
            stable=Rendering(version=""),
            version_label=routing.version_label or None,
            pattern=pattern,
        )

    def get(self, target: KServeTarget) -> Obj:
        try:
            obj: Obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, target.namespace, PLURAL, target.inference_service
            )
        except Exception as exc:  # ApiException and transport errors alike
            if getattr(exc, "status", None) == 404:
                raise RouteError(
                    f"{PLURAL}.{GROUP} {target.namespace}/{target.inference_service} not found"
                ) from exc
            raise RouteError(
                f"cannot read InferenceService {target.inference_service}: {api_error(exc)}"
            ) from exc
        return obj

    def read(self, names: KServeTarget) -> TrafficState:
        return read(self.get(names), names)

    def backends(self, names: KServeTarget) -> tuple[RouteBackend, ...]:
        return backends(self.get(names), names)

    def apply(self, names: KServeTarget, intent: TrafficIntent) -> bool:
        obj = self.get(names)
        new = write(obj, names, intent)
        old_predictor, new_predictor = obj["spec"]["predictor"], new["spec"]["predictor"]
        if old_predictor == new_predictor:
            return False
        # Only the predictor, and only if nobody changed the object since it was read.
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": obj["metadata"]["resourceVersion"],
            },
            {"op": "replace", "path": "/spec/predictor", "value": new_predictor},
        ]
        try:
            self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                names.namespace,
                PLURAL,
                names.inference_service,
                patch,
                _content_type=JSON_PATCH,
            )
        except Exception as exc:
            raise RouteError(
                f"cannot patch InferenceService {names.inference_service}: {api_error(exc)}"
            ) from exc
        return True
