"""One reconcile of one ModelRollout: read, decide, write once, then tell.

This is the whole shell around the pure engine, free of kopf so it can be
driven directly in tests. The order is fixed:

1. parse the spec (a bad one becomes a Failed status with the reason), and ask the
   operator's Prometheus policy about the address it names: an address the
   cluster admin did not allow is refused the same way, before any request is
   made to it (reason ``PrometheusNotAllowed``; see ``analysis/policy.py``);
2. read what the route holds, and the human request annotation;
3. before a new candidate gets any traffic, send each gate's query to Prometheus once
   (the preflight: a refused query is ``InvalidGate``, no answer waits in ``Pending``);
   else run the gates if a check is due; read the Deployments a scale-down needs;
4. ``engine.decide``;
5. scale Deployments as decided (a restore comes before traffic returns);
6. make the route hold the decision's traffic intent;
7. one status merge patch, skipped when nothing changed;
8. Events, after the patch has landed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from modelrollout.analysis.gates import (
    GateContext,
    TemplateError,
    context_for,
    evaluate,
    preflight_queries,
)
from modelrollout.analysis.policy import Refused, printable
from modelrollout.analysis.source import MetricSource, QueryRefused, SourceError
from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.api.gates import MetricGate
from modelrollout.api.notifications import Notification
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import REASON_REFUSED, ModelRolloutStatus, Phase
from modelrollout.engine import (
    Decision,
    Event,
    EventType,
    GateRefusal,
    GuardFinding,
    Observations,
    Preflight,
    Request,
    RouteBackend,
    TrafficIntent,
    TrafficState,
    decide,
    plan,
)
from modelrollout.engine.admission import Slot, admit, summarize
from modelrollout.engine.conditions import set_conditions
from modelrollout.operator.patching import merge_patch
from modelrollout.traffic.base import RouteError, Router, Versions
from modelrollout.traffic.registry import ROUTERS
from modelrollout.traffic.workloads import WorkloadError, Workloads

log = logging.getLogger("modelrollout")


class StatusWriter(Protocol):
    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...


class EventSink(Protocol):
    def emit(self, body: dict[str, Any], event: Event) -> None: ...


class NotificationSink(Protocol):
    def submit(
        self,
        body: Mapping[str, Any],
        receivers: Sequence[Notification] | None,
        status: Mapping[str, Any],
        events: Sequence[Event],
        now: datetime,
    ) -> None:
        """Queue the decision's notices and return at once (never blocks a decision)."""
        ...


@dataclass
class Adapters:
    """Everything with I/O, built once at start-up (kopf's memo holds it)."""

    routers: dict[str, Router[Any]]
    source_for: Callable[[str | None], MetricSource | Refused]
    """The source for a rollout's ``analysis.prometheus.address`` (None: the default), or
    the operator's refusal of that address, as a value."""
    status: StatusWriter
    events: EventSink
    clock: Callable[[], datetime] = field(
        default=lambda: datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    )
    observe: Callable[[dict[str, Any], Decision, float], None] | None = None
    notifier: NotificationSink | None = None
    max_rollouts: int | None = None
    """--max-concurrent-rollouts (None or 0: no limit)."""
    max_rollouts_per_namespace: int | None = None
    """--max-concurrent-rollouts-per-namespace (None or 0: no limit)."""
    workloads: Workloads | None = None
    """Deployments to scale (blue-green's old version); None: the operator scales nothing."""
    retry_every: float | None = None
    """Seconds between reconciles (the timer's tick), for "retrying every Ns"."""


def names_for(
    spec: ModelRolloutSpec,
    namespace: str,
    stable_version: str,
    candidate_version: str | None,
    retired: tuple[str, ...] = (),
) -> object:
    """The route and the versions in play, as the spec's router builds and alone reads them."""
    versions = Versions(stable_version, candidate_version, retired)
    return ROUTERS[spec.traffic_routing.kind].names(spec, namespace=namespace, versions=versions)


def route_names(spec: ModelRolloutSpec, namespace: str) -> object:
    """The route and the model's rule in it, before any version is known."""
    return ROUTERS[spec.traffic_routing.kind].route_names(spec, namespace=namespace)


def _prior_versions(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[str | None, str | None]:
    stable = status.stable_version or (spec.stable.version if spec.stable else None)
    candidate = status.candidate_version
    if candidate is None or candidate == stable:
        candidate = None
    return stable, candidate


def reconcile(
    body: dict[str, Any],
    adapters: Adapters,
    *,
    deleting: bool = False,
    others: Iterable[Slot] = (),
    guard: GuardFinding | None = None,
) -> Decision | None:
    """One reconcile. Returns the decision (None when the spec is refused).

    ``others`` summarizes every rollout the operator serves (a kopf index), from which
    the admission under the concurrency limits is worked out. ``guard``: gates the fast
    guard showed bad since the last reconcile (``operator/guard.py``).
    """
    started = time.monotonic()
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", "default"), meta["name"]
    generation = int(meta.get("generation") or 1)
    raw_status = body.get("status") or {}
    status = ModelRolloutStatus.model_validate(raw_status)
    now = adapters.clock()

    try:
        spec = ModelRolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        _invalid(body, adapters, status, generation, now, _validation_message(exc))
        return None
    source: MetricSource | None = None
    if not deleting:
        # Before anything else, so a refused address is never asked a thing. A deletion
        # asks no one; it must still send traffic back to stable.
        answer = adapters.source_for(spec.analysis.prometheus.address)
        if isinstance(answer, Refused):
            _invalid(body, adapters, status, generation, now, answer.message, answer.reason)
            return None
        source = answer

    router = adapters.routers[spec.traffic_routing.kind]
    stable, candidate = _prior_versions(spec, status)
    traffic: TrafficState | None = None
    traffic_error: str | None = None
    backends: tuple[RouteBackend, ...] | None = None
    try:
        if stable is not None:
            traffic = router.read(names_for(spec, namespace, stable, candidate))
        else:  # spec.stable omitted and not seeded yet: the route tells which version serves
            backends = router.backends(route_names(spec, namespace))
    except RouteError as exc:
        traffic_error = str(exc)

    results = None
    preflight: Preflight | None = None
    p = plan(spec, status, now)
    if (p.check_due or p.preflight) and traffic_error is None and source is not None:
        # The plan's versions and stage: what this check measures, which the status
        # may not say yet (a check due as a stage begins, a candidate not yet started).
        ctx = context_for(
            spec,
            status,
            namespace=namespace,
            now=now,
            candidate_version=p.candidate_version,
            stable_version=p.stable_version,
            stage=p.stage or "",
        )
        if p.preflight:
            preflight = run_preflight(p.gates, source, ctx)
        else:
            results = evaluate(list(p.gates), source, ctx)

    replicas = None
    if p.read_replicas and adapters.workloads is not None and not deleting:
        try:
            replicas = {
                v: adapters.workloads.replicas(namespace, spec.deployment_for(spec.version_ref(v)))
                for v in p.read_replicas
            }
        except WorkloadError as exc:
            log.warning("%s/%s: %s", namespace, name, exc)

    obs = Observations(
        generation=generation,
        request=Request.parse((meta.get("annotations") or {}).get(REQUEST_ANNOTATION)),
        analysis=results,
        traffic=traffic,
        traffic_error=traffic_error,
        deleting=deleting,
        route_backends=backends,
        admission=admit(
            summarize(body),
            others,
            limit=adapters.max_rollouts,
            per_namespace=adapters.max_rollouts_per_namespace,
        ),
        replicas=replicas,
        preflight=preflight,
        retry_every=adapters.retry_every,
        guard=guard,
    )
    decision = decide(spec, status, obs, now)

    if decision.scale and adapters.workloads is not None:
        try:
            for version, count in decision.scale.items():
                deployment = spec.deployment_for(spec.version_ref(version))
                adapters.workloads.scale(namespace, deployment, count)
        except WorkloadError as exc:
            # As with the route: nothing is recorded as done that was not.
            log.warning("%s/%s: %s", namespace, name, exc)
            return decision

    if decision.traffic is not None:
        intent = decision.traffic
        if (
            traffic is None
            or traffic != intent.state
            or intent.retired_versions
            or (_versions(intent) != (stable, candidate))
        ):
            # Also when the versions change under equal weights: an undo puts the previous
            # version back as stable, which the route read with the old names cannot show.
            try:
                _apply(router, spec, namespace, intent)
            except RouteError as exc:
                # Nothing is recorded as applied that was not: the next tick decides again.
                log.warning("%s/%s: %s", namespace, name, exc)
                if deleting:
                    raise
                return decision

    patch = merge_patch(raw_status, decision.status)
    if patch and not deleting:
        adapters.status.patch_status(namespace, name, {"status": patch})
    for event in decision.events:
        adapters.events.emit(body, event)
    if adapters.notifier is not None and decision.events:
        adapters.notifier.submit(body, spec.notifications, decision.status, decision.events, now)
    if adapters.observe is not None:
        adapters.observe(body, decision, time.monotonic() - started)
    return decision


def run_preflight(
    gates: tuple[MetricGate, ...], source: MetricSource, ctx: GateContext
) -> Preflight:
    """Send each gate's rendered query once; what came back, as the engine reads it.

    A query that does not parse (``bad_data``), or a template naming an unknown
    placeholder, is the gate's fault: it is refused. An ``execution`` error is let
    through: the query parses, and whether it runs may depend on data not there yet
    (the check says so then, as "query refused"). No answer at all stops the preflight:
    the rest would go unanswered too.
    """
    refused: list[GateRefusal] = []
    for gate in gates:
        try:
            promqls = preflight_queries(gate, ctx)
        except (TemplateError, ValueError) as exc:
            refused.append(GateRefusal(gate.name, printable(str(exc), limit=200)))
            continue
        for promql in promqls:
            try:
                source.instant(promql)
            except QueryRefused as exc:
                if exc.error_type == "execution":
                    continue
                reason = f"{REASON_REFUSED}{printable(str(exc), limit=300)}"
                refused.append(GateRefusal(gate.name, reason))
                break
            except SourceError as exc:
                return Preflight(refused=tuple(refused), unreachable=printable(str(exc), limit=200))
    return Preflight(refused=tuple(refused))


def _versions(intent: TrafficIntent) -> tuple[str, str | None]:
    """The (stable, candidate) an intent routes, as ``_prior_versions`` names them."""
    candidate = intent.candidate_version
    if candidate == intent.stable_version:
        candidate = None
    return intent.stable_version, candidate


def _apply(
    router: Router[Any], spec: ModelRolloutSpec, namespace: str, intent: TrafficIntent
) -> None:
    names = names_for(
        spec, namespace, intent.stable_version, intent.candidate_version, intent.retired_versions
    )
    router.apply(names, intent)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{where}: {err['msg']}" if where else err["msg"])
    return "invalid spec: " + "; ".join(parts)


def _invalid(
    body: dict[str, Any],
    adapters: Adapters,
    status: ModelRolloutStatus,
    generation: int,
    now: datetime,
    message: str,
    reason: str = "InvalidSpec",
) -> None:
    """A spec the operator refuses: Failed, with the reason where the user looks.

    The Event and the Ready/Stalled conditions carry ``reason`` (``InvalidSpec``,
    ``PrometheusNotAllowed``), so tools tell a typo from a policy refusal. Traffic is
    not touched: what the route holds stays; a fixed spec (or ``retry``) goes on.
    """
    if status.phase == Phase.FAILED and status.message == message:
        return
    new = status.model_copy(deep=True)
    new.phase = Phase.FAILED
    new.message = message
    new.observed_generation = generation
    set_conditions(new, Observations(generation=generation), now, drift=False)
    for cond in new.conditions:
        if cond.type in ("Ready", "Stalled"):
            cond.reason = reason
    raw = body.get("status") or {}
    meta = body["metadata"]
    adapters.status.patch_status(
        meta.get("namespace", "default"), meta["name"], {"status": merge_patch(raw, new.dump())}
    )
    event = Event(EventType.WARNING, reason, message)
    adapters.events.emit(body, event)
    if adapters.notifier is not None:
        adapters.notifier.submit(body, _receivers(body), new.dump(), [event], now)


def _receivers(body: dict[str, Any]) -> list[Notification] | None:
    """spec.notifications of a spec that fails as a whole, if that part can be read."""
    raw = (body.get("spec") or {}).get("notifications")
    if raw is None:
        return None
    try:
        return [Notification.model_validate(n) for n in raw]
    except (ValidationError, TypeError):
        return None


__all__ = ["Adapters", "reconcile"]
