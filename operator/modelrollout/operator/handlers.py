"""The kopf layer: thin handlers that translate between kopf and the reconcile.

One daemon per ModelRollout drives it (:mod:`modelrollout.operator.scheduling`):
it reconciles, then sleeps until the engine says the rollout is next due or
until a change wakes it. ``on.event`` handlers turn changes into wake-ups: of
the rollout's spec or request annotation, and of its route (a kopf index maps
a route to the rollouts that use it). A deletion handler (and its finalizer)
sends traffic back to stable before the object goes. With ``--shards N``, the
rollout handlers see only this replica's shard and one more handler labels
the rollouts that hash to it (:mod:`modelrollout.operator.sharding`).
Adapters are built once at start-up and kept in kopf's ``memo``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelrollout.analysis.policy import Allowed, Credentials, PrometheusPolicy, Refused
from modelrollout.analysis.source import STALE_AFTER, MetricSource, PrometheusSource
from modelrollout.api.base import DEFAULT_PROMETHEUS_URL, GROUP, PLURAL, VERSION
from modelrollout.engine.admission import Slot, summarize
from modelrollout.operator.claimer import Claimer, plain_names
from modelrollout.operator.guard import Guard
from modelrollout.operator.heap import trim_forever
from modelrollout.operator.kube import (
    KubeEventSink,
    KubeStatusWriter,
    load_config,
    routers,
    workloads,
)
from modelrollout.operator.metrics import OperatorMetrics
from modelrollout.operator.notify import KubeSecretReader, Notifier, Settings, load_defaults
from modelrollout.operator.reconcile import Adapters, reconcile
from modelrollout.operator.scheduling import (
    Lanes,
    Timing,
    Wakeups,
    drive,
    plain,
    route_digest,
    route_of,
    wake_key,
)
from modelrollout.operator.sharding import (
    SHARD_LABEL,
    claim,
    finalizer_for,
    peering_for,
    selector_for,
)

#: The route objects each router drives, as kopf resources (group, version, plural).
ROUTE_RESOURCES: dict[str, tuple[str, str, str]] = {
    "gatewayAPI": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "istio": ("networking.istio.io", "v1", "virtualservices"),
    "service": ("", "v1", "services"),
}


@dataclass
class RunConfig:
    namespaces: list[str] = field(default_factory=list)
    prometheus: str = DEFAULT_PROMETHEUS_URL
    """The Prometheus of rollouts that name none; always allowed."""
    prometheus_allow: list[str] = field(default_factory=list)
    """More addresses a rollout may name (the cluster admin's policy, never the tenant's)."""
    prometheus_credentials: dict[str, Credentials] = field(default_factory=dict)
    """Credential files per address; an address named here is allowed too. A token is
    only ever sent to the address it is listed under."""
    tick: float = 5.0
    prometheus_timeout: float = 10.0
    """Longest wait for one answer: a slower Prometheus is no answer (inconclusive)."""
    resync: float = 300.0
    """The longest an active rollout with nothing due sleeps (a safety net)."""
    guard_interval: float = 2.0
    """How often the fast guard judges every running rollout's count gates (0: never)."""
    peering: str | None = None
    priority: int = 0
    peering_lifetime: int = 60
    shard: int = 0
    shards: int = 1
    field_manager: str = "modelrollout-operator"
    watch_routes: tuple[str, ...] = tuple(ROUTE_RESOURCES)
    kubeconfig: str | None = None
    context: str | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    max_rollouts: int = 0
    max_rollouts_per_namespace: int = 0
    notifications_file: str | None = None
    notifications: Settings = field(default_factory=Settings)

    @property
    def timing(self) -> Timing:
        return Timing(tick=self.tick, resync=self.resync, retry=max(min(self.tick, 5.0), 1.0))

    @property
    def shard_labels(self) -> dict[str, str] | None:
        """kopf's label filter for this replica's rollouts (None: one shard, every rollout)."""
        return {SHARD_LABEL: str(self.shard)} if self.shards > 1 else None


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration, kept as a digest of it.

    kopf stores the object's whole essence (its spec) in an annotation to tell a change
    from none. Annotations are capped at 256 KiB in all, so a large spec the API server
    accepted (a long query, a megabyte of text) made every kopf patch of that object fail
    and the rollout never got a status. No handler here reads a diff (a daemon drives
    the rollout from its status), so a digest tells "changed" from "same" as well.
    """

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


def _all(index: kopf.Index[Any, Slot]) -> list[Slot]:
    return [slot for _, store in index.items() for slot in store]


def policy_of(cfg: RunConfig) -> PrometheusPolicy:
    """The allowlist; ValueError for a malformed address or conflicting credentials."""
    return PrometheusPolicy(
        cfg.prometheus, allowed=cfg.prometheus_allow, credentials=cfg.prometheus_credentials
    )


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def source_of(allowed: Allowed, cfg: RunConfig) -> PrometheusSource:
    """A source for one allowed address, with that address's credentials and no others.

    The files are read here, once at start-up: a missing file stops the operator with
    its path rather than failing every check later. Restart after rotating a secret.
    """
    creds = allowed.credentials
    token = _read(creds.token_file) if creds.token_file else None
    basic = _read(creds.basic_auth_file) if creds.basic_auth_file else None
    user, sep, password = (basic or "").partition(":")
    if basic is not None and not sep:
        raise ValueError(f"{creds.basic_auth_file}: expected 'user:password'")
    return PrometheusSource(
        allowed.url,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        auth=(user, password) if basic is not None else None,
        ca_bundle=creds.ca_file,
        timeout=cfg.prometheus_timeout,
        stale_after=STALE_AFTER,
        observe=cfg.metrics.observe_query,
    )


def build_adapters(cfg: RunConfig) -> Adapters:
    load_config(cfg.kubeconfig, cfg.context)
    policy = policy_of(cfg)
    sources = {allowed.url: source_of(allowed, cfg) for allowed in policy.allowed}

    def source_for(address: str | None) -> MetricSource | Refused:
        answer = policy.resolve(address)
        return answer if isinstance(answer, Refused) else sources[answer.url]

    events = KubeEventSink()
    notifier = Notifier(
        events=events,
        secrets=KubeSecretReader(),
        defaults=load_defaults(cfg.notifications_file) if cfg.notifications_file else (),
        settings=cfg.notifications,
        observe=cfg.metrics.observe_notification,
    ).start()
    return Adapters(
        routers=routers(),
        source_for=source_for,
        status=KubeStatusWriter(field_manager=cfg.field_manager),
        events=events,
        notifier=notifier,
        observe=cfg.metrics.observe,
        max_rollouts=cfg.max_rollouts or None,
        max_rollouts_per_namespace=cfg.max_rollouts_per_namespace or None,
        workloads=workloads(),
        retry_every=cfg.tick,
    )


def build_registry(cfg: RunConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    mine = cfg.shard_labels

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In a pod: the ServiceAccount; elsewhere the kubeconfig (KUBECONFIG), as kubectl."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Each shard its own finalizer: kopf strips its finalizer from objects it does not
        # handle, so a shared name would let one shard free another shard's rollouts.
        settings.persistence.finalizer = finalizer_for(cfg.shard, cfg.shards)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = DigestDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.enabled = False  # our own Events say what was decided; kopf's say less
        settings.watching.server_timeout = 60
        selector = selector_for(cfg.shard, cfg.shards)
        if selector is not None:
            # On the API server: a replica lists, holds and processes only its shard.
            settings.watching.label_selectors[GROUP, VERSION, PLURAL] = selector
        if plain_names(cfg.namespaces):
            # Plain namespace names: nothing to discover. Scanning would need cluster-wide
            # list/watch on namespaces and CRDs, which per-namespace Roles do not grant.
            settings.scanning.disabled = True
        if cfg.peering:
            settings.peering.name = peering_for(cfg.peering, cfg.shard, cfg.shards)
            settings.peering.mandatory = True
            settings.peering.clusterwide = not cfg.namespaces
            settings.peering.priority = cfg.priority
            settings.peering.lifetime = cfg.peering_lifetime
        else:
            settings.peering.standalone = True
        memo["adapters"] = build_adapters(cfg)
        memo["wakeups"] = Wakeups()
        memo["lanes"] = Lanes()
        memo["guard"] = (
            Guard(memo["adapters"], interval=cfg.guard_interval, observe=cfg.metrics.observe_guard)
            if cfg.guard_interval > 0
            else None
        )

    @kopf.on.startup(registry=registry)
    async def start_background(memo: kopf.Memo, **_: Any) -> None:
        """Loops on the event loop, after the adapters: the fast guard's (it wakes
        daemons), the heap trim (``operator/heap.py``) and, with shards, the labelling
        of new rollouts (``operator/claimer.py``)."""
        tasks = [asyncio.create_task(trim_forever(), name="heap trim")]
        if cfg.shards > 1:
            claimer = Claimer(
                shard=cfg.shard,
                shards=cfg.shards,
                namespaces=cfg.namespaces,
                field_manager=cfg.field_manager,
            )
            tasks.append(asyncio.create_task(claimer.run(), name="shard claims"))
        guard: Guard | None = memo.get("guard")
        if guard is not None:
            tasks.append(asyncio.create_task(guard.run(memo["wakeups"].wake), name="guard"))
        memo["background"] = tasks

    # ------------------------------------------------------------------ rollouts

    @kopf.daemon(GROUP, VERSION, PLURAL, labels=mine, cancellation_backoff=30.0, registry=registry)
    async def rollout(
        body: kopf.Body, uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        """Reconcile, then sleep until due or woken; kopf stops it on deletion or pausing."""
        # kopf passes the index by its name, ``slots``; it is live, read at each reconcile.
        index: kopf.Index[Any, Slot] = kwargs["slots"]

        async def stop_signal() -> None:
            await stopped.wait()

        await drive(
            body=body,
            uid=uid,
            stopped=stopped,
            stop_signal=stop_signal,
            adapters=memo["adapters"],
            wakeups=memo["wakeups"],
            timing=cfg.timing,
            others=lambda: _all(index),
            guard=memo.get("guard"),
            lanes=memo["lanes"],
        )

    @kopf.on.cleanup(registry=registry)
    async def stop_background(memo: kopf.Memo, **_: Any) -> None:
        for task in memo.get("background", ()):
            task.cancel()

    @kopf.on.cleanup(registry=registry)
    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        """A clean stop gives queued notifications a few seconds to go out."""
        adapters = memo.get("adapters")
        if adapters is not None and isinstance(adapters.notifier, Notifier):
            adapters.notifier.close(timeout=5)

    @kopf.index(GROUP, VERSION, PLURAL, id="slots", labels=mine, registry=registry)
    def slots(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Slot]:
        """Every rollout's claim on a slot, for --max-concurrent-rollouts (kept by kopf)."""
        slot = summarize(plain(body))
        return {slot.key: slot}

    @kopf.on.event(GROUP, VERSION, PLURAL, labels=mine, registry=registry)
    async def rollout_changed(
        body: kopf.Body, uid: str, type: str, memo: kopf.Memo, **_: Any
    ) -> None:
        """A new spec or request wakes the rollout; status-only updates (ours) do not.

        Async, as every handler that touches the wake-ups: they belong to the event loop.
        """
        wakeups: Wakeups = memo["wakeups"]
        if type == "DELETED":
            wakeups.forget(uid)
        elif wakeups.rollout_seen(uid, wake_key(body)):
            wakeups.wake(uid)

    @kopf.index(GROUP, VERSION, PLURAL, id="rollouts_by_route", labels=mine, registry=registry)
    def rollouts_by_route(spec: kopf.Spec, namespace: str | None, uid: str, **_: Any) -> Any:
        """route -> the uids of the rollouts it carries traffic for."""
        route = route_of(plain(spec), namespace or "default")
        return {route: uid} if route is not None else None

    @kopf.on.delete(GROUP, VERSION, PLURAL, labels=mine, registry=registry)
    def deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        from modelrollout.traffic.base import RouteError

        try:
            reconcile(plain(body), memo["adapters"], deleting=True)
        except RouteError as exc:
            raise kopf.TemporaryError(
                f"cannot return traffic to stable yet: {exc}", delay=5
            ) from exc
        meta = body.get("metadata") or {}
        cfg.metrics.forget(str(meta.get("namespace")), str(meta.get("name")))
        notifier = memo["adapters"].notifier
        if isinstance(notifier, Notifier):
            notifier.forget(plain(body))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def shard_claim(body: kopf.Body, uid: str, patch: kopf.Patch, **_: Any) -> None:
        """Label a rollout for the shard it hashes to: claim this shard's, hand over the
        others' (a changed shard count); with one shard, drop the label."""
        meta = body.get("metadata") or {}
        wanted = claim(
            uid=uid,
            labels=meta.get("labels") or {},
            finalizers=list(meta.get("finalizers") or []),
            deleting=meta.get("deletionTimestamp") is not None,
            shard=cfg.shard,
            shards=cfg.shards,
        )
        if wanted is not None:
            patch.metadata["labels"] = {SHARD_LABEL: wanted.label}
            if wanted.finalizers is not None:
                patch.metadata["finalizers"] = wanted.finalizers

    # -------------------------------------------------------------------- routes

    for kind in cfg.watch_routes:
        _watch_route(registry, kind)

    return registry


def _watch_route(registry: kopf.OperatorRegistry, kind: str) -> None:
    group, version, plural = ROUTE_RESOURCES[kind]

    @kopf.on.event(group, version, plural, id=f"route-{kind}", registry=registry)
    async def route_changed(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        type: str,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        """A changed route wakes the rollouts it carries (they restore drifted weights)."""
        key = (kind, namespace or "default", name)
        index: kopf.Index[Any, str] = kwargs["rollouts_by_route"]
        owners = index.get(key)
        if not owners:
            return
        wakeups: Wakeups = memo["wakeups"]
        digest = None if type == "DELETED" else route_digest(body)
        if wakeups.route_seen(key, digest):
            for uid in owners:
                wakeups.wake(uid)


__all__ = ["ROUTE_RESOURCES", "RunConfig", "build_adapters", "build_registry", "plain"]
