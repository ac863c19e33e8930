"""Shared fixtures of the end-to-end tests: a real local cluster and a real Prometheus.

Both are session-scoped: a cluster with nodes starts in a few seconds, but
starting it once per session keeps the suite's time in the tests themselves.
Tests that share them must therefore clean up after themselves (use their own
namespace, their own Prometheus job name).

A missing binary makes the fixtures *fail* with :class:`MissingBinary`'s
message (what is missing, where it was looked for, how to get it), never skip:
a suite that quietly skips its end-to-end tests looks green while testing
nothing.

When a test fails, the logs of every component it used are copied to
``$MODELROLLOUT_E2E_ARTIFACTS`` (default ``/tmp/modelrollout-e2e``)
``/<test name>/`` and the path is printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from modelrollout_devenv import LocalCluster, MissingBinary, PrometheusServer

if TYPE_CHECKING:
    from modelrollout_devenv.stack import TargetRegistry

    from .world import World

ARTIFACTS = Path(os.environ.get("MODELROLLOUT_E2E_ARTIFACTS", "/tmp/modelrollout-e2e"))

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150] or "session"


def _announce(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, yellow=True)
    else:  # pragma: no cover - e.g. under -p no:terminal
        print(message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, for the log-keeping fixture."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


# ------------------------------------------------------------------------------ cluster


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A running LocalCluster with kwok nodes and the Gateway API + Istio CRDs."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), with_nodes=True)
    failure = ""
    try:
        local.start()
        local.install_upstream_crds()
    except MissingBinary as exc:
        failure = f"local cluster: {exc}"
    except Exception as exc:
        kept = local.save_logs(ARTIFACTS / "cluster-startup")
        local.stop()
        _announce(request.config, f"local cluster logs kept in {kept}")
        failure = f"local cluster did not start: {exc}\nlogs kept in {kept}"
    if failure:  # outside `except`, so the report is the message, not a chain
        pytest.fail(failure, pytrace=False)
    _announce(request.config, f"local cluster up at {local.server}: {local.started_in}")
    yield local
    local.stop()


# --------------------------------------------------------------------------- prometheus


@pytest.fixture(scope="session")
def prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A running Prometheus (1s scrape interval) with no targets; tests set theirs."""
    server = PrometheusServer(work_dir=tmp_path_factory.mktemp("prometheus"))
    failure = ""
    try:
        server.start()
    except MissingBinary as exc:
        failure = f"prometheus: {exc}"
    except Exception as exc:
        kept = ARTIFACTS / "prometheus-startup"
        kept.mkdir(parents=True, exist_ok=True)
        if server.log_path.exists():
            (kept / "prometheus.log").write_bytes(server.log_path.read_bytes())
        server.stop(kill=True)
        _announce(request.config, f"prometheus logs kept in {kept}")
        failure = f"prometheus did not start: {exc}\nlogs kept in {kept}"
    if failure:
        pytest.fail(failure, pytrace=False)
    yield server
    server.stop()


# --------------------------------------------------------------------- logs on failure

_T = TypeVar("_T")


def _started(request: pytest.FixtureRequest, name: str, kind: type[_T]) -> _T | None:
    """The value of fixture ``name``, or None if its set-up failed (it kept its own logs)."""
    try:
        value = request.getfixturevalue(name)
    except (Exception, pytest.fail.Exception):
        return None
    return value if isinstance(value, kind) else None


@pytest.fixture(autouse=True)
def _keep_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, copy the logs of the cluster/Prometheus it used."""
    yield
    reports = request.node.stash.get(_REPORTS, {})
    if not any(r.failed for r in reports.values()):
        return
    destination = ARTIFACTS / _safe_name(request.node.name)
    kept = False
    if "cluster" in request.fixturenames:
        local = _started(request, "cluster", LocalCluster)
        if local is not None:
            local.save_logs(destination / "cluster")
            kept = True
    if "prometheus" in request.fixturenames:
        server = _started(request, "prometheus", PrometheusServer)
        if server is not None and server.log_path.exists():
            (destination / "prometheus").mkdir(parents=True, exist_ok=True)
            (destination / "prometheus" / "prometheus.log").write_bytes(
                server.log_path.read_bytes()
            )
            kept = True
    if kept:
        _announce(request.config, f"\n{request.node.nodeid}: logs kept in {destination}")


# ------------------------------------------------------------------- the product


@pytest.fixture(scope="session")
def targets(cluster: LocalCluster, prometheus: PrometheusServer) -> TargetRegistry:
    """Our CRD installed, and one Prometheus shared by every test's model servers."""
    from modelrollout_devenv.stack import TargetRegistry

    from .world import CRD

    cluster.install_crds([CRD])
    return TargetRegistry(prometheus)


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    prometheus: PrometheusServer,
    targets: TargetRegistry,
    tmp_path: Path,
) -> Iterator[World]:
    """A namespace of its own, with helpers to start model servers, traffic and the operator."""
    from .world import World

    w = World(cluster, prometheus, targets, tmp_path, request.node.name.replace("_", "-"))
    yield w
    reports = request.node.stash.get(_REPORTS, {})
    if any(r.failed for r in reports.values()):
        destination = ARTIFACTS / _safe_name(request.node.name)
        destination.mkdir(parents=True, exist_ok=True)
        for log in tmp_path.rglob("*.log"):
            name = "-".join(log.relative_to(tmp_path).parts).replace("-logs-", "-")
            (destination / name).write_bytes(log.read_bytes())
        _announce(request.config, f"operator and model server logs kept in {destination}")
    w.close()
