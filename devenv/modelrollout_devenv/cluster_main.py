"""``python -m modelrollout_devenv``: run a local cluster until Ctrl-C.

For poking at the local environment by hand (and for ``make demo``): starts a
:class:`~modelrollout_devenv.cluster.LocalCluster`, optionally with kwok nodes
and the upstream CRDs, prints how to reach it, and stops everything on Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from modelrollout_devenv.binaries import MissingBinary
from modelrollout_devenv.cluster import LocalCluster
from modelrollout_devenv.procs import ReadinessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrollout_devenv", description=__doc__)
    parser.add_argument("--work-dir", type=Path, help="kept after exit; reuse it for a warm start")
    parser.add_argument("--no-nodes", action="store_true", help="API server only (no kwok nodes)")
    parser.add_argument("--no-crds", action="store_true", help="skip Gateway API and Istio CRDs")
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
