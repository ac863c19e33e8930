"""The workload seam: read and set the replicas of a version's Deployment.

Blue-green keeps the old version warm for ``scaleDownDelay`` after the switch
(and for the whole rollback window after the promotion), then the operator
scales its Deployment to zero. The engine decides when and records the
replicas it had in the status, so a rollback or an undo can give them back;
this adapter only reads and writes the ``scale`` subresource, which is all
the chart's RBAC grants on Deployments (``get`` deployments, ``patch``
deployments/scale), never the Deployment itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from modelrollout.traffic.base import api_error


class WorkloadError(Exception):
    """A Deployment cannot be read or scaled (other than not existing)."""


class Workloads(Protocol):
    def replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment; None when there is no such Deployment."""
        ...

    def scale(self, namespace: str, name: str, replicas: int) -> None: ...


class DeploymentScaler:
    """Deployments through the apps/v1 API (``kubernetes.client.AppsV1Api``)."""

    def __init__(self, apps: Any) -> None:
        self.apps = apps

    def replicas(self, namespace: str, name: str) -> int | None:
        try:
            dep = self.apps.read_namespaced_deployment(name, namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise WorkloadError(f"cannot read Deployment {name}: {api_error(exc)}") from exc
        replicas = dep.spec.replicas if dep.spec is not None else None
        return 1 if replicas is None else int(replicas)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        try:
            self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}
            )
        except Exception as exc:
            raise WorkloadError(
                f"cannot scale Deployment {name} to {replicas}: {api_error(exc)}"
            ) from exc
