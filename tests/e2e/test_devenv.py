"""The local environment is the real thing: a pinned API server, RBAC, kwok nodes, CRDs, Prometheus.

The ``e2e`` tests run against the session fixtures of ``conftest.py``. The
unmarked ones at the end check the launcher's own failure modes (missing
binaries, a process dying while we wait) and need no binary.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modelrollout_devenv import (
    KubectlError,
    LocalCluster,
    MissingBinary,
    PrometheusServer,
    Target,
    find_binaries,
    free_port,
    read_versions,
)
from modelrollout_devenv.procs import ProcessExited, Supervisor, tcp_probe
from modelrollout_devenv.stack import TargetRegistry


def _namespace(cluster: LocalCluster, name: str) -> str:
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


# ------------------------------------------------------------------------- API server


@pytest.mark.e2e
def test_api_server_is_the_pinned_version(cluster: LocalCluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    pinned = read_versions()["KUBERNETES_VERSION"]
    assert out["serverVersion"]["gitVersion"] == pinned
    assert cluster.server.startswith("https://127.0.0.1:")


@pytest.mark.e2e
def test_rbac_refuses_a_service_account_without_bindings(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "devenv-rbac")
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns, check=False)
    token = cluster.kubectl("create", "token", "nobody", "-n", ns).stdout.strip()

    with cluster.api_client(token=token) as api:
        # The token authenticates (so the refusal below is authorisation, not a
        # bad token) ...
        review = k8s.AuthenticationV1Api(api).create_self_subject_review(
            k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1")
        )
        assert review.status is not None
        assert review.status.user_info is not None
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:nobody"
        # ... and RBAC refuses what no binding grants.
        with pytest.raises(ApiException) as refused:
            k8s.CoreV1Api(api).list_namespaced_secret(ns)
    assert refused.value.status == 403
    assert "forbidden" in str(refused.value.body)
    # The admin identity of the kubeconfig may.
    cluster.kubectl("get", "secrets", "-n", ns)


# ------------------------------------------------------------------------------ nodes


@pytest.mark.e2e
def test_deployment_becomes_available_on_kwok_nodes(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "devenv-nodes")
    labels = {"app": "devenv-web"}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                        }
                    ]
                },
            },
        },
    }
    begin = time.monotonic()
    cluster.apply(deployment)
    cluster.kubectl(
        "wait", "--for=condition=Available", "--timeout=60s", "-n", ns, "deployment/web"
    )
    elapsed = time.monotonic() - begin

    status = json.loads(cluster.kubectl("get", "-n", ns, "deployment/web", "-o", "json").stdout)[
        "status"
    ]
    assert status["readyReplicas"] == status["availableReplicas"] == 2
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "app=devenv-web",
                                      "-o", "json").stdout)["items"]  # fmt: skip
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in cluster.node_names
        assert pod["status"]["podIP"]
    assert elapsed < 30, f"Deployment took {elapsed:.1f}s to become Available"

    # Scale down: pods are deleted for real (kwok's pod-delete stage stands in
    # for the kubelet's confirmation), so the rollout settles again.
    cluster.kubectl("scale", "-n", ns, "deployment/web", "--replicas=1")
    cluster.kubectl("wait", "--for=delete", "--timeout=60s", "-n", ns, "pod", "-l",
                    "app=devenv-web", "--field-selector=status.phase!=Running")  # fmt: skip
    cluster.kubectl(
        "wait", "--for=jsonpath={.status.replicas}=1", "--timeout=60s", "-n", ns, "deployment/web"
    )


# ------------------------------------------------------------------------------- CRDs


@pytest.mark.e2e
@pytest.mark.parametrize(
    "crd",
    [
        "httproutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "inferenceservices.serving.kserve.io",
        "servingruntimes.serving.kserve.io",
    ],
)
def test_upstream_crds_are_established(cluster: LocalCluster, crd: str) -> None:
    out = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in out["status"]["conditions"]}
    assert conditions.get("Established") == "True"


def _httproute(name: str, ns: str, weight: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [{"name": "model-v1", "port": 8080, "weight": weight}]}],
        },
    }


@pytest.mark.e2e
def test_api_server_validates_gateway_api_objects(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "devenv-crds")
    cluster.apply(_httproute("good-weight", ns, 10))  # control: the same route, valid
    with pytest.raises(KubectlError) as refused:
        cluster.apply(_httproute("bad-weight", ns, -1))
    message = str(refused.value)
    assert "weight" in message
    assert "greater than or equal to 0" in message
    result = cluster.kubectl("get", "httproute", "-n", ns, "bad-weight", check=False)
    assert result.returncode != 0


@pytest.mark.e2e
def test_istio_virtual_service_is_accepted(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, "devenv-crds")
    cluster.apply(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "model", "namespace": ns},
            "spec": {
                "hosts": ["model"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "model", "subset": "v1"}, "weight": 90},
                            {"destination": {"host": "model", "subset": "v2"}, "weight": 10},
                        ]
                    }
                ],
            },
        }
    )
    out = json.loads(cluster.kubectl("get", "virtualservice", "-n", ns, "model", "-o",
                                     "json").stdout)  # fmt: skip
    assert [r["weight"] for r in out["spec"]["http"][0]["route"]] == [90, 10]


# ------------------------------------------------------------------------- Prometheus


@pytest.mark.e2e
def test_prometheus_scrapes_a_target(prometheus: PrometheusServer, targets: TargetRegistry) -> None:
    # Through the session's registry: setting the shared server's targets directly
    # would drop every later test's model servers from its scrape config.
    registry = CollectorRegistry()
    Gauge("devenv_probe_value", "A value the test reads back.", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        targets.put(
            "devenv-test", [Target("devenv-test", f"127.0.0.1:{port}", {"track": "stable"})]
        )
        up = prometheus.wait_for_series(
            'up{job="devenv-test"}', timeout=30, predicate=lambda r: r[0]["value"][1] == "1"
        )
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
        assert up[0]["metric"]["track"] == "stable"
        value = prometheus.wait_for_series('devenv_probe_value{job="devenv-test"}', timeout=30)
        assert float(value[0]["value"][1]) == 42
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        targets.drop("devenv-test")


@pytest.mark.e2e
def test_prometheus_comes_back_on_the_same_port(prometheus: PrometheusServer) -> None:
    url = prometheus.url
    prometheus.stop(kill=True)
    assert not prometheus.running
    with pytest.raises(OSError, match="Connection refused"):
        prometheus.query("vector(1)")
    prometheus.start()
    assert prometheus.url == url
    assert prometheus.query("vector(1)")[0]["value"][1] == "1"


# ------------------------------------------------- the launcher's failure modes (no binaries)


def test_missing_binary_names_the_part_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingBinary) as missing:
        find_binaries(need={"kube-apiserver", "etcd"})
    message = str(missing.value)
    assert missing.value.name == "etcd"
    assert str(tmp_path / "cache" / "bin") in message
    assert "make binaries" in message
    assert "KUBEBUILDER_ASSETS" in message
    assert "Also missing: kube-apiserver" in message


def test_missing_prometheus_says_apt_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinary, match="apt-get install prometheus"):
        find_binaries(need={"prometheus"})


def test_kubebuilder_assets_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = tmp_path / "etcd"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert find_binaries(need={"etcd"}).etcd == stub
    with pytest.raises(MissingBinary, match="not in the `need=` set"):
        _ = find_binaries(need={"etcd"}).kwok


def test_a_process_that_dies_fails_fast_with_its_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as supervisor:
        process = supervisor.start(
            "doomed", [sys.executable, "-c", "print('no config, giving up', flush=True); exit(3)"]
        )
        begin = time.monotonic()
        with pytest.raises(ProcessExited) as exited:
            process.wait_ready(tcp_probe(free_port()), timeout=30)
        assert time.monotonic() - begin < 10
    message = str(exited.value)
    assert "exited with code 3" in message
    assert "no config, giving up" in message
    assert (tmp_path / "logs" / "doomed.log").is_file()


def test_supervisor_leaves_nothing_running(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as supervisor:
        # A child that ignores SIGTERM, with a grandchild: both must go.
        process = supervisor.start(
            "stubborn",
            ["sh", "-c", "trap '' TERM; sleep 300 & wait"],
        )
        pid = process.pid
        assert pid is not None
        time.sleep(0.2)
        supervisor.stop_all(timeout=0.5)  # SIGTERM is ignored: SIGKILL after 0.5s
    assert not process.running
    deadline = time.monotonic() + 5  # the grandchild is reaped by init, not by us
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process group {pid} still exists after stop")
