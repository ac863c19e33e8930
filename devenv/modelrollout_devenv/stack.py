"""The product running in the local environment: model servers, traffic, the operator.

``ModelStack`` starts one simulated model server per version and a traffic
generator that reads the route from the API server and sends requests the
way a gateway would; it registers their ``/metrics`` with Prometheus.
``OperatorProcess`` runs ``modelrollout run`` as a real process against the
local API server (it can be killed and started again, as a test of restarts
needs). End-to-end tests and ``make demo`` both build on these.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import modelrollout
import modelrollout_devenv as devenv_pkg
from modelrollout_devenv.cluster import LocalCluster
from modelrollout_devenv.procs import ManagedProcess, Supervisor, free_port, http_probe, wait_until
from modelrollout_devenv.prometheus import PrometheusServer, Target


class TargetRegistry:
    """Several stacks share one Prometheus: each adds and removes its own targets."""

    def __init__(self, prometheus: PrometheusServer) -> None:
        self.prometheus = prometheus
        self._targets: dict[str, list[Target]] = {}
        self._lock = threading.Lock()
        prometheus.set_targets(self._all)

    def _all(self) -> list[Target]:
        with self._lock:
            return [t for ts in self._targets.values() for t in ts]

    def put(self, owner: str, targets: list[Target]) -> None:
        with self._lock:
            self._targets[owner] = targets
        # set_targets, not refresh: the registry owns the server's targets, even if
        # someone set them directly since (they would otherwise never be scraped).
        self.prometheus.set_targets(self._all)

    def drop(self, owner: str) -> None:
        with self._lock:
            self._targets.pop(owner, None)
        if self.prometheus.running:
            self.prometheus.set_targets(self._all)


def _python() -> list[str]:
    return [sys.executable, "-m"]


def _env() -> dict[str, str]:
    """The environment of the child processes: both packages importable, as they are here.

    The children run ``-m modelrollout...`` and ``-m modelrollout_devenv...``;
    with ``PYTHONPATH=operator:devenv`` (a clone, no install) they would find
    neither from a work dir, so the folders this process imported them from
    go first on the child's path (harmless when both are installed).
    """
    env = dict(os.environ)
    roots = dict.fromkeys(
        str(Path(pkg.__file__ or "").resolve().parents[1]) for pkg in (modelrollout, devenv_pkg)
    )
    roots.update(dict.fromkeys(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p))
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _read_port(path: Path, process: ManagedProcess, what: str, timeout: float = 20.0) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip() != "", timeout, what=what,
               process=process)  # fmt: skip
    return int(path.read_text().strip())


#: Requests per second the traffic generator sends by default. The gates are sequential
#: tests on request counts: showing a p99 limit or a 1 % error rate good takes about 800
#: requests to the candidate in a stage, so a 25 % canary step of a demo that lasts
#: seconds needs a few dozen requests per second.
DEFAULT_RATE = 60.0


class ModelStack:
    """Model servers for each version of one model, and the traffic for its route."""

    def __init__(
        self,
        cluster: LocalCluster,
        targets: TargetRegistry,
        work_dir: Path,
        *,
        model: str,
        namespace: str,
        versions: Sequence[str],
        router: str = "gatewayAPI",
        route: str | None = None,
        rate: float = DEFAULT_RATE,
        seed: int = 1,
        base_latency_ms: float = 20.0,
        faults: Mapping[str, Mapping[str, float]] | None = None,
        label_delay_s: float = 2.0,
        service_template: str = "{model}-{version}",
        kserve_storage_uri: str | None = None,
        llm: bool = False,
    ) -> None:
        self.cluster = cluster
        self.targets = targets
        self.work_dir = work_dir
        self.model = model
        self.namespace = namespace
        self.versions = list(versions)
        self.router = router
        self.route = route or model
        self.rate = rate
        self.seed = seed
        self.base_latency_ms = base_latency_ms
        self.faults = {k: dict(v) for k, v in (faults or {}).items()}
        self.label_delay_s = label_delay_s
        self.service_template = service_template
        self.kserve_storage_uri = kserve_storage_uri
        self.llm = llm
        self.sup = Supervisor(work_dir)
        self.urls: dict[str, str] = {}
        self.traffic_port: int | None = None
        self._owner = f"{namespace}/{model}"

    def service(self, version: str) -> str:
        """The Service a version's requests go to (``service_template``, as the rollout's)."""
        return self.service_template.format(model=self.model, version=version)

    def start(self) -> ModelStack:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        targets: list[Target] = []
        for i, version in enumerate(self.versions):
            port_file = self.work_dir / f"{version}.port"
            port_file.unlink(missing_ok=True)
            argv = [
                *_python(),
                "modelrollout_devenv.sim.model_server",
                "--model", self.model, "--version", version,
                "--port", "0", "--port-file", str(port_file),
                "--seed", str(self.seed * 100 + i),
                "--base-latency-ms", str(self.base_latency_ms),
                "--label-delay-s", str(self.label_delay_s),
            ]  # fmt: skip
            if version in self.faults:
                argv += ["--faults", json.dumps(self.faults[version])]
            if self.llm:
                argv.append("--llm")  # vLLM's metrics too (LLM serving gates)
            proc = self.sup.start(f"model-{self.model}-{version}", argv, env=_env())
            port = _read_port(port_file, proc, f"model server {version}")
            url = f"http://127.0.0.1:{port}"
            wait_until(http_probe(url + "/healthz"), 20, what=f"{version} /healthz", process=proc)
            self.urls[version] = url
            targets.append(
                Target(
                    f"model-{self.namespace}-{self.model}-{version}",
                    f"127.0.0.1:{port}",
                    {"namespace": self.namespace},
                )
            )
        port_file = self.work_dir / "traffic.port"
        port_file.unlink(missing_ok=True)
        backends = {self.service(v): u for v, u in self.urls.items()}
        argv = [
            *_python(),
            "modelrollout_devenv.sim.traffic",
            "--kubeconfig", str(self.cluster.kubeconfig),
            "--namespace", self.namespace,
            "--router", self.router, "--route", self.route,
            "--backends", json.dumps(backends),
            "--rate", str(self.rate), "--seed", str(self.seed),
            "--metrics-port", "0", "--port-file", str(port_file),
            "--route-interval", "0.5",
        ]  # fmt: skip
        if self.kserve_storage_uri:
            argv += ["--kserve-storage-uri", self.kserve_storage_uri]
        proc = self.sup.start(f"traffic-{self.model}", argv, env=_env())
        self.traffic_port = _read_port(port_file, proc, "traffic generator")
        targets.append(
            Target(
                f"traffic-{self.namespace}-{self.model}",
                f"127.0.0.1:{self.traffic_port}",
                {"namespace": self.namespace},
            )
        )
        self.targets.put(self._owner, targets)
        return self

    def set_faults(self, version: str, **faults: float) -> dict[str, Any]:
        """Switch faults on a running model server (latency_ms, error_rate, input_shift, ...)."""
        req = urllib.request.Request(
            self.urls[version] + "/faults",
            data=json.dumps(faults).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def split(self) -> dict[str, Any]:
        """What the traffic generator currently reads from the route."""
        assert self.traffic_port is not None
        url = f"http://127.0.0.1:{self.traffic_port}/split"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def stop(self) -> None:
        self.targets.drop(self._owner)
        self.sup.stop_all(timeout=5)

    @property
    def logs_dir(self) -> Path:
        return self.sup.logs_dir


class OperatorProcess:
    """``modelrollout run`` as a real process against the local cluster."""

    def __init__(
        self,
        cluster: LocalCluster,
        work_dir: Path,
        *,
        prometheus: str,
        tick: str = "1s",
        namespaces: Sequence[str] = (),
        kubeconfig: Path | None = None,
        extra: Sequence[str] = (),
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.sup = Supervisor(work_dir)
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.name = name
        ns_args = [a for n in namespaces for a in ("--namespace", n)] or ["--all-namespaces"]
        self.argv = [
            *_python(),
            "modelrollout.cli.main",
            "run",
            "--kubeconfig", str(kubeconfig or cluster.kubeconfig),
            "--prometheus", prometheus,
            "--tick", tick,
            "--bind-address", "127.0.0.1",
            "--health-port", str(self.health_port),
            "--metrics-port", str(self.metrics_port),
            *ns_args,
            *extra,
        ]  # fmt: skip
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 30) -> OperatorProcess:
        self.process = self.sup.start(self.name, self.argv, env=_env())
        wait_until(
            http_probe(f"http://127.0.0.1:{self.health_port}/healthz"),
            timeout,
            what="the operator's /healthz",
            process=self.process,
        )
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            self.process.stop(timeout=10, kill=kill)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    @property
    def log_path(self) -> Path:
        assert self.process is not None
        return self.process.log_path


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check()`` until it returns a truthy value; return it. Fails with ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
