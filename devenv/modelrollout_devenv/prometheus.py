"""A real Prometheus for tests and demos.

The operator judges a rollout on PromQL answers, so its tests run against a
real Prometheus (Debian's ``/usr/bin/prometheus``) scraping real ``/metrics``
endpoints, not a canned HTTP stub: staleness, ``rate()`` windows and scrape
timing are part of what the analysis has to get right.

Design points:

- the port is chosen once and kept: :meth:`PrometheusServer.stop` then
  :meth:`~PrometheusServer.start` brings Prometheus back on the *same* URL with
  the same TSDB, which is how an end-to-end test simulates "Prometheus went
  away mid-rollout and came back" without reconfiguring the operator;
- targets are static (``static_configs``) and can be changed while running:
  :meth:`~PrometheusServer.set_targets` rewrites ``prometheus.yml`` and asks
  for a reload through ``POST /-/reload`` (``--web.enable-lifecycle``), which,
  unlike SIGHUP, answers only once the reload is done and reports a bad config;
- everything (config, TSDB, log) lives in the work dir, and the web server
  listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple, Self

import yaml

from modelrollout_devenv.binaries import find_binaries
from modelrollout_devenv.procs import (
    ManagedProcess,
    ReadinessError,
    free_port,
    http_probe,
    loopback_opener,
)

__all__ = ["PrometheusServer", "Target", "TargetSpec"]


class Target(NamedTuple):
    """One scrape target: ``job`` name, ``host:port`` address and extra labels."""

    job: str
    address: str
    labels: Mapping[str, str] = MappingProxyType({})
    metrics_path: str = "/metrics"


#: A target as given by a caller: a :class:`Target` or a bare ``"host:port"``
#: (scraped under the job name ``"default"``).
TargetSpec = Target | str
Targets = Iterable[TargetSpec] | Callable[[], Iterable[TargetSpec]]


def _normalise(targets: Iterable[TargetSpec]) -> list[Target]:
    return [t if isinstance(t, Target) else Target("default", t) for t in targets]


class PrometheusServer:
    """A Prometheus process scraping static targets, on a fixed loopback port.

    ``targets`` may be a list, or a callable returning one that is evaluated at
    every :meth:`start` and :meth:`refresh`, so a fixture can hand over "the
    current set of model servers" without knowing it up front.
    """

    def __init__(
        self,
        targets: Targets = (),
        *,
        scrape_interval: str = "1s",
        work_dir: Path | None = None,
        port: int | None = None,
        binary: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._targets = targets
        self.scrape_interval = scrape_interval
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="modelrollout-prometheus-"))
            if work_dir is None
            else work_dir
        )
        self.port = port or free_port()
        self._binary = binary
        self.start_timeout = start_timeout
        self.config_path = self.work_dir / "prometheus.yml"
        self.data_dir = self.work_dir / "data"
        self.logs_dir = self.work_dir / "logs"
        self._process: ManagedProcess | None = None
        self._opener = loopback_opener()

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (stable across restarts)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "prometheus.log"

    # -- configuration -------------------------------------------------------------

    def _current_targets(self) -> list[Target]:
        targets = self._targets() if callable(self._targets) else self._targets
        return _normalise(targets)

    def render_config(self) -> dict[str, Any]:
        """The ``prometheus.yml`` for the current targets: one scrape job per job name.

        A target whose path is not ``/metrics`` carries the ``__metrics_path__``
        label, which Prometheus reads as that target's path, so one job can mix
        paths.
        """
        jobs: dict[str, list[dict[str, Any]]] = {}
        for target in self._current_targets():
            labels = dict(target.labels)
            if target.metrics_path != "/metrics":
                labels["__metrics_path__"] = target.metrics_path
            group: dict[str, Any] = {"targets": [target.address]}
            if labels:
                group["labels"] = labels
            jobs.setdefault(target.job, []).append(group)
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": groups} for job, groups in jobs.items()
            ],
        }

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".yml.tmp")
        tmp.write_text(yaml.safe_dump(self.render_config(), sort_keys=False), encoding="utf-8")
        tmp.replace(self.config_path)

    def set_targets(self, targets: Targets) -> None:
        """Replace the targets; a running server reloads its config.

        The reload itself is synchronous, but Prometheus hands new targets to
        its scrape loops at most every 5 seconds, so the first sample of a new
        target arrives 5-10 s later; use :meth:`wait_for_series` rather than
        sleeping.
        """
        self._targets = targets
        self.refresh()

    def refresh(self) -> None:
        """Re-render the config (re-evaluating a callable) and reload if running."""
        self._write_config()
        if self.running:
            self.reload()

    def reload(self) -> None:
        """``POST /-/reload``; raises if Prometheus refuses the config."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
        try:
            with self._opener.open(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"Prometheus refused the reload: {exc.read().decode(errors='replace')}"
            ) from None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start Prometheus (on the same port as before, if it ran already)."""
        if self.running:
            return self
        binary = self._binary or find_binaries(need={"prometheus"}).prometheus
        self._write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            # Debian's defaults point at /etc/prometheus; keep the process
            # independent of what the host has installed there.
            f"--web.console.templates={self.work_dir / 'consoles'}",
            f"--web.console.libraries={self.work_dir / 'console_libraries'}",
            "--log.level=info",
        ]
        if self._process is None:
            self._process = ManagedProcess("prometheus", argv, self.log_path)
        else:
            self._process.argv = argv
        self._process.start()
        try:
            self._process.wait_ready(
                http_probe(f"{self.url}/-/ready"), self.start_timeout, "to answer /-/ready"
            )
        except ReadinessError:
            self._process.stop(timeout=5)
            raise
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop Prometheus, gracefully or (``kill=True``) with SIGKILL, keeping its data."""
        if self._process is not None:
            self._process.stop(timeout=timeout, kill=kill)

    def close(self) -> None:
        """Stop, and remove the work dir if this object made it."""
        self.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with self._opener.open(url, timeout=10) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            raise RuntimeError(f"Prometheus {path} failed: {payload.get('error', exc)}") from None
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} failed: {payload.get('error', payload)}")
        return payload["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns the ``result`` list (vector or matrix entries)."""
        data = self._get("/api/v1/query", {"query": promql})
        result = data.get("result", [])
        return list(result) if isinstance(result, list) else [result]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as ``/api/v1/targets`` reports them (health, lastError...)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data.get("activeTargets", []))

    def wait_for_series(
        self,
        promql: str,
        timeout: float = 30.0,
        *,
        predicate: Callable[[Sequence[dict[str, Any]]], bool] | None = None,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns data (and ``predicate(result)`` holds).

        On timeout the error shows the last result and the scrape targets'
        health, which is usually where the answer is ("connection refused").
        """
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        last_error = ""
        while True:
            try:
                last = self.query(promql)
                last_error = ""
                if last and (predicate is None or predicate(last)):
                    return last
            except (OSError, RuntimeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                try:
                    health = [
                        f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError', '')}"
                        for t in self.targets()
                    ]
                except (OSError, RuntimeError) as exc:
                    health = [f"(cannot list targets: {exc})"]
                raise TimeoutError(
                    f"no data for {promql!r} after {timeout:.0f}s at {self.url}\n"
                    f"last result: {last!r} {last_error}\n"
                    "targets:\n  " + "\n  ".join(health or ["(none)"]) + f"\nlog: {self.log_path}"
                )
            time.sleep(interval)
