"""Which Prometheus a rollout may name: the operator's policy, never the tenant's input.

A ModelRollout is written by a tenant; ``spec.analysis.prometheus.address`` is
a string the operator would otherwise send requests to, with its own
credentials. So the operator holds an allowlist that the cluster admin sets
(``--prometheus`` is always on it, ``--prometheus-allow`` and
``--prometheus-credentials`` add more), and a rollout naming any other address
is refused before a single request is made.

Matching compares canonical endpoints (scheme, host, port, path), never
strings or prefixes: ``http://prom:9090.evil.com`` has no valid port,
``http://prom:9090@evil.com`` carries userinfo, ``http://evil.com#@prom:9090``
a fragment; each is refused as malformed. The request then goes to the URL the
*admin* configured for that endpoint, so no parsing difference between this
module and the HTTP client can send it elsewhere.

Credentials are per endpoint: a token configured for one address is only ever
attached to requests to that address.

This module is pure (no I/O): it names credential files, the shell reads them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: What a cluster admin sets to allow an address; quoted in every refusal.
ALLOW_FLAG = "--prometheus-allow"
ALLOW_HELM_VALUE = "prometheus.allowedAddresses"

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
_DEFAULT_PORT = {"http": 80, "https": 443}


def printable(text: str, *, limit: int = 80) -> str:
    """``text`` safe to quote in a status or an Event: no control characters, bounded.

    A tenant's string (or a server's error text) may hold newlines, ANSI escapes
    or megabytes; what we echo back is one short line.
    """
    cleaned = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class MalformedAddress(ValueError):
    """An address that is not a plain ``http(s)://host[:port][/path]`` URL."""


@dataclass(frozen=True, order=True)
class Endpoint:
    """A Prometheus address in canonical form: what two spellings of one address share."""

    scheme: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def canonical(address: str) -> Endpoint:
    """The endpoint an address names; :class:`MalformedAddress` for anything unusual.

    Lower-cases scheme and host, makes the port explicit, drops trailing slashes of
    the path. Refuses userinfo, a query, a fragment, backslashes, whitespace,
    control or non-ASCII characters and any port that is not a plain number.
    """
    if not address or any(
        not ch.isascii() or not ch.isprintable() or ch.isspace() for ch in address
    ):
        raise MalformedAddress("not a plain ASCII URL")
    if "\\" in address:
        raise MalformedAddress("backslash in the address")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise MalformedAddress("the port is not a number") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise MalformedAddress("the scheme must be http or https")
    if "@" in parts.netloc:
        raise MalformedAddress("credentials in the address are not accepted")
    if parts.query or parts.fragment or address.endswith(("?", "#")):
        raise MalformedAddress("a query or fragment is not accepted")
    host = (parts.hostname or "").lower()
    bracketed = parts.netloc.startswith("[")
    if not host or (not bracketed and not _HOSTNAME.fullmatch(host)):
        raise MalformedAddress("no valid host name")
    if bracketed and not re.fullmatch(r"[0-9a-f:.]+", host):
        raise MalformedAddress("no valid IPv6 address")
    if port == 0:
        raise MalformedAddress("port 0")
    path = parts.path.rstrip("/")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise MalformedAddress("dot segments in the path")
    return Endpoint(scheme, host, port if port is not None else _DEFAULT_PORT[scheme], path)


@dataclass(frozen=True)
class Credentials:
    """Files the cluster admin mounts for one Prometheus; all optional."""

    token_file: str | None = None
    basic_auth_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def parse(cls, text: str) -> tuple[str, Credentials]:
        """``ADDRESS,token-file=PATH,basic-auth-file=PATH,ca-file=PATH`` (any of the three)."""
        address, *items = text.split(",")
        known = {
            "token-file": "token_file",
            "basic-auth-file": "basic_auth_file",
            "ca-file": "ca_file",
        }
        kw: dict[str, str] = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in known or not value.strip():
                raise ValueError(
                    f"{item!r}: expected token-file=PATH, basic-auth-file=PATH or ca-file=PATH"
                )
            kw[known[key.strip()]] = value.strip()
        if not kw:
            raise ValueError(f"{text!r}: name at least one of token-file, basic-auth-file, ca-file")
        return address.strip(), cls(**kw)


@dataclass(frozen=True)
class Allowed:
    """An address the policy admits: where to send requests, and with what."""

    url: str
    """The URL as the cluster admin wrote it (requests go here, not to the tenant's spelling)."""
    credentials: Credentials = field(default_factory=Credentials)


@dataclass(frozen=True)
class Refused:
    """An address the policy refuses; ``message`` is safe to show the tenant."""

    message: str
    reason: str = "PrometheusNotAllowed"


class PrometheusPolicy:
    """The allowlist: the default ``--prometheus``, plus what the admin added.

    ``resolve`` is total: every input gets an :class:`Allowed` or a :class:`Refused`.
    """

    def __init__(
        self,
        default: str,
        *,
        allowed: Iterable[str] = (),
        credentials: Mapping[str, Credentials] | None = None,
        default_credentials: Credentials | None = None,
    ) -> None:
        self._entries: dict[Endpoint, Allowed] = {}
        self._add(default, default_credentials)
        for address in allowed:
            self._add(address, None)
        for address, creds in (credentials or {}).items():
            self._add(address, creds)
        self.default = self._entries[canonical(default)]

    def _add(self, address: str, creds: Credentials | None) -> Allowed:
        """Allow ``address``; ``creds`` None allows it without naming credentials."""
        try:
            endpoint = canonical(address)
        except MalformedAddress as exc:
            raise ValueError(f"Prometheus address {address!r}: {exc}") from None
        known = self._entries.get(endpoint)
        if known is None:
            known = self._entries[endpoint] = Allowed(address, creds or Credentials())
        elif creds is not None and creds != known.credentials:
            if known.credentials != Credentials():
                raise ValueError(f"two sets of credentials for {endpoint}")
            known = self._entries[endpoint] = Allowed(known.url, creds)
        return known

    @property
    def allowed(self) -> list[Allowed]:
        """Every allowed address, one per endpoint, in endpoint order."""
        return [self._entries[e] for e in sorted(self._entries)]

    def resolve(self, address: str | None) -> Allowed | Refused:
        """What a rollout's ``spec.analysis.prometheus.address`` may reach."""
        if address is None:
            return self.default
        shown = printable(address)
        try:
            found = self._entries.get(canonical(address))
            why = ""
        except MalformedAddress as exc:
            found, why = None, f" ({exc})"
        if found is None:
            return Refused(
                f"analysis.prometheus.address {shown!r} is not allowed by the operator's "
                f"policy{why}; no request was sent to it. Omit the field to use the "
                f"operator's Prometheus, or ask the cluster admin to allow the address "
                f"({ALLOW_FLAG}, Helm value {ALLOW_HELM_VALUE})"
            )
        return found


__all__ = [
    "ALLOW_FLAG",
    "ALLOW_HELM_VALUE",
    "Allowed",
    "Credentials",
    "Endpoint",
    "MalformedAddress",
    "PrometheusPolicy",
    "Refused",
    "canonical",
    "printable",
]
