"""Decision lag: from a breach visible in Prometheus to the candidate at 0% in the route.

Run with ``make bench-guard`` (``python -m tests.bench.bench_guard``). It starts the
local environment (real etcd + kube-apiserver + kwok, a real Prometheus scraping
simulated model servers every second) and the operator as a process, then in rounds
of ``--parallel`` rollouts:

1. canaries hold at 20% with gates checked once a minute (``--interval``) and
   ``failureLimit: 3``, so the scheduled checks alone would take minutes;
2. after some healthy traffic, each candidate's model server starts failing every
   request, at staggered moments;
3. a watcher polls the routes every 100 ms and notes when each candidate reaches 0%.

"Visible in Prometheus" is measured, not assumed: afterwards the guard's own query
and test are replayed against Prometheus at past evaluation times (``time=``, every
250 ms from the injection on) and the first time at which the errorRate test, on the
counts since the stage start, shows the gate bad is the moment the breach was visible.
The lag is from there to 0% in the route. The time from the injection (the fault
switched on) is reported too; it adds the evidence the test needs.

With ``--without-guard N`` it also runs N breaches with ``--guard-interval 0s`` (the
scheduled checks alone), for contrast. The numbers go to docs/benchmarks.md ("Decision
lag") by hand, and raw to ``--out``. Not a test: timing belongs here, not in asserts.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from modelrollout.analysis import guard
from modelrollout.analysis.source import parse_result
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Verdict
from modelrollout_devenv import LocalCluster, PrometheusServer
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import TargetRegistry
from tests.e2e.world import CRD, World

HOLD_AT_20: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "30m"}}, {"setWeight": 50}]}
}


def analysis(interval: str) -> dict[str, Any]:
    return {
        "interval": interval,
        "failureLimit": 3,
        "metrics": [{"name": "errors", "errorRate": {}, "max": 0.05}],
    }


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a small sample."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


class RouteWatch:
    """Polls the namespace's HTTPRoutes; the first moment each candidate is at 0%."""

    def __init__(self, world: World, names: list[str]) -> None:
        from kubernetes import client, config

        config.load_kube_config(str(world.cluster.kubeconfig))
        self.api = client.CustomObjectsApi()
        self.ns = world.ns
        self.names = set(names)
        self.zero_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.zero_at) < len(self.names):
            routes = self.api.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", self.ns, "httproutes"
            )
            now = time.time()
            for r in routes["items"]:
                name = r["metadata"]["name"]
                if name not in self.names or name in self.zero_at:
                    continue
                refs = r["spec"]["rules"][-1]["backendRefs"]
                weights = {b["name"]: b.get("weight", 1) for b in refs}
                if weights.get(f"{name}-v2", 0) == 0 and self.armed(name):
                    self.zero_at[name] = now
            time.sleep(0.1)

    def armed(self, name: str) -> bool:
        return name in self.injected

    def start(self) -> RouteWatch:
        self.injected: set[str] = set()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def visible_at(
    prom: PrometheusServer, body: dict[str, Any], start: float, end: float, step: float = 0.25
) -> float | None:
    """The first evaluation time in [start, end] at which the guard's test shows a gate bad."""
    spec = ModelRolloutSpec.model_validate(body["spec"])
    status = ModelRolloutStatus.model_validate(body["status"])
    t = start
    while t <= end + 1e-9:
        now = datetime.fromtimestamp(t, UTC).replace(tzinfo=None)
        targets = guard.targets_of("x", spec, status, body["metadata"]["namespace"], now)
        for batch in guard.batches(targets):
            answer = requests.get(
                f"{prom.url}/api/v1/query", params={"query": batch.promql, "time": f"{t:.3f}"}
            ).json()
            samples = parse_result(answer.get("data"))
            if any(r.verdict == Verdict.FAIL for _, r in guard.judge(batch, samples)):
                return t
        t += step
    return None


def run_round(
    world: World, names: list[str], *, interval: str, healthy_s: float, timeout: float
) -> list[dict[str, Any]]:
    stacks = {n: world.model(n) for n in names}
    for n in names:
        world.apply(m.rollout(n, world.ns, strategy=HOLD_AT_20, analysis=analysis(interval)))
    for n in names:
        world.wait_status(n, lambda s: s.get("weights", {}).get("candidate") == 20, 120, "20%")
    time.sleep(healthy_s)
    bodies = {n: world.get("modelrollout", n) for n in names}
    watch = RouteWatch(world, names).start()
    injected: dict[str, float] = {}
    for n in names:
        time.sleep(random.uniform(0, 1.0))  # staggered: not all in one guard round
        stacks[n].set_faults("v2", error_rate=1.0)
        injected[n] = time.time()
        watch.injected.add(n)
    deadline = time.time() + timeout
    while len(watch.zero_at) < len(names) and time.time() < deadline:
        time.sleep(0.5)
    watch.stop()
    out: list[dict[str, Any]] = []
    for n in names:
        zero = watch.zero_at.get(n)
        seen = visible_at(world.prometheus, bodies[n], injected[n], zero or time.time())
        phase = world.status(n).get("phase")
        out.append(
            {
                "rollout": n,
                "injected": injected[n],
                "visible": seen,
                "zero": zero,
                "phase": phase,
                "message": (world.status(n).get("message") or "")[:200],
            }
        )
    for stack in stacks.values():
        stack.stop()
    world.stacks.clear()
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["zero"] is not None and r["visible"] is not None]
    lag = [r["zero"] - r["visible"] for r in done]
    total = [r["zero"] - r["injected"] for r in rows if r["zero"] is not None]
    out: dict[str, Any] = {"breaches": len(rows), "rolled_back": len(total)}
    if lag:
        out["visible_to_zero_s"] = {
            "p50": round(statistics.median(lag), 2),
            "p99": round(percentile(lag, 99), 2),
            "max": round(max(lag), 2),
            "min": round(min(lag), 2),
        }
    if total:
        out["injected_to_zero_s"] = {
            "p50": round(statistics.median(total), 2),
            "p99": round(percentile(total, 99), 2),
            "max": round(max(total), 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--breaches", type=int, default=50)
    p.add_argument("--parallel", type=int, default=5)
    p.add_argument("--guard-interval", default="2s")
    p.add_argument("--interval", default="1m", help="analysis.interval of the rollouts")
    p.add_argument("--healthy", type=float, default=10, help="seconds of healthy traffic first")
    p.add_argument("--without-guard", type=int, default=0, help="breaches with the guard off")
    p.add_argument("--out", default="docs/bench-guard.json")
    args = p.parse_args(argv)

    random.seed(7)
    work = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    cluster = LocalCluster(work / "cluster", with_nodes=True)
    prom = PrometheusServer(work_dir=work / "prometheus")
    results: dict[str, Any] = {"machine": f"{sys.platform}, see docs/benchmarks.md"}
    try:
        cluster.start()
        cluster.install_upstream_crds()
        cluster.install_crds([CRD])
        prom.start()
        targets = TargetRegistry(prom)
        plans = [("guard", args.breaches, args.guard_interval)]
        if args.without_guard:
            plans.append(("no-guard", args.without_guard, "0s"))
        for label, breaches, every in plans:
            world = World(cluster, prom, targets, work / label, f"bench-{label}")
            op = world.operator(extra=["--guard-interval", every])
            rows: list[dict[str, Any]] = []
            rnd = 0
            while len(rows) < breaches:
                k = min(args.parallel, breaches - len(rows))
                names = [f"r{rnd}-{i}" for i in range(k)]
                timeout = 60 if label == "guard" else 400
                rows += run_round(
                    world, names, interval=args.interval, healthy_s=args.healthy, timeout=timeout
                )
                rnd += 1
                print(f"[{label}] {len(rows)}/{breaches}: {summary(rows)}", flush=True)
            results[label] = {
                "guard_interval": every,
                "analysis_interval": args.interval,
                "summary": summary(rows),
                "rows": rows,
            }
            metrics = op.metrics()
            results[label]["operator_metrics"] = [
                line for line in metrics.splitlines() if line.startswith("modelrollout_guard_")
            ]
            world.close()
    finally:
        prom.stop()
        cluster.stop()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v["summary"] for k, v in results.items() if isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
