"""The kubectl plugin against the real local API server.

No operator runs here: each ModelRollout gets a hand-written status (through
the status subresource, as the operator writes it) that puts it in one
phase, and the tests check what each command prints, what it writes to the
object, and its exit code - including the failures a user meets first: a
typo in the name, missing RBAC, a dead cluster, a command that makes no sense
in the phase.

The commands run in-process (``main([...])``) so their output is captured
with capsys; one test runs the real entry point as a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.cli.kube import (
    EXIT_FORBIDDEN,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
)
from modelrollout.cli.main import main
from modelrollout.engine.types import Request, RequestVerb
from modelrollout_devenv import LocalCluster, PrometheusServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"
NAMESPACE = "cli-e2e"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def history(*entries: tuple[float, str, str, str, int | None, int, int]) -> list[dict[str, Any]]:
    """History entries from (minute, reason, phase, stage, stepIndex, weight, mirror)."""
    out = []
    for minute, reason, phase, stage, step, weight, mirror in entries:
        entry: dict[str, Any] = {
            "at": at(minute), "reason": reason, "phase": phase, "stage": stage,
            "weight": weight, "mirrorPercent": mirror, "candidateVersion": "v2",
            "message": f"{reason} at minute {minute}",
        }  # fmt: skip
        if step is not None:
            entry["stepIndex"] = step
        out.append(entry)
    return out


def spec(candidate: str = "v2") -> dict[str, Any]:
    return {
        "model": "fraud-detector",
        "stable": {"version": "v1"},
        "candidate": {"version": candidate},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"analysis": {"checks": 2}},
                    {"setWeight": 20},
                    {"pause": {}},
                    {"setWeight": 50},
                    {"pause": {"duration": "5m"}},
                ]
            }
        },
        "analysis": {
            "interval": "1m",
            "metrics": [
                {"name": "p99-latency", "latency": {}, "max": 0.5},
                {"name": "error-rate", "errorRate": {}, "max": 0.01},
            ],
        },
    }


def progressing(**changes: Any) -> dict[str, Any]:
    """Canary step 3 of 6 at 20%, the p99 gate failing once (of 2)."""
    status: dict[str, Any] = {
        "phase": "Progressing",
        "stage": "canary",
        "stepIndex": 3,
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "weights": {"stable": 80, "candidate": 20},
        "mirrorPercent": 0,
        "observedGeneration": 1,
        "rolloutStartedAt": at(0),
        "consecutiveFailures": 1,
        "message": "canary step 3 of 6",
        "lastAnalysis": {
            "at": at(20),
            "stage": "canary",
            "stepIndex": 3,
            "verdict": "Fail",
            "results": [
                {
                    "metric": "p99-latency",
                    "value": 0.62,
                    "max": 0.5,
                    "verdict": "Fail",
                    "samples": 1200,
                    "neededSamples": 500,
                },
                {"metric": "error-rate", "value": 0.002, "max": 0.01, "verdict": "Pass"},
            ],
        },
        "analysisLedger": [
            {
                "at": at(10),
                "stage": "canary",
                "stepIndex": 1,
                "verdict": "Pass",
                "results": [{"metric": "p99-latency", "value": 0.3, "max": 0.5, "verdict": "Pass"}],
            },
            {
                "at": at(20),
                "stage": "canary",
                "stepIndex": 3,
                "verdict": "Fail",
                "results": [
                    {"metric": "p99-latency", "value": 0.62, "max": 0.5, "verdict": "Fail"}
                ],
            },
        ],
        "history": history(
            (0, "RolloutStarted", "Progressing", "canary", 0, 0, 0),
            (1, "WeightChanged", "Progressing", "canary", 0, 10, 0),
            (12, "WeightChanged", "Progressing", "canary", 2, 20, 0),
        ),
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Progressing",
                "message": "",
                "lastTransitionTime": at(0),
            },
            {
                "type": "Reconciling",
                "status": "True",
                "reason": "Progressing",
                "message": "canary step 3 of 6",
                "lastTransitionTime": at(0),
            },
        ],
    }
    status.update(changes)
    return status


def rolled_back() -> dict[str, Any]:
    status = progressing(
        phase="RolledBack",
        stage="done",
        weights={"stable": 100, "candidate": 0},
        message="rolled back: gate p99-latency: 0.62 (limit <= 0.5)",
    )
    status["history"] += history((22, "RolledBack", "RolledBack", "done", 3, 0, 0))
    return status


PHASES: dict[str, dict[str, Any]] = {
    "running": progressing(),
    "paused": progressing(
        phase="Paused", pauseReason="user", message="paused by a human", consecutiveFailures=0
    ),
    "waiting": progressing(phase="Paused", pauseReason="gate", awaitingApproval="canary:3"),
    "done": progressing(
        phase="Succeeded",
        stage="done",
        stepIndex=None,
        consecutiveFailures=0,
        lastAnalysis={
            "at": at(29),
            "stage": "canary",
            "stepIndex": 6,
            "verdict": "Pass",
            "results": [{"metric": "p99-latency", "value": 0.3, "max": 0.5, "verdict": "Pass"}],
        },
        stableVersion="v2",
        weights={"stable": 100, "candidate": 0},
        message="promoted v2: every canary step passed",
        history=progressing()["history"]
        + history((30, "Promoted", "Succeeded", "done", None, 0, 0)),
    ),
    "back": rolled_back(),
    "broken": {
        "phase": "Failed",
        "message": "no stable version known",
        "observedGeneration": 1,
        "history": history((0, "Invalid", "Failed", "done", None, 0, 0)),
    },
}


@dataclass
class Env:
    cluster: LocalCluster
    kubeconfig: str
    namespace: str

    def create(self, name: str, status: dict[str, Any], candidate: str = "v2") -> None:
        """A ModelRollout with this status, as if the operator had written it."""
        self.cluster.apply(
            {
                "apiVersion": "modelrollout.io/v1alpha1",
                "kind": "ModelRollout",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec(candidate),
            }
        )
        self.patch_status(name, status)

    def set_gates(self, name: str, metrics: list[dict[str, Any]]) -> None:
        """Replace the rollout's gates (spec.analysis.metrics)."""
        patch = {"spec": {"analysis": {"metrics": metrics}}}
        self.cluster.kubectl(
            "patch", "modelrollout", name, "-n", self.namespace, "--type=merge",
            "-p", json.dumps(patch),
        )  # fmt: skip

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.cluster.kubectl(
            "patch", "modelrollout", name, "-n", self.namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip

    def get(self, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", "modelrollout", name, "-n", self.namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(out.stdout)
        return obj

    def annotation(self, name: str) -> str | None:
        value = (self.get(name)["metadata"].get("annotations") or {}).get(REQUEST_ANNOTATION)
        return str(value) if value is not None else None


@pytest.fixture(scope="module")
def env(cluster: LocalCluster) -> Iterator[Env]:
    """The CRD, a namespace, and one ModelRollout per phase; removed at the end."""
    cluster.install_crds([CRD])
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    e = Env(cluster, str(cluster.kubeconfig), NAMESPACE)
    for name, status in PHASES.items():
        e.create(name, status)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "running.cli-e2e-1", "namespace": NAMESPACE},
            "involvedObject": {
                "apiVersion": "modelrollout.io/v1alpha1",
                "kind": "ModelRollout",
                "name": "running",
                "namespace": NAMESPACE,
            },
            "reason": "AnalysisFailed",
            "message": "gate p99-latency: 0.62 (limit <= 0.5) (1 of 2 failed checks in a row)",
            "type": "Warning",
            "firstTimestamp": at(20),
            "lastTimestamp": at(20),
            "count": 1,
            "source": {"component": "modelrollout-operator"},
        }
    )
    yield e
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def cli(env: Env, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one command in-process against the test namespace: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([*argv, "--kubeconfig", env.kubeconfig, "-n", env.namespace])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ reading


def test_list_shows_each_rollout_with_step_weight_and_worst_gate(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(env, capsys, "list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:3] == ["NAME", "MODEL", "STABLE"]
    assert set(PHASES) <= set(lines)
    running = lines["running"].split()
    assert running[:9] == [
        "running", "fraud-detector", "v1", "v2", "Progressing", "canary", "3/6", "20%", "0%",
    ]  # fmt: skip
    assert "Fail p99-latency 0.62 (<= 0.5)" in lines["running"]
    assert lines["done"].split()[4:7] == ["Succeeded", "done", "6/6"]
    assert "RolledBack" in lines["back"]
    assert "Failed" in lines["broken"]


def test_list_outputs_for_scripts(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(env, capsys, "list", "-o", "json")
    assert code == 0
    items = {o["metadata"]["name"]: o for o in json.loads(out)["items"]}
    assert items["back"]["status"]["phase"] == "RolledBack"
    code, out, _ = cli(env, capsys, "list", "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(out)["kind"] == "List"
    code, out, _ = cli(env, capsys, "list", "-o", "wide")
    assert "MESSAGE" in out.splitlines()[0]
    assert "paused by a human" in out
    code, out, _ = cli(env, capsys, "list", "-A")
    assert out.splitlines()[0].startswith("NAMESPACE")
    assert any(line.split()[:2] == [NAMESPACE, "running"] for line in out.splitlines())


def test_the_namespace_defaults_to_the_contexts(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(env.kubeconfig).read_text())
    config["contexts"][0]["context"]["namespace"] = NAMESPACE
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["list", "--kubeconfig", str(kubeconfig)]) == 0
    assert "running" in capsys.readouterr().out
    assert main(["list", "--kubeconfig", str(kubeconfig), "-n", "default"]) == 0
    assert "running" not in capsys.readouterr().out


def test_status_shows_strategy_gates_conditions_and_events(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(env, capsys, "status", "running")
    assert code == 0, err
    assert f"ModelRollout {NAMESPACE}/running" in out
    current = next(line for line in out.splitlines() if "▶" in line)
    assert "3 pause until promoted" in current
    assert "candidate v2 20%" in out
    gate = next(line for line in out.splitlines() if line.startswith("p99-latency"))
    assert gate.split()[:6] == ["p99-latency", "0.62", "<=", "0.5", "1200/500", "Fail"]
    assert "1 failed (rollback at 1)" in out  # failureLimit defaulted by the CRD (1)
    assert re.search(r"Reconciling\s+True\s+Progressing", out)
    assert re.search(r"Warning\s+AnalysisFailed\s+gate p99-latency", out)


def test_history_lists_past_rollouts(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(env, capsys, "history", "back")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["STARTED", "CANDIDATE", "OUTCOME", "DURATION", "REASON"]
    assert row.split()[:4] == [at(0), "v2", "RolledBack", "22m"]
    code, out, _ = cli(env, capsys, "history", "running", "-o", "json")
    assert json.loads(out)[0]["outcome"] == "in progress"


def test_report_writes_png_and_html(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = cli(env, capsys, "report", "back", "-o", str(tmp_path / "back"))
    assert code == 0, err
    assert out.split() == [
        "wrote",
        str(tmp_path / "back.png"),
        "wrote",
        str(tmp_path / "back.html"),
    ]
    assert (tmp_path / "back.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = (tmp_path / "back.html").read_text()
    assert "RolledBack @ step 3" in page
    inline = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert inline is not None
    assert base64.b64decode(inline.group(1)).startswith(b"\x89PNG")


def test_report_draws_gate_queries_from_prometheus(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """--prometheus: each query gate over the whole timeline, template variables filled in."""
    env.create("with-prometheus", progressing())
    env.set_gates("with-prometheus", [
        {"name": "constant", "max": 0.5,
         "query": 'label_replace(vector(0.25), "model", "{{model}}", "", "")'},
        {"name": "p99-latency", "latency": {}, "max": 0.5},
    ])  # fmt: skip
    code, _, err = cli(env, capsys, "report", "with-prometheus", "-o",
                         str(tmp_path / "r.html"), "--prometheus", prometheus.url)  # fmt: skip
    assert code == 0, err
    assert err == ""  # the latency gate has no data: no line, and no warning either
    page = (tmp_path / "r.html").read_text()
    drawn = re.search(
        r"Grey lines: gate queries from Prometheus at ([^:]+:[^:]+:\d+): (.*?)\.</p>", page
    )
    assert drawn is not None
    assert drawn.group(1) == prometheus.url
    points = re.fullmatch(r"constant \((\d+) points\)", drawn.group(2))
    assert points is not None, drawn.group(2)
    assert int(points.group(1)) > 100
    # An unreachable Prometheus is a warning, not a failure: the report comes from the object.
    code, _, err = cli(env, capsys, "report", "with-prometheus", "-o", str(tmp_path / "x.png"),
                       "--prometheus", "http://127.0.0.1:1")  # fmt: skip
    assert code == 0
    assert "warning: gate constant: prometheus at http://127.0.0.1:1" in err
    assert (tmp_path / "x.png").exists()


def test_report_draws_ml_gates_from_prometheus(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """--prometheus with ML gates: series where PromQL has them, a note where not, no error."""
    # Given a rollout judged by drift, nullRate and a Mann-Whitney comparison
    env.create("with-ml-gates", progressing())
    env.set_gates("with-ml-gates", [
        {"name": "input-drift", "drift": {"metric": "model_input_feature"}, "max": 0.1},
        {"name": "null-outputs", "nullRate": {}, "max": 0.01},
        {"name": "steady", "compare": {
            "direction": "increase",
            "query": 'label_replace(vector(0.25), "version", "{{version}}", "", "")'}},
    ])  # fmt: skip
    # When it is reported with --prometheus against the real Prometheus
    code, _, err = cli(env, capsys, "report", "with-ml-gates", "-o",
                       str(tmp_path / "ml"), "--prometheus", prometheus.url)  # fmt: skip
    # Then the report is written without a warning
    assert code == 0, err
    assert err == ""  # nullRate has no data here: no line, and no warning either
    assert (tmp_path / "ml.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "ml.html").read_text()
    # And the comparison's query is drawn for both versions, the drift gate is a note
    drawn = re.findall(r"steady (candidate v2|stable v1) \((\d+) points\)", page)
    assert sorted(label for label, _ in drawn) == ["candidate v2", "stable v1"]
    assert all(int(n) > 100 for _, n in drawn)
    assert "Not drawn as a series: input-drift: psi compares two distributions" in page
    assert "<td>null-outputs</td><td>nullRate</td><td>max 0.01</td>" in page


# ------------------------------------------------------------------------------ errors


def test_not_found(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["status", "nope"], ["promote", "nope"], ["history", "nope"]):
        code, out, err = cli(env, capsys, *argv)
        assert code == EXIT_NOT_FOUND
        assert out == ""
        assert err == f'error: modelrollout "nope" not found in namespace "{NAMESPACE}"\n'


def service_account_kubeconfig(env: Env, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a bound token), CA verified."""
    env.cluster.kubectl("create", "serviceaccount", account, "-n", NAMESPACE, check=False)
    token = env.cluster.kubectl("create", "token", account, "-n", NAMESPACE).stdout.strip()
    ca = base64.b64encode(env.cluster.pki.ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": env.cluster.server, "certificate-authority-data": ca},
            },
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_forbidden_by_rbac(env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A ServiceAccount with no RoleBinding: the server says 403, the CLI says which verb."""
    kubeconfig = service_account_kubeconfig(env, "nobody", tmp_path / "nobody.kubeconfig")
    capsys.readouterr()
    code = main(["status", "running", "--kubeconfig", str(kubeconfig), "-n", NAMESPACE])
    err = capsys.readouterr().err
    assert code == EXIT_FORBIDDEN
    assert err.startswith(
        f'error: forbidden by RBAC: cannot get modelrollouts.modelrollout.io "running" '
        f'in namespace "{NAMESPACE}"'
    )
    assert f"system:serviceaccount:{NAMESPACE}:nobody" in err
    assert err.count("\n") == 1
    code = main(["list", "-A", "--kubeconfig", str(kubeconfig)])
    err = capsys.readouterr().err
    assert code == EXIT_FORBIDDEN
    assert "cannot list modelrollouts.modelrollout.io at the cluster scope" in err


def test_a_reader_sees_status_without_events_and_cannot_promote(
    env: Env, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Read-only on ModelRollouts, nothing on Events: status still works, promote is 403."""
    env.cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "modelrollout-reader", "namespace": NAMESPACE},
            "rules": [
                {
                    "apiGroups": ["modelrollout.io"],
                    "resources": ["modelrollouts"],
                    "verbs": ["get", "list"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "modelrollout-reader", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "modelrollout-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NAMESPACE}],
        },
    )
    kubeconfig = service_account_kubeconfig(env, "reader", tmp_path / "reader.kubeconfig")
    capsys.readouterr()
    assert main(["status", "running", "--kubeconfig", str(kubeconfig), "-n", NAMESPACE]) == 0
    out, err = capsys.readouterr()
    assert "▶" in out
    assert err.startswith("warning: events not shown: forbidden by RBAC: cannot list events")
    code = main(["promote", "running", "--kubeconfig", str(kubeconfig), "-n", NAMESPACE])
    err = capsys.readouterr().err
    assert code == EXIT_FORBIDDEN
    assert err.startswith(
        f'error: forbidden by RBAC: cannot patch modelrollouts.modelrollout.io "running" '
        f'in namespace "{NAMESPACE}"'
    )
    assert env.annotation("running") is None


def test_no_cluster_reachable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    begin = time.monotonic()
    code = main(["list", "--kubeconfig", str(kubeconfig)])
    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert err.startswith(
        "error: cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused"
    )
    assert time.monotonic() - begin < 10


# ----------------------------------------------------------------------------- requests


def test_promote_sets_the_request_annotation(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.create("promote-me", progressing(phase="Paused", pauseReason="gate",
                                         awaitingApproval="canary:3"))  # fmt: skip
    code, out, err = cli(env, capsys, "promote", "promote-me")
    assert code == 0, err
    value = env.annotation("promote-me")
    assert value is not None
    assert value in out
    request = Request.parse(value)
    assert request is not None
    assert request.verb == RequestVerb.PROMOTE
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", request.id)
    # A second request replaces the first, with a new id (the operator acts once per id).
    code, _, err = cli(env, capsys, "promote", "promote-me", "--full")
    assert code == 0
    assert "has not been handled yet" in err
    second = env.annotation("promote-me")
    assert second is not None
    assert second.startswith("promote-full:")
    assert second != value
    # Nothing but the annotation changed.
    assert env.get("promote-me")["spec"] == env.get("running")["spec"]


@pytest.mark.parametrize(
    ("verb", "name", "status"),
    [
        ("pause", "pause-me", progressing()),
        ("resume", "resume-me", progressing(phase="Paused", pauseReason="user")),
        ("abort", "abort-me", progressing()),
        ("retry", "retry-me", rolled_back()),
    ],
)
def test_requests_that_make_sense_are_sent(
    env: Env, capsys: pytest.CaptureFixture[str], verb: str, name: str, status: dict[str, Any]
) -> None:
    env.create(name, status)
    code, _, err = cli(env, capsys, verb, name)
    assert code == 0, err
    assert (env.annotation(name) or "").startswith(f"{verb}:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "done"], 'modelrollout "done" is Succeeded: it has ended, nothing to promote'),
        (["promote", "back"], 'modelrollout "back" is RolledBack: it has ended'),
        (["abort", "broken"], 'modelrollout "broken" is Failed: it has ended, nothing to abort'),
        (["pause", "done"], "it has ended"),
        (["resume", "running"], 'modelrollout "running" is Progressing, not Paused'),
        (["resume", "waiting"], "waiting for approval at canary:3"),
        (["retry", "running"], "retry only follows a rollback or a failure"),
        (["pause", "paused"], "already Paused (user)"),
    ],
)
def test_commands_that_make_no_sense_are_refused(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = cli(env, capsys, *argv)
    assert code == EXIT_REFUSED
    assert out == ""
    assert err.startswith("error: refused: ")
    assert message in err
    assert env.annotation(argv[1]) is None  # nothing was sent


def test_set_candidate_starts_a_new_rollout(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.create("next-version", PHASES["done"])
    generation = env.get("next-version")["metadata"]["generation"]
    code, out, err = cli(env, capsys, "set-candidate", "next-version", "v3")
    assert code == 0, err
    assert "GitOps" in err
    assert "v2 -> v3" in out
    obj = env.get("next-version")
    assert obj["spec"]["candidate"]["version"] == "v3"
    assert obj["metadata"]["generation"] == generation + 1
    # The status still says Succeeded (for v2): a watch must not take that as the end.
    code, _, err = cli(env, capsys, "status", "next-version", "--watch", "--timeout", "1s",
                       "--interval", "0.2")  # fmt: skip
    assert code == EXIT_INTERRUPTED
    assert "timed out after 1s" in err
    code, _, err = cli(env, capsys, "set-candidate", "next-version", "v3")
    assert code == EXIT_REFUSED


# -------------------------------------------------------------------------------- watch


@pytest.mark.parametrize(
    ("name", "final", "code"),
    [
        ("watch-success", {"phase": "Succeeded", "stage": "done", "message": "promoted v2"}, 0),
        ("watch-rollback", {"phase": "RolledBack", "stage": "done", "message": "rolled back"}, 1),
    ],
)
def test_watch_exits_with_how_the_rollout_ended(
    env: Env, capsys: pytest.CaptureFixture[str], name: str, final: dict[str, Any], code: int
) -> None:
    env.create(name, progressing())
    errors: list[BaseException] = []

    def finish_later() -> None:
        try:
            time.sleep(1.5)
            env.patch_status(name, {"weights": {"stable": 50, "candidate": 50}})
            time.sleep(1.0)
            env.patch_status(name, final)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=finish_later, daemon=True)
    thread.start()
    begin = time.monotonic()
    got, out, err = cli(env, capsys, "status", name, "--watch", "--interval", "0.3",
                        "--timeout", "60s")  # fmt: skip
    thread.join(timeout=30)
    assert not errors, errors
    assert got == code, err
    assert time.monotonic() - begin < 30
    lines = out.splitlines()
    # Without a terminal: one line per change, then how it ended.
    assert "Progressing" in lines[0]
    assert "weight=20%" in lines[0]
    assert any("weight=50%" in line for line in lines[1:-1])
    assert lines[-1] == f'modelrollout "{name}" {final["phase"]}: {final["message"]}'


def test_watch_times_out_with_exit_3(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(env, capsys, "status", "running", "--watch", "--timeout", "1s",
                         "--interval", "0.2")  # fmt: skip
    assert code == EXIT_INTERRUPTED
    assert err == 'error: timed out after 1s: modelrollout "running" is still Progressing\n'
    assert len(out.splitlines()) == 1  # nothing changed: one line


def test_watch_of_a_finished_rollout_returns_at_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(env, capsys, "status", "done", "--watch")[0] == 0
    assert cli(env, capsys, "status", "back", "--watch")[0] == 1
    assert cli(env, capsys, "status", "broken", "--watch")[0] == 2


# ---------------------------------------------------------------------------- the binary


def test_the_module_runs_as_a_program() -> None:
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    result = subprocess.run(
        [sys.executable, "-m", "modelrollout.cli.main", "--help"],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("list", "status", "promote", "abort", "pause", "resume", "retry",
                    "set-candidate", "history", "report"):  # fmt: skip
        assert command in result.stdout
