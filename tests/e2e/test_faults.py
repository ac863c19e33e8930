"""Faults the operator must survive, in the real local cluster and with the real Prometheus.

Each test reads as Given / When / Then and writes the figures it measured (recovery
times, retries, injected faults) to ``$MODELROLLOUT_E2E_ARTIFACTS/reliability.jsonl``;
docs/reliability.md quotes them. Run this file alone (`python -m pytest
tests/e2e/test_faults.py -q`): some of its tests restart the shared control plane.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrollout_devenv import LocalCluster, PrometheusServer
from modelrollout_devenv import manifests as m
from modelrollout_devenv.faults import ApiFaultProxy, PrometheusFaultProxy
from modelrollout_devenv.stack import OperatorProcess, TargetRegistry

from .conftest import ARTIFACTS
from .world import CRD, World, history

pytestmark = pytest.mark.e2e

#: Six steps: three weights, each held by a timed pause.
SIX_STEPS: dict[str, Any] = {
    "canary": {
        "steps": [
            {"setWeight": 20},
            {"pause": {"duration": "12s"}},
            {"setWeight": 40},
            {"pause": {"duration": "12s"}},
            {"setWeight": 60},
            {"pause": {"duration": "12s"}},
        ]
    }
}
WEIGHTS = [20, 40, 60]


def record(test: str, **figures: Any) -> None:
    """Keep one test's figures for docs/reliability.md, and show them in the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures})
    with (ARTIFACTS / "reliability.jsonl").open("a") as f:
        f.write(line + "\n")
    print(f"\nfigures: {line}")


def weight_is(w: int) -> Any:
    return lambda s: (s.get("weights") or {}).get("candidate") == w


def retries(op: OperatorProcess) -> int:
    """Reconciles and API calls kopf had to try again, as its log says."""
    text = op.log_path.read_text(errors="replace").lower()
    return text.count("will retry") + text.count("failed temporarily")


def starts(op: OperatorProcess) -> int:
    """How many times the operator process was started (a crash loop shows here)."""
    return op.log_path.read_text(errors="replace").count("==== ")


def steps_once_in_order(status: dict[str, Any]) -> list[int]:
    return [w for r, w in history(status) if r == "WeightChanged"]


class RouteWatcher:
    """Polls the HTTPRoute's candidate weight in the background, straight from the API
    server (not through any fault proxy): what the gateway would have sent, over time."""

    def __init__(self, world: World, route: str, backend: str) -> None:
        self.world, self.route, self.backend = world, route, backend
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            w = self.world.route_backends(self.route).get(self.backend, 0)
        except Exception:  # the API server may be down on purpose
            return
        if not self.seen or self.seen[-1] != w:
            self.seen.append(w)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.5)

    def __enter__(self) -> RouteWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        # One last look: the route is written just before the status that ends the wait,
        # so the last change can fall between two polls.
        self._sample()


def never_backwards(seen: list[int]) -> bool:
    """The candidate's weight only grows (to 100 as it becomes the stable)."""
    return all(a <= b for a, b in itertools.pairwise(seen))


# --------------------------------------------------------------- the control plane


@pytest.fixture
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this test's own: restarting the session's would reach into every
    later test (their watches, their operators), which is not what this test measures."""
    local = LocalCluster(tmp_path_factory.mktemp("own-cluster"), with_nodes=True)
    try:
        local.start()
        local.install_upstream_crds()
        local.install_crds([CRD])
        yield local
    finally:
        local.stop()


@pytest.fixture
def own_world(
    request: pytest.FixtureRequest,
    own_cluster: LocalCluster,
    prometheus: PrometheusServer,
    targets: TargetRegistry,
    tmp_path: Path,
) -> Iterator[World]:
    w = World(own_cluster, prometheus, targets, tmp_path, request.node.name.replace("_", "-"))
    yield w
    w.close()


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_restart_mid_canary_neither_doubles_nor_skips_a_step(
    own_world: World, component: str
) -> None:
    world = own_world
    # Given a six-step canary at its second weight
    name = f"restart-{component.split('-')[-1]}"
    world.model(name)
    op = world.operator()
    world.apply(m.rollout(name, world.ns, strategy=SIX_STEPS))
    world.wait_status(name, weight_is(40), 120, "weight 40")
    before = world.status(name)
    # When the component is stopped, kept down a few seconds, and started again
    down = world.cluster.restart(component, down_for=3)
    back = time.monotonic()
    # Then the operator writes the status again soon after
    world.wait_status(
        name, lambda s: s.get("lastCheckAt") != before.get("lastCheckAt"), 60, "a new check"
    )
    recovered = time.monotonic() - back
    # and the rollout ends promoted with every step once, in order
    status = world.wait_phase(name, "Succeeded", timeout=150)
    assert steps_once_in_order(status) == WEIGHTS
    assert [r for r, _ in history(status)].count("Promoted") == 1
    assert op.process is not None
    assert op.process.running, "the operator kept running"
    assert starts(op) == 1
    record(
        f"restart-{component}",
        down_seconds=round(down, 1),
        first_status_write_after_back_seconds=round(recovered, 1),
        operator_retries=retries(op),
    )


def test_twenty_kill_9_at_random_moments_leave_every_step_once_in_order(world: World) -> None:
    # Given a six-step canary long enough to be killed twenty times
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    world.model("killed")
    op = world.operator()
    long = json.loads(json.dumps(SIX_STEPS).replace('"12s"', '"75s"'))
    world.apply(m.rollout("killed", world.ns, strategy=long))
    world.wait_status("killed", weight_is(20), 90, "weight 20")
    # When the operator is killed with SIGKILL twenty times, at random moments
    kills = 0
    restart_seconds: list[float] = []
    while kills < 20:
        time.sleep(rng.uniform(0.2, 3.0))
        op.stop(kill=True)
        kills += 1
        begin = time.monotonic()
        op.start()
        restart_seconds.append(time.monotonic() - begin)
        assert world.status("killed").get("phase") != "Succeeded" or kills == 20, (
            f"the canary ended after {kills} kills: make it longer (seed {seed})"
        )
    # Then it ends promoted, each weight set once and in order
    status = world.wait_phase("killed", "Succeeded", timeout=300)
    assert steps_once_in_order(status) == WEIGHTS, f"seed {seed}"
    assert [r for r, _ in history(status)].count("Promoted") == 1
    assert world.reasons("killed").count("Promoted") <= 1
    record(
        "kill-9-x20",
        seed=seed,
        kills=kills,
        restart_to_healthz_seconds_max=round(max(restart_seconds), 1),
        restart_to_healthz_seconds_mean=round(sum(restart_seconds) / len(restart_seconds), 1),
    )


# ------------------------------------------------------------------------ API faults


def test_api_errors_between_operator_and_api_server_still_converge_without_going_back(
    world: World,
) -> None:
    # Given the operator talking to the API server through a proxy that answers every
    # second write with 409, every 5th other request with 500, stalls every 13th by 10s
    # and cuts watches after 20s
    proxy = ApiFaultProxy(world.cluster).start()
    try:
        world.model("faulty")
        op = world.operator(kubeconfig=proxy.kubeconfig(world.work_dir / "faulty.kubeconfig"))
        # When a six-step canary runs
        begin = time.monotonic()
        with RouteWatcher(world, "faulty", "faulty-v2") as route:
            world.apply(m.rollout("faulty", world.ns, strategy=SIX_STEPS))
            status = world.wait_phase("faulty", "Succeeded", timeout=300)
        took = time.monotonic() - begin
        # Then it converges: every step once, in order
        assert steps_once_in_order(status) == WEIGHTS
        # and traffic never went back
        assert never_backwards(route.seen), route.seen
        assert route.seen[-1] == 100
        assert world.route_backends("faulty") == {"faulty-v2": 100}
        # and the operator never crashed
        assert op.process is not None
        assert op.process.running
        assert starts(op) == 1
        assert proxy.counts["conflict"] > 0
        assert proxy.counts["error"] > 0
        assert proxy.counts["stall"] > 0
        record(
            "api-faults",
            seconds_to_succeeded=round(took, 1),
            injected=dict(proxy.counts),
            operator_retries=retries(op),
            route_weights_seen=route.seen,
        )
    finally:
        proxy.stop()


# ---------------------------------------------------------------- Prometheus faults


@pytest.fixture
def spoiled(world: World) -> Iterator[PrometheusFaultProxy]:
    proxy = PrometheusFaultProxy(world.prometheus.url, delay=5.0).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        pytest.param("slow", "timed out after 2s", id="slow-5s"),
        pytest.param("stale", "stale samples", id="stale-samples"),
        pytest.param("partial", "partial answer", id="partial-result"),
    ],
)
def test_a_slow_stale_or_partial_prometheus_is_inconclusive_never_a_pass(
    world: World, spoiled: PrometheusFaultProxy, mode: str, said: str
) -> None:
    # Given a canary held at 25% by a long pause, checked through a spoiling proxy
    name = f"prom-{mode}"
    world.model(name)
    world.operator(prometheus=spoiled.url, extra=["--prometheus-timeout", "2s"])
    # (long enough for the sequential gates to be shown good at 25% of the traffic, and
    # for two spoiled checks after that)
    strategy = {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "100s"}}]}}
    world.apply(m.rollout(name, world.ns, strategy=strategy))
    world.wait_status(name, weight_is(25), 90, "weight 25")
    world.wait_status(
        name,
        lambda s: (s.get("lastAnalysis") or {}).get("verdict") == "Pass",
        90,
        "a passing check first",
    )
    # When Prometheus starts answering slowly, stale or partially
    spoiled.mode = mode
    # (a check stamped a second after the switch began after it: ``at`` is its start)
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    seen: list[dict[str, Any]] = []

    def spoiled_checks(s: dict[str, Any]) -> bool:
        last = s.get("lastAnalysis") or {}
        if last.get("at", "") >= after and last not in seen:
            seen.append(last)
        return len(seen) >= 2

    world.wait_status(name, spoiled_checks, 90, "two checks through the spoiled answers")
    spoiled.mode = "pass"
    # Then every such check was inconclusive, saying why, and none passed
    for run in seen:
        assert run["verdict"] == "Inconclusive", run
        for result in run["results"]:
            assert result["verdict"] == "Inconclusive", result
            assert said in result["reason"], result
    assert world.status(name)["weights"]["candidate"] == 25
    # and when the answers are whole again, the canary goes on to promotion
    status = world.wait_phase(name, "Succeeded", timeout=120)
    assert "Promoted" in [r for r, _ in history(status)]
    record(f"prometheus-{mode}", inconclusive_checks=len(seen), proxied=dict(spoiled.counts))


# ------------------------------------------------------------------------- at scale


def test_fifty_rollouts_at_once_with_faults_in_a_third_all_end_where_they_should(
    world: World,
) -> None:
    # Given fifty rollouts in one namespace, gates read from the real Prometheus, and
    # faults in a third of them: a regressed candidate, a missing route, a gate whose
    # query does not parse, and no data at all
    def gate(query: str) -> dict[str, Any]:
        return {
            "interval": "3s",
            "failureLimit": 1,
            "inconclusiveLimit": 2,
            "metrics": [{"name": "errors", "query": query, "max": 0.05}],
        }

    healthy = gate("vector(0.01)")
    faults: dict[str, tuple[dict[str, Any], str, str]] = {
        "regressed": (gate("vector(0.5)"), "RolledBack", "errors"),
        "noroute": (healthy, "Pending", "not found"),
        "badquery": (gate("sum(rate(x[5m]"), "Failed", "invalid gate: gate errors"),
        "nodata": (gate("absent_metric_of_nothing"), "Paused", "no data"),
    }
    kinds = list(faults)
    strategy = {
        "canary": {
            "steps": [
                {"setWeight": 20},
                {"pause": {"duration": "6s"}},
                {"setWeight": 60},
                {"pause": {"duration": "6s"}},
            ]
        }
    }
    want: dict[str, tuple[str, str]] = {}
    objs: list[dict[str, Any]] = []
    for i in range(50):
        name = f"m{i:02d}"
        kind = kinds[i // 3 % len(kinds)] if i % 3 == 0 else "healthy"
        analysis, phase, said = faults.get(kind, (healthy, "Succeeded", "promoted"))
        want[name] = (phase, said)
        if kind != "noroute":
            objs.append(m.http_route(name, world.ns, "v1"))
        objs.append(m.rollout(name, world.ns, strategy=strategy, analysis=analysis))
    op = world.operator(tick="2s")
    # When they are all applied at once
    begin = time.monotonic()
    world.apply(*objs)

    def ended() -> dict[str, Any] | None:
        out = world.cluster.kubectl("get", "modelrollouts", "-n", world.ns, "-o", "json")
        items = {
            o["metadata"]["name"]: o.get("status") or {} for o in json.loads(out.stdout)["items"]
        }
        done = {n: s for n, s in items.items() if s.get("phase") == want[n][0]}
        return items if len(done) == len(want) else None

    deadline = time.monotonic() + 300
    items: dict[str, Any] | None = None
    while time.monotonic() < deadline and items is None:
        items = ended()
        time.sleep(2)
    took = time.monotonic() - begin
    out = world.cluster.kubectl("get", "modelrollouts", "-n", world.ns, "-o", "json")
    final = {o["metadata"]["name"]: o.get("status") or {} for o in json.loads(out.stdout)["items"]}
    # Then each one is where it should be, and says why
    wrong = {
        n: (s.get("phase"), s.get("message"))
        for n, s in final.items()
        if s.get("phase") != want[n][0] or want[n][1] not in (s.get("message") or "")
    }
    assert not wrong, wrong
    assert op.process is not None
    assert op.process.running
    assert starts(op) == 1
    record(
        "fifty-rollouts",
        rollouts=50,
        with_faults=sum(1 for p, _ in want.values() if p != "Succeeded"),
        seconds_to_all_settled=round(took, 1),
        operator_retries=retries(op),
    )
