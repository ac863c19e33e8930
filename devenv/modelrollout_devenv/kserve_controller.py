"""KServe's own controller (``cmd/manager``) against a :class:`LocalCluster`, in RawDeployment mode.

Why the real controller: the kserve router writes InferenceServices, and the
two-InferenceService mode routes to the Services KServe makes. Only KServe
itself says whether what we write is an InferenceService it accepts
(defaulting and validating webhooks, CRD schema) and what it makes of it
(``{name}-predictor`` Deployment and Service, the Ready condition).

How it runs here, with no container runtime and no Knative:

- the ``inferenceservice-config`` ConfigMap in ``kserve`` says
  ``defaultDeploymentMode: RawDeployment`` and turns off ingress creation (no
  ingress controller here); Knative's CRDs are absent, so KServe sets up raw
  mode only;
- the controller's webhook server serves on loopback with a certificate from
  the cluster CA (found where controller-runtime looks for it:
  ``$TMPDIR/k8s-webhook-server/serving-certs``), and the InferenceService
  defaulter and validator and the ServingRuntime validator are registered
  by URL with that CA. The pod mutator (storage initializer injection) is
  not registered: kwok's pods run no containers to initialize;
- pods of the predictor Deployments are scheduled on kwok's nodes and become
  Ready, so KServe reports the InferenceService Ready as in a cluster.

What stays untested here: Serverless mode (Knative revisions, so
``canaryTrafficPercent`` has no effect in this controller), the data plane,
and the storage initializer.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any, Self

from modelrollout_devenv.binaries import find_binaries
from modelrollout_devenv.cluster import LocalCluster
from modelrollout_devenv.pki import ensure_loopback_serving_cert
from modelrollout_devenv.procs import ManagedProcess, Supervisor, free_port, http_probe

__all__ = ["KSERVE_NAMESPACE", "KServeController", "inferenceservice_config", "webhooks"]

KSERVE_NAMESPACE = "kserve"
WEBHOOK_CONFIG = "modelrollout-devenv-kserve"


def inferenceservice_config() -> dict[str, Any]:
    """KServe's ConfigMap with what raw mode on a cluster without ingress needs."""

    def j(value: dict[str, Any]) -> str:
        return json.dumps(value, indent=1)

    resources = {
        "cpuRequest": "10m",
        "cpuLimit": "1",
        "memoryRequest": "16Mi",
        "memoryLimit": "1Gi",
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": KSERVE_NAMESPACE},
        "data": {
            "deploy": j({"defaultDeploymentMode": "RawDeployment"}),
            "ingress": j(
                {
                    "enableGatewayApi": False,
                    "ingressGateway": "knative-serving/knative-ingress-gateway",
                    "localGateway": "knative-serving/knative-local-gateway",
                    "localGatewayService": "knative-local-gateway.istio-system.svc.cluster.local",
                    "ingressDomain": "example.com",
                    # The default {{ .Name }}-{{ .Namespace }} makes one DNS label, which
                    # long test namespaces push past 63 characters.
                    "domainTemplate": "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}",
                    "ingressClassName": "istio",
                    "urlScheme": "http",
                    "disableIstioVirtualHost": True,
                    "disableIngressCreation": True,
                }
            ),
            # Every quantity is parsed, used or not: upstream's values.
            "storageInitializer": j(
                {
                    "image": "kserve/storage-initializer:v0.16.0",
                    "memoryRequest": "100Mi",
                    "memoryLimit": "1Gi",
                    "cpuRequest": "100m",
                    "cpuLimit": "1",
                    "enableModelcar": False,
                    "cpuModelcar": "10m",
                    "memoryModelcar": "15Mi",
                    "uidModelcar": 1010,
                }
            ),
            "credentials": j({"storageSpecSecretName": "storage-config"}),
            "logger": j({"image": "kserve/agent:v0.16.0", "defaultUrl": "http://default-broker"}),
            "batcher": j({"image": "kserve/agent:v0.16.0", "maxBatchSize": "32"}),
            "agent": j({"image": "kserve/agent:v0.16.0"} | resources),
            "router": j({"image": "kserve/router:v0.16.0"} | resources),
            "explainers": j({"art": {"image": "kserve/art-explainer", "defaultImageVersion": "x"}}),
            "metricsAggregator": j(
                {"enableMetricAggregation": "false", "enablePrometheusScraping": "false"}
            ),
            "localModel": j({"enabled": False}),
            "security": j({"autoMountServiceAccountToken": False}),
            "inferenceService": j({"resource": resources}),
            "autoscaler": j(
                {
                    "scaleUpStabilizationWindowSeconds": "0",
                    "scaleDownStabilizationWindowSeconds": "0",
                }
            ),
        },
    }


def webhooks(port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The InferenceService and ServingRuntime webhooks, by URL on loopback."""

    def hook(name: str, path: str, version: str, resource: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1", "v1beta1"],
            "rules": [
                {
                    "apiGroups": ["serving.kserve.io"],
                    "apiVersions": [version],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                }
            ],
        }

    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG},
            "webhooks": [
                hook(
                    "inferenceservice.kserve-webhook-server.defaulter",
                    "/mutate-serving-kserve-io-v1beta1-inferenceservice",
                    "v1beta1",
                    "inferenceservices",
                )
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG},
            "webhooks": [
                hook(
                    "inferenceservice.kserve-webhook-server.validator",
                    "/validate-serving-kserve-io-v1beta1-inferenceservice",
                    "v1beta1",
                    "inferenceservices",
                ),
                hook(
                    "servingruntime.kserve-webhook-server.validator",
                    "/validate-serving-kserve-io-v1alpha1-servingruntime",
                    "v1alpha1",
                    "servingruntimes",
                ),
            ],
        },
    ]


class KServeController:
    """``kserve-manager`` as a supervised process, with its webhooks registered.

    The cluster must be started with nodes and have the KServe CRDs
    (:meth:`LocalCluster.install_upstream_crds`). :meth:`stop` removes the
    webhook configurations first, so the API server never calls a webhook
    that is gone.
    """

    def __init__(self, cluster: LocalCluster, work_dir: Path, *, binary: Path | None = None):
        self.cluster = cluster
        self.work_dir = work_dir
        self._binary = binary
        self.sup = Supervisor(work_dir)
        self.webhook_port = 0
        self.health_port = 0
        self.metrics_port = 0
        self.process: ManagedProcess | None = None

    @property
    def binary(self) -> Path:
        return self._binary or find_binaries(need={"kserve-manager"}).kserve_manager

    @property
    def version(self) -> str:
        return self.cluster.binaries.versions.get("KSERVE_VERSION", "")

    def start(self, timeout: float = 90.0) -> Self:
        binary = self.binary  # fail before anything when it is not built
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KSERVE_NAMESPACE}},
        )
        self.cluster.apply(inferenceservice_config())
        cert, key = ensure_loopback_serving_cert(self.cluster.pki, "kserve-webhook")
        tmp = self.work_dir / "tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert, certs / "tls.crt")
        shutil.copyfile(key, certs / "tls.key")
        self.webhook_port, self.health_port, self.metrics_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.cluster.kubeconfig),
            POD_NAMESPACE=KSERVE_NAMESPACE,
            TMPDIR=str(tmp),
        )
        for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env.pop(proxy, None)  # the API server is on loopback
        argv = [
            str(binary),
            f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            f"--health-probe-addr=127.0.0.1:{self.health_port}",
            f"--webhook-port={self.webhook_port}",
            "--leader-elect=false",
        ]
        self.process = self.sup.start("kserve-manager", argv, env=env, cwd=self.work_dir)
        self.process.wait_ready(
            http_probe(f"http://127.0.0.1:{self.health_port}/healthz"), timeout, "/healthz"
        )
        self.cluster.apply(*webhooks(self.webhook_port, self.cluster.pki.ca_cert.read_bytes()))
        return self

    def stop(self) -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.cluster.kubectl("delete", kind, WEBHOOK_CONFIG, "--ignore-not-found", check=False)
        self.sup.stop_all(timeout=10)

    @property
    def log_path(self) -> Path:
        assert self.process is not None
        return self.process.log_path
