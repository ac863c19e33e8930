"""The Kubernetes side of the kubectl plugin: connect as kubectl does, make a few calls,
and turn every failure into one line on stderr with a stable exit code.

The commands read and write ModelRollouts and read their Events; nothing else.
All of that goes through :class:`Kube`, so the rest of the CLI is pure
functions of the object dicts it returns (and can be tested without a cluster).

Exit codes are part of the interface: a pipeline branches on them, so they
never change meaning. ``status --watch`` uses 0-3 for *how the rollout ended*;
4-8 are *why the command could not do its job*.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrollout.api.base import GROUP, KIND, PLURAL, VERSION

RESOURCE = f"{PLURAL}.{GROUP}"

EXIT_OK = 0
"""Success; for ``status --watch``: the rollout Succeeded."""
EXIT_ROLLED_BACK = 1
"""``status --watch``: the rollout was rolled back (by analysis or aborted by a human)."""
EXIT_FAILED = 2
"""``status --watch``: the rollout Failed (it cannot run as written). Also argparse usage errors."""
EXIT_INTERRUPTED = 3
"""``status --watch``: interrupted (Ctrl-C) or ``--timeout`` reached before the rollout ended."""
EXIT_REFUSED = 4
"""The command makes no sense in the rollout's phase; nothing was sent."""
EXIT_NOT_FOUND = 5
"""No such ModelRollout (or the ModelRollout API is not installed)."""
EXIT_FORBIDDEN = 6
"""RBAC refused the call, or the credentials were refused."""
EXIT_UNREACHABLE = 7
"""No API server reachable (or no usable kubeconfig)."""
EXIT_API_ERROR = 8
"""The API server answered with another error (invalid patch, conflict, server error)."""

#: Connect and read timeouts of every call: a dead server must fail in seconds, not hang.
REQUEST_TIMEOUT = (10.0, 60.0)

_SERVICE_ACCOUNT_NS = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    """A failure the user can act on: a one-line message and the exit code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Call:
    """What a request was about, so a failure can say which verb on which object failed."""

    verb: str
    resource: str = RESOURCE
    name: str | None = None
    namespace: str | None = None


# ------------------------------------------------------------------------ errors


def _status_body(body: Any) -> dict[str, Any]:
    """The ``Status`` object of an error response, or ``{}`` when the body is not one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _where(call: Call) -> str:
    return f'in namespace "{call.namespace}"' if call.namespace else "at the cluster scope"


def _connection_reason(exc: BaseException) -> str:
    """A few words on why a connection failed, without urllib3's nested reprs."""
    reason: Any = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in type(reason).__name__.lower():
        return "connection timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in type(reason).__name__:
        return "TLS handshake failed (" + text.split(":")[-1].strip(" )'\"") + ")"
    text = re.sub(r"<[^>]*>", "", text)  # drop object reprs such as <urllib3.connection...>
    return text.strip().splitlines()[0][:200] if text.strip() else type(reason).__name__


def is_connection_error(exc: BaseException) -> bool:
    """True for failures to reach the server at all (as opposed to the server saying no)."""
    import urllib3.exceptions

    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return True
    return getattr(exc, "status", None) == 0  # ApiException raised before any response


def translate(exc: BaseException, call: Call, server: str) -> CliError:
    """The CliError for a failed API call: a one-line message and its exit code.

    Kubernetes' own messages name the user and the verb, but not in a form a
    script can branch on; the exit code is that form, and the message keeps
    the server's words after ours.
    """
    if is_connection_error(exc):
        return CliError(
            f"cannot reach the Kubernetes API server at {server}: {_connection_reason(exc)} "
            "(check --kubeconfig and --context)",
            EXIT_UNREACHABLE,
        )
    status = getattr(exc, "status", None)
    body = _status_body(getattr(exc, "body", None))
    server_message = str(body.get("message") or getattr(exc, "reason", "") or "").strip()
    if status == 404:
        details = body.get("details") or {}
        if body.get("reason") == "NotFound" and call.name and details.get("kind") == PLURAL:
            return CliError(
                f'modelrollout "{call.name}" not found in namespace "{call.namespace}"',
                EXIT_NOT_FOUND,
            )
        if call.resource == RESOURCE and not body:
            # A bare "404 page not found": the path itself is unknown, so the CRD is missing.
            return CliError(
                f"the ModelRollout API ({RESOURCE}/{VERSION}) is not installed on {server}: "
                "apply crds/modelrollout.io_modelrollouts.yaml",
                EXIT_NOT_FOUND,
            )
        what = f'{call.resource} "{call.name}"' if call.name else call.resource
        return CliError(f"{what} not found {_where(call)}: {server_message}", EXIT_NOT_FOUND)
    if status == 403:
        what = f'{call.resource} "{call.name}"' if call.name else call.resource
        return CliError(
            f"forbidden by RBAC: cannot {call.verb} {what} {_where(call)}"
            + (f" ({server_message})" if server_message else ""),
            EXIT_FORBIDDEN,
        )
    if status == 401:
        return CliError(
            f"unauthorized: {server} refused the credentials of the kubeconfig "
            "(expired token or certificate?)",
            EXIT_FORBIDDEN,
        )
    detail = server_message or str(exc).strip().splitlines()[0]
    return CliError(
        f"{call.verb} {call.resource}"
        + (f' "{call.name}"' if call.name else "")
        + f" failed ({status}): {detail}",
        EXIT_API_ERROR,
    )


# -------------------------------------------------------------------- connecting


def kubeconfig_path(explicit: str | None) -> str:
    """The kubeconfig as kubectl picks it: --kubeconfig, then $KUBECONFIG, then ~/.kube/config.

    Read from the environment at call time (the client library reads it at
    import time, which would miss a KUBECONFIG set later by a test or a wrapper).
    """
    return explicit or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def default_namespace(kubeconfig: str, context: str | None) -> str:
    """The namespace of the chosen context, ``default`` when it names none (as kubectl does)."""
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    chosen = active
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return str(ns) if ns else "default"


def _in_cluster_possible(explicit: str | None, context: str | None) -> bool:
    """In a pod with no kubeconfig (e.g. a pipeline step), use the pod's ServiceAccount."""
    if explicit or context or os.environ.get("KUBECONFIG"):
        return False
    if (Path.home() / ".kube" / "config").exists():
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


class Kube:
    """One API client and the calls the plugin makes, each mapped to a CliError on failure."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> Kube:
        """A client for the kubeconfig and context, without touching the library's globals.

        ``new_client_from_config`` (not ``load_kube_config``) so that two
        commands run in one process with different kubeconfigs (tests do) never
        see each other's credentials.
        """
        from kubernetes import client, config

        cfg: Any = client.Configuration()
        cfg.retries = 1  # one retry, not urllib3's three: a dead server must fail fast
        if _in_cluster_possible(kubeconfig, context):
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException as exc:
                raise CliError(
                    f"cannot load the in-cluster config: {exc}", EXIT_UNREACHABLE
                ) from exc
            ns = namespace
            if ns is None:
                try:
                    ns = _SERVICE_ACCOUNT_NS.read_text().strip() or "default"
                except OSError:
                    ns = "default"
            return cls(client.ApiClient(configuration=cfg), ns)
        path = kubeconfig_path(kubeconfig)
        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, persist_config=False, client_configuration=cfg
            )
            ns = namespace or default_namespace(path, context)
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CliError(
                f"cannot use kubeconfig {path}"
                + (f" (context {context!r})" if context else "")
                + f": {text}",
                EXIT_UNREACHABLE,
            ) from exc
        if not cfg.verify_ssl:
            # The kubeconfig asked for insecure-skip-tls-verify; kubectl obeys silently, and a
            # warning on every request would bury the output.
            import warnings

            import urllib3.exceptions

            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        return cls(api, ns)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    @contextlib.contextmanager
    def _calling(self, call: Call) -> Iterator[None]:
        try:
            yield
        except CliError:
            raise
        except Exception as exc:
            from kubernetes.client.exceptions import ApiException

            if isinstance(exc, ApiException) or is_connection_error(exc):
                raise translate(exc, call, self.server) from exc
            raise

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    # -- ModelRollouts --------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any]:
        with self._calling(Call("get", name=name, namespace=self.namespace)):
            obj: dict[str, Any] = self._custom().get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        return obj

    def list_rollouts(
        self, all_namespaces: bool = False, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every ModelRollout in the namespace (or the cluster), sorted by namespace and name."""
        kwargs: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
        if selector:
            kwargs["label_selector"] = selector
        with self._calling(Call("list", namespace=None if all_namespaces else self.namespace)):
            if all_namespaces:
                result = self._custom().list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                result = self._custom().list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, **kwargs
                )
        items: list[dict[str, Any]] = list(result.get("items") or [])
        items.sort(
            key=lambda o: ((o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"])
        )
        return items

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch: only the keys given change (an annotation, one spec field)."""
        with self._calling(Call("patch", name=name, namespace=self.namespace)):
            obj: dict[str, Any] = self._custom().patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                dict(body),
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )
        return obj

    # -- Events ---------------------------------------------------------------------

    def events(self, name: str) -> list[dict[str, Any]]:
        """The core/v1 Events about one ModelRollout, as the wire dicts (camelCase).

        Read raw (``_preload_content=False``): the client's models turn
        ``eventTime`` and friends into datetimes and back with a different
        format, and the renderer reads the API's own form.
        """
        from kubernetes import client

        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        with self._calling(Call("list", "events", namespace=self.namespace)):
            response: Any = client.CoreV1Api(self.api_client).list_namespaced_event(
                self.namespace,
                field_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            data = json.loads(response.data)
        return list(data.get("items") or [])

    def rollout_events(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        """Every Event about a ModelRollout in the namespace (or the cluster), in one list call.

        The dashboard groups them by rollout: one call per refresh, not one per rollout.
        """
        from kubernetes import client

        selector = f"involvedObject.kind={KIND}"
        api = client.CoreV1Api(self.api_client)
        kwargs: dict[str, Any] = {
            "field_selector": selector,
            "_preload_content": False,
            "_request_timeout": REQUEST_TIMEOUT,
        }
        with self._calling(
            Call("list", "events", namespace=None if all_namespaces else self.namespace)
        ):
            if all_namespaces:
                response: Any = api.list_event_for_all_namespaces(**kwargs)
            else:
                response = api.list_namespaced_event(self.namespace, **kwargs)
            data = json.loads(response.data)
        return list(data.get("items") or [])
