"""The Helm chart, rendered by the pinned helm and read back as objects.

``helm lint`` and ``helm template`` run on several value sets; the rendered
YAML is parsed and its important fields asserted: the security context, the
probes, the flags (parsed by the operator's own argument parser, so a flag the
operator does not know fails here), and the RBAC rules, compared *exactly* to
the table below of what the operator uses. The chart's copies of the CRD and
the Grafana dashboard must equal their sources (``hack/sync-chart-crds.sh``).

A missing helm fails the test with how to get it (``make binaries``), never
skips it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout-operator"
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
RELEASE, NAMESPACE = "mr", "modelrollout-system"
FULLNAME = "mr-modelrollout-operator"

Obj = dict[str, Any]
Rules = dict[tuple[str, str], set[str]]

# ------------------------------------------------------------------ what the operator uses

#: Every (apiGroup, resource) the operator touches in a watched namespace, and how.
#: kopf lists, watches and patches (finalizer, annotations) the ModelRollouts; the
#: operator patches their status, creates Events, reads and patches the routes,
#: reads Deployments and patches their scale, lists and watches the routes so that
#: a hand edit wakes the rollout that owns it, and gets the one Secret of notification
#: receivers by its name. Nothing else; never any other Secret.
NOTIFICATIONS_SECRET = ("", "secrets[modelrollout-notifications]")
NAMESPACED_RULES: Rules = {
    ("modelrollout.io", "modelrollouts"): {"list", "watch", "patch"},
    ("modelrollout.io", "modelrollouts/status"): {"patch"},
    ("", "events"): {"create"},
    NOTIFICATIONS_SECRET: {"get"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "patch"},
    ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "patch"},
    ("", "services"): {"get", "list", "watch", "patch"},
    ("serving.kserve.io", "inferenceservices"): {"get", "patch"},
    ("apps", "deployments"): {"get"},
    ("apps", "deployments/scale"): {"patch"},
}
#: Cluster-wide only: kopf watches CRDs (it lists no namespaces when cluster-wide).
CLUSTER_ONLY_RULES: Rules = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
CLUSTER_PEERING: Rules = {("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "patch"}}
NAMESPACED_PEERING: Rules = {("kopf.dev", "kopfpeerings"): {"list", "watch", "patch"}}

# ---------------------------------------------------------------------------- helpers


def _versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


def helm_path() -> Path:
    """The pinned helm: via modelrollout_devenv when present, else the build cache."""
    try:
        from modelrollout_devenv.binaries import MissingBinary, find_binaries
    except ImportError:
        versions = _versions()
        folder = f"helm-{versions.get('HELM_VERSION', '?')}-{versions.get('HELM_BUILD', '?')}"
        path = Path.home() / ".cache" / "modelrollout" / "bin" / folder / "helm"
        if path.is_file():
            return path
        pytest.fail(f"helm not found at {path}: run `make binaries`", pytrace=False)
    try:
        return find_binaries(need={"helm"}).helm
    except MissingBinary as exc:
        pytest.fail(f"{exc}\n(`make binaries` builds it)", pytrace=False)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def _values_file(tmp_path: Path, values: Mapping[str, Any]) -> Path:
    path = tmp_path / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def template_args(tmp_path: Path, values: Mapping[str, Any]) -> list[str]:
    # No --kube-version: a helm built as upstream builds it renders for a current
    # Kubernetes offline, and so must ours (hack/build-binaries.sh sets its ldflags).
    return [
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--values", str(_values_file(tmp_path, values)),
    ]  # fmt: skip


def render(tmp_path: Path, values: Mapping[str, Any] | None = None) -> list[Obj]:
    out = helm(*template_args(tmp_path, values or {})).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[Obj], kind: str) -> Obj:
    found = kinds(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def rules_table(role: Obj) -> Rules:
    """(apiGroup, resource) -> verbs; a rule may list several groups and resources.

    A rule limited to some objects by name reads ``resource[name,...]``.
    """
    table: Rules = {}
    for rule in role["rules"]:
        assert not rule.get("nonResourceURLs"), rule
        names = ",".join(rule.get("resourceNames") or [])
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = f"{resource}[{names}]" if names else resource
                table.setdefault((group, key), set()).update(rule["verbs"])
    return table


def container(objs: Iterable[Obj]) -> Obj:
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert isinstance(c, dict)
    return c


def parse_flags(args: list[str]) -> argparse.Namespace:
    """The container's args as `modelrollout run` itself parses them (ENTRYPOINT + args)."""
    from modelrollout.cli.run import add_parsers

    parser = argparse.ArgumentParser(prog="modelrollout", exit_on_error=False)
    add_parsers(parser.add_subparsers())
    return parser.parse_args(["run", *args])


# ------------------------------------------------------------------------- the helm build


def test_the_pinned_helm_reports_its_release_and_renders_for_a_current_kubernetes(
    tmp_path: Path,
) -> None:
    # Given the helm that hack/build-binaries.sh built from Go modules
    versions = _versions()
    # Then it says which release it is, as an official build does
    shown = helm("version", "--template", "{{.Version}} {{.GitTreeState}}").stdout
    assert shown == f"{versions['HELM_VERSION']} clean"
    # and offline it assumes the Kubernetes of the client-go it was built with, not v1.20
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Version }}'}\n"
    )
    [cm] = [d for d in yaml.safe_load_all(helm("template", "p", str(chart)).stdout) if d]
    major, minor = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", cm["data"]["kube"]).groups()  # type: ignore[union-attr]
    assert (int(major), int(minor)) >= (1, 30), cm["data"]["kube"]


# ------------------------------------------------------------------------------- lint

VALUE_SETS: dict[str, Obj] = {
    "default": {},
    "namespaces": {"watchNamespaces": ["ml", "ml-staging"]},
    "replicas": {"replicas": 3},
    "replicas-namespaces": {"replicas": 2, "watchNamespaces": ["ml"]},
    "shards": {"shards": 3, "replicas": 2},
    "shards-namespaces": {"shards": 2, "replicas": 2, "watchNamespaces": ["ml", "ml-staging"]},
    "bearer": {"prometheus": {"auth": {"bearerTokenSecret": {"name": "prom", "key": "tok"}}}},
    "basic-ca": {
        "prometheus": {
            "address": "https://prometheus.example:9091",
            "auth": {
                "basicAuthSecret": {"name": "prom-basic", "key": "auth"},
                "caBundle": {"configMap": "prom-ca", "key": "ca.pem"},
            },
        }
    },
    "monitoring": {"serviceMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "notifications-limits": {
        "notifications": {
            "defaultsSecret": {"name": "receivers", "key": "r.yaml"},
            "retries": 3,
            "backoff": "2s",
            "queueSize": 50,
        },
        "limits": {"maxConcurrentRollouts": 5, "maxConcurrentRolloutsPerNamespace": 2},
    },
    "more-prometheus": {
        "prometheus": {
            "auth": {"bearerTokenSecret": {"name": "prom", "key": "tok"}},
            "allowedAddresses": ["http://prometheus.team-a:9090"],
            "credentials": [
                {
                    "address": "https://thanos.monitoring:10902",
                    "bearerTokenSecret": {"name": "thanos", "key": "token"},
                    "caBundle": {"configMap": "thanos-ca", "key": "ca.pem"},
                },
                {
                    "address": "http://vm.monitoring:8428",
                    "basicAuthSecret": {"name": "vm", "key": "auth"},
                },
            ],
        }
    },
    "network-policy": {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}}},
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str, tmp_path: Path) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
        "--values", str(_values_file(tmp_path, VALUE_SETS[name])),
    )  # fmt: skip
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_labelled_and_namespaced_where_it_belongs(
    name: str, tmp_path: Path
) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for obj in render(tmp_path, VALUE_SETS[name]):
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, obj["kind"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, obj["kind"]
        else:
            assert meta["namespace"], obj["kind"]


# ------------------------------------------------------------------- default values


def test_default_is_cluster_wide_with_exactly_the_rules_the_operator_uses(tmp_path: Path) -> None:
    objs = render(tmp_path)
    role = one(objs, "ClusterRole")
    assert rules_table(role) == NAMESPACED_RULES | CLUSTER_ONLY_RULES
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    sa = one(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert not kinds(objs, "Role")
    assert not kinds(objs, "RoleBinding")
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_no_role_grants_anything_on_secrets_or_wildcards(tmp_path: Path) -> None:
    for values in VALUE_SETS.values():
        objs = render(tmp_path, values)
        for role in kinds(objs, "ClusterRole") + kinds(objs, "Role"):
            for (group, resource), verbs in rules_table(role).items():
                assert resource != "secrets", role["metadata"]
                assert "*" not in {group, resource} | verbs, role["metadata"]
                assert not verbs & {"delete", "deletecollection", "update", "escalate", "bind"}


def test_the_no_secrets_decision_is_written_down(tmp_path: Path) -> None:
    out = helm(*template_args(tmp_path, {})).stdout
    assert "No rule on Secrets but one" in out


def test_the_only_secret_the_operator_may_read_is_the_notifications_secret_by_name(
    tmp_path: Path,
) -> None:
    for values in VALUE_SETS.values():
        objs = render(tmp_path, values)
        for role in kinds(objs, "ClusterRole") + kinds(objs, "Role"):
            secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
            assert secret_rules == [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": ["modelrollout-notifications"],
                    "verbs": ["get"],
                }
            ], role["metadata"]


def test_the_notifications_secret_rule_can_be_left_out(tmp_path: Path) -> None:
    values = {"rbac": {"notificationsSecret": False}}
    table = rules_table(one(render(tmp_path, values), "ClusterRole"))
    assert NOTIFICATIONS_SECRET not in table
    assert not any(r.startswith("secrets") for _, r in table)


def test_limits_and_notification_settings_become_flags(tmp_path: Path) -> None:
    c = container(render(tmp_path, VALUE_SETS["notifications-limits"]))
    flags = parse_flags(c["args"])
    assert (flags.max_concurrent_rollouts, flags.max_concurrent_rollouts_per_namespace) == (5, 2)
    assert flags.notifications_file == "/etc/modelrollout/notifications/receivers.yaml"
    assert (flags.notification_retries, flags.notification_backoff) == (3, "2s")
    assert flags.notification_queue_size == 50
    pod = one(render(tmp_path, VALUE_SETS["notifications-limits"]), "Deployment")
    volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
    assert volumes["notifications"]["secret"] == {
        "secretName": "receivers",
        "defaultMode": 0o440,
        "items": [{"key": "r.yaml", "path": "receivers.yaml"}],
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["notifications"]["mountPath"] == "/etc/modelrollout/notifications"
    assert mounts["notifications"]["readOnly"] is True


def test_default_deployment_is_locked_down(tmp_path: Path) -> None:
    objs = render(tmp_path)
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = container(objs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp (Python, matplotlib's cache).
    mounts = {m["name"]: m["mountPath"] for m in container(objs)["volumeMounts"]}
    assert mounts == {"tmp": "/tmp"}
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}
    # One standalone replica: never two side by side during an update.
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_default_image_is_the_app_version(tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(render(tmp_path))["image"].endswith(f":{chart['appVersion']}")
    digest = "sha256:" + "a" * 64
    image = container(render(tmp_path, {"image": {"digest": digest}}))["image"]
    assert image.endswith(f"@{digest}")


def test_probes_and_ports(tmp_path: Path) -> None:
    objs = render(tmp_path)
    c = container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    flags = parse_flags(c["args"])
    assert flags.health_port == ports["health"]
    assert flags.metrics_port == ports["metrics"]
    assert flags.bind_address == "0.0.0.0"
    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_default_flags(tmp_path: Path) -> None:
    c = container(render(tmp_path))
    flags = parse_flags(c["args"])
    assert flags.all_namespaces is True
    assert flags.namespace == []
    assert flags.peering is None
    assert "--peering-lifetime=60s" not in c["args"]
    assert flags.prometheus == "http://prometheus.monitoring:9090"
    assert flags.prometheus_token_file is None
    assert flags.prometheus_basic_auth_file is None
    assert flags.prometheus_ca is None
    assert flags.tick == "5s"
    assert flags.resync == "5m"
    assert flags.guard_interval == "2s"
    assert flags.watch_routes == "gatewayAPI,istio,service"
    assert (flags.shards, flags.shard) == (1, 0)
    assert (flags.log_format, flags.log_level) == ("json", "info")
    assert (flags.max_concurrent_rollouts, flags.max_concurrent_rollouts_per_namespace) == (0, 0)
    assert flags.notifications_file is None
    assert (flags.notification_retries, flags.notification_queue_size) == (5, 1000)
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_default_has_no_optional_objects(tmp_path: Path) -> None:
    present = {o["kind"] for o in render(tmp_path)}
    assert present == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    }


# ------------------------------------------------------------------ watched namespaces


def test_a_list_of_namespaces_gets_roles_and_no_cluster_role(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["namespaces"])
    assert not kinds(objs, "ClusterRole")
    assert not kinds(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in kinds(objs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in kinds(objs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"ml", "ml-staging"}
    for ns, role in roles.items():
        assert rules_table(role) == NAMESPACED_RULES, ns
        assert bindings[ns]["roleRef"]["kind"] == "Role"
        assert bindings[ns]["roleRef"]["name"] == role["metadata"]["name"]
        assert bindings[ns]["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    flags = parse_flags(container(objs)["args"])
    assert flags.namespace == ["ml", "ml-staging"]
    assert flags.all_namespaces is False


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"watchNamespaces": ["team-*"]}, "watchNamespaces"),
        ({"watchNamespaces": ["ml", "ml"]}, "watchNamespaces"),
        ({"tick": "1d"}, "tick"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"replica": 2}, "replica"),
        ({"shards": 0}, "shards"),
        ({"resync": "soon"}, "resync"),
        ({"guardInterval": "often"}, "guardInterval"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"prometheus": {"address": "prometheus:9090"}}, "address"),
        ({"prometheus": {"allowedAddresses": ["http://u:p@prom:9090"]}}, "allowedAddresses"),
        ({"prometheus": {"credentials": [{"address": "http://p:9090"}]}}, "set bearerTokenSecret"),
        ({"networkPolicy": {"enabled": True}}, "networkPolicy.apiServer.cidrs is required"),
        (
            {"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1"]}}},
            "cidrs",
        ),
        (
            {
                "prometheus": {
                    "auth": {
                        "bearerTokenSecret": {"name": "a", "key": "t"},
                        "basicAuthSecret": {"name": "b", "key": "a"},
                    }
                }
            },
            "not both",
        ),
    ],
)
def test_bad_values_are_refused(values: Obj, error: str, tmp_path: Path) -> None:
    result = helm(*template_args(tmp_path, values), check=False)
    assert result.returncode != 0
    assert error in result.stderr


def test_routers_can_be_left_out_of_rbac(tmp_path: Path) -> None:
    off = {"istio": False, "service": False, "kserve": False}
    values = {"rbac": {"trafficRouters": off, "scaleDown": False}}
    table = rules_table(one(render(tmp_path, values), "ClusterRole"))
    assert ("serving.kserve.io", "inferenceservices") not in table
    assert ("networking.istio.io", "virtualservices") not in table
    assert ("", "services") not in table
    assert ("apps", "deployments") not in table
    assert ("gateway.networking.k8s.io", "httproutes") in table
    # and the operator watches only the routes it may watch
    assert parse_flags(container(render(tmp_path, values))["args"]).watch_routes == "gatewayAPI"


def test_blue_green_scale_down_needs_deployment_scale_without_the_service_router(
    tmp_path: Path,
) -> None:
    values = {"rbac": {"trafficRouters": {"service": False}}}
    table = rules_table(one(render(tmp_path, values), "ClusterRole"))
    assert ("", "services") not in table
    assert table[("apps", "deployments")] == {"get"}
    assert table[("apps", "deployments/scale")] == {"patch"}


def test_rbac_and_service_account_can_be_brought_by_the_user(tmp_path: Path) -> None:
    values = {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}}
    objs = render(tmp_path, values)
    assert {o["kind"] for o in objs} == {"Service", "Deployment"}
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --------------------------------------------------------------------------- replicas


def test_several_replicas_share_the_work_through_peering(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["replicas"])
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    flags = parse_flags(container(objs)["args"])
    assert flags.peering == FULLNAME
    assert flags.peering_lifetime == "60s"
    assert flags.priority is None  # each replica draws its own
    peering = one(objs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["name"] == flags.peering
    assert rules_table(one(objs, "ClusterRole")) == (
        NAMESPACED_RULES | CLUSTER_ONLY_RULES | CLUSTER_PEERING
    )
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_several_replicas_in_listed_namespaces_peer_in_each(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["replicas-namespaces"])
    assert not kinds(objs, "ClusterKopfPeering")
    (peering,) = kinds(objs, "KopfPeering")
    assert peering["metadata"]["namespace"] == "ml"
    assert peering["metadata"]["name"] == parse_flags(container(objs)["args"]).peering
    (role,) = kinds(objs, "Role")
    assert rules_table(role) == NAMESPACED_RULES | NAMESPACED_PEERING


def test_peering_name_can_be_set(tmp_path: Path) -> None:
    objs = render(tmp_path, {"replicas": 2, "peering": {"name": "ml-operators"}})
    assert parse_flags(container(objs)["args"]).peering == "ml-operators"
    assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "ml-operators"


# ----------------------------------------------------------------------------- shards


def test_shards_get_a_deployment_each_with_disjoint_pods_and_a_peering_each(
    tmp_path: Path,
) -> None:
    objs = render(tmp_path, VALUE_SETS["shards"])
    deployments = kinds(objs, "Deployment")
    assert [d["metadata"]["name"] for d in deployments] == [
        f"{FULLNAME}-shard-{i}" for i in range(3)
    ]
    peerings = sorted(p["metadata"]["name"] for p in kinds(objs, "ClusterKopfPeering"))
    budgets = {b["metadata"]["name"]: b for b in kinds(objs, "PodDisruptionBudget")}
    for i, dep in enumerate(deployments):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        flags = parse_flags(c["args"])
        assert (flags.shards, flags.shard) == (3, i)
        assert dep["spec"]["replicas"] == 2
        # kopf appends the shard to the peering name; the chart creates that object
        assert f"{flags.peering}-shard-{i}" in peerings
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector["modelrollout.io/shard"] == str(i)
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        for other in deployments:
            if other is not dep:
                pods = other["spec"]["template"]["metadata"]["labels"]
                assert not selector.items() <= pods.items(), "selectors must not overlap"
        budget = budgets[dep["metadata"]["name"]]
        assert budget["spec"]["selector"]["matchLabels"] == selector
    assert len(peerings) == 3
    # the metrics Service still reaches every shard's pods
    svc = one(objs, "Service")
    for dep in deployments:
        assert (
            svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        )


def test_shards_in_listed_namespaces_peer_per_shard_in_each_namespace(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["shards-namespaces"])
    peerings = {
        (p["metadata"]["namespace"], p["metadata"]["name"]) for p in kinds(objs, "KopfPeering")
    }
    assert peerings == {
        (ns, f"{FULLNAME}-shard-{i}") for ns in ("ml", "ml-staging") for i in range(2)
    }


def test_one_shard_keeps_the_deployment_name_and_selector_of_old(tmp_path: Path) -> None:
    dep = one(render(tmp_path, {"shards": 1}), "Deployment")
    assert dep["metadata"]["name"] == FULLNAME
    assert "modelrollout.io/shard" not in dep["spec"]["selector"]["matchLabels"]
    assert "--shards" not in " ".join(container([dep])["args"])


def test_the_peering_crds_ship_in_the_chart() -> None:
    copy = CHART / "crds" / "peerings.kopf.dev.yaml"
    source = ROOT / "crds" / "kopf-peering.yaml"
    text = copy.read_text()
    # A leading document separator: `helm show crds` joins the files as they are.
    assert text.startswith("---\n")
    assert text.endswith(source.read_text()), "run hack/sync-chart-crds.sh"
    docs = list(yaml.safe_load_all(text))
    names = {(d["spec"]["names"]["kind"], d["spec"]["scope"], d["spec"]["group"]) for d in docs}
    assert names == {
        ("ClusterKopfPeering", "Cluster", "kopf.dev"),
        ("KopfPeering", "Namespaced", "kopf.dev"),
    }
    # ... and sorts after the ModelRollout CRD, whose file has no leading separator.
    assert sorted(p.name for p in (CHART / "crds").iterdir())[-1] == copy.name


# --------------------------------------------------------------------- prometheus auth


def test_bearer_token_secret_is_mounted_and_passed(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["bearer"])
    c = container(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prometheus-token")
    assert volume["secret"]["secretName"] == "prom"
    assert volume["secret"]["items"] == [{"key": "tok", "path": "token"}]
    assert volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in c["volumeMounts"] if m["name"] == "prometheus-token")
    assert mount["readOnly"] is True
    flags = parse_flags(c["args"])
    assert flags.prometheus_token_file == f"{mount['mountPath']}/token"
    assert flags.prometheus_basic_auth_file is None
    # The kubelet mounts it; the operator's RBAC still has nothing on Secrets.
    assert all(r != "secrets" for _, r in rules_table(one(objs, "ClusterRole")))


def test_basic_auth_and_ca_bundle_are_mounted_and_passed(tmp_path: Path) -> None:
    objs = render(tmp_path, VALUE_SETS["basic-ca"])
    c = container(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert volumes["prometheus-basic-auth"]["secret"]["items"] == [{"key": "auth", "path": "auth"}]
    assert volumes["prometheus-ca"]["configMap"] == {
        "name": "prom-ca",
        "defaultMode": 0o444,
        "items": [{"key": "ca.pem", "path": "ca.crt"}],
    }
    flags = parse_flags(c["args"])
    assert flags.prometheus == "https://prometheus.example:9091"
    assert flags.prometheus_basic_auth_file == f"{mounts['prometheus-basic-auth']}/auth"
    assert flags.prometheus_ca == f"{mounts['prometheus-ca']}/ca.crt"
    assert flags.prometheus_token_file is None


def test_each_allowed_prometheus_gets_its_own_credential_files(tmp_path: Path) -> None:
    # Given two more Prometheus addresses with credentials, and one allowed without
    objs = render(tmp_path, VALUE_SETS["more-prometheus"])
    c = container(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    flags = parse_flags(c["args"])
    # Then the operator is told to allow them, each with the files of its own Secret
    assert flags.prometheus_allow == ["http://prometheus.team-a:9090"]
    from modelrollout.analysis.policy import Credentials

    creds = dict(Credentials.parse(text) for text in flags.prometheus_credentials)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    thanos = creds["https://thanos.monitoring:10902"]
    assert thanos.token_file == f"{mounts['prom-cred-0-token']}/token"
    assert thanos.ca_file == f"{mounts['prom-cred-0-ca']}/ca.crt"
    assert thanos.basic_auth_file is None
    assert volumes["prom-cred-0-token"]["secret"]["secretName"] == "thanos"
    assert volumes["prom-cred-0-ca"]["configMap"]["items"] == [{"key": "ca.pem", "path": "ca.crt"}]
    vm = creds["http://vm.monitoring:8428"]
    assert vm == Credentials(basic_auth_file=f"{mounts['prom-cred-1-basic-auth']}/auth")
    assert volumes["prom-cred-1-basic-auth"]["secret"]["secretName"] == "vm"
    # and the default address keeps its own token, apart from the others
    assert flags.prometheus_token_file == f"{mounts['prometheus-token']}/token"
    assert len(set(mounts.values())) == len(mounts)


# -------------------------------------------------------------------------- network policy


def test_no_network_policy_unless_asked(tmp_path: Path) -> None:
    assert kinds(render(tmp_path), "NetworkPolicy") == []


def test_the_network_policy_lets_the_operator_reach_only_the_api_server_prometheus_and_dns(
    tmp_path: Path,
) -> None:
    # Given the policy switched on, with the API server's endpoints and a Prometheus peer
    prom_peer = {"namespaceSelector": {"matchLabels": {"team": "obs"}}}
    values = {
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.0.0.1/32", "10.0.0.2/32"], "ports": [6443]},
            "prometheus": {"to": [prom_peer], "ports": [9090, 10902]},
        }
    }
    objs = render(tmp_path, values)
    policy = one(objs, "NetworkPolicy")
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    # Then it selects the operator's pods and restricts egress only
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Egress"]
    api, prom, dns = spec["egress"]
    assert api == {
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "10.0.0.2/32"}}],
        "ports": [{"protocol": "TCP", "port": 6443}],
    }
    assert prom == {
        "to": [prom_peer],
        "ports": [{"protocol": "TCP", "port": 9090}, {"protocol": "TCP", "port": 10902}],
    }
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    # and without DNS when the cluster resolves otherwise
    values["networkPolicy"]["dns"] = {"enabled": False}
    assert len(one(render(tmp_path, values), "NetworkPolicy")["spec"]["egress"]) == 2


# ---------------------------------------------------------------------------- monitoring


def test_service_monitor_scrapes_the_metrics_service(tmp_path: Path) -> None:
    values = {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}
    objs = render(tmp_path, values)
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # The series carry the rollout's own `namespace` label; keep it.
    assert endpoint["honorLabels"] is True


def test_grafana_dashboard_config_map_holds_the_dashboard(tmp_path: Path) -> None:
    cm = one(render(tmp_path, VALUE_SETS["monitoring"]), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())


# ----------------------------------------------------------------- copies kept in sync


def test_the_chart_crd_is_the_generated_crd() -> None:
    copy = CHART / "crds" / CRD.name
    assert copy.read_bytes() == CRD.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from {CRD.relative_to(ROOT)}: "
        "run hack/sync-chart-crds.sh (make crds does)"
    )


def test_the_chart_dashboard_is_the_docs_dashboard() -> None:
    copy = CHART / "dashboards" / "modelrollout-operator.json"
    assert copy.read_bytes() == DASHBOARD.read_bytes(), "run hack/sync-chart-crds.sh"


def test_sync_script_check_mode_agrees() -> None:
    script = ROOT / "hack" / "sync-chart-crds.sh"
    result = subprocess.run(
        ["bash", str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_helm_ships_the_crds(tmp_path: Path) -> None:
    out = helm("show", "crds", str(CHART)).stdout
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d}
    assert names == {
        "modelrollouts.modelrollout.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


# ----------------------------------------------------------------------------- dashboard


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return own + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def _exposed_series() -> set[str]:
    from modelrollout.operator.metrics import OperatorMetrics

    names = set()
    for family in OperatorMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {m for e in _exprs(dashboard) for m in re.findall(r"\bmodelrollout_[a-z_]+", e)}
    exported = _exposed_series()
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"
    families = {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in exported}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in used}
    assert families <= shown, f"metrics without a panel: {sorted(families - shown)}"
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: `make install` installs Debian's prometheus, which has it",
            pytrace=False,
        )
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*"}
    grafana |= {"$namespace": ".*", "$rollout": ".*", "$gate": ".*"}
    rules = []
    for i, expr in enumerate(_exprs(json.loads(DASHBOARD.read_text()))):
        for var, value in grafana.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------- the image


def test_dockerfile_runs_the_operator_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["modelrollout", "run"]' in text
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE)
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\S+ AS builder$", text, re.MULTILINE)
    assert "pip wheel --no-deps" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'modelrollout = "modelrollout.cli.main:main"' in pyproject
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored
    assert "!operator/" in ignored
    assert "!pyproject.toml" in ignored


def test_the_image_builds_from_the_product_only() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line for line in ignored if line.startswith("!")]
    assert allowed, "the .dockerignore is an allowlist"
    assert not [line for line in allowed if "devenv" in line or line in ("!.", "!**")], allowed
    text = (ROOT / "Dockerfile").read_text()
    assert "install --no-index --find-links=/wheels modelrollout " in text
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "devenv" in line], "the image is the product"
