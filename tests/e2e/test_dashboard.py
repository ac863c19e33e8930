"""``kubectl modelrollout dashboard`` in a real headless Chromium, against the real API server.

Given two ModelRollouts with hand-written statuses (as in test_cli.py: no
operator runs) and a ServiceAccount whose only RBAC is what ``list`` needs
(get/list/watch modelrollouts, list events), the dashboard runs as a real
process with that ServiceAccount's kubeconfig, and the browser reads the page
it serves: the DOM shows both rollouts with phase, weights and gates, a status
change shows up within seconds, and screenshots show the key elements in the
expected colours.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import modelrollout
from modelrollout.cli.kube import EXIT_FORBIDDEN
from modelrollout_devenv import LocalCluster

from .browser import Browser, png_pixels
from .test_cli import CRD, PHASES, progressing, spec

pytestmark = pytest.mark.e2e

NAMESPACE = "dashboard-e2e"
ARTIFACTS = Path(os.environ.get("MODELROLLOUT_E2E_ARTIFACTS", "/tmp/modelrollout-e2e"))
#: The colours the page's stylesheet gives the badges and the header.
SUCCEEDED_GREEN = (0x2C, 0xA0, 0x2C)
FAIL_RED = (0xD6, 0x27, 0x28)
HEADER = (0x1F, 0x29, 0x37)

#: What `list` (and so the dashboard) needs, and nothing else.
READER_RULES = [
    {
        "apiGroups": ["modelrollout.io"],
        "resources": ["modelrollouts"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]


def kubectl_json(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return out


def service_account_kubeconfig(cluster: LocalCluster, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a bound token), CA verified."""
    cluster.kubectl("create", "serviceaccount", account, "-n", NAMESPACE, check=False)
    token = cluster.kubectl("create", "token", account, "-n", NAMESPACE).stdout.strip()
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()
    server = {"server": cluster.server, "certificate-authority-data": ca}
    context = {"cluster": "c", "user": account, "namespace": NAMESPACE}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": context}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def patch_status(cluster: LocalCluster, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "modelrollout", name, "-n", NAMESPACE, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def rollouts(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Two rollouts (one mid-canary with a failing gate, one promoted), an Event, and a viewer."""
    cluster.install_crds([CRD])
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for name, status in (("canary", progressing()), ("promoted", PHASES["done"])):
        cluster.apply(
            {
                "apiVersion": "modelrollout.io/v1alpha1",
                "kind": "ModelRollout",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec(),
            }
        )
        patch_status(cluster, name, status)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "canary.dashboard-1", "namespace": NAMESPACE},
            "involvedObject": {
                "apiVersion": "modelrollout.io/v1alpha1",
                "kind": "ModelRollout",
                "name": "canary",
                "namespace": NAMESPACE,
            },
            "reason": "AnalysisFailed",
            "message": "gate p99-latency: 0.62 (limit <= 0.5) (1 of 2 failed checks in a row)",
            "type": "Warning",
            "firstTimestamp": progressing()["lastAnalysis"]["at"],
            "lastTimestamp": progressing()["lastAnalysis"]["at"],
            "count": 1,
            "source": {"component": "modelrollout-operator"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "modelrollout-viewer", "namespace": NAMESPACE},
            "rules": READER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "modelrollout-viewer", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "modelrollout-viewer",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": NAMESPACE}],
        },
    )
    yield cluster
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(modelrollout.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def dashboard_argv(kubeconfig: Path) -> list[str]:
    return [
        sys.executable, "-m", "modelrollout.cli.main", "dashboard",
        "--kubeconfig", str(kubeconfig), "--interval", "1s",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dashboard(rollouts: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard as a real process, with the viewer ServiceAccount's kubeconfig: its URL."""
    work = tmp_path_factory.mktemp("dashboard")
    kubeconfig = service_account_kubeconfig(rollouts, "viewer", work / "viewer.kubeconfig")
    log = (work / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        dashboard_argv(kubeconfig), stdout=subprocess.PIPE, stderr=log, env=_env()
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("serving http://127.0.0.1:"):
        proc.kill()
        log.close()
        pytest.fail(f"the dashboard did not start: {line!r} {(work / 'dashboard.log').read_text()}")
    yield line.split()[1]
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    try:
        b = Browser(tmp_path_factory.mktemp("chromium"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield b
    b.close()


ROWS = """
return Array.from(document.querySelectorAll('#rollouts tbody tr')).map(tr => ({
  key: tr.dataset.rollout,
  phase: tr.querySelector('.phase').innerText,
  weights: tr.querySelector('.weights-text').innerText,
  mirror: tr.querySelector('.mirror').innerText,
  gates: Array.from(tr.querySelectorAll('.gates li')).map(li => li.innerText),
}));
"""


def rows(browser: Browser) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in browser.run(ROWS)}


def test_the_page_lists_both_rollouts_with_phase_weights_and_gates(
    dashboard: str, browser: Browser
) -> None:
    # When the page is opened
    browser.open(dashboard)
    browser.wait("return document.querySelectorAll('#rollouts tbody tr').length == 2", 10, "rows")
    # Then it shows both rollouts, with their phase, weights and the last check's gates
    shown = rows(browser)
    canary, promoted = shown[f"{NAMESPACE}/canary"], shown[f"{NAMESPACE}/promoted"]
    assert (canary["phase"], canary["weights"], canary["mirror"]) == (
        "Progressing",
        "80% / 20%",
        "0%",
    )
    assert canary["gates"] == ["p99-latency 0.62 (<= 0.5)Fail", "error-rate 0.002 (<= 0.01)Pass"]
    assert (promoted["phase"], promoted["weights"]) == ("Succeeded", "100% / 0%")
    assert browser.run("return document.getElementById('title').innerText") == "ModelRollouts"
    assert (
        browser.run("return document.getElementById('scope').innerText") == f"namespace {NAMESPACE}"
    )
    assert browser.run("return document.getElementById('error').hidden") is True
    assert browser.run("return document.getElementById('note').hidden") is True, (
        "events are allowed"
    )
    # and each rollout's timeline, with the history's markers and the Events
    markers = browser.run(
        "return Array.from(document.querySelectorAll("
        f"'section[data-rollout=\"{NAMESPACE}/promoted\"] svg.timeline line.marker'))"
        ".map(l => l.dataset.reason)"
    )
    assert markers == ["RolloutStarted", "WeightChanged", "WeightChanged", "Promoted"]
    assert browser.run("return document.querySelectorAll('svg.timeline g.gate').length") >= 2
    events = browser.run(
        f"return document.querySelector('section[data-rollout=\"{NAMESPACE}/canary\"] .events')"
        ".innerText"
    )
    assert "AnalysisFailed: gate p99-latency: 0.62" in events


def test_a_status_change_shows_within_seconds(
    dashboard: str, browser: Browser, rollouts: LocalCluster
) -> None:
    browser.open(dashboard)
    browser.wait("return document.querySelectorAll('#rollouts tbody tr').length == 2", 10, "rows")
    # When the operator (here: a status patch) moves the canary to 50%
    patch_status(rollouts, "canary", {"weights": {"stable": 50, "candidate": 50}, "stepIndex": 5})
    started = time.monotonic()
    # Then the page shows it within a few seconds, with no reload
    browser.wait(
        "return document.querySelector("
        f"'tr[data-rollout=\"{NAMESPACE}/canary\"] .weights-text').innerText == '50% / 50%'",
        5,
        "the new weights on the page",
    )
    assert time.monotonic() - started < 5
    patch_status(rollouts, "canary", {"weights": {"stable": 80, "candidate": 20}, "stepIndex": 3})


def _share(png: bytes, color: tuple[int, int, int], tolerance: int = 6) -> float:
    """The share of an image's pixels that are ``color``."""
    _, _, pixels = png_pixels(png)
    total = hits = 0
    for line in pixels:
        for i in range(0, len(line), 3):
            total += 1
            if all(abs(line[i + k] - color[k]) <= tolerance for k in range(3)):
                hits += 1
    return hits / max(total, 1)


def test_a_screenshot_shows_the_title_the_table_and_the_badges_in_their_colours(
    dashboard: str, browser: Browser
) -> None:
    browser.open(dashboard)
    browser.wait("return document.querySelectorAll('#rollouts tbody tr').length == 2", 10, "rows")
    page = browser.screenshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dashboard.png").write_bytes(page)
    width, height, top = png_pixels(page, max_rows=12)
    assert (width, height) == tuple(browser.run("return [window.innerWidth, window.innerHeight]"))
    # The title region is the header's dark band
    assert tuple(top[8][30:33]) == HEADER
    header = browser.run(
        "const r = document.getElementById('header').getBoundingClientRect();"
        "return [r.top, r.height, document.getElementById('title').innerText]"
    )
    assert header == [0, header[1], "ModelRollouts"]
    assert header[1] > 40
    # and the table is drawn below it, with a row per rollout
    table = browser.run(
        "const r = document.getElementById('rollouts').getBoundingClientRect();"
        "return [r.top, r.height]"
    )
    assert table[0] >= header[1]
    assert table[1] > 100
    # and the Succeeded badge is green, the failing gate's verdict red
    badge = browser.element_screenshot(f'tr[data-rollout="{NAMESPACE}/promoted"] .badge')
    assert _share(badge, SUCCEEDED_GREEN) > 0.5
    verdict = browser.element_screenshot(f'tr[data-rollout="{NAMESPACE}/canary"] .verdict-Fail')
    assert _share(verdict, FAIL_RED) > 0.5


def test_the_dashboard_answers_only_on_loopback_by_name(dashboard: str) -> None:
    port = int(dashboard.rstrip("/").rsplit(":", 1)[1])

    def ask(method: str, host: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, "/api/rollouts", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        response = ask("GET", host)
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert ask("GET", "evil.example").status == 403, "a rebound name is refused"
    assert ask("POST", f"127.0.0.1:{port}").status == 501, "read-only: only GET and HEAD"


def test_without_list_on_modelrollouts_the_dashboard_does_not_start(
    rollouts: LocalCluster, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(rollouts, "nobody", tmp_path / "nobody.kubeconfig")
    result = subprocess.run(
        dashboard_argv(kubeconfig), capture_output=True, text=True, env=_env(), timeout=60
    )
    assert result.returncode == EXIT_FORBIDDEN
    assert result.stderr.startswith(
        "error: forbidden by RBAC: cannot list modelrollouts.modelrollout.io "
        f'in namespace "{NAMESPACE}"'
    )
