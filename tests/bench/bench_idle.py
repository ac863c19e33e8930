"""Idle cost: CPU and memory of the operator with N finished rollouts in a real local cluster.

Run with ``make bench-idle`` (``python -m tests.bench.bench_idle``). For each
N it starts a local API server (no nodes: nothing here needs pods), applies N
HTTPRoutes and N ModelRollouts that finish at once (one weight step, no
gates), starts the operator as a process, waits until every rollout has
Succeeded and the operator has settled, then reads the operator's CPU time
from ``/proc/<pid>/stat`` over a window (60 s by default) and its RSS from
``/proc/<pid>/status``. It also counts the status PATCHes the API server
served and the operator's reconciles in the window: both should be zero.

The numbers go to docs/benchmarks.md ("Idle cost") by hand, with the machine
they came from. Not a test: timing belongs here, not in asserts.

To measure another checkout's operator with the same script (a baseline),
put that checkout's ``operator/`` first on PYTHONPATH: the operator process
runs the ``modelrollout`` package the devenv was imported from.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelrollout_devenv import LocalCluster
from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
NS = "bench"
FINISH_AT_ONCE: dict[str, Any] = {"canary": {"steps": [{"setWeight": 100}]}}
NO_GATES: dict[str, Any] = {"interval": "1m", "metrics": []}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def status_patches(cluster: LocalCluster) -> float:
    total = 0.0
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{") and all(
            s in line for s in ('resource="modelrollouts"', 'subresource="status"', 'verb="PATCH"')
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reconciles(op: OperatorProcess) -> float:
    match = re.search(r"^modelrollout_reconcile_seconds_count (\S+)$", op.metrics(), re.M)
    return float(match[1]) if match else 0.0


def decisions(op: OperatorProcess) -> float:
    """Every decision the operator took (``modelrollout_decisions_total``, all reasons)."""
    found = re.findall(r"^modelrollout_decisions_total\{[^}]*\} (\S+)$", op.metrics(), re.M)
    return sum(float(x) for x in found)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages of the machine, for the record."""
    return [round(float(x), 2) for x in Path("/proc/loadavg").read_text().split()[:3]]


def apply_in_chunks(cluster: LocalCluster, objs: list[dict[str, Any]], size: int = 250) -> None:
    for i in range(0, len(objs), size):
        cluster.apply(*objs[i : i + size])


def phases(cluster: LocalCluster) -> dict[str, int]:
    out = cluster.kubectl("get", "modelrollouts", "-n", NS, "-o", "json", timeout=300).stdout
    counts: dict[str, int] = {}
    for item in json.loads(out)["items"]:
        phase = (item.get("status") or {}).get("phase", "-")
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def measure(n: int, *, tick: str, window: float, work: Path) -> dict[str, Any]:
    cluster = LocalCluster(work / f"cluster-{n}")
    cluster.start()
    try:
        cluster.install_upstream_crds()
        cluster.install_crds([ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"])
        cluster.apply(m.namespace(NS))
        names = [f"model-{i:04d}" for i in range(n)]
        apply_in_chunks(cluster, [m.http_route(x, NS, "v1") for x in names])
        apply_in_chunks(
            cluster,
            [m.rollout(x, NS, strategy=FINISH_AT_ONCE, analysis=NO_GATES) for x in names],
        )
        op = OperatorProcess(
            cluster, work / f"operator-{n}", prometheus="http://127.0.0.1:9", tick=tick,
            namespaces=[NS], extra=["--log-level", "warning"],
        )  # fmt: skip
        patches_before = status_patches(cluster)
        op.start(timeout=120)
        started = time.monotonic()
        try:
            while (seen := phases(cluster)).get("Succeeded", 0) < n:
                print(f"  {n} rollouts: {seen}", file=sys.stderr, flush=True)
                if time.monotonic() - started > 900:
                    raise TimeoutError(f"not all rollouts finished: {seen}")
                time.sleep(5)
            finished_in = time.monotonic() - started
            time.sleep(15)  # the echo of the last writes, and garbage to settle
            assert op.process is not None
            pid = op.process.pid
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            patches0, runs0, decided0 = status_patches(cluster), reconciles(op), decisions(op)
            load = load_average()
            time.sleep(window)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            return {
                "rollouts": n,
                "tick": tick,
                "window_s": window,
                "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
                "rss_mib": rss_mib(pid),
                "status_patches": status_patches(cluster) - patches0,
                "reconciles": reconciles(op) - runs0,
                "decisions": decisions(op) - decided0,
                "all_finished_in_s": finished_in,
                # From the operator's start to the idle window: every rollout started,
                # stepped and promoted. PATCHes per decision must be at most 1.
                "startup_status_patches": patches0 - patches_before,
                "startup_decisions": decided0,
                "startup_reconciles": runs0,
                "load_during_window": load,
                "load_after_window": load_average(),
            }
        finally:
            op.stop()
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rollouts", type=int, action="append", help="default: 100, 1000")
    parser.add_argument("--tick", default="5s")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of measurement")
    parser.add_argument("--with-5000", action="store_true", help="add a run with 5,000 rollouts")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 rollouts, 10 s window")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-idle.json")
    args = parser.parse_args()
    # A background run ignores SIGINT: let SIGTERM stop the cluster and operators too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = args.rollouts or [100, 1000]
    if args.with_5000:
        sizes.append(5000)
    if args.quick:
        sizes, args.window = [20], 10.0
    print("| finished rollouts | CPU (% of one core) | RSS | idle: status PATCHes / reconciles "
          "/ decisions | start-up: status PATCHes / decisions / reconciles "
          "| all finished after | load (1/5/15 min) |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        for n in sizes:
            r = measure(n, tick=args.tick, window=args.window, work=Path(tmp))
            results.append(r)
            print(
                f"| {r['rollouts']:,} | {r['cpu_percent']:.2f}% | {r['rss_mib']:.0f} MiB "
                f"| {r['status_patches']:.0f} / {r['reconciles']:.0f} / {r['decisions']:.0f} "
                f"| {r['startup_status_patches']:.0f} / {r['startup_decisions']:.0f} "
                f"/ {r['startup_reconciles']:.0f} | {r['all_finished_in_s']:.0f} s "
                f"| {r['load_during_window']} |",
                flush=True,
            )
    if args.json:
        out = {"machine": {"cpus": os.cpu_count()}, "results": results}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"raw: {args.json}")


if __name__ == "__main__":
    main()
