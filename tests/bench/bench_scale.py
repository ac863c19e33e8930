"""Scale-out: N rollouts over S shards, a leader and a standby per shard, a killed leader replaced.

Run with ``make bench-scale`` (``python -m tests.bench.bench_scale``; default
5,000 rollouts over 4 shards). It starts a local API server (no nodes),
applies N HTTPRoutes and N ModelRollouts that finish at once (one weight
step, no gates), creates one KopfPeering per shard, and starts two operator
processes per shard (``--shards S --shard i --peering mr``): a leader
(priority 200) and a standby (priority 100), each with its own ``--identity``
and ``--field-manager`` (``shard<i>-a``, ``shard<i>-b``).

Once every rollout has Succeeded it reads

* each replica's RSS (``/proc/<pid>/status``) and CPU over an idle window;
* every rollout's ``metadata.managedFields``: the managers of its status
  subresource must be exactly the leader of the shard its uid hashes to;
* each replica's ``modelrollout_decisions_total``: the sets of rollouts
  that got decisions from two different replicas must not intersect;

then SIGKILLs shard 0's leader, gives some shard-0 rollouts a new
candidate, and times how long the standby takes to write their status and
to promote them (the goal: within the peering lifetime, plus the pause of
the rollout). Prints a table and writes raw JSON (``--json``).

``--quick`` is the smoke variant: 20 rollouts, 2 shards, a 10 s lifetime.
Not a test: timing belongs here, not in asserts (the smoke test in
tests/e2e/test_bench_smoke.py asserts only the invariants).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelrollout.operator.sharding import shard_of
from modelrollout_devenv import LocalCluster
from modelrollout_devenv import manifests as m
from modelrollout_devenv.cluster import KubectlError
from modelrollout_devenv.stack import OperatorProcess

from .bench_idle import cpu_seconds, load_average, rss_mib, status_patches

ROOT = Path(__file__).resolve().parents[2]
NS = "bench"
# One weight step, then a short pause: a new candidate takes a visible step before promotion.
FINISH_AT_ONCE: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "3s"}}]}
}
NO_GATES: dict[str, Any] = {"interval": "1m", "metrics": []}
_DECISION = re.compile(r"^modelrollout_decisions_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_ROLLOUT = re.compile(r'rollout="(?P<name>[^"]*)"')


def decided(metrics: str) -> dict[str, float]:
    """rollout name -> decisions this replica took on it (from its /metrics)."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        match = _DECISION.match(line)
        if match is None:
            continue
        name = _ROLLOUT.search(match["labels"])
        if name is not None:
            out[name["name"]] = out.get(name["name"], 0.0) + float(match["value"])
    return out


def succeeded(op: OperatorProcess) -> float:
    match = re.search(r'^modelrollout_rollouts\{phase="Succeeded"\} (\S+)$', op.metrics(), re.M)
    return float(match[1]) if match else 0.0


def apply_parallel(cluster: LocalCluster, objs: list[dict[str, Any]], size: int = 250) -> None:
    """Server-side apply in chunks of ``size`` objects, two kubectl processes at a time."""
    chunks = [objs[i : i + size] for i in range(0, len(objs), size)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda chunk: cluster.apply(*chunk), chunks))


def rollouts(cluster: LocalCluster, *names: str, managed: bool = False) -> list[dict[str, Any]]:
    """The rollouts (all, or these), retried while a busy API server times out."""
    args = ["get", "modelrollouts", *names, "-n", NS, "-o", "json"]
    if managed:
        args.append("--show-managed-fields")
    for attempt in range(20):
        try:
            text = cluster.kubectl(*args, timeout=300).stdout
            break
        except KubectlError as exc:  # a TLS handshake timeout, "Too large resource version"
            if attempt == 19:
                raise
            print(f"  kubectl get failed, again: {str(exc)[-100:]}", file=sys.stderr, flush=True)
            time.sleep(5)
    out = json.loads(text)
    items: list[dict[str, Any]] = out.get("items", [out])
    return items


def status_managers(obj: dict[str, Any]) -> list[str]:
    return sorted(
        {
            f["manager"]
            for f in obj["metadata"].get("managedFields") or []
            if f.get("subresource") == "status"
        }
    )


def phase_counts(items: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        phase = (item.get("status") or {}).get("phase", "-")
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def run(
    n: int,
    shards: int,
    *,
    lifetime: int,
    window: float,
    moved: int,
    work: Path,
    log: Any = sys.stderr,
) -> dict[str, Any]:
    def say(text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=log, flush=True)

    result: dict[str, Any] = {
        "rollouts": n,
        "shards": shards,
        "peering_lifetime_s": lifetime,
        "load_at_start": load_average(),
    }
    cluster = LocalCluster(work / "cluster")
    cluster.start()
    replicas: dict[str, OperatorProcess] = {}
    try:
        cluster.install_upstream_crds()
        cluster.install_crds(
            [
                ROOT / "crds" / "modelrollout.io_modelrollouts.yaml",
                ROOT / "crds" / "kopf-peering.yaml",
            ]
        )
        cluster.apply(m.namespace(NS))
        cluster.apply(
            *(
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "KopfPeering",
                    "metadata": {"name": f"mr-shard-{s}", "namespace": NS},
                }
                for s in range(shards)
            )
        )
        names = [f"model-{i:04d}" for i in range(n)]
        began = time.monotonic()
        apply_parallel(cluster, [m.http_route(x, NS, "v1") for x in names])
        apply_parallel(
            cluster, [m.rollout(x, NS, strategy=FINISH_AT_ONCE, analysis=NO_GATES) for x in names]
        )
        result["applied_in_s"] = time.monotonic() - began
        say(f"{2 * n} objects applied in {result['applied_in_s']:.0f} s")

        for s in range(shards):
            for who, priority in (("a", 200), ("b", 100)):
                identity = f"shard{s}-{who}"
                replicas[identity] = OperatorProcess(
                    cluster, work / identity, prometheus="http://127.0.0.1:9", tick="5s",
                    namespaces=[NS], name=identity,
                    extra=[
                        # A standby logs at info: kopf's "Resuming operations" times the takeover.
                        "--log-level", "warning" if who == "a" else "info",
                        "--guard-interval", "0s",
                        "--shards", str(shards), "--shard", str(s),
                        "--peering", "mr", "--peering-lifetime", f"{lifetime}s",
                        "--priority", str(priority),
                        "--identity", identity, "--field-manager", identity,
                    ],
                )  # fmt: skip
        # Leaders first, all at once: a standby started alone would act until its leader came.
        for who in ("a", "b"):
            group = [op for k, op in replicas.items() if k.endswith(who)]
            with ThreadPoolExecutor(len(group)) as pool:
                list(pool.map(lambda op: op.start(timeout=180), group))
        started = time.monotonic()
        patches0 = status_patches(cluster)
        # Polled from the leaders' own gauges: listing N rollouts every few seconds would
        # load the API server being measured. Checked against the API server below.
        leaders = [op for k, op in replicas.items() if k.endswith("-a")]
        while (done := sum(succeeded(op) for op in leaders)) < n:
            say(f"{n} rollouts: {done:.0f} Succeeded")
            if time.monotonic() - started > 1800:
                raise TimeoutError(f"{done:.0f} of {n} rollouts finished")
            time.sleep(3 if n <= 1000 else 10)
        result["all_finished_in_s"] = time.monotonic() - started
        say(f"all Succeeded after {result['all_finished_in_s']:.0f} s")
        time.sleep(3 if n <= 100 else 10)  # the echo of the last writes

        # -- idle cost per replica
        pids = {k: op.process.pid for k, op in replicas.items() if op.process is not None}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.monotonic()
        idle_patches0 = status_patches(cluster)
        load_idle = load_average()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        metrics = {k: op.metrics() for k, op in replicas.items()}
        per_replica: dict[str, dict[str, Any]] = {}
        decisions = {k: decided(text) for k, text in metrics.items()}
        for k, pid in pids.items():
            per_replica[k] = {
                "rss_mib": rss_mib(pid),
                "idle_cpu_percent": 100 * (cpu_seconds(pid) - cpu0[k]) / elapsed,
                "rollouts_decided": len(decisions[k]),
                "decisions": sum(decisions[k].values()),
            }
        result["idle_window_s"] = window
        result["load_during_idle"] = load_idle
        result["status_patches_until_idle"] = idle_patches0 - patches0
        result["status_patches_idle_window"] = status_patches(cluster) - idle_patches0

        # -- who wrote what: managedFields and each replica's decisions
        items = rollouts(cluster, managed=True)
        shard_of_name = {
            i["metadata"]["name"]: shard_of(i["metadata"]["uid"], shards) for i in items
        }
        per_shard = {s: 0 for s in range(shards)}
        for s in shard_of_name.values():
            per_shard[s] += 1
        result["rollouts_per_shard"] = per_shard
        result["succeeded_per_api_server"] = phase_counts(items).get("Succeeded", 0)
        wrong = {}
        for item in items:
            name = item["metadata"]["name"]
            managers = status_managers(item)
            if managers != [f"shard{shard_of_name[name]}-a"]:
                wrong[name] = managers
        result["status_written_by_other_than_own_leader"] = wrong
        overlap = 0
        keys = sorted(decisions)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                overlap += len(set(decisions[a]) & set(decisions[b]))
        result["rollouts_decided_by_two_replicas"] = overlap
        say(f"status managers wrong on {len(wrong)}; decided by two replicas: {overlap}")

        # -- takeover: kill shard 0's leader, give some of its rollouts a new candidate
        shard0 = sorted(k for k, s in shard_of_name.items() if s == 0)[:moved]
        before = {i["metadata"]["name"]: i.get("status") for i in rollouts(cluster, *shard0)}
        replicas["shard0-a"].stop(kill=True)
        killed_at, killed_wall = time.monotonic(), time.time()
        cluster.apply(
            *(
                m.rollout(x, NS, candidate="v3", strategy=FINISH_AT_ONCE, analysis=NO_GATES)
                for x in shard0
            )
        )
        first_write: float | None = None
        promoted: float | None = None
        while time.monotonic() - killed_at < lifetime * 3 + 120:
            now = rollouts(cluster, *shard0)
            if first_write is None and any(
                i.get("status") != before[i["metadata"]["name"]] for i in now
            ):
                first_write = time.monotonic() - killed_at
            if all(
                (i.get("status") or {}).get("phase") == "Succeeded"
                and (i.get("status") or {}).get("stableVersion") == "v3"
                for i in now
            ):
                promoted = time.monotonic() - killed_at
                break
            time.sleep(0.5)
        result["takeover"] = {
            "moved_rollouts": len(shard0),
            "first_status_write_after_kill_s": first_write,
            "all_promoted_after_kill_s": promoted,
        }
        result["takeover"]["standby_resumed_after_kill_s"] = resumed_after(
            replicas["shard0-b"].log_path, killed_wall
        )
        after = rollouts(cluster, *shard0, managed=True)
        result["takeover"]["status_managers_of_moved"] = sorted(
            {"+".join(status_managers(i)) for i in after}
        )
        standby = decided(replicas["shard0-b"].metrics())
        result["takeover"]["standby_decided_only_shard0"] = all(
            shard_of_name.get(k) == 0 for k in standby
        )
        result["takeover"]["load"] = load_average()
        result["replicas"] = per_replica
        say(
            f"takeover: standby resumed {result['takeover']['standby_resumed_after_kill_s']}, "
            f"first write {first_write}, promoted {promoted}"
        )
        return result
    finally:
        for op in replicas.values():
            op.stop()
        cluster.stop()


_KOPF_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] .*Resuming operations")


def resumed_after(log: Path, since: float) -> float | None:
    """Seconds from ``since`` (epoch) to the first "Resuming operations" kopf logged after it
    (kopf's peering: the standby has seen its leader's lease expire and starts handling)."""
    from datetime import datetime

    for line in log.read_text(errors="replace").splitlines():
        match = _KOPF_LINE.match(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            if at >= since:
                return at - since
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rollouts", type=int, default=5000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--lifetime", type=int, default=30, help="--peering-lifetime, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--moved", type=int, default=10, help="shard-0 rollouts given v3")
    parser.add_argument("--quick", action="store_true", help="20 rollouts, 2 shards, 10 s lifetime")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-scale.json")
    args = parser.parse_args()
    # A background run ignores SIGINT: let SIGTERM stop the cluster and operators too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.rollouts, args.shards, args.lifetime, args.window, args.moved = 20, 2, 10, 5.0, 2
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        r = run(
            args.rollouts, args.shards, lifetime=args.lifetime, window=args.window,
            moved=args.moved, work=Path(tmp),
        )  # fmt: skip
    r["machine"] = {"cpus": os.cpu_count()}
    print(
        f"{r['rollouts']:,} rollouts over {r['shards']} shards (load {r['load_during_idle']}); "
        f"all Succeeded after {r['all_finished_in_s']:.0f} s"
    )
    print("| replica | rollouts decided | decisions | RSS | idle CPU (% of one core) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k, v in r["replicas"].items():
        print(f"| {k} | {v['rollouts_decided']:,} | {v['decisions']:.0f} "
              f"| {v['rss_mib']:.0f} MiB | {v['idle_cpu_percent']:.2f}% |")  # fmt: skip
    print(f"status written by a replica other than its shard's leader: "
          f"{len(r['status_written_by_other_than_own_leader'])}; "
          f"rollouts decided by two replicas: {r['rollouts_decided_by_two_replicas']}")  # fmt: skip
    print(f"takeover: {json.dumps(r['takeover'])}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"raw: {args.json}")


if __name__ == "__main__":
    main()
