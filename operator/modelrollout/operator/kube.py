"""Kubernetes adapters: the status writer, the event sink, and the routers' clients."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from modelrollout.api.base import GROUP, PLURAL, VERSION
from modelrollout.engine import Event
from modelrollout.traffic import registry
from modelrollout.traffic.base import Clients, Router
from modelrollout.traffic.workloads import DeploymentScaler

log = logging.getLogger("modelrollout")


def load_config(kubeconfig: str | None = None, context: str | None = None) -> None:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig, as kubectl reads it."""
    from kubernetes import config as kube_config

    config: Any = kube_config
    bound_every_request()
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            return
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig, context=context)


#: (connect, read) seconds for every call of the Kubernetes client that names none.
REQUEST_TIMEOUT = (5.0, 30.0)


def bound_every_request(timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
    """Give every Kubernetes client call a timeout unless it names its own.

    The client's default is no timeout at all: a request sent while the API server
    restarts can wait forever, and with it the reconcile (seen in the fault tests: the
    kopf timer hung for minutes after a kube-apiserver restart). The client has no
    global setting for it, so its one request method gets a default; a caller that
    passes ``_request_timeout`` keeps its own. Idempotent.
    """
    from kubernetes.client import rest

    original: Any = rest.RESTClientObject.request
    if getattr(original, "bounded", False):
        return

    def request(self: Any, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return original(self, *args, _request_timeout=_request_timeout or timeout, **kwargs)

    request.bounded = True  # type: ignore[attr-defined]
    rest.RESTClientObject.request = request  # type: ignore[method-assign]


def routers() -> dict[str, Router[Any]]:
    """One router of every registered kind, sharing one set of clients."""
    from kubernetes import client

    return registry.build(
        Clients(custom=client.CustomObjectsApi(), core=client.CoreV1Api(), apps=client.AppsV1Api())
    )


def workloads() -> DeploymentScaler:
    from kubernetes import client

    return DeploymentScaler(client.AppsV1Api())


class KubeStatusWriter:
    """One merge patch of the status subresource.

    The field manager names the writer in ``managedFields``: one name for every
    replica by default (a name per pod would add an entry per pod ever run).
    """

    def __init__(self, *, field_manager: str = "modelrollout-operator") -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi()
        self.field_manager = field_manager

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, patch, field_manager=self.field_manager
        )


class KubeEventSink:
    """Core/v1 Events on the ModelRollout, as ``kubectl describe`` and ``kubectl events`` show."""

    def __init__(self, component: str = "modelrollout-operator") -> None:
        from kubernetes import client

        self.api = client.CoreV1Api()
        self.component = component

    def emit(self, body: dict[str, Any], event: Event) -> None:
        from kubernetes import client

        meta = body.get("metadata") or {}
        namespace = meta.get("namespace", "default")
        now = datetime.now(UTC)
        obj = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta.get('name', 'modelrollout')}."),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="ModelRollout",
                name=meta.get("name"),
                namespace=namespace,
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=event.reason,
            message=event.message[:1024],
            type=event.type.value,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.component,
        )
        try:
            self.api.create_namespaced_event(namespace, obj)
        except Exception as exc:  # an event that cannot be posted must not stop a rollout
            log.warning("cannot post event %s: %s", event.reason, exc)
