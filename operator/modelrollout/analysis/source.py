"""Metric sources: where gate values come from.

A source answers an instant PromQL query with a list of samples, or raises
:class:`SourceError` when it cannot answer at all. "No data" is not an
error: it is an empty list, and the gate that asked turns it into an
*inconclusive* verdict (never a pass). Keeping the two apart is what lets a
gate say "Prometheus is down" rather than "the candidate is fine".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelrollout.analysis.policy import printable


class SourceError(Exception):
    """The source gave no usable answer. Its message is short and safe to put in a status.

    Subclasses tell *whose* problem it is, for status, Events and metrics::

        SourceError
        ├── SourceUnreachable   no answer: connection, DNS, TLS, timeout, 5xx, a redirect,
        │                       an auth or path error, or an answer that is not Prometheus's
        ├── QueryRefused        Prometheus answered and refused this query (bad_data, ...)
        └── IncompleteAnswer    an answer that cannot be trusted whole: partial (with
                                warnings), or samples older than the evaluation time

    No message ever carries a response body: only the HTTP status, Prometheus's
    ``errorType`` and, for ``bad_data``, its parse error, cleaned and bounded.
    """

    kind = "error"


class SourceUnreachable(SourceError):
    """No answer to the query from the source; nothing about the query itself."""

    kind = "unreachable"


class QueryRefused(SourceError):
    """Prometheus parsed or ran the query and refused it: fix the query, not the source."""

    kind = "refused"

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        """Prometheus's ``errorType``: ``bad_data`` (it does not parse) or ``execution``."""


class IncompleteAnswer(SourceError):
    """An answer, but not one to judge by: a partial result, or stale samples."""

    kind = "incomplete"


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float
    at: float | None = None
    """The sample's Unix time, as Prometheus gave it (None: not given)."""


@dataclass
class QueryStats:
    """Counters the operator exports on /metrics."""

    queries: int = 0
    errors: int = 0
    seconds: list[float] = field(default_factory=list)


class MetricSource(Protocol):
    def instant(self, query: str) -> list[Sample]: ...


def parse_result(data: Any) -> list[Sample]:
    """Samples from the ``data.result`` of a Prometheus instant query (vector or scalar)."""
    if isinstance(data, dict):
        kind = data.get("resultType")
        result = data.get("result")
        if kind in ("scalar", "string"):
            return [Sample({}, _float(result[1]), _time(result[0]))] if result else []
        data = result
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
        return [Sample({}, _float(data[1]), _time(data[0]))]  # a scalar: [timestamp, "value"]
    samples: list[Sample] = []
    for item in data or []:
        if isinstance(item, dict) and "value" in item:
            at, value = item["value"][0], item["value"][1]
            samples.append(Sample(dict(item.get("metric") or {}), _float(value), _time(at)))
    return samples


def _time(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_range(data: Any) -> list[list[tuple[datetime, float]]]:
    """The series of a range query (``matrix``), each as (time, value) points.

    NaN and unparsable values are dropped: a gap in a line, not a zero.
    """
    if isinstance(data, dict):
        data = data.get("result")
    out = []
    for series in data or []:
        points = []
        for pair in (series.get("values") if isinstance(series, dict) else None) or []:
            try:
                t = datetime.fromtimestamp(float(pair[0]), tz=UTC)
                v = float(pair[1])
            except (TypeError, ValueError, IndexError):
                continue
            if math.isfinite(v):
                points.append((t, v))
        out.append(points)
    return out


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


#: Longest Prometheus ``bad_data`` error text quoted back (a PromQL parse error).
ERROR_TEXT_LIMIT = 200

#: How far a sample's time may lie from the time the query was evaluated at. Prometheus
#: stamps every sample of an instant query with the evaluation time; an older one comes
#: from a cache or a stuck frontend, and judging a candidate by it would judge the past.
STALE_AFTER = 120.0


class PrometheusSource:
    """Instant and range queries against Prometheus's HTTP API, with ``requests``.

    Redirects are never followed: the credentials of one address must not
    travel to whatever host an answer points at, and a Prometheus that
    redirects its API is misconfigured anyway. Failures become a
    :class:`SourceError` whose message names the HTTP status and Prometheus's
    ``errorType``, never the body of the answer (see :func:`error_for`).

    ``observe`` is called with (seconds, error kind or None) after each query so
    the operator can export query latency and errors without this class knowing
    about its metrics.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        ca_bundle: str | None = None,
        timeout: float = 10.0,
        stale_after: float | None = None,
        observe: Callable[[float, str | None], None] | None = None,
    ) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.stale_after = stale_after
        self._observe = observe
        session = requests.Session()
        session.headers.update(headers or {})
        session.auth = auth
        if ca_bundle:
            session.verify = ca_bundle
        # One quick retry: a down Prometheus must turn into "inconclusive" within
        # seconds, not hold the reconcile loop through a long backoff.
        retry = Retry(
            total=1,
            redirect=0,
            backoff_factor=0.1,
            status_forcelist=[502, 503, 504],
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(max_retries=retry))
        self._session = session

    def instant(self, query: str) -> list[Sample]:
        """Samples of an instant query evaluated now.

        A partial answer (Prometheus added warnings: a store or a shard did not answer)
        or, with ``stale_after`` set, samples older than that (:data:`STALE_AFTER`) raise
        :class:`IncompleteAnswer`: a gate must not pass on half the data or on the past.
        """
        now = time.time()

        def whole(body: dict[str, Any]) -> None:
            warnings = body.get("warnings")
            if isinstance(warnings, list) and warnings:
                said = printable(str(warnings[0]), limit=ERROR_TEXT_LIMIT)
                raise IncompleteAnswer(self._say(f"partial answer ({said})"))
            if self.stale_after is None:
                return
            times = [s.at for s in parse_result(body.get("data")) if s.at is not None]
            if times and now - min(times) > self.stale_after:
                raise IncompleteAnswer(self._say(f"stale samples ({now - min(times):.0f}s old)"))

        return parse_result(
            self._ask("/api/v1/query", {"query": query, "time": f"{now:.3f}"}, whole)
        )

    def range(self, query: str, seconds: float, step: float) -> list[float]:
        """Values of a range query over the last ``seconds``, one per ``step`` seconds.

        The values of every series returned are pooled, oldest first per series; NaN
        stays NaN (the caller drops it). No data is an empty list; an unreachable or
        refusing Prometheus raises :class:`SourceError`, as for :meth:`instant`.
        """
        end = datetime.now(UTC)

        def pooled(data: Any) -> list[float]:
            result = data.get("result") if isinstance(data, dict) else None
            return [
                _float(point[1])
                for series in result or []
                if isinstance(series, dict)
                for point in series.get("values") or []
                if isinstance(point, list) and len(point) == 2
            ]

        start = end - timedelta(seconds=max(seconds, step))
        return pooled(self._query_range(query, start, end, step))

    def series(
        self, query: str, *, start: datetime, end: datetime, step: float
    ) -> list[list[tuple[datetime, float]]]:
        """Each series of a range query over [start, end], as points (see :func:`parse_range`).

        For a picture of a whole rollout (``kubectl modelrollout report``), where the
        times matter and series are kept apart.
        """
        return parse_range(self._query_range(query, start, end, step))

    def _query_range(self, query: str, start: datetime, end: datetime, step: float) -> Any:
        return self._ask(
            "/api/v1/query_range",
            {
                "query": query,
                "start": f"{start.timestamp():.3f}",
                "end": f"{end.timestamp():.3f}",
                "step": f"{max(step, 0.001):g}",  # float seconds: any step, no unit parsing
            },
        )

    def _ask(
        self,
        path: str,
        params: dict[str, str],
        whole: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """``data`` of a successful answer; :class:`SourceError` for anything else.

        ``whole`` may refuse a successful answer (raising :class:`IncompleteAnswer`),
        inside the measurement, so the error is counted by kind like the others.
        """
        import requests

        started = time.monotonic()
        kind: str | None = None
        try:
            try:
                response = self._session.get(
                    self.url + path,
                    params={**params, "timeout": f"{self.timeout:g}"},
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.Timeout as exc:
                raise SourceUnreachable(self._say(f"timed out after {self.timeout:g}s")) from exc
            except requests.RequestException as exc:
                reason = _connection_reason(exc)
                if reason == "timed out":  # a read timeout, after urllib3's one retry
                    reason = f"timed out after {self.timeout:g}s"
                raise SourceUnreachable(self._say(reason)) from exc
            body = _json(response)
            ok = response.status_code == 200 and isinstance(body, dict)
            if ok and body.get("status") == "success":
                if whole is not None:
                    whole(body)
                return body.get("data")
            raise error_for(response.status_code, body, where=self._say(""))
        except SourceError as exc:
            kind = exc.kind
            raise
        finally:
            if self._observe is not None:
                self._observe(time.monotonic() - started, kind)

    def _say(self, what: str) -> str:
        return f"prometheus at {self.url}" + (f": {what}" if what else "")


def error_for(status: int, body: Any, *, where: str = "prometheus") -> SourceError:
    """The error of an answer that is not a success, from its status and JSON alone.

    Prometheus answers a bad query with 400 and ``{"errorType": "bad_data",
    "error": "<parse error>"}``, a failed evaluation with 422 ``execution``, and a
    timeout with 503. Only a ``bad_data`` error text is quoted (cleaned, at most
    :data:`ERROR_TEXT_LIMIT` characters): it is how a user finds the typo in a
    query. Anything else a server sends (HTML of a proxy, an echo of the request)
    is dropped. Only a 4xx ``bad_data`` or ``execution`` is the query's fault
    (:class:`QueryRefused`); the rest is the source's (:class:`SourceUnreachable`).
    """
    error_type = body.get("errorType") if isinstance(body, dict) else None
    error_type = printable(error_type, limit=40) if isinstance(error_type, str) else None
    text = f"{where}: HTTP {status}" + (f" {error_type}" if error_type else "")
    if 300 <= status < 400:
        return SourceUnreachable(f"{text} (a redirect; not followed)")
    if 400 <= status < 500 and error_type in ("bad_data", "execution"):
        if error_type == "bad_data" and isinstance(body.get("error"), str):
            text += ": " + printable(body["error"], limit=ERROR_TEXT_LIMIT)
        return QueryRefused(text, error_type=error_type)
    if status == 200 and error_type is None:
        return SourceUnreachable(f"{text}, but not a Prometheus API answer")
    return SourceUnreachable(text)


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


_CONNECTION_REASONS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "host name not resolved"),
    ("Temporary failure in name resolution", "host name not resolved"),
    ("No address associated", "host name not resolved"),
    ("No route to host", "no route to host"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ("SSLError", "TLS handshake failed"),
    ("Connection reset", "connection reset"),
    ("timed out", "timed out"),
    ("RemoteDisconnected", "connection closed without an answer"),
)


def _connection_reason(exc: Exception) -> str:
    """A few words for a failed connection; the library's text (with the URL) is not kept."""
    text = repr(exc)
    for needle, reason in _CONNECTION_REASONS:
        if needle in text:
            return reason
    return "connection failed"
