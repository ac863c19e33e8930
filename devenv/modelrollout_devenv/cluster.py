"""A real local control plane: etcd + kube-apiserver (+ nodes simulated by kwok).

This is the envtest idea, in Python: the operator's tests talk to a real API
server, so admission, validation (OpenAPI and CEL in CRDs), RBAC, server-side
apply and watches behave exactly as in a cluster. With ``with_nodes=True`` the
controller manager, the scheduler and kwok are added, so a Deployment goes
through ReplicaSet, scheduling and pod readiness and reports Available the
way a cluster reports it, with no container runtime.

Everything listens on 127.0.0.1 on ports picked at start, so several clusters
(or a developer's own) can run side by side, and nothing is reachable from
outside the machine. State lives in a work dir:

``pki/``
    CA, serving and admin certificates, service-account keys (:mod:`.pki`).
``etcd/``
    etcd's data (``--unsafe-no-fsync``: a test cluster trades durability on
    power loss for speed).
``logs/``
    one log per component; :attr:`LocalCluster.logs_dir`.
``kubeconfig``
    the admin kubeconfig; :attr:`LocalCluster.kubeconfig`.

A throwaway work dir (the default) is removed by :meth:`LocalCluster.stop`; a
work dir given by the caller is kept, and reusing it makes a warm start
(certificates and etcd data are reused, CRDs stay installed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from modelrollout_devenv import kwok
from modelrollout_devenv.binaries import Binaries, crds_dir, find_binaries
from modelrollout_devenv.pki import FRONT_PROXY_CLIENT, Pki, ensure_pki
from modelrollout_devenv.procs import (
    ManagedProcess,
    Supervisor,
    free_port,
    http_probe,
    wait_until,
)

__all__ = ["KubectlError", "LocalCluster"]

_HOST = "127.0.0.1"
_SERVICE_CIDR = "10.0.0.0/24"
_SERVICE_IP = "10.0.0.1"
#: kwok's fake pod IPs; nothing routes them, nothing in the devenv connects to them.
_POD_CIDR = "10.244.0.0/16"
_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: Controllers of kube-controller-manager: every default one except those that
#: only make sense with a cloud provider or real kubelets/volumes.
_DISABLED_CONTROLLERS = (
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
    "node-ipam-controller",
    "persistentvolume-attach-detach-controller",
)


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` failed; unlike CalledProcessError, ``str()`` includes its stderr."""

    def __str__(self) -> str:
        stderr = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode()
        args = self.cmd[3:] if isinstance(self.cmd, list) else self.cmd
        return f"kubectl {' '.join(map(str, args))} exited {self.returncode}: {stderr.strip()}"


class LocalCluster:
    """etcd + kube-apiserver on loopback, plus (``with_nodes``) KCM, scheduler and kwok.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. If start
    fails half-way, whatever was started is stopped before the error propagates.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        with_nodes: bool = False,
        nodes: int = 2,
        taint_nodes: bool = False,
        binaries: Binaries | None = None,
        start_timeout: float = 60.0,
        extra_apiserver_flags: Sequence[str] = (),
    ) -> None:
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="modelrollout-cluster-")) if work_dir is None else work_dir
        )
        self.with_nodes = with_nodes
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)] if with_nodes else []
        self.taint_nodes = taint_nodes
        self._binaries = binaries
        self.start_timeout = start_timeout
        self.extra_apiserver_flags = list(extra_apiserver_flags)
        self._supervisor = Supervisor(self.work_dir)
        self.pki = Pki(self.work_dir / "pki")
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.apiserver_port = 0
        self.etcd_port = 0
        self.started_in: dict[str, float] = {}
        self._started = False

    # -- properties ------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        """One ``<component>.log`` per process."""
        return self._supervisor.logs_dir

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:PORT``."""
        return f"https://{_HOST}:{self.apiserver_port}"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = find_binaries(need=self._needed_binaries())
        return self._binaries

    @property
    def version(self) -> str:
        """The pinned Kubernetes version (``KUBERNETES_VERSION`` of ``versions.env``)."""
        return self.binaries.versions.get("KUBERNETES_VERSION", "")

    @property
    def processes(self) -> list[ManagedProcess]:
        return self._supervisor.processes

    def _needed_binaries(self) -> set[str]:
        need = {"etcd", "kube-apiserver", "kubectl"}
        if self.with_nodes:
            need |= {"kube-controller-manager", "kube-scheduler", "kwok"}
        return need

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Start every component and wait until the cluster is usable.

        "Usable" means: the API server's ``/readyz`` is OK and (with nodes) the
        fake nodes are Ready and the ``default`` service account exists, so a
        Deployment applied right after ``start()`` returns becomes Available.
        """
        if self._started:
            return self
        begin = time.monotonic()
        bins = self.binaries  # fail before starting anything if a binary is missing
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            ensure_pki(self.pki.dir, service_ip=_SERVICE_IP)
            self._mark("pki", begin)
            self._start_etcd(bins)
            self._mark("etcd", begin)
            self._start_apiserver(bins)
            self._write_kubeconfig()
            self._mark("kube-apiserver", begin)
            if self.with_nodes:
                self._start_node_components(bins)
                self._mark("nodes", begin)
        except BaseException:
            self._supervisor.stop_all(timeout=5)
            raise
        self._started = True
        return self

    def _mark(self, what: str, begin: float) -> None:
        self.started_in[what] = round(time.monotonic() - begin, 2)

    def stop(self) -> None:
        """Stop every component (newest first); remove a throwaway work dir."""
        self._supervisor.stop_all(timeout=10)
        self._started = False
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def restart(self, component: str, *, down_for: float = 0.0) -> float:
        """Stop one control-plane process and start it again, as a crash and a restart.

        ``component`` is ``etcd`` or ``kube-apiserver``: same flags, port and data, so
        every client's address still holds. Returns the seconds from the stop until it
        was ready again (``down_for`` is spent down, on purpose, within them).
        """
        if component not in ("etcd", "kube-apiserver"):
            raise ValueError(f"cannot restart {component!r}: etcd or kube-apiserver")
        process = self._supervisor.get(component)
        begin = time.monotonic()
        process.stop(timeout=10)
        time.sleep(down_for)
        process.start()
        if component == "etcd":
            probe = http_probe(
                f"http://{_HOST}:{self.etcd_port}/health",
                expect=lambda _s, body: b'"health":"true"' in body,
            )
        else:
            probe = http_probe(f"{self.server}/readyz", ssl_context=self._admin_ssl_context())
        process.wait_ready(probe, self.start_timeout, "to be ready again")
        if component == "etcd":  # the API server must see etcd again, too
            wait_until(
                http_probe(f"{self.server}/readyz", ssl_context=self._admin_ssl_context()),
                self.start_timeout,
                what="kube-apiserver /readyz after etcd came back",
            )
        return time.monotonic() - begin

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- components ---------------------------------------------------------------------

    def _start_etcd(self, bins: Binaries) -> None:
        self.etcd_port = free_port()
        peer = free_port()
        client_url = f"http://{_HOST}:{self.etcd_port}"
        peer_url = f"http://{_HOST}:{peer}"
        data_dir = self.work_dir / "etcd"
        process = self._supervisor.start(
            "etcd",
            [
                bins.etcd,
                "--name=devenv",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=devenv={peer_url}",
                "--unsafe-no-fsync",
                "--auto-compaction-retention=1",
                # A lone member waits one election timeout before electing
                # itself leader; 200ms instead of 1s, and with no peers there is
                # no leader to lose to a slow heartbeat.
                "--heartbeat-interval=20",
                "--election-timeout=200",
                "--log-level=warn",
            ],
            cwd=self.work_dir,
        )
        process.wait_ready(
            http_probe(f"{client_url}/health", expect=lambda _s, body: b'"health":"true"' in body),
            self.start_timeout,
            "to report /health",
        )

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _start_apiserver(self, bins: Binaries) -> None:
        self.apiserver_port = free_port()
        # The ServiceAccount admission plugin refuses pods until their service
        # account exists, and only the controller manager creates `default`;
        # without one it would make every pod creation fail.
        admission = [] if self.with_nodes else ["--disable-admission-plugins=ServiceAccount"]
        argv: list[str | os.PathLike[str]] = [
            bins.kube_apiserver,
            f"--etcd-servers=http://{_HOST}:{self.etcd_port}",
            f"--bind-address={_HOST}",
            f"--advertise-address={_HOST}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.work_dir / 'apiserver'}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            f"--service-cluster-ip-range={_SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--service-account-issuer={_ISSUER}",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            # The aggregation layer's request-header authentication (see pki.py).
            f"--requestheader-client-ca-file={self.pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={self.pki.front_proxy_client_key}",
            # Nothing reaches the `kubernetes` Service's 127.0.0.1 endpoint from a
            # pod (there are none), and Endpoints refuse loopback addresses.
            "--endpoint-reconciler-type=none",
            *admission,
            *self.extra_apiserver_flags,
        ]
        process = self._supervisor.start("kube-apiserver", argv, cwd=self.work_dir)
        process.wait_ready(
            http_probe(f"{self.server}/readyz", ssl_context=self._admin_ssl_context()),
            self.start_timeout,
            "to report /readyz",
        )

    def _write_kubeconfig(self) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devenv",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(self.pki.admin_cert),
                        "client-key-data": b64(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "devenv",
                    "context": {"cluster": "devenv", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "devenv",
        }
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    def _start_node_components(self, bins: Binaries) -> None:
        kubeconfig = str(self.kubeconfig)
        delegated = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={_HOST}",
            "--leader-elect=false",
        ]
        kcm_port, scheduler_port, kwok_port = free_port(), free_port(), free_port()
        controllers = ",".join(["*", *(f"-{c}" for c in _DISABLED_CONTROLLERS)])
        # All three start at once; readiness is waited for afterwards.
        kcm = self._supervisor.start(
            "kube-controller-manager",
            [
                bins.kube_controller_manager,
                *delegated,
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.work_dir / 'kube-controller-manager'}",
                f"--controllers={controllers}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                f"--cluster-signing-cert-file={self.pki.ca_cert}",
                f"--cluster-signing-key-file={self.pki.ca_key}",
                "--use-service-account-credentials=false",
            ],
            cwd=self.work_dir,
        )
        scheduler = self._supervisor.start(
            "kube-scheduler",
            [
                bins.kube_scheduler,
                *delegated,
                f"--secure-port={scheduler_port}",
                f"--cert-dir={self.work_dir / 'kube-scheduler'}",
            ],
            cwd=self.work_dir,
        )
        kwok_dir = self.work_dir / "kwok"
        kwok_dir.mkdir(exist_ok=True)
        stages = kwok_dir / "stages.yaml"
        stages.write_text(kwok.STAGES, encoding="utf-8")
        key, value = kwok.FAKE_NODE_ANNOTATION
        kwok_process = self._supervisor.start(
            "kwok",
            [
                bins.kwok,
                f"--kubeconfig={kubeconfig}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                f"--node-lease-duration-seconds={kwok.NODE_LEASE_SECONDS}",
                f"--cidr={_POD_CIDR}",
                f"--node-ip={_HOST}",
                f"--server-address={_HOST}:{kwok_port}",
            ],
            # kwok also reads ~/.kwok/kwok.yaml: keep a developer's file out.
            env={**os.environ, "HOME": str(kwok_dir)},
            cwd=kwok_dir,
        )
        timeout = self.start_timeout
        kcm.wait_ready(
            http_probe(f"https://{_HOST}:{kcm_port}/healthz", insecure=True), timeout, "/healthz"
        )
        scheduler.wait_ready(
            http_probe(f"https://{_HOST}:{scheduler_port}/healthz", insecure=True),
            timeout,
            "/healthz",
        )
        kwok_process.wait_ready(
            http_probe(f"http://{_HOST}:{kwok_port}/healthz"), timeout, "/healthz"
        )

        nodes = [kwok.fake_node(n, taint=self.taint_nodes) for n in self.node_names]
        self.apply(*nodes)
        self.kubectl(
            "wait", "--for=condition=Ready", f"--timeout={int(timeout)}s",
            *(f"node/{n}" for n in self.node_names),
        )  # fmt: skip
        # Pods are refused until the `default` service account exists (see above).
        self.kubectl(
            "wait", "--for=create", f"--timeout={int(timeout)}s",
            "-n", "default", "serviceaccount/default",
        )  # fmt: skip

    # -- clients -----------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster (text mode).

        With ``check=True`` a failure raises :class:`KubectlError`, whose
        message carries kubectl's stderr.
        """
        cmd = [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def apply(self, *objects: Mapping[str, Any], server_side: bool = True) -> str:
        """Apply objects (server-side, field manager ``modelrollout-devenv``)."""
        # A JSON List: kubectl reads several JSON documents only in that form.
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        flags = ["--server-side", "--field-manager=modelrollout-devenv", "--force-conflicts"]
        result = self.kubectl("apply", *(flags if server_side else []), "-f", "-", input=body)
        return result.stdout

    def api_client(self, *, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster.

        By default it is the admin identity of :attr:`kubeconfig`. With
        ``token``, it authenticates with that bearer token only (no client
        certificate, which the API server would otherwise prefer), for checking
        what a service account may do.

        Proxy variables are ignored for this client: the API server is on
        127.0.0.1, and the kubernetes client, unlike kubectl, would send even
        loopback requests to ``$HTTPS_PROXY``.
        """
        from kubernetes import client, config

        configuration = client.Configuration()
        if token is None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig), client_configuration=configuration
            )
        else:
            configuration.host = self.server
            configuration.ssl_ca_cert = str(self.pki.ca_cert)
            configuration.api_key = {"authorization": f"Bearer {token}"}
        configuration.proxy = None
        return client.ApiClient(configuration)

    # -- CRDs --------------------------------------------------------------------------

    def install_crds(self, paths: Iterable[Path | str], timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD files and wait until every CRD is Established.

        Server-side apply because big CRDs (Istio's) overflow the
        ``last-applied-configuration`` annotation client-side apply writes.
        Returns the names of the CRDs (``crd/...``) that were applied.
        """
        files = [str(p) for p in paths]
        if not files:
            return []
        # One kubectl call for all files: each call pays for discovery again.
        result = self.kubectl(
            "apply", "--server-side", "--force-conflicts",
            "--field-manager=modelrollout-devenv", "-o", "name",
            *(arg for f in files for arg in ("-f", f)),
            timeout=timeout + 60,
        )  # fmt: skip
        names = [
            line.strip()
            for line in result.stdout.splitlines()
            if line.startswith("customresourcedefinition")
        ]
        if names:
            self.kubectl(
                "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names,
                timeout=timeout + 30,
            )  # fmt: skip
        return names

    def install_upstream_crds(self, timeout: float = 60.0) -> list[str]:
        """Install the pinned Gateway API, Istio and KServe CRDs from the build cache."""
        versions = self.binaries.versions
        files = [
            crds_dir() / f"gateway-api-{versions.get('GATEWAY_API_VERSION', '?')}.yaml",
            crds_dir() / f"istio-{versions.get('ISTIO_API_VERSION', '?')}.yaml",
            crds_dir() / f"kserve-{versions.get('KSERVE_VERSION', '?')}.yaml",
        ]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"upstream CRDs not found: {', '.join(missing)}; "
                "run `make binaries` (hack/build-binaries.sh crds)"
            )
        return self.install_crds(files, timeout=timeout)

    # -- diagnostics -------------------------------------------------------------------

    def save_logs(self, destination: Path) -> Path:
        """Copy the logs (and kubeconfig) to ``destination``; returns it."""
        destination.mkdir(parents=True, exist_ok=True)
        if self.logs_dir.is_dir():
            shutil.copytree(self.logs_dir, destination, dirs_exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy2(self.kubeconfig, destination / "kubeconfig")
        return destination
