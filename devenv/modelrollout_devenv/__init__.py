"""A real local control plane for tests and demos (envtest style).

``LocalCluster`` runs etcd and kube-apiserver on loopback ports (plus, with
``with_nodes=True``, kube-controller-manager, kube-scheduler and kwok so that
Deployments become Available on fake nodes); ``PrometheusServer`` runs a real
Prometheus scraping the targets you give it. Binaries are found by
:func:`find_binaries` (``make binaries`` builds them).
"""

from modelrollout_devenv.binaries import Binaries, MissingBinary, find_binaries, read_versions
from modelrollout_devenv.cluster import KubectlError, LocalCluster
from modelrollout_devenv.procs import ReadinessError, free_port
from modelrollout_devenv.prometheus import PrometheusServer, Target

__all__ = [
    "Binaries",
    "KubectlError",
    "LocalCluster",
    "MissingBinary",
    "PrometheusServer",
    "ReadinessError",
    "Target",
    "find_binaries",
    "free_port",
    "read_versions",
]
