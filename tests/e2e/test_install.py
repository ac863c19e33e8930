"""Install it the way users do: the Helm chart against a real API server, with RBAC on.

- every object the chart renders passes a server-side dry run (schemas, CRDs,
  admission) for several value sets;
- ``helm install`` works and prints its NOTES;
- the chart's ServiceAccount, through a token minted for it, CAN do what the
  operator needs and CANNOT do anything else (``kubectl auth can-i`` plus real
  requests), for a cluster-wide install and a per-namespace one;
- the real operator, run as a process with nothing but that token, carries a
  rollout through its first move: RBAC is not only narrow but sufficient.

kwok fakes the operator's pods (no image is pulled, no container runs); the
operator process of the last tests stands in for the container.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout_devenv import (
    LocalCluster,
    MissingBinary,
    PrometheusServer,
    find_binaries,
    free_port,
)
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout-operator"
GROUP = "modelrollout.io"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------- helpers


def helm_path() -> Path:
    try:
        return find_binaries(need={"helm"}).helm
    except MissingBinary as exc:
        pytest.fail(f"{exc}\n(`make binaries` builds it)", pytrace=False)


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_path()), "--kubeconfig", str(cluster.kubeconfig), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\n{result.stderr}{result.stdout}")
    return result


def _suffix() -> str:
    return uuid.uuid4().hex[:6]


def ensure_namespace(cluster: LocalCluster, name: str) -> str:
    cluster.apply(m.namespace(name))
    return name


def install_chart_crds(cluster: LocalCluster) -> None:
    """What Helm does with crds/ on install (needed before dry-running the peering object)."""
    cluster.install_crds(sorted((CHART / "crds").glob("*.yaml")))


def render(cluster: LocalCluster, release: str, namespace: str, values: Obj) -> list[Obj]:
    cmd = [
        str(helm_path()), "template", release, str(CHART), "--namespace", namespace,
        "--values", "-",
    ]  # fmt: skip
    result = subprocess.run(
        cmd, input=json.dumps(values), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@contextmanager
def installed(
    cluster: LocalCluster, release: str, namespace: str, values: Obj
) -> Iterator[subprocess.CompletedProcess[str]]:
    """``helm install --wait`` (kwok makes the pods Ready), then ``helm uninstall``."""
    result = _install(cluster, release, namespace, values)
    try:
        yield result
    finally:
        helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", check=False)


def _install(
    cluster: LocalCluster, release: str, namespace: str, values: Obj
) -> subprocess.CompletedProcess[str]:
    # kwok's nodes carry a taint; the chart's tolerations value lets the pods land.
    values = {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]} | values
    cmd = [
        str(helm_path()), "--kubeconfig", str(cluster.kubeconfig),
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
        "--values", "-", "--wait", "--timeout", "3m",
    ]  # fmt: skip
    result = subprocess.run(
        cmd, input=json.dumps(values), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def service_account_kubeconfig(
    cluster: LocalCluster, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig holding only a token minted for the chart's ServiceAccount."""
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration", "1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.pki.ca_cert),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class As:
    """kubectl as the ServiceAccount (its kubeconfig instead of the admin's)."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.cluster.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=60, check=False
        )

    def can(self, verb: str, resource: str, namespace: str | None, sub: str = "") -> bool:
        args = ["auth", "can-i", verb, resource]
        if sub:
            args.append(f"--subresource={sub}")
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        result = self.kubectl(*args)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"


def assert_permissions(
    sa: As, allowed: list[tuple[str, str, str | None, str]], denied: list[tuple[str, ...]]
) -> None:
    wrong = [f"cannot {a}" for a in allowed if not sa.can(*a)]
    wrong += [f"can {d}" for d in denied if sa.can(*d)]  # type: ignore[arg-type]
    assert not wrong, "\n".join(wrong)


def what_the_operator_does(ns: str) -> list[tuple[str, str, str | None, str]]:
    return [
        ("list", f"modelrollouts.{GROUP}", ns, ""),
        ("watch", f"modelrollouts.{GROUP}", ns, ""),
        ("patch", f"modelrollouts.{GROUP}", ns, ""),
        ("patch", f"modelrollouts.{GROUP}", ns, "status"),
        ("create", "events", ns, ""),
        ("get", "httproutes.gateway.networking.k8s.io", ns, ""),
        ("patch", "httproutes.gateway.networking.k8s.io", ns, ""),
        ("get", "virtualservices.networking.istio.io", ns, ""),
        ("patch", "virtualservices.networking.istio.io", ns, ""),
        ("get", "services", ns, ""),
        ("patch", "services", ns, ""),
        ("get", "deployments.apps", ns, ""),
        ("patch", "deployments.apps", ns, "scale"),
    ]


def what_it_must_not_do(ns: str) -> list[tuple[str, ...]]:
    return [
        ("get", "secrets", ns, ""),
        ("list", "secrets", ns, ""),
        ("watch", "secrets", ns, ""),
        ("get", "configmaps", ns, ""),
        ("create", f"modelrollouts.{GROUP}", ns, ""),
        ("delete", f"modelrollouts.{GROUP}", ns, ""),
        ("update", f"modelrollouts.{GROUP}", ns, ""),
        ("delete", "deployments.apps", ns, ""),
        ("patch", "deployments.apps", ns, ""),
        ("update", "deployments.apps", ns, ""),
        ("create", "deployments.apps", ns, ""),
        ("delete", "services", ns, ""),
        ("create", "services", ns, ""),
        ("delete", "httproutes.gateway.networking.k8s.io", ns, ""),
        ("create", "httproutes.gateway.networking.k8s.io", ns, ""),
        ("delete", "virtualservices.networking.istio.io", ns, ""),
        ("list", "events", ns, ""),
        ("delete", "events", ns, ""),
        ("create", "pods", ns, ""),
        ("create", "pods", ns, "exec"),
        ("create", "serviceaccounts", ns, "token"),
        ("create", "rolebindings.rbac.authorization.k8s.io", ns, ""),
    ]


# ------------------------------------------------------------------ server-side dry run

DRY_RUN_VALUES: dict[str, Obj] = {
    "default": {},
    "namespaces": {"watchNamespaces": ["NS-A", "NS-B"]},
    "replicas": {"replicas": 3},
    "replicas-namespaces": {"replicas": 2, "watchNamespaces": ["NS-A"]},
    "bearer": {"prometheus": {"auth": {"bearerTokenSecret": {"name": "prom", "key": "token"}}}},
    "basic-ca": {
        "prometheus": {
            "address": "https://prometheus.example:9091",
            "auth": {
                "basicAuthSecret": {"name": "prom-basic", "key": "auth"},
                "caBundle": {"configMap": "prom-ca", "key": "ca.crt"},
            },
        }
    },
    # The ServiceMonitor's CRD (prometheus-operator's) is not in the local cluster.
    "dashboard": {"grafanaDashboard": {"enabled": True}},
    "prometheus-policy": {
        "prometheus": {
            "allowedAddresses": ["http://prometheus.team-a:9090"],
            "credentials": [
                {
                    "address": "https://thanos.monitoring:10902",
                    "bearerTokenSecret": {"name": "thanos", "key": "token"},
                    "caBundle": {"configMap": "thanos-ca", "key": "ca.crt"},
                }
            ],
        },
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["127.0.0.1/32"]}},
    },
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(DRY_RUN_VALUES))
def test_rendered_objects_pass_a_server_side_dry_run(cluster: LocalCluster, name: str) -> None:
    install_chart_crds(cluster)
    suffix = _suffix()
    release_ns = ensure_namespace(cluster, f"dry-{suffix}")
    watched = [ensure_namespace(cluster, f"dry-{suffix}-{x}") for x in ("a", "b")]
    text = json.dumps(DRY_RUN_VALUES[name])
    text = text.replace("NS-A", watched[0]).replace("NS-B", watched[1])
    objs = render(cluster, f"dry{suffix}", release_ns, json.loads(text))
    assert objs
    body = "\n---\n".join(json.dumps(o) for o in objs)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-", input=body
    )
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(objs), result.stdout


# --------------------------------------------------------------- helm install and RBAC


@pytest.mark.e2e
def test_helm_install_watching_listed_namespaces(cluster: LocalCluster, tmp_path: Path) -> None:
    suffix = _suffix()
    release, ns = f"mr{suffix}", f"mr-{suffix}-system"
    watched = [ensure_namespace(cluster, f"mr-{suffix}-{x}") for x in ("a", "b")]
    other = ensure_namespace(cluster, f"mr-{suffix}-other")
    with installed(cluster, release, ns, {"watchNamespaces": watched}) as result:
        assert f"kubectl -n {ns} rollout status deployment/{release}-modelrollout-operator" in (
            result.stdout
        )
        assert ", ".join(watched) in result.stdout
        account = f"{release}-modelrollout-operator"
        sa = As(cluster, service_account_kubeconfig(cluster, ns, account, tmp_path / "sa.yaml"))
        who = json.loads(sa.kubectl("auth", "whoami", "-o", "json").stdout)
        assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:{account}"

        denied = [*what_it_must_not_do(watched[0]), *what_it_must_not_do(ns)]
        # Nothing at all outside the watched namespaces ...
        denied += [(v, r, other, s) for v, r, _, s in what_the_operator_does(other)]
        denied += [(v, r, ns, s) for v, r, _, s in what_the_operator_does(ns)]
        # ... and nothing cluster-wide.
        denied += [
            ("list", f"modelrollouts.{GROUP}", None, ""),
            ("list", "namespaces", None, ""),
            ("list", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
            ("list", "secrets", None, ""),
            ("list", "clusterkopfpeerings.kopf.dev", None, ""),
        ]
        allowed = [a for w in watched for a in what_the_operator_does(w)]
        assert_permissions(sa, allowed, denied)

        # Real requests, not only the authorizer's opinion.
        cluster.kubectl("create", "secret", "generic", "s", "-n", watched[0], "--from-literal=k=v")
        refused = sa.kubectl("get", "secret", "s", "-n", watched[0])
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower()
        cluster.apply(*m.model_objects("fraud-detector", watched[0]))
        patched = sa.kubectl(
            "patch", "httproute", "fraud-detector", "-n", watched[0], "--type=merge",
            "-p", json.dumps({"metadata": {"annotations": {"checked": "yes"}}}),
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
        deleted = sa.kubectl("delete", "deployment", "fraud-detector-v1", "-n", watched[0])
        assert deleted.returncode != 0
        assert "forbidden" in deleted.stderr.lower()


@pytest.mark.e2e
def test_helm_install_cluster_wide_with_two_replicas(cluster: LocalCluster, tmp_path: Path) -> None:
    suffix = _suffix()
    release, ns = f"mr{suffix}", f"mr-{suffix}-system"
    somewhere = ensure_namespace(cluster, f"mr-{suffix}-anywhere")
    with installed(cluster, release, ns, {"replicas": 2}):
        fullname = f"{release}-modelrollout-operator"
        peering = json.loads(
            cluster.kubectl("get", "clusterkopfpeering", fullname, "-o", "json").stdout
        )
        assert peering["metadata"]["name"] == fullname
        pdb = json.loads(cluster.kubectl("get", "pdb", fullname, "-n", ns, "-o", "json").stdout)
        assert pdb["spec"]["minAvailable"] == 1
        dep = json.loads(
            cluster.kubectl("get", "deployment", fullname, "-n", ns, "-o", "json").stdout
        )
        assert f"--peering={fullname}" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert dep["status"].get("readyReplicas") == 2

        sa = As(cluster, service_account_kubeconfig(cluster, ns, fullname, tmp_path / "sa.yaml"))
        allowed = [
            *what_the_operator_does(somewhere),
            ("list", f"modelrollouts.{GROUP}", None, ""),
            ("watch", f"modelrollouts.{GROUP}", None, ""),
            ("list", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
            ("watch", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
            ("patch", "clusterkopfpeerings.kopf.dev", None, ""),
            ("watch", "clusterkopfpeerings.kopf.dev", None, ""),
        ]
        denied = [
            *what_it_must_not_do(somewhere),
            *what_it_must_not_do(ns),
            *what_it_must_not_do("kube-system"),
            ("list", "secrets", None, ""),
            ("list", "namespaces", None, ""),
            ("get", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
            ("delete", "customresourcedefinitions.apiextensions.k8s.io", None, ""),
            ("create", "clusterkopfpeerings.kopf.dev", None, ""),
            ("delete", "clusterkopfpeerings.kopf.dev", None, ""),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, ""),
        ]
        assert_permissions(sa, allowed, denied)


# ----------------------------------------------------- the operator under the chart's SA


def _get(cluster: LocalCluster, kind: str, name: str, ns: str) -> Obj:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


@pytest.mark.e2e
def test_the_operator_works_with_nothing_but_the_charts_rbac(
    cluster: LocalCluster, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """Narrow is not enough: the operator must do its job with exactly these rights."""
    suffix = _suffix()
    release, ns = f"mr{suffix}", f"mr-{suffix}-system"
    watched = ensure_namespace(cluster, f"mr-{suffix}-models")
    with installed(cluster, release, ns, {"watchNamespaces": [watched]}):
        account = f"{release}-modelrollout-operator"
        kubeconfig = service_account_kubeconfig(cluster, ns, account, tmp_path / "sa.yaml")
        cluster.apply(*m.model_objects("fraud-detector", watched))
        cluster.apply(m.rollout("fraud-detector", watched))
        operator = OperatorProcess(
            cluster,
            tmp_path / "operator",
            # A real Prometheus with no data for this model: the preflight of each gate's
            # query passes, analysis is inconclusive, and the first move still happens.
            prometheus=prometheus.url,
            namespaces=[watched],
            kubeconfig=kubeconfig,
        ).start()
        try:
            # kopf patches the object (finalizer), the operator patches the status ...
            # Within seconds: kopf must not spend a minute retrying lists it may not do
            # (namespaces, CRDs) before it falls back to the namespaces it was given.
            status = wait_for(
                lambda: _get(cluster, "modelrollout", "fraud-detector", watched).get("status"),
                30,
                "a status written under the chart's ServiceAccount",
            )
            status = wait_for(
                lambda: _shadowing(_get(cluster, "modelrollout", "fraud-detector", watched)),
                30,
                "the rollout to start shadowing under the chart's ServiceAccount",
            )
            assert status["phase"] == "Shadowing", status
            obj = _get(cluster, "modelrollout", "fraud-detector", watched)
            assert f"{GROUP}/finalizer" in obj["metadata"].get("finalizers", [])
            # ... the route (a RequestMirror filter for shadow traffic) ...
            route = _get(cluster, "httproute", "fraud-detector", watched)
            filters = [f for r in route["spec"]["rules"] for f in r.get("filters", [])]
            assert any(f["type"] == "RequestMirror" for f in filters), route["spec"]
            # ... and the Events.
            events = json.loads(
                cluster.kubectl("get", "events", "-n", watched, "-o", "json").stdout
            )
            reasons = {e["reason"] for e in events["items"]}
            assert "RolloutStarted" in reasons, reasons

            # Deletion: traffic back on stable, finalizer removed, object gone.
            cluster.kubectl(
                "delete", "modelrollout", "fraud-detector", "-n", watched, "--wait=false"
            )
            wait_for(
                lambda: not _get(cluster, "modelrollout", "fraud-detector", watched),
                60,
                "the finalizer to be removed under the chart's ServiceAccount",
            )
            route = _get(cluster, "httproute", "fraud-detector", watched)
            filters = [f for r in route["spec"]["rules"] for f in r.get("filters", [])]
            assert not any(f["type"] == "RequestMirror" for f in filters)
        finally:
            operator.stop()
        # Not one refused request: the operator (and kopf) ask only for what the chart grants.
        log = operator.log_path.read_text()
        refused = [
            line
            for line in log.splitlines()
            if "forbidden" in line.lower() or "not enough permissions" in line.lower()
        ]
        assert not refused, "\n".join(refused[:20])


def _shadowing(obj: dict[str, Any]) -> dict[str, Any] | None:
    status: dict[str, Any] = obj.get("status") or {}
    return status if status.get("phase") == "Shadowing" else None


def _reconciles(operator: OperatorProcess) -> float:
    """How many reconciles this replica ran (its own /metrics)."""
    for line in operator.metrics().splitlines():
        if line.startswith("modelrollout_reconcile_seconds_count"):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.e2e
def test_two_replicas_one_acts_and_the_other_takes_over(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The chart's peering flags, run for real: one replica acts, the other stands by."""
    suffix = _suffix()
    release, ns = f"mr{suffix}", f"mr-{suffix}-system"
    models = ensure_namespace(cluster, f"mr-{suffix}-models")
    values = {"replicas": 2, "peering": {"lifetime": "5s"}}
    with installed(cluster, release, ns, values):
        fullname = f"{release}-modelrollout-operator"
        dep = json.loads(
            cluster.kubectl("get", "deployment", fullname, "-n", ns, "-o", "json").stdout
        )
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        peering_args = [a for a in args if a.startswith("--peering")]
        assert peering_args == [f"--peering={fullname}", "--peering-lifetime=5s"]
        kubeconfig = service_account_kubeconfig(cluster, ns, fullname, tmp_path / "sa.yaml")
        cluster.apply(*m.model_objects("fraud-detector", models))
        cluster.apply(m.rollout("fraud-detector", models))
        replicas = [
            OperatorProcess(
                cluster,
                tmp_path / name,
                prometheus=f"http://127.0.0.1:{free_port()}",
                kubeconfig=kubeconfig,
                extra=peering_args,
                name=name,
            )
            for name in ("replica-a", "replica-b")
        ]
        try:
            for replica in replicas:
                replica.start()

            def peers() -> int:
                out = cluster.kubectl("get", "clusterkopfpeering", fullname, "-o", "json")
                return len(json.loads(out.stdout).get("status") or {})

            wait_for(lambda: peers() == 2, 30, "both replicas in the peering object")
            wait_for(
                lambda: _get(cluster, "modelrollout", "fraud-detector", models).get("status"),
                30,
                "the rollout to be picked up",
            )
            # Settled: from now on exactly one of them reconciles.
            time.sleep(3)
            before = [_reconciles(r) for r in replicas]
            time.sleep(5)
            delta = [_reconciles(r) - b for r, b in zip(replicas, before, strict=True)]
            assert sorted(d > 0 for d in delta) == [False, True], delta
            leader, standby = (replicas[0], replicas[1]) if delta[0] else (replicas[1], replicas[0])

            # The leader dies without a word: the standby takes over after the lifetime.
            leader.stop(kill=True)
            start = _reconciles(standby)
            wait_for(
                lambda: _reconciles(standby) > start + 2,
                30,
                "the standby replica to take over",
            )
        finally:
            for replica in replicas:
                replica.stop()
            cluster.kubectl("delete", "namespace", models, "--wait=false", check=False)
