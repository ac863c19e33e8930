"""``modelrollout-dev up|demo|cluster``: the product in a local environment.

``up`` and ``demo`` start a real local control plane (etcd, kube-apiserver,
controller manager, scheduler, kwok nodes), a real Prometheus, simulated model
servers with real metrics, a traffic generator that follows the route, and the
operator as a process. ``demo`` runs two rollouts, a good model and one that
regresses at 25% of traffic, shows their progress live, and tears down.
``cluster`` starts only the control plane, for poking at it by hand.

This is a developer tool, installed from the clone (``make install``) as
``modelrollout-dev`` and ``python -m modelrollout_devenv``; it is not part of
the ``modelrollout`` distribution users install. It reads ``crds/`` and
``hack/versions.env`` from the clone (see :func:`binaries.repo_root`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from modelrollout.api.status import Phase
from modelrollout.cli import view
from modelrollout_devenv.binaries import MissingBinary, RepoNotFound, repo_root
from modelrollout_devenv.cluster import LocalCluster
from modelrollout_devenv.procs import ReadinessError

#: The ModelRollout CRD, relative to the clone (``make crds`` writes it).
CRD_FILE = Path("crds") / "modelrollout.io_modelrollouts.yaml"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the modelrollout operator in a local environment (no Docker needed).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo = sub.add_parser("demo", help="two rollouts, one promoted, one rolled back, live")
    demo.add_argument("--work-dir", type=Path, default=None, help="where logs are kept")
    demo.add_argument("--timeout", type=float, default=300, help="seconds before giving up")
    demo.set_defaults(func=run_demo)
    up = sub.add_parser("up", help="start the environment with a sample rollout; Ctrl-C stops")
    up.add_argument("--work-dir", type=Path, default=None)
    up.set_defaults(func=run_up)
    cluster = sub.add_parser("cluster", help="start only the control plane; Ctrl-C stops")
    cluster.add_argument("--work-dir", type=Path, help="kept after exit; reuse it for a warm start")
    cluster.add_argument("--no-nodes", action="store_true", help="API server only (no kwok nodes)")
    cluster.add_argument("--no-crds", action="store_true", help="skip Gateway API and Istio CRDs")
    cluster.set_defaults(func=run_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``modelrollout-dev`` and ``python -m modelrollout_devenv``."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def _crd_or_none() -> Path | None:
    """The clone's CRD file, or None after saying why (before anything is started)."""
    try:
        return repo_root() / CRD_FILE
    except RepoNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


class Environment:
    """Everything the demo starts, stopped in reverse order whatever happens."""

    def __init__(self, work_dir: Path, *, crd: Path) -> None:
        from modelrollout_devenv import PrometheusServer
        from modelrollout_devenv.stack import TargetRegistry

        self.work_dir = work_dir
        self.crd = crd
        self.cluster = LocalCluster(work_dir / "cluster", with_nodes=True)
        self.prometheus = PrometheusServer(work_dir=work_dir / "prometheus")
        self.targets: TargetRegistry | None = None
        self._TargetRegistry = TargetRegistry
        self.stacks: list[Any] = []
        self.operator: Any = None

    def start(self, say: Any) -> None:
        from modelrollout_devenv.stack import OperatorProcess

        began = time.monotonic()
        self.cluster.start()
        self.cluster.install_upstream_crds()
        self.cluster.install_crds([self.crd])
        say(f"cluster up at {self.cluster.server} ({time.monotonic() - began:.1f}s)")
        self.prometheus.start()
        self.targets = self._TargetRegistry(self.prometheus)
        say(f"prometheus at {self.prometheus.url}")
        self.operator = OperatorProcess(
            self.cluster, self.work_dir / "operator", prometheus=self.prometheus.url
        ).start()
        say(f"operator running (metrics on 127.0.0.1:{self.operator.metrics_port})")

    def model(self, name: str, namespace: str, **kw: Any) -> Any:
        from modelrollout_devenv import manifests as m
        from modelrollout_devenv.stack import ModelStack

        assert self.targets is not None
        for obj in m.model_objects(name, namespace):
            self.cluster.apply(obj)
        stack = ModelStack(
            self.cluster,
            self.targets,
            self.work_dir / name,
            model=name,
            namespace=namespace,
            versions=("v1", "v2"),
            **kw,
        ).start()
        self.stacks.append(stack)
        return stack

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        for stack in self.stacks:
            stack.stop()
        self.prometheus.stop()
        self.cluster.stop()


def _get(env: Environment, ns: str, name: str) -> dict[str, Any]:
    out = env.cluster.kubectl("get", "modelrollout", name, "-n", ns, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def _table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="ModelRollouts in namespace demo", expand=True)
    for col in ("rollout", "versions", "phase", "stage", "step", "weights", "mirror", "gates"):
        table.add_column(col)
    colour = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow"}
    for obj in rows:
        st = obj.get("status") or {}
        weights = st.get("weights") or {}
        gates = []
        for r in (st.get("lastAnalysis") or {}).get("results", []):
            value = "n/a" if r.get("value") is None else f"{r['value']:.3g}"
            limit = view.gate_limit(r, none="")
            gates.append(f"[{colour.get(r['verdict'], 'white')}]{r['metric']} {value} {limit}[/]")
        phase = st.get("phase", Phase.PENDING)
        style = {
            Phase.SUCCEEDED: "bold green",
            Phase.ROLLED_BACK: "bold red",
            Phase.PAUSED: "yellow",
        }.get(phase, "cyan")
        spec = obj.get("spec") or {}
        versions = (
            f"{st.get('stableVersion', '?')} → {(spec.get('candidate') or {}).get('version')}"
        )
        if phase == Phase.SUCCEEDED:
            versions = f"{st.get('stableVersion')} (promoted)"
        table.add_row(
            obj["metadata"]["name"],
            versions,
            f"[{style}]{phase}[/]",
            st.get("stage") or "",
            str(st.get("stepIndex", "")),
            f"{weights.get('stable', 100)}% / {weights.get('candidate', 0)}%",
            f"{st.get('mirrorPercent', 0)}%",
            "\n".join(gates),
        )
    return table


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from modelrollout_devenv import manifests as m

    console = Console()
    crd = _crd_or_none()
    if crd is None:
        return 2
    work_dir = args.work_dir or Path(f"/tmp/modelrollout-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    work_dir.mkdir(parents=True, exist_ok=True)
    env = Environment(work_dir, crd=crd)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ns = "demo"
    code = 1
    try:
        console.rule("[bold]ModelRollout demo")
        env.start(console.print)
        env.cluster.apply(m.namespace(ns))
        good = env.model("fraud-detector", ns)
        bad = env.model("recommender", ns, seed=2)
        console.print(
            "fraud-detector v2 is healthy; recommender v2 turns slow once it takes 25% "
            "of live traffic (its p99 gate is 0.25 s)."
        )
        for name in ("fraud-detector", "recommender"):
            env.cluster.apply(m.rollout(name, ns))
        injected = False
        deadline = time.monotonic() + args.timeout
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while time.monotonic() < deadline:
                rows = [_get(env, ns, n) for n in ("fraud-detector", "recommender")]
                rows = [r for r in rows if r]
                live.update(_table(rows))
                rec = next((r for r in rows if r["metadata"]["name"] == "recommender"), {})
                weight = ((rec.get("status") or {}).get("weights") or {}).get("candidate", 0)
                if not injected and weight >= 25:
                    bad.set_faults("v2", latency_ms=400)
                    injected = True
                phases = [(r.get("status") or {}).get("phase") for r in rows]
                if len(rows) == 2 and all(p in view.TERMINAL_PHASES for p in phases):
                    break
                time.sleep(1)
        del good
        console.print()
        final = {
            n: (_get(env, ns, n).get("status") or {}) for n in ("fraud-detector", "recommender")
        }
        for name, st in final.items():
            console.print(f"[bold]{name}[/]: {st.get('phase')} — {st.get('message', '')}")
        ok = (
            final["fraud-detector"].get("phase") == Phase.SUCCEEDED
            and final["recommender"].get("phase") == Phase.ROLLED_BACK
        )
        code = 0 if ok else 1
        if not ok:
            console.print("[red]the demo did not end as expected (see the logs)[/]")
    except (MissingBinary, RepoNotFound) as exc:
        console.print(f"[red]{exc}[/]")
        code = 2
    except KeyboardInterrupt:
        console.print("interrupted")
        code = 130
    finally:
        console.print(f"logs: {work_dir} (operator: {work_dir / 'operator' / 'logs'})")
        console.print("tearing down ...")
        env.stop()
    return code


def run_up(args: argparse.Namespace) -> int:
    from modelrollout_devenv import manifests as m

    crd = _crd_or_none()
    if crd is None:
        return 2
    work_dir = args.work_dir or Path(f"/tmp/modelrollout-dev-{time.strftime('%Y%m%d-%H%M%S')}")
    env = Environment(work_dir, crd=crd)
    try:
        env.start(print)
        env.cluster.apply(m.namespace("demo"))
        env.model("fraud-detector", "demo")
        print(f"export KUBECONFIG={env.cluster.kubeconfig}")
        sample = work_dir / "fraud-detector-rollout.json"
        sample.write_text(json.dumps(m.rollout("fraud-detector", "demo"), indent=2))
        print(f"try: kubectl apply -f {sample}")
        print("     kubectl modelrollout status fraud-detector -n demo --watch")
        print(f"logs: {work_dir}; Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(1)
    except (MissingBinary, RepoNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        env.stop()


def run_cluster(args: argparse.Namespace) -> int:
    """``cluster``: a local control plane until Ctrl-C or SIGTERM, and how to reach it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    cluster = LocalCluster(args.work_dir, with_nodes=not args.no_nodes)
    begin = time.monotonic()
    try:
        cluster.start()
        if not args.no_crds:
            cluster.install_upstream_crds()
    except (MissingBinary, ReadinessError, FileNotFoundError) as exc:
        cluster.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"cluster up in {time.monotonic() - begin:.1f}s: {cluster.server}")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  logs: {cluster.logs_dir}")
    print("Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(1.0):
            dead = [p.name for p in cluster.processes if not p.running]
            if dead:
                print(f"error: {', '.join(dead)} exited; see {cluster.logs_dir}", file=sys.stderr)
                return 1
    finally:
        cluster.stop()
    return 0
