"""Certificates and keys for the local control plane, made with the ``openssl`` CLI.

Why the CLI and not the ``cryptography`` package: ``cryptography`` is not a
dependency of this project, while ``openssl`` is on every machine that has
Python's ``ssl`` module from a distribution. EC P-256 keys keep generation at
a few milliseconds each, so a fresh work dir costs nothing noticeable.

What is made, once per work dir (reused on a warm start):

- ``ca.crt``/``ca.key``: the cluster CA; it signs the API server's serving
  certificate and the admin client certificate, and is the controller
  manager's CSR signer and root CA for service-account token secrets;
- ``apiserver.crt``/``.key``: serving certificate for 127.0.0.1/localhost;
- ``admin.crt``/``.key``: client certificate in group ``system:masters``, the
  identity of the admin kubeconfig. A client certificate rather than a static
  token: it is what kubeadm and envtest use and does not depend on
  ``--token-auth-file`` staying in the API server;
- ``sa.key``/``sa.pub``: the service-account signing key pair;
- ``front-proxy-ca.crt``/``.key`` and ``front-proxy-client.crt``/``.key``: the
  request-header (aggregation layer) CA and the API server's proxy client, as
  kubeadm sets them up. Without them the API server publishes no
  request-header CA, and every component doing delegated authentication (the
  controller manager, the scheduler, an aggregated API such as
  metrics-server) logs "missing content for CA bundle" every few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FRONT_PROXY_CLIENT", "Pki", "ensure_loopback_serving_cert", "ensure_pki"]

#: Common name of the API server's proxy client (``--requestheader-allowed-names``).
FRONT_PROXY_CLIENT = "front-proxy-client"

_DAYS = "3650"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@dataclass(frozen=True)
class Pki:
    """Paths of the files in a PKI dir."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.dir / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    def complete(self) -> bool:
        files = (self.ca_cert, self.ca_key, self.serving_cert, self.serving_key,
                 self.admin_cert, self.admin_key, self.sa_key, self.sa_pub,
                 self.front_proxy_ca_cert, self.front_proxy_client_cert,
                 self.front_proxy_client_key)  # fmt: skip
        return all(f.is_file() and f.stat().st_size > 0 for f in files)


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError(
            "openssl not found on PATH; it makes the local cluster's certificates "
            "(apt-get install openssl)"
        )
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{result.stderr.strip()}")


def _ca(directory: Path, name: str, subject: str) -> None:
    """A self-signed CA key + certificate."""
    _openssl("req", "-x509", *_CURVE, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", _DAYS, "-sha256", "-subj", subject,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
             cwd=directory)  # fmt: skip


def _leaf(pki: Pki, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    """A key + certificate signed by CA ``ca``, with the given v3 extensions."""
    ext = pki.dir / f"{name}.ext"
    ext.write_text(extensions, encoding="ascii")
    csr = pki.dir / f"{name}.csr"
    _openssl("req", "-new", *_CURVE, "-nodes", "-keyout", f"{name}.key", "-out", csr.name,
             "-subj", subject, cwd=pki.dir)  # fmt: skip
    _openssl("x509", "-req", "-in", csr.name, "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", _DAYS, "-sha256", "-extfile", ext.name,
             "-out", f"{name}.crt", cwd=pki.dir)  # fmt: skip
    csr.unlink()
    ext.unlink()


def ensure_pki(directory: Path, *, service_ip: str = "10.0.0.1") -> Pki:
    """Make (or reuse) the PKI in ``directory``; see the module docstring."""
    pki = Pki(directory)
    if pki.complete():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    _ca(directory, "ca", "/CN=modelrollout-devenv-ca")
    _ca(directory, "front-proxy-ca", "/CN=modelrollout-devenv-front-proxy-ca")
    _leaf(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        f"DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:{service_ip}\n",
    )
    _leaf(
        pki,
        "admin",
        "/O=system:masters/CN=modelrollout-admin",
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )
    _leaf(
        pki,
        "front-proxy-client",
        f"/CN={FRONT_PROXY_CLIENT}",
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
        ca="front-proxy-ca",
    )
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", "sa.key", cwd=directory)  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return pki


def ensure_loopback_serving_cert(pki: Pki, name: str) -> tuple[Path, Path]:
    """(cert, key) for a server on 127.0.0.1 signed by the cluster CA, made once.

    For admission webhooks the API server calls by URL on loopback (a local
    KServe controller's): the webhook configurations carry ``ca.crt`` as caBundle.
    """
    cert, key = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    if not (cert.is_file() and key.is_file()):
        _leaf(
            pki,
            name,
            f"/CN={name}",
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        key.chmod(0o600)
    return cert, key
