"""Side by side with Flagger: the same cluster, model servers, traffic, Prometheus and regression.

Run with ``make bench-flagger`` (``python -m tests.bench.bench_flagger``). It starts the
local environment once (real etcd + kube-apiserver + controller manager + kwok nodes, a
real Prometheus scraping simulated model servers every second), installs Flagger's CRDs
from the Go module cache (``go mod download github.com/fluxcd/flagger@<FLAGGER_VERSION>``;
nothing of Flagger is copied into this repository) and runs, as processes on the same
cluster, Flagger (``-mesh-provider=gatewayapi:v1``, its ``-metrics-server`` our
Prometheus) and the operator. Then, per tool and per settings profile:

* **regression runs**: a rollout starts; when the candidate's weight in the HTTPRoute
  reaches ``--regress-at`` percent, the candidate's simulated model server starts failing
  every request (``error_rate=1``). A watcher polls the route every 100 ms; the time from
  the injection to the candidate at 0 % in the route is the breach-to-rollback time;
* **healthy runs**: the same rollout with no fault, to its end; a run that ends rolled
  back (Flagger: phase Failed; ours: RolledBack) is a false rollback;
* **idle cost**: 100 Canaries (Flagger, each with its Deployment, Initialized) and 100
  finished ModelRollouts (ours, as ``bench_idle``); each controller's CPU time from
  ``/proc/<pid>/stat`` over a window and its RSS from ``/proc/<pid>/status``.

The glue for Flagger is small: Flagger targets a Deployment ``<name>`` and creates
``<name>-primary`` / ``<name>-canary`` Deployments and Services and the HTTPRoute
``<name>`` with their weights. kwok makes the pods Ready. The traffic generator is told
that the Service ``<name>-primary`` is the simulated server of version v1 (stable) and
``<name>-canary`` that of v2 (candidate), so the route's weights decide who gets what, as
a gateway would, and the MetricTemplates read ``model_requests_total`` /
``model_request_errors_total`` / ``model_request_duration_seconds_bucket`` of
``{model="<name>", version="v2"}``: the candidate's numbers.

Raw numbers go to ``--out`` (docs/flagger-side-by-side.json); the table in
docs/benchmarks.md is written from them by hand. Not a test: timing belongs here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelrollout_devenv import LocalCluster, PrometheusServer
from modelrollout_devenv import manifests as m
from modelrollout_devenv.binaries import find_binaries
from modelrollout_devenv.procs import ReadinessError, Supervisor, free_port, http_probe, wait_until
from modelrollout_devenv.stack import ModelStack, OperatorProcess, TargetRegistry
from tests.bench.bench_idle import cpu_seconds, rss_mib
from tests.e2e.world import CRD, World

GATEWAY = "ml-gateway"

# ----------------------------------------------------------------------------- Flagger


def flagger_module_dir(version: str) -> Path:
    """Flagger's module source in the Go module cache (downloaded by the go client if absent)."""
    env = {**os.environ, "GOFLAGS": ""}
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/fluxcd/flagger@{version}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download flagger@{version} failed: {out.stderr}{out.stdout}")
    return Path(info["Dir"])


def flagger_crd(version: str) -> Path:
    return flagger_module_dir(version) / "artifacts" / "flagger" / "crd.yaml"


class FlaggerProcess:
    """The flagger binary as a process against the local cluster."""

    def __init__(self, cluster: LocalCluster, work_dir: Path, prometheus: str, ns: str) -> None:
        self.sup = Supervisor(work_dir)
        self.port = free_port()
        self.argv = [
            str(find_binaries(need={"flagger"}).flagger),
            f"-kubeconfig={cluster.kubeconfig}",
            "-mesh-provider=gatewayapi:v1",
            f"-metrics-server={prometheus}",
            f"-namespace={ns}",
            f"-port={self.port}",
            "-log-level=info",
        ]
        self.process: Any = None

    def start(self) -> FlaggerProcess:
        self.process = self.sup.start("flagger", self.argv, env=dict(os.environ))
        wait_until(
            http_probe(f"http://127.0.0.1:{self.port}/healthz"),
            60,
            what="flagger's /healthz",
            process=self.process,
        )
        return self

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)


def metric_templates(ns: str, prometheus: str) -> list[dict[str, Any]]:
    """Error rate and p99 latency of the candidate (version v2) of the canary's model."""
    provider = {"type": "prometheus", "address": prometheus}

    def template(name: str, query: str) -> dict[str, Any]:
        return {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": provider, "query": query},
        }

    sel = 'model="{{ target }}",version="v2",mirrored="false"'
    return [
        template(
            "error-rate",
            f"sum(rate(model_request_errors_total{{{sel}}}[{{{{ interval }}}}]))"
            f" / sum(rate(model_requests_total{{{sel}}}[{{{{ interval }}}}]))",
        ),
        template(
            "p99-latency",
            "histogram_quantile(0.99, sum by (le) (rate("
            f"model_request_duration_seconds_bucket{{{sel}}}[{{{{ interval }}}}])))",
        ),
    ]


def target_deployment(name: str, ns: str, revision: str) -> dict[str, Any]:
    return m.deployment(name, ns, {"app": name}, f"registry.example.com/{name}:{revision}")


@dataclass(frozen=True)
class Profile:
    """One settings profile: ``interval``/``threshold`` None means the tool's default."""

    name: str
    interval: str | None
    threshold: int | None
    step: int = 10
    max_weight: int = 50
    error_max: float = 0.05
    p99_max: float = 0.5
    guard: str | None = None  # ours: --guard-interval (None: the default)


#: docs/gitbook/tutorials/gatewayapi-progressive-delivery.md of Flagger v1.36.1
FLAGGER_DOCUMENTED: dict[str, Any] = {"interval": "1m", "threshold": 5}


def canary(name: str, ns: str, p: Profile) -> dict[str, Any]:
    analysis: dict[str, Any] = {
        "stepWeight": p.step,
        "maxWeight": p.max_weight,
        "metrics": [
            {
                "name": "error-rate",
                "templateRef": {"name": "error-rate"},
                "thresholdRange": {"max": p.error_max},
                "interval": p.interval or FLAGGER_DOCUMENTED["interval"],
            },
            {
                "name": "p99-latency",
                "templateRef": {"name": "p99-latency"},
                "thresholdRange": {"max": p.p99_max},
                "interval": p.interval or FLAGGER_DOCUMENTED["interval"],
            },
        ],
    }
    # Flagger's CRD requires interval and threshold (or iterations): with neither, the API
    # server answers 'spec.analysis.interval: Required value, spec.analysis.threshold:
    # Required value'. Its "defaults" are then those of its Gateway API tutorial. A metric
    # with no interval renders {{ interval }} so that Prometheus refuses the query ("parse
    # error: missing unit character in duration"), so the metrics get it too (1m there).
    analysis["interval"] = p.interval or FLAGGER_DOCUMENTED["interval"]
    analysis["threshold"] = p.threshold or FLAGGER_DOCUMENTED["threshold"]
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 600,
            "service": {
                "port": 80,
                "hosts": [f"{name}.example.com"],
                "gatewayRefs": [{"name": GATEWAY, "namespace": ns}],
            },
            "analysis": analysis,
        },
    }


def ours(name: str, ns: str, p: Profile) -> dict[str, Any]:
    """Our rollout with the same steps (p.step up to p.max_weight, a pause of one interval
    after each) and the same two limits."""
    pause = p.interval or "1m"
    steps: list[dict[str, Any]] = []
    for w in range(p.step, p.max_weight + 1, p.step):
        steps += [{"setWeight": w}, {"pause": {"duration": pause}}]
    analysis: dict[str, Any] = {
        "metrics": [
            {"name": "error-rate", "errorRate": {}, "max": p.error_max},
            {"name": "p99-latency", "latency": {"quantile": 0.99}, "max": p.p99_max},
        ]
    }
    if p.interval:
        analysis["interval"] = p.interval
    if p.threshold:
        analysis["failureLimit"] = p.threshold
    return m.rollout(name, ns, strategy={"canary": {"steps": steps}}, analysis=analysis)


def start_stack(stack: ModelStack, tries: int = 3) -> ModelStack:
    """Start a model stack, again if a process was too slow to come up (a loaded machine:
    the traffic generator's start-up, mostly importing the kubernetes client, can pass the
    20 s the stack waits for it)."""
    for attempt in range(tries):
        try:
            return stack.start()
        except ReadinessError as exc:
            stack.stop()
            print(f"stack {stack.model} slow to start (try {attempt + 1}): {exc}"[:300])
    return stack.start()


class FlaggerModel(ModelStack):
    """Simulated servers for a Flagger canary: v1 behind ``-primary``, v2 behind ``-canary``."""

    def service(self, version: str) -> str:
        return f"{self.model}-primary" if version == "v1" else f"{self.model}-canary"


# ----------------------------------------------------------------------------- watching


class RouteWatch:
    """Polls the namespace's HTTPRoutes every 100 ms: each route's candidate weight over time."""

    def __init__(self, cluster: LocalCluster, ns: str, candidate: dict[str, str]) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(cluster.api_client())
        self.ns = ns
        self.candidate = candidate  # route name -> the candidate's backend name
        self.weight: dict[str, int] = {}
        self.first_at: dict[tuple[str, int], float] = {}
        self.zero_after: dict[str, float] = {}
        self.armed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                routes = self.api.list_namespaced_custom_object(
                    "gateway.networking.k8s.io", "v1", self.ns, "httproutes"
                )["items"]
            except Exception:
                time.sleep(0.2)
                continue
            now = time.time()
            for r in routes:
                name = r["metadata"]["name"]
                if name not in self.candidate:
                    continue
                w = 0
                for rule in r["spec"].get("rules") or []:
                    for b in rule.get("backendRefs") or []:
                        if b["name"] == self.candidate[name]:
                            w = max(w, int(b.get("weight", 1)))
                self.weight[name] = w
                self.first_at.setdefault((name, w), now)
                if w == 0 and name in self.armed and name not in self.zero_after:
                    self.zero_after[name] = now
            time.sleep(0.1)

    def start(self) -> RouteWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def get(cluster: LocalCluster, kind: str, name: str, ns: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def phase_of(cluster: LocalCluster, tool: str, name: str, ns: str) -> str:
    kind = "canaries.flagger.app" if tool == "flagger" else "modelrollout"
    return str((get(cluster, kind, name, ns).get("status") or {}).get("phase", ""))


DONE = {
    "flagger": {"Succeeded": "promoted", "Failed": "rolled back"},
    "ours": {"Succeeded": "promoted", "RolledBack": "rolled back", "Failed": "rolled back"},
}


# ----------------------------------------------------------------------------- one batch


def run_batch(
    env: Env, tool: str, p: Profile, k: int, *, regress: bool, regress_at: int, timeout: float
) -> list[dict[str, Any]]:
    """k rollouts at once in one fresh namespace; the rows of what happened to each."""
    cluster = env.cluster
    label = f"{tool}-{p.name}-{'bad' if regress else 'ok'}"
    world = World(cluster, env.prom, env.targets, env.work / label, label)
    ns = world.ns
    names = [f"m{i}" for i in range(k)]
    ctrl: Any = None
    try:
        stacks: dict[str, ModelStack] = {}
        if tool == "flagger":
            cluster.apply(*metric_templates(ns, env.prom.url))
            cluster.apply(*(target_deployment(n, ns, "v1") for n in names))
            ctrl = FlaggerProcess(cluster, env.work / label / "flagger", env.prom.url, ns)
            ctrl.start()
            cluster.apply(*(canary(n, ns, p) for n in names))
            for n in names:
                wait_until(
                    lambda n=n: phase_of(cluster, tool, n, ns) == "Initialized",
                    180,
                    what=f"canary {n} Initialized",
                    process=ctrl.process,
                )
            for n in names:
                stack = FlaggerModel(
                    cluster, env.targets, env.work / label / n, model=n, namespace=ns,
                    versions=("v1", "v2"),
                )  # fmt: skip
                world.stacks.append(stack)
                stacks[n] = start_stack(stack)
            watch = RouteWatch(cluster, ns, {n: f"{n}-canary" for n in names}).start()
            time.sleep(5)  # some traffic to the primary before the rollout starts
            starts = {}
            for n in names:  # the new revision: Flagger sees the target Deployment change
                cluster.apply(target_deployment(n, ns, "v2"))
                starts[n] = time.time()
        else:
            extra = ["--guard-interval", p.guard] if p.guard else []
            # as world.operator(), with more time to start on a loaded machine
            ctrl = OperatorProcess(
                cluster, env.work / label / "operator", prometheus=env.prom.url,
                namespaces=[ns], extra=extra,
            )  # fmt: skip
            world.operators.append(ctrl)
            ctrl.start(timeout=120)
            for n in names:  # as world.model(n), with start_stack's second chance
                world.apply(*m.model_objects(n, ns, ("v1", "v2")))
                stack = ModelStack(
                    cluster, env.targets, env.work / label / n, model=n, namespace=ns,
                    versions=("v1", "v2"),
                )  # fmt: skip
                world.stacks.append(stack)
                stacks[n] = start_stack(stack)
            watch = RouteWatch(cluster, ns, {n: f"{n}-v2" for n in names}).start()
            time.sleep(5)
            starts = {}
            for n in names:
                world.apply(ours(n, ns, p))
                starts[n] = time.time()
    except BaseException:  # set-up failed: stop what was started, keep the error
        if ctrl is not None:
            ctrl.stop()
        world.close()
        raise
    injected: dict[str, float] = {}
    ended: dict[str, tuple[str, float]] = {}
    deadline = time.time() + timeout
    try:
        while len(ended) < len(names) and time.time() < deadline:
            for n in names:
                if n in ended:
                    continue
                if regress and n not in injected and watch.weight.get(n, 0) >= regress_at:
                    stacks[n].set_faults("v2", error_rate=1.0)
                    injected[n] = time.time()
                    watch.armed[n] = injected[n]
                ph = phase_of(cluster, tool, n, ns)
                if ph in DONE[tool]:
                    ended[n] = (ph, time.time())
            time.sleep(1)
    finally:
        watch.stop()
        pid = ctrl.process.pid if ctrl.process else None
        rss = rss_mib(pid) if pid else None
        ctrl.stop()
        for s in stacks.values():
            s.stop()
        world.stacks.clear()
        world.close()
    rows = []
    for n in names:
        ph, at = ended.get(n, (phase_of(cluster, tool, n, ns) + " (timeout)", time.time()))
        row: dict[str, Any] = {
            "tool": tool,
            "profile": p.name,
            "rollout": f"{ns}/{n}",
            "regressed": regress,
            "started": starts[n],
            "end_phase": ph,
            "outcome": DONE[tool].get(ph, "unfinished"),
            "ended": at,
            "duration_s": round(at - starts[n], 1),
            "weights_seen": sorted({w for (r, w) in watch.first_at if r == n}),
            "controller_rss_mib_at_end": rss,
        }
        if regress:
            row["injected"] = injected.get(n)
            row["zero"] = watch.zero_after.get(n)
            if row["injected"] and row["zero"]:
                row["breach_to_rollback_s"] = round(row["zero"] - row["injected"], 2)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "weights_seen"}), flush=True)
    return rows


# ----------------------------------------------------------------------------- idle cost


def idle_cost(env: Env, tool: str, n: int, window: float) -> dict[str, Any]:
    """CPU and RSS of one controller with n Canaries (Initialized) or n finished rollouts."""
    from tests.bench import bench_idle

    cluster = env.cluster
    label = f"idle-{tool}"
    world = World(cluster, env.prom, env.targets, env.work / label, label)
    ns = world.ns
    names = [f"i{i}" for i in range(n)]
    ctrl: Any
    t0 = time.time()
    if tool == "flagger":
        cluster.apply(*metric_templates(ns, env.prom.url))
        bench_idle.apply_in_chunks(cluster, [target_deployment(x, ns, "v1") for x in names], 50)
        ctrl = FlaggerProcess(cluster, env.work / label / "flagger", env.prom.url, ns).start()
        bench_idle.apply_in_chunks(
            cluster, [canary(x, ns, Profile("idle", "10s", 2)) for x in names], 50
        )

        def settled() -> bool:
            out = cluster.kubectl("get", "canaries.flagger.app", "-n", ns, "-o", "json").stdout
            items = json.loads(out)["items"]
            return sum((i.get("status") or {}).get("phase") == "Initialized" for i in items) == n

        wait_until(settled, 900, what=f"{n} canaries Initialized", process=ctrl.process)
    else:
        objs: list[dict[str, Any]] = []
        for x in names:
            objs.append(m.http_route(x, ns, "v1"))
            objs.append(
                m.rollout(x, ns, strategy=bench_idle.FINISH_AT_ONCE, analysis=bench_idle.NO_GATES)
            )
        bench_idle.apply_in_chunks(cluster, objs, 100)
        ctrl = world.operator(tick="5s")

        def settled() -> bool:
            out = cluster.kubectl("get", "modelrollouts", "-n", ns, "-o", "json").stdout
            items = json.loads(out)["items"]
            return sum((i.get("status") or {}).get("phase") == "Succeeded" for i in items) == n

        wait_until(settled, 900, what=f"{n} rollouts Succeeded", process=ctrl.process)
    ready_s = time.time() - t0
    time.sleep(15)
    pid = ctrl.process.pid
    c0, w0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    c1, w1 = cpu_seconds(pid), time.monotonic()
    out = {
        "tool": tool,
        "objects": n,
        "state": "Initialized Canaries" if tool == "flagger" else "Succeeded ModelRollouts",
        "settle_s": round(ready_s, 1),
        "window_s": round(w1 - w0, 1),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (w1 - w0), 2),
        "rss_mib": round(rss_mib(pid), 1),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(out), flush=True)
    ctrl.stop()
    world.close()
    return out


# ----------------------------------------------------------------------------- main


@dataclass
class Env:
    cluster: LocalCluster
    prom: PrometheusServer
    targets: TargetRegistry
    work: Path


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [r for r in rows if r["regressed"]]
    ok = [r for r in rows if not r["regressed"]]
    lag = [r["breach_to_rollback_s"] for r in bad if "breach_to_rollback_s" in r]
    out: dict[str, Any] = {}
    if bad:
        out["regressions"] = len(bad)
        out["rolled_back"] = sum(r["outcome"] == "rolled back" for r in bad)
        if lag:
            out["breach_to_rollback_s"] = {
                "p50": round(statistics.median(lag), 1),
                "max": round(max(lag), 1),
                "min": round(min(lag), 1),
            }
    if ok:
        out["healthy_runs"] = len(ok)
        out["false_rollbacks"] = sum(r["outcome"] == "rolled back" for r in ok)
        out["promoted"] = sum(r["outcome"] == "promoted" for r in ok)
        out["healthy_duration_s_p50"] = statistics.median(r["duration_s"] for r in ok)
    return out


def table(results: dict[str, Any]) -> str:
    """The markdown table of docs/benchmarks.md, from the raw numbers."""
    lines = [
        "| tool | settings | breach -> rollback p50 / max (runs) "
        "| false rollbacks / healthy runs |",
        "| --- | --- | ---: | ---: |",
    ]
    for key, s in results.get("summary", {}).items():
        if not s:
            continue
        tool, prof = key.split("/")
        lag = s.get("breach_to_rollback_s")
        bad = f"{lag['p50']} s / {lag['max']} s ({s['regressions']})" if lag else "-"
        if s.get("regressions") and s.get("rolled_back") != s.get("regressions"):
            bad += f", {s['regressions'] - s['rolled_back']} not rolled back"
        ok = f"{s['false_rollbacks']} / {s['healthy_runs']}" if s.get("healthy_runs") else "-"
        lines.append(f"| {tool} | {prof} | {bad} | {ok} |")
    lines += [
        "",
        "| controller | objects | CPU (% of one core) | RSS |",
        "| --- | --- | ---: | ---: |",
    ]
    for i in results.get("idle", []):
        lines.append(
            f"| {i['tool']} | {i['objects']} {i['state']} | {i['cpu_percent_of_one_core']}% "
            f"| {i['rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' results as one; a later part supersedes an earlier one's group.

    A group is a tool's regressed or healthy runs at one profile, or a tool's idle cost:
    re-running ours on new code replaces ours, and keeps Flagger's. A part may itself be
    a merge (it has ``invocations``).
    """

    def runs_of(x: dict[str, Any]) -> list[dict[str, Any]]:
        return x.get("invocations") or [{"args": x["args"], "machine": x["machine"]}]

    rows: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    idle: dict[str, dict[str, Any]] = {}
    for x in parts:
        fresh: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
        for r in x["rows"]:
            fresh.setdefault((r["tool"], r["profile"], r["regressed"]), []).append(r)
        rows.update(fresh)
        idle.update({i["tool"]: i for i in x["idle"]})
    return {
        "flagger_version": parts[-1]["flagger_version"],
        "invocations": [run for x in parts for run in runs_of(x)],
        "rows": [r for group in rows.values() for r in group],
        "idle": list(idle.values()),
        "errors": [e for x in parts for e in x["errors"]],
    }


PROFILES = {
    "equal": Profile("equal", "10s", 2),
    # ours only: the same, with the fast guard off (the scheduled checks alone)
    "equal-noguard": Profile("equal-noguard", "10s", 2, guard="0s"),
    "default": Profile("default", None, None),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="healthy runs per tool and profile")
    p.add_argument("--regressions", type=int, default=5, help="regressed runs per tool/profile")
    p.add_argument("--parallel", type=int, default=5, help="rollouts at once")
    p.add_argument("--regress-at", type=int, default=20, help="candidate weight of the fault")
    p.add_argument("--idle", type=int, default=100, help="objects for the idle cost (0: skip)")
    p.add_argument("--window", type=float, default=60, help="seconds of the idle CPU window")
    p.add_argument("--profiles", default="equal,equal-noguard,default")
    p.add_argument("--tools", default="flagger,ours")
    p.add_argument("--quick", action="store_true", help="1 regression, 2 healthy, 20 idle")
    p.add_argument("--out", default="docs/flagger-side-by-side.json")
    p.add_argument(
        "--phases",
        default="regress,idle,healthy",
        help="regress,idle,healthy (default: regressions at the defaults only)",
    )
    p.add_argument("--stop-by", metavar="HH:MM", help="UTC; start no batch after it")
    p.add_argument(
        "--merge", nargs="+", metavar="JSON", help="only merge the rows of runs into --out"
    )
    p.add_argument("--table", metavar="JSON", help="only print the table of a finished run")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if args.merge:
        merged = merge([json.loads(Path(f).read_text()) for f in args.merge])
        keys = dict.fromkeys((r["tool"], r["profile"]) for r in merged["rows"])
        merged["summary"] = {
            f"{t}/{pr}": summary(
                [r for r in merged["rows"] if (r["tool"], r["profile"]) == (t, pr)]
            )
            for t, pr in keys
        }
        Path(args.out).write_text(json.dumps(merged, indent=2) + "\n")
        print(table(merged))
        return 0
    if args.quick:
        args.runs, args.regressions, args.parallel, args.idle, args.window = 2, 1, 2, 20, 20

    version = find_binaries(need={"flagger"}).versions.get("FLAGGER_VERSION", "?")
    work = Path(tempfile.mkdtemp(prefix="bench-flagger-"))
    print(f"work dir {work}", flush=True)
    # Flagger makes three Services per Canary: 100 Canaries overflow the local cluster's
    # /24 Service range ("failed to allocate a serviceIP: range is full"), so a /20 here.
    cluster = LocalCluster(
        work / "cluster",
        with_nodes=True,
        extra_apiserver_flags=["--service-cluster-ip-range=10.0.0.0/20"],
    )
    prom = PrometheusServer(work_dir=work / "prometheus")
    tools = args.tools.split(",")
    profiles = args.profiles.split(",")
    phases = args.phases.split(",")
    stop_by = 0.0
    if args.stop_by:
        hh, mm = (int(x) for x in args.stop_by.split(":"))
        now = datetime.now(UTC)
        stop_by = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    results: dict[str, Any] = {
        "flagger_version": version,
        "machine": f"{os.cpu_count()} cores, {sys.platform}; load at start {os.getloadavg()}",
        "args": vars(args),
        "rows": [],
        "idle": [],
        "errors": [],
    }
    out_path = Path(args.out)

    def save() -> None:
        res = results
        res["summary"] = {
            f"{t}/{pr}": summary([r for r in res["rows"] if r["tool"] == t and r["profile"] == pr])
            for t in tools
            for pr in profiles
        }
        out_path.write_text(json.dumps(res, indent=2) + "\n")

    try:
        cluster.start()
        cluster.install_upstream_crds()
        cluster.install_crds([CRD, flagger_crd(version)])
        prom.start()
        env = Env(cluster, prom, TargetRegistry(prom), work)

        def batches(tool: str, prof: Profile, regress: bool, total: int) -> None:
            step_s = 60 if prof.interval is None else int(prof.interval.rstrip("s"))
            timeout = step_s * (prof.max_weight // prof.step + 8) + 240
            done = 0
            while done < total:
                if stop_by and time.time() > stop_by:
                    results["errors"].append(
                        f"{tool}/{prof.name}: stopped at {done}/{total} runs (--stop-by)"
                    )
                    return
                k = min(args.parallel, total - done)
                try:
                    results["rows"] += run_batch(
                        env, tool, prof, k, regress=regress,
                        regress_at=args.regress_at, timeout=timeout,
                    )  # fmt: skip
                except Exception as exc:
                    results["errors"].append(f"{tool}/{prof.name}: {exc!r}"[:4000])
                    print(f"ERROR {tool}/{prof.name}: {exc!r}", flush=True)
                done += k
                save()

        # Most telling first, so a run cut short still has them: regressions at equal
        # settings, the idle cost, regressions at the defaults, then the healthy runs.
        plan: list[tuple[str, str, bool, int]] = []
        if "regress" in phases:
            for pname in profiles:
                if pname != "default":
                    plan += [(t, pname, True, args.regressions) for t in tools]
        if "idle" in phases:
            plan += [("idle", t, False, args.idle) for t in tools if args.idle]
        if "default" in profiles and ({"regress", "default"} & set(phases)):
            plan += [(t, "default", True, args.regressions) for t in tools]
        if "healthy" in phases:  # at equal settings first; the guard-off variant has none
            for pname in sorted(profiles, key=lambda p: p != "equal"):
                # --quick: equal settings only (a healthy run at 1m intervals takes minutes)
                if not PROFILES[pname].guard and not (args.quick and pname != "equal"):
                    plan += [(t, pname, False, args.runs) for t in tools]
        for tool, what, regress, total in plan:
            if tool == "idle":
                try:
                    results["idle"].append(idle_cost(env, what, total, args.window))
                except Exception as exc:
                    results["errors"].append(f"idle {what}: {exc!r}"[:4000])
                    print(f"ERROR idle {what}: {exc!r}", flush=True)
                save()
                continue
            prof = PROFILES[what]
            if prof.guard and tool == "flagger":
                continue  # the guard is ours; Flagger has nothing to switch off
            batches(tool, prof, regress, total)
    finally:
        save()
        prom.stop()
        cluster.stop()
    print(json.dumps(results["summary"], indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
