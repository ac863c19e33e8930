"""A traffic generator that behaves like the gateway the route object describes.

Why: without a data plane, nothing would act on the weights and mirror rules
the operator writes, and the metrics it judges would not move. This generator
closes the loop with no mesh and no containers: about once a second it reads
the route object (HTTPRoute, VirtualService or Service + Deployments) from the
real API server and, until the next read, splits and mirrors requests exactly
as that object says. A wrong weight or a forgotten mirror filter therefore
shows up in the model servers' metrics just as it would in a cluster.

It also does what a shadow-comparison sidecar would: it pairs each mirrored
answer with the primary answer of the same ``x-request-id`` and exports
``model_shadow_comparisons_total`` / ``model_shadow_unpaired_total``.

Layout, so that the logic is testable without Kubernetes or sockets:

* pure functions turn dict-shaped route objects into a :class:`Split`
  (:func:`split_from_httproute`, :func:`split_from_virtualservice`,
  :func:`split_from_service`) and a split plus a random source into one
  request's plan (:func:`plan_request`);
* :class:`ShadowPairer` pairs answers by request id (no I/O, injected clock);
* :class:`KubeRouteReader` is the only part that talks to the API server;
* :class:`TrafficGenerator` does the sending, on threads, bounded in time.

Run: ``python -m modelrollout_devenv.sim.traffic --kubeconfig PATH --namespace NS
--router gatewayAPI --route NAME --backends '{"svc-v1": "http://127.0.0.1:41001"}'``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)

from modelrollout_devenv.sim.model_server import (
    FEATURE_NAMES,
    HOST,
    JsonHandler,
    install_stop_signals,
    read_body,
    write_port_file,
)

log = logging.getLogger(__name__)

Router = Literal["gatewayAPI", "istio", "service", "kserve"]
ROUTERS: tuple[Router, ...] = ("gatewayAPI", "istio", "service", "kserve")

GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
ISTIO_GROUP, ISTIO_VERSION, VIRTUALSERVICES = "networking.istio.io", "v1", "virtualservices"
KSERVE_GROUP, KSERVE_VERSION, INFERENCESERVICES = (
    "serving.kserve.io",
    "v1beta1",
    "inferenceservices",
)


# ============================================================================ route → split


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` % of requests to ``backend``; the copies' answers are not returned."""

    backend: str
    percent: float


@dataclass(frozen=True)
class Split:
    """How requests are shared at one moment, as the route object says.

    ``weights`` are relative (they need not sum to 100) and may name backends
    that are not in ``--backends``: a gateway sends that share to a Service it
    cannot reach and the user gets an error, and so does this generator.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    mirrors: tuple[Mirror, ...] = ()
    source: str = ""

    def shares(self) -> dict[str, float]:
        """Percent of primary traffic per backend (summing to 100, or empty)."""
        total = sum(w for w in self.weights.values() if w > 0)
        if total <= 0:
            return {}
        return {b: 100.0 * max(w, 0.0) / total for b, w in self.weights.items()}

    def mirror_percent(self, backend: str) -> float:
        """Percent of requests mirrored to ``backend`` (0 when it is not a mirror)."""
        return sum(m.percent for m in self.mirrors if m.backend == backend)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "shares": self.shares(),
            "mirrors": [{"backend": m.backend, "percent": m.percent} for m in self.mirrors],
            "source": self.source,
        }


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _clamp_percent(value: float) -> float:
    return min(max(value, 0.0), 100.0)


def _gateway_backend_name(ref: Mapping[str, Any], route_namespace: str | None) -> str:
    """The Service a Gateway API backendRef points at, or a name no backend can have.

    Only core Services in the route's own namespace count as ours; anything
    else (another kind, another namespace) keeps a qualified name so it can
    never be mistaken for one of ``--backends``.
    """
    name = str(ref.get("name", ""))
    kind = ref.get("kind", "Service")
    group = ref.get("group", "")
    namespace = ref.get("namespace")
    if kind != "Service" or group not in ("", "core"):
        return f"{kind}.{group}/{name}"
    if namespace and route_namespace and namespace != route_namespace:
        return f"{namespace}/{name}"
    return name


def _gateway_mirror_percent(mirror: Mapping[str, Any]) -> float:
    """Gateway API v1.3+: ``percent`` or ``fraction``; neither means every request."""
    if "percent" in mirror:
        return _clamp_percent(_number(mirror["percent"], 100.0))
    fraction = mirror.get("fraction")
    if isinstance(fraction, dict):
        numerator = _number(fraction.get("numerator"), 0.0)
        denominator = _number(fraction.get("denominator"), 100.0)
        return _clamp_percent(100.0 * numerator / denominator) if denominator > 0 else 0.0
    return 100.0


def split_from_httproute(
    route: Mapping[str, Any], backends: Collection[str], *, rule_name: str | None = None
) -> Split:
    """The split one Gateway API ``HTTPRoute`` asks for.

    The rule is the one named ``rule_name`` or else the first whose backendRefs
    (or mirror) name a Service in ``backends``; the generator does not model
    paths, so other rules are someone else's traffic. backendRef ``weight``
    defaults to 1; weight 0 is never picked. Rule-level ``RequestMirror``
    filters become mirrors.
    """
    namespace = _as_dict(route.get("metadata")).get("namespace")
    name = _as_dict(route.get("metadata")).get("name", "?")
    for index, rule in enumerate(_as_list(_as_dict(route.get("spec")).get("rules"))):
        rule = _as_dict(rule)
        refs = [_as_dict(r) for r in _as_list(rule.get("backendRefs"))]
        mirrors: list[Mirror] = []
        for f in _as_list(rule.get("filters")):
            f = _as_dict(f)
            if f.get("type") != "RequestMirror":
                continue
            spec = _as_dict(f.get("requestMirror"))
            target = _gateway_backend_name(_as_dict(spec.get("backendRef")), namespace)
            mirrors.append(Mirror(target, _gateway_mirror_percent(spec)))
        names = [_gateway_backend_name(r, namespace) for r in refs]
        if rule_name is not None:
            matches = rule.get("name") == rule_name
        else:
            matches = any(n in backends for n in (*names, *(m.backend for m in mirrors)))
        if not matches:
            continue
        weights: dict[str, float] = {}
        for ref, backend in zip(refs, names, strict=True):
            weights[backend] = weights.get(backend, 0.0) + max(_number(ref.get("weight"), 1.0), 0)
        label = rule.get("name") or f"#{index}"
        return Split(weights, tuple(mirrors), f"HTTPRoute/{name} rule {label}")
    return Split(source=f"HTTPRoute/{name}: no rule routes to {sorted(backends)}")


def normalize_host(host: str, namespace: str | None) -> str:
    """An Istio destination host as a Service name when it is one in ``namespace``.

    ``svc``, ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` all
    mean Service ``svc`` of ``ns``; a host in another namespace or outside the
    cluster is returned unchanged, so it matches no backend.
    """
    parts = host.strip().rstrip(".").split(".")
    if len(parts) == 1:
        return parts[0]
    svc, ns, rest = parts[0], parts[1], parts[2:]
    in_cluster = not rest or rest[0] == "svc"
    if in_cluster and (namespace is None or ns == namespace):
        return svc
    return host


def _istio_backend(
    dest: Mapping[str, Any], namespace: str | None, backends: Collection[str]
) -> str:
    """Backend of an Istio destination; ``host`` + ``subset`` maps to ``<svc>-<subset>``."""
    svc = normalize_host(str(dest.get("host", "")), namespace)
    subset = dest.get("subset")
    if subset and f"{svc}-{subset}" in backends:
        return f"{svc}-{subset}"
    return svc


def split_from_virtualservice(
    vs: Mapping[str, Any],
    backends: Collection[str],
    *,
    namespace: str | None = None,
    route_name: str | None = None,
) -> Split:
    """The split one Istio ``VirtualService`` asks for.

    The http route is the one named ``route_name`` or else the first whose
    destinations (or mirror) name a Service in ``backends``. A single
    destination gets all traffic whatever its weight (Istio's rule); with
    several, a missing weight is 0. ``mirror`` + ``mirrorPercentage.value``
    (missing: 100; the deprecated integer ``mirrorPercent`` is read too) and
    the newer ``mirrors[]`` list both become mirrors.
    """
    meta = _as_dict(vs.get("metadata"))
    ns = namespace if namespace is not None else meta.get("namespace")
    name = meta.get("name", "?")
    for index, raw in enumerate(_as_list(_as_dict(vs.get("spec")).get("http"))):
        http_route = _as_dict(raw)
        routes = [_as_dict(r) for r in _as_list(http_route.get("route"))]
        names = [_istio_backend(_as_dict(r.get("destination")), ns, backends) for r in routes]
        mirrors: list[Mirror] = []
        if "mirror" in http_route:
            if "mirrorPercentage" in http_route:
                pct = _number(_as_dict(http_route["mirrorPercentage"]).get("value"), 0.0)
            else:
                pct = _number(http_route.get("mirrorPercent"), 100.0)
            target = _istio_backend(_as_dict(http_route["mirror"]), ns, backends)
            mirrors.append(Mirror(target, _clamp_percent(pct)))
        for m in _as_list(http_route.get("mirrors")):
            m = _as_dict(m)
            pct = _number(_as_dict(m.get("percentage")).get("value"), 100.0)
            target = _istio_backend(_as_dict(m.get("destination")), ns, backends)
            mirrors.append(Mirror(target, _clamp_percent(pct)))
        if route_name is not None:
            matches = http_route.get("name") == route_name
        else:
            matches = any(n in backends for n in (*names, *(m.backend for m in mirrors)))
        if not matches:
            continue
        weights: dict[str, float] = {}
        for r, backend in zip(routes, names, strict=True):
            w = 100.0 if len(routes) == 1 else max(_number(r.get("weight"), 0.0), 0.0)
            weights[backend] = weights.get(backend, 0.0) + w
        label = http_route.get("name") or f"#{index}"
        return Split(weights, tuple(mirrors), f"VirtualService/{name} http {label}")
    return Split(source=f"VirtualService/{name}: no http route to {sorted(backends)}")


def backend_for_version(service: str, version: str, backends: Collection[str]) -> str | None:
    """The backend that serves ``version`` behind a plain Service.

    The rule: ``<service>-<version>`` if it is in ``backends``; otherwise the
    only backend whose name ends with ``-<version>``; otherwise none (a
    Deployment whose pods the generator cannot reach).
    """
    exact = f"{service}-{version}"
    if exact in backends:
        return exact
    found = [b for b in backends if b.endswith(f"-{version}")]
    return found[0] if len(found) == 1 else None


def _ready_replicas(deployment: Mapping[str, Any]) -> float:
    """Pods a Service would send to: ``status.readyReplicas``.

    The API server leaves zero-valued fields out, so a missing
    ``readyReplicas`` means 0 once the Deployment controller has written a
    status; only a Deployment with no status at all (no controller running)
    falls back to ``spec.replicas`` (default 1).
    """
    status = _as_dict(deployment.get("status"))
    if "readyReplicas" in status:
        return max(_number(status["readyReplicas"], 0.0), 0.0)
    if status.get("observedGeneration") is not None or "replicas" in status:
        return 0.0
    return max(_number(_as_dict(deployment.get("spec")).get("replicas"), 1.0), 0.0)


def split_from_service(
    service: Mapping[str, Any],
    deployments: Iterable[Mapping[str, Any]],
    backends: Collection[str],
    *,
    version_label: str = "version",
) -> Split:
    """The split a plain ``Service`` makes: by ready pods of the Deployments it selects.

    A Deployment is selected when its pod template carries every label of
    ``spec.selector``; a selector without the version label spans several
    versions, and each then gets its share of ready replicas (what kube-proxy
    does, approximately). A Deployment maps to a backend by its pod label
    ``version_label`` through :func:`backend_for_version`; one that maps to no
    backend keeps the key ``deployment/<name>`` (its share fails). A Service
    with an empty selector selects nothing.
    """
    meta = _as_dict(service.get("metadata"))
    svc_name = str(meta.get("name", "?"))
    selector = _as_dict(_as_dict(service.get("spec")).get("selector"))
    if not selector:
        return Split(source=f"Service/{svc_name}: empty selector")
    weights: dict[str, float] = {}
    for dep in deployments:
        spec = _as_dict(dep.get("spec"))
        labels = _as_dict(_as_dict(_as_dict(spec.get("template")).get("metadata")).get("labels"))
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        dep_name = str(_as_dict(dep.get("metadata")).get("name", "?"))
        version = labels.get(version_label)
        backend = backend_for_version(svc_name, str(version), backends) if version else None
        key = backend or f"deployment/{dep_name}"
        weights[key] = weights.get(key, 0.0) + _ready_replicas(dep)
    selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return Split(weights, (), f"Service/{svc_name} selector {selector_text}")


@dataclass(frozen=True)
class Revisions:
    """What Knative and KServe remember of an InferenceService between reads.

    ``rolled_out`` is the version of the last revision that had 100% of the
    traffic (KServe's ``latestRolledoutRevision``), ``previous`` the one before
    (``previousRolledoutRevision``). Revisions are named by version here: a
    revision is the predictor spec of one version.
    """

    rolled_out: str | None = None
    previous: str | None = None


def version_from_storage_uri(template: str) -> Callable[[Mapping[str, Any]], str | None]:
    """The version an InferenceService's ``spec.predictor.model.storageUri`` holds.

    ``template`` is the kserve router's ``storageUriTemplate`` with ``{model}``
    already filled in; ``{version}`` matches one path segment.
    """
    head, sep, tail = template.partition("{version}")
    if not sep:
        raise ValueError(f"storage URI template {template!r} has no {{version}}")

    def version_of(isvc: Mapping[str, Any]) -> str | None:
        predictor = _as_dict(_as_dict(isvc.get("spec")).get("predictor"))
        uri = _as_dict(predictor.get("model")).get("storageUri")
        if not isinstance(uri, str) or not (uri.startswith(head) and uri.endswith(tail)):
            return None
        version = uri[len(head) : len(uri) - len(tail)]
        return version if version and "/" not in version else None

    return version_of


def split_from_inferenceservice(
    isvc: Mapping[str, Any],
    backends: Collection[str],
    *,
    version_of: Callable[[Mapping[str, Any]], str | None],
    revisions: Revisions,
) -> tuple[Split, Revisions]:
    """The split KServe (Serverless mode) makes, and what it then remembers.

    As KServe's ksvc reconciler does: with ``canaryTrafficPercent`` set and a
    rolled-out revision known, the latest revision (the spec now) gets that
    share and the rolled-out one the rest; otherwise the latest gets all of
    it. A latest revision at 100% becomes the rolled-out one; a rolled-out
    latest revision whose percent drops below 100 gives way to the previous
    one (KServe's rollback after a full rollout). Revision readiness is not
    modelled. A version with no backend keeps the key ``version/<v>``.
    """
    meta = _as_dict(isvc.get("metadata"))
    name = str(meta.get("name", "?"))
    predictor = _as_dict(_as_dict(isvc.get("spec")).get("predictor"))
    latest = version_of(isvc)
    if latest is None:
        return Split(source=f"InferenceService/{name}: predictor holds no known version"), revisions
    raw = predictor.get("canaryTrafficPercent")
    percent = None if raw is None else _clamp_percent(_number(raw, 100.0))
    rolled, previous = revisions.rolled_out, revisions.previous
    if percent is not None and percent < 100 and latest == rolled and previous:
        rolled, previous = previous, None
    if percent is None or rolled is None or percent >= 100 or rolled == latest:
        shares = {latest: 100.0}
        if rolled != latest:
            rolled, previous = latest, rolled
    else:
        shares = {latest: percent, rolled: 100.0 - percent}

    def key(version: str) -> str:
        return backend_for_version(name, version, backends) or f"version/{version}"

    weights: dict[str, float] = {}
    for version, share in shares.items():
        if share <= 0:
            continue  # a 0% target is listed by Knative, and gets nothing
        weights[key(version)] = weights.get(key(version), 0.0) + share
    label = "all" if len(shares) == 1 else f"canary {percent:g}%"
    return Split(weights, (), f"InferenceService/{name} {label}"), Revisions(rolled, previous)


# ============================================================================ one request


class RandomSource(Protocol):
    """The part of ``random.Random`` a plan needs (so tests can pass their own)."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Plan:
    """Where one request goes: the primary backend (None: nowhere) and its mirror copies."""

    primary: str | None
    mirrors: tuple[str, ...] = ()


def plan_request(split: Split, rng: RandomSource) -> Plan:
    """Pick the primary by weight and decide each mirror by its percent.

    A request the route sends nowhere (no positive weight) is not mirrored
    either: the gateway rejects it before any filter runs.
    """
    candidates = [(b, w) for b, w in split.weights.items() if w > 0]
    total = sum(w for _, w in candidates)
    if total <= 0:
        return Plan(None)
    r = rng.random() * total
    primary = candidates[-1][0]
    for backend, w in candidates:
        if r < w:
            primary = backend
            break
        r -= w
    mirrors = tuple(m.backend for m in split.mirrors if rng.random() * 100.0 < m.percent)
    return Plan(primary, mirrors)


def draw_features(rng: random.Random, shift: float = 0.0) -> dict[str, float]:
    """Standard-normal features, moved by ``shift`` (real input drift, seen by every version)."""
    return {name: rng.gauss(0.0, 1.0) + shift for name in FEATURE_NAMES}


# ============================================================================ pairing


@dataclass(frozen=True)
class Reply:
    """One backend's answer as the generator saw it (``status`` None: no HTTP answer)."""

    backend: str
    ok: bool
    status: int | None = None
    model: str | None = None
    version: str | None = None
    prediction: str | None = None


@dataclass(frozen=True)
class PairOutcome:
    """One shadow comparison result, ready to be counted."""

    result: Literal["agree", "disagree", "unpaired"]
    model: str
    candidate_version: str
    stable_version: str = ""


@dataclass
class _Pending:
    deadline: float
    primary: Reply | None = None
    mirrors: dict[str, Reply | None] = field(default_factory=dict)


Identity = Callable[[str], tuple[str, str]]


def identity_from_name(backend: str) -> tuple[str, str]:
    """``(model, version)`` guessed from a ``<model>-<version>`` Service name."""
    model, sep, version = backend.rpartition("-")
    return (model, version) if sep else (backend, "unknown")


class ShadowPairer:
    """Pairs primary and mirror answers of the same request id. No I/O; thread-safe.

    Outcomes:

    * both answered: ``agree`` / ``disagree`` on the ``prediction`` field;
    * the mirror failed, or has not answered by the deadline: ``unpaired``;
    * the primary failed or is missing: nothing is counted. There is no
      stable answer to compare with, and it is not the candidate's fault.

    Labels come from the answers (``model``, ``version``); when a mirror gave
    no usable answer, from ``identity(backend)``.
    """

    def __init__(self, identity: Identity = identity_from_name, max_pending: int = 20_000):
        self._identity = identity
        self._max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def expect(self, request_id: str, mirror_backend: str, deadline: float) -> list[PairOutcome]:
        """Register a mirror copy about to be sent; the entry expires at ``deadline``."""
        out: list[PairOutcome] = []
        with self._lock:
            while len(self._pending) >= self._max_pending:  # bounded: oldest first
                oldest = next(iter(self._pending))
                out.extend(self._expire_entry(self._pending.pop(oldest)))
            entry = self._pending.setdefault(request_id, _Pending(deadline))
            entry.mirrors[mirror_backend] = None
        return out

    def primary(self, request_id: str, reply: Reply) -> list[PairOutcome]:
        """Record the primary answer; returns the comparisons it completes."""
        out: list[PairOutcome] = []
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is None:
                return out
            entry.primary = reply
            for backend, mirror in list(entry.mirrors.items()):
                if mirror is not None:
                    out.extend(self._compare(reply, mirror))
                    del entry.mirrors[backend]
            if not entry.mirrors:
                del self._pending[request_id]
        return out

    def mirror(self, request_id: str, reply: Reply) -> list[PairOutcome]:
        """Record a mirror answer; returns the outcome it decides, if any."""
        out: list[PairOutcome] = []
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is None or reply.backend not in entry.mirrors:
                return out  # late: already expired and counted
            if not reply.ok:
                out.append(self._unpaired(reply.backend, reply))
                del entry.mirrors[reply.backend]
            elif entry.primary is not None:
                out.extend(self._compare(entry.primary, reply))
                del entry.mirrors[reply.backend]
            else:
                entry.mirrors[reply.backend] = reply
            if not entry.mirrors:
                del self._pending[request_id]
        return out

    def expire(self, now: float) -> list[PairOutcome]:
        """Close every entry past its deadline: missing mirror answers are ``unpaired``."""
        out: list[PairOutcome] = []
        with self._lock:
            done = [rid for rid, e in self._pending.items() if e.deadline <= now]
            for rid in done:
                out.extend(self._expire_entry(self._pending.pop(rid)))
        return out

    def _expire_entry(self, entry: _Pending) -> list[PairOutcome]:
        return [self._unpaired(b, None) for b, reply in entry.mirrors.items() if reply is None]

    def _unpaired(self, backend: str, reply: Reply | None) -> PairOutcome:
        model, version = self._identity(backend)
        if reply is not None:
            model, version = reply.model or model, reply.version or version
        return PairOutcome("unpaired", model, version)

    def _compare(self, primary: Reply, mirror: Reply) -> list[PairOutcome]:
        if not primary.ok:
            return []
        p_model, p_version = self._identity(primary.backend)
        m_model, m_version = self._identity(mirror.backend)
        result: Literal["agree", "disagree"] = (
            "agree" if primary.prediction == mirror.prediction else "disagree"
        )
        return [
            PairOutcome(
                result,
                primary.model or mirror.model or p_model or m_model,
                mirror.version or m_version,
                primary.version or p_version,
            )
        ]


# ============================================================================ the API server


class RouteNotFound(LookupError):
    """The route object does not exist (HTTP 404): traffic has nowhere to go."""


SplitSource = Callable[[], Split]


class KubeRouteReader:
    """Reads the route object from the API server and returns its :class:`Split`.

    The only class here that does Kubernetes I/O. It uses its own ``ApiClient``
    built from the kubeconfig file rather than the global configuration, so a
    test process can run it next to an operator talking to another cluster.
    """

    def __init__(
        self,
        *,
        kubeconfig: str,
        namespace: str,
        router: Router,
        route: str,
        backends: Collection[str],
        version_label: str = "version",
        rule: str | None = None,
        request_timeout: float = 5.0,
        kserve_storage_uri: str | None = None,
    ) -> None:
        # A slow import, paid only when talking to a cluster; the module is untyped.
        from kubernetes import client
        from kubernetes import config as kube_config

        config: Any = kube_config

        if router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
        self.namespace = namespace
        self.router = router
        self.route = route
        self.backends = frozenset(backends)
        self.version_label = version_label
        self.rule = rule
        self._timeout = request_timeout
        self._version_of = (
            version_from_storage_uri(kserve_storage_uri) if kserve_storage_uri else None
        )
        if router == "kserve" and self._version_of is None:
            raise ValueError("the kserve router needs the storage URI template")
        self._revisions = Revisions()
        self._api = config.new_client_from_config(config_file=kubeconfig)
        self._custom = client.CustomObjectsApi(self._api)
        self._core = client.CoreV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)

    def _plain(self, obj: Any) -> dict[str, Any]:
        """A typed client object as the camelCase dict the API server sent."""
        plain = self._api.sanitize_for_serialization(obj)
        return plain if isinstance(plain, dict) else {}

    def __call__(self) -> Split:
        from kubernetes.client.exceptions import ApiException

        ns, name, t = self.namespace, self.route, self._timeout
        try:
            if self.router == "gatewayAPI":
                obj = self._custom.get_namespaced_custom_object(
                    GATEWAY_GROUP, GATEWAY_VERSION, ns, HTTPROUTES, name, _request_timeout=t
                )
                return split_from_httproute(_as_dict(obj), self.backends, rule_name=self.rule)
            if self.router == "istio":
                obj = self._custom.get_namespaced_custom_object(
                    ISTIO_GROUP, ISTIO_VERSION, ns, VIRTUALSERVICES, name, _request_timeout=t
                )
                return split_from_virtualservice(
                    _as_dict(obj), self.backends, namespace=ns, route_name=self.rule
                )
            if self.router == "kserve":
                assert self._version_of is not None
                obj = self._custom.get_namespaced_custom_object(
                    KSERVE_GROUP, KSERVE_VERSION, ns, INFERENCESERVICES, name, _request_timeout=t
                )
                split, self._revisions = split_from_inferenceservice(
                    _as_dict(obj),
                    self.backends,
                    version_of=self._version_of,
                    revisions=self._revisions,
                )
                return split
            svc = self._plain(self._core.read_namespaced_service(name, ns, _request_timeout=t))
            deps = self._apps.list_namespaced_deployment(ns, _request_timeout=t)
            items = [self._plain(d) for d in deps.items]
            return split_from_service(svc, items, self.backends, version_label=self.version_label)
        except ApiException as exc:
            if exc.status == HTTPStatus.NOT_FOUND:
                raise RouteNotFound(f"{self.router} route {ns}/{name} not found") from None
            raise

    def close(self) -> None:
        self._api.close()


# ============================================================================ the generator


class GeneratorMetrics:
    """The generator's own metrics on a private registry (served on its ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.comparisons = Counter(
            "model_shadow_comparisons_total",
            "Mirrored requests whose candidate answer was compared with stable's.",
            ["model", "stable_version", "candidate_version", "result"],
            registry=r,
        )
        self.unpaired = Counter(
            "model_shadow_unpaired_total",
            "Mirrored requests whose candidate answer was missing or failed.",
            ["model", "candidate_version"],
            registry=r,
        )
        self.sent = Counter(
            "traffic_requests_sent_total",
            "Requests sent to a backend.",
            ["backend", "mirrored"],
            registry=r,
        )
        self.failures = Counter(
            "traffic_request_failures_total",
            "Requests that got no good answer, by reason "
            "(no_route, unknown_backend, overloaded, http_error, connection).",
            ["backend", "mirrored", "reason"],
            registry=r,
        )
        self.route_reads = Counter(
            "traffic_route_reads_total",
            "Reads of the route object, by result (ok, not_found, error).",
            ["result"],
            registry=r,
        )
        for result in ("ok", "not_found", "error"):
            self.route_reads.labels(result)

    def count(self, outcome: PairOutcome) -> None:
        """Count one outcome, creating its sibling series at 0 so a rate over them exists."""
        if outcome.result == "unpaired":
            self.unpaired.labels(outcome.model, outcome.candidate_version).inc()
            return
        for result in ("agree", "disagree"):
            self.comparisons.labels(
                outcome.model, outcome.stable_version, outcome.candidate_version, result
            )
        self.unpaired.labels(outcome.model, outcome.candidate_version)
        self.comparisons.labels(
            outcome.model, outcome.stable_version, outcome.candidate_version, outcome.result
        ).inc()


class TrafficGenerator:
    """Sends requests at a steady rate, split and mirrored as ``split_source()`` says.

    ``split_source`` is called every ``route_interval`` seconds on a thread of
    its own (a :class:`KubeRouteReader` in real use; any function in tests).
    If it fails, the last split stays in force (a gateway keeps its last good
    configuration); if it raises :class:`RouteNotFound`, traffic has nowhere
    to go. Each backend has its own small thread pool and a cap on requests
    in flight, so a slow backend does not slow down the others and a dead one
    cannot pile up work without bound. Everything stops after ``max_seconds``.
    """

    def __init__(
        self,
        split_source: SplitSource,
        backends: Mapping[str, str],
        *,
        rate: float = 20.0,
        seed: int | None = None,
        feature_shift: float = 0.0,
        max_seconds: float = 3600.0,
        route_interval: float = 1.0,
        request_timeout: float = 2.0,
        workers_per_backend: int = 16,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if rate < 0 or max_seconds <= 0 or route_interval <= 0 or request_timeout <= 0:
            raise ValueError("rate >= 0; max_seconds, route_interval, request_timeout > 0")
        for backend, url in backends.items():
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"backend {backend!r}: want an http://host:port URL, got {url!r}")
        self._source = split_source
        self.backends = dict(backends)
        self._rate = rate
        self._feature_shift = feature_shift
        self.max_seconds = max_seconds
        self.route_interval = route_interval
        self.request_timeout = request_timeout
        self.metrics = GeneratorMetrics(registry)
        self.registry = self.metrics.registry
        self._rng = random.Random(seed)
        self._identities: dict[str, tuple[str, str]] = {}
        self.pairer = ShadowPairer(self._identity)
        self._lock = threading.Lock()
        self._split: Split | None = None
        self._split_at: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._max_in_flight = workers_per_backend * 4
        self._in_flight = dict.fromkeys(self.backends, 0)
        self._pools = {
            b: ThreadPoolExecutor(workers_per_backend, thread_name_prefix=f"traffic-{b}")
            for b in self.backends
        }
        self._metrics_httpd: ThreadingHTTPServer | None = None
        self._metrics_thread: threading.Thread | None = None

    # -- state read by tests and the demo ----------------------------------------------

    @property
    def last_split(self) -> Split | None:
        """The split in force: the last one the route source returned (None before any)."""
        with self._lock:
            return self._split

    @property
    def last_split_at(self) -> float | None:
        """``time.monotonic()`` of the last successful route read."""
        with self._lock:
            return self._split_at

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._rate = rate

    def set_feature_shift(self, shift: float) -> None:
        """Move every feature by ``shift`` from now on: real input drift for the demo."""
        self._feature_shift = shift

    def _identity(self, backend: str) -> tuple[str, str]:
        return self._identities.get(backend) or identity_from_name(backend)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Read the route once (so the first requests already follow it), then run."""
        if self._threads:
            raise RuntimeError("already started")
        self._read_route()
        deadline = time.monotonic() + self.max_seconds
        self._threads = [
            threading.Thread(target=self._route_loop, args=(deadline,), name="traffic-route"),
            threading.Thread(target=self._send_loop, args=(deadline,), name="traffic-send"),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (``max_seconds`` or ``stop``); True when it has."""
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(end - time.monotonic(), 0.0))
        return not self.running

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending, let requests in flight finish (up to their timeout), close."""
        self._stop.set()
        self.wait(timeout)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for outcome in self.pairer.expire(time.monotonic()):
            self.metrics.count(outcome)
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
            if self._metrics_thread is not None:
                self._metrics_thread.join(timeout=5)
            self._metrics_httpd = None

    # -- route -------------------------------------------------------------------------

    def _read_route(self) -> None:
        try:
            split = self._source()
            result = "ok"
        except RouteNotFound as exc:
            split, result = Split(source=str(exc)), "not_found"
        except Exception as exc:  # any API trouble: keep the last good split
            log.warning("route read failed, keeping the last split: %s", exc)
            self.metrics.route_reads.labels("error").inc()
            return
        self.metrics.route_reads.labels(result).inc()
        with self._lock:
            changed = split != self._split
            self._split, self._split_at = split, time.monotonic()
        if changed:
            log.info("split now %s", json.dumps(split.to_dict(), sort_keys=True))

    def _route_loop(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.wait(min(self.route_interval, remaining)):
                break
            self._read_route()
            for outcome in self.pairer.expire(time.monotonic()):
                self.metrics.count(outcome)

    # -- sending -----------------------------------------------------------------------

    def _send_loop(self, deadline: float) -> None:
        """Send on a fixed schedule; after a stall, resume the schedule rather than burst."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                log.info("ran for max_seconds=%g: stopping", self.max_seconds)
                break
            rate = self._rate
            if rate <= 0:
                self._stop.wait(0.1)
                next_at = time.monotonic()
                continue
            if now < next_at:
                self._stop.wait(min(next_at - now, 0.1))
                continue
            next_at = max(next_at, now - 1.0) + 1.0 / rate
            self.send_one()

    def send_one(self) -> Plan:
        """Send one request per the current split (primary and mirrors); returns the plan."""
        with self._lock:
            split = self._split or Split(source="no route read yet")
        rng = self._rng
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        features = draw_features(rng, self._feature_shift)
        plan = plan_request(split, rng)
        if plan.primary is None:
            self.metrics.failures.labels("", "false", "no_route").inc()
            return plan
        deadline = time.monotonic() + self.request_timeout + 1.0
        for mirror in plan.mirrors:
            if mirror in self.backends:
                for outcome in self.pairer.expect(request_id, mirror, deadline):
                    self.metrics.count(outcome)
        self._submit(plan.primary, request_id, features, mirrored=False)
        for mirror in plan.mirrors:
            self._submit(mirror, request_id, features, mirrored=True)
        return plan

    def _submit(
        self, backend: str, request_id: str, features: dict[str, float], *, mirrored: bool
    ) -> None:
        m_label = "true" if mirrored else "false"
        if backend not in self.backends:
            self.metrics.failures.labels(backend, m_label, "unknown_backend").inc()
            return
        with self._lock:
            if self._in_flight[backend] >= self._max_in_flight:
                overloaded = True
            else:
                overloaded = False
                self._in_flight[backend] += 1
        if overloaded:
            self.metrics.failures.labels(backend, m_label, "overloaded").inc()
            self._deliver(request_id, Reply(backend, ok=False), mirrored=mirrored)
            return
        self.metrics.sent.labels(backend, m_label).inc()
        try:
            self._pools[backend].submit(self._exchange, backend, request_id, features, mirrored)
        except RuntimeError:  # pool shut down while stopping
            with self._lock:
                self._in_flight[backend] -= 1

    def _exchange(
        self, backend: str, request_id: str, features: dict[str, float], mirrored: bool
    ) -> None:
        try:
            reply = self.call(backend, request_id, features, mirrored=mirrored)
        finally:
            with self._lock:
                self._in_flight[backend] -= 1
        if reply.model and reply.version:
            self._identities[backend] = (reply.model, reply.version)
        if not reply.ok:
            reason = "connection" if reply.status is None else "http_error"
            self.metrics.failures.labels(backend, str(mirrored).lower(), reason).inc()
        self._deliver(request_id, reply, mirrored=mirrored)

    def _deliver(self, request_id: str, reply: Reply, *, mirrored: bool) -> None:
        if mirrored:
            outcomes = self.pairer.mirror(request_id, reply)
        else:
            outcomes = self.pairer.primary(request_id, reply)
        for outcome in outcomes:
            self.metrics.count(outcome)

    def call(
        self, backend: str, request_id: str, features: Mapping[str, float], *, mirrored: bool
    ) -> Reply:
        """One ``POST /predict`` to ``backend``; never raises, failures are a ``Reply``."""
        parts = urlsplit(self.backends[backend])
        body = json.dumps({"features": dict(features)}).encode()
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        if mirrored:
            headers["x-mirrored"] = "1"
        conn = http.client.HTTPConnection(
            parts.hostname or HOST, parts.port or 80, timeout=self.request_timeout
        )
        try:
            conn.request("POST", parts.path.rstrip("/") + "/predict", body, headers)
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            return Reply(backend, ok=False)
        finally:
            conn.close()
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        doc = _as_dict(doc)
        prediction = doc.get("prediction")
        return Reply(
            backend,
            ok=status == HTTPStatus.OK,
            status=status,
            model=str(doc["model"]) if "model" in doc else None,
            version=str(doc["version"]) if "version" in doc else None,
            prediction=None if prediction is None else str(prediction),
        )

    # -- own HTTP endpoint -------------------------------------------------------------

    def serve_metrics(self, port: int = 0) -> int:
        """Serve ``/metrics``, ``/split``, ``/healthz`` (and ``POST /config``) on 127.0.0.1.

        Returns the bound port. ``POST /config`` with ``{"rate": 5}`` or
        ``{"feature_shift": 1.0}`` changes the run without a restart.
        """
        if self._metrics_httpd is not None:
            raise RuntimeError("already serving")

        class Handler(_GeneratorHandler):
            generator: ClassVar[TrafficGenerator] = self

        self._metrics_httpd = ThreadingHTTPServer((HOST, port), Handler)
        self._metrics_httpd.daemon_threads = True
        self._metrics_thread = threading.Thread(
            target=self._metrics_httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="traffic-metrics",
            daemon=True,
        )
        self._metrics_thread.start()
        return int(self._metrics_httpd.server_address[1])


class _GeneratorHandler(JsonHandler):
    generator: ClassVar[TrafficGenerator]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.generator.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        elif path == "/split":
            split = self.generator.last_split
            doc = None if split is None else split.to_dict()
            self._send(HTTPStatus.OK, json.dumps(doc).encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/config":
            self._send(HTTPStatus.NOT_FOUND, b'{"error": "not found"}')
            return
        try:
            doc = json.loads(read_body(self) or b"{}")
            if not isinstance(doc, dict) or set(doc) - {"rate", "feature_shift"}:
                raise ValueError('want {"rate": number, "feature_shift": number}')
            if "rate" in doc:
                self.generator.set_rate(float(doc["rate"]))
            if "feature_shift" in doc:
                shift = float(doc["feature_shift"])
                if not math.isfinite(shift):
                    raise ValueError("feature_shift must be finite")
                self.generator.set_feature_shift(shift)
        except (ValueError, TypeError) as exc:
            self._send(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(exc)}).encode())
            return
        self._send(HTTPStatus.OK, b'{"ok": true}')


# ============================================================================ CLI


def parse_backends(text: str) -> dict[str, str]:
    """``--backends``: a JSON object mapping Service name to model-server URL."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not doc:
        raise ValueError("--backends must be a non-empty JSON object {service: url}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise ValueError("--backends maps service names (strings) to URLs (strings)")
    return {str(k): str(v) for k, v in doc.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelrollout_devenv.sim.traffic",
        description="Send prediction traffic split and mirrored as a live route object says.",
    )
    p.add_argument("--kubeconfig", required=True, help="kubeconfig of the API server to read")
    p.add_argument("--namespace", default="default")
    p.add_argument("--router", required=True, choices=ROUTERS)
    p.add_argument(
        "--route", required=True, help="HTTPRoute, VirtualService, Service or InferenceService name"
    )
    p.add_argument("--backends", required=True, help='JSON {"<service>": "http://127.0.0.1:P"}')
    p.add_argument(
        "--rule", help="name of the HTTPRoute rule / VirtualService http route to follow"
    )
    p.add_argument(
        "--version-label", default="version", help="pod label of the version (service router)"
    )
    p.add_argument(
        "--kserve-storage-uri",
        help="kserve router: the storageUriTemplate, {model} filled in, {version} left",
    )
    p.add_argument("--rate", type=float, default=20.0, help="requests per second")
    p.add_argument("--metrics-port", type=int, default=0, help="port of /metrics; 0: pick one")
    p.add_argument("--port-file", help="write the metrics port here (atomically)")
    p.add_argument("--seed", type=int, help="seed for features, splits and request ids")
    p.add_argument("--feature-shift", type=float, default=0.0, help="add to every feature")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    p.add_argument("--route-interval", type=float, default=1.0, help="seconds between reads")
    p.add_argument("--request-timeout", type=float, default=2.0, help="per-request timeout")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A process of its own: drop the ``*_created`` series, which only add noise to the
    # scrape (done here, not at import, because it is global to prometheus_client).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s traffic %(levelname)s %(message)s"
    )
    try:
        backends = parse_backends(args.backends)
    except ValueError as exc:
        raise SystemExit(f"--backends: {exc}") from None
    reader = KubeRouteReader(
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        router=args.router,
        route=args.route,
        backends=backends,
        version_label=args.version_label,
        rule=args.rule,
        kserve_storage_uri=args.kserve_storage_uri,
    )
    generator = TrafficGenerator(
        reader,
        backends,
        rate=args.rate,
        seed=args.seed,
        feature_shift=args.feature_shift,
        max_seconds=args.max_seconds,
        route_interval=args.route_interval,
        request_timeout=args.request_timeout,
    )
    port = generator.serve_metrics(args.metrics_port)
    if args.port_file:
        write_port_file(args.port_file, port)
    log.info("metrics on http://%s:%d/metrics; %s/%s", HOST, port, args.router, args.route)
    stop = threading.Event()
    install_stop_signals(stop)
    generator.start()
    try:
        while generator.running and not stop.wait(0.5):
            pass
    finally:
        generator.stop()
        reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
