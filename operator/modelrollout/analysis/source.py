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
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SourceError(Exception):
    """The source could not be asked: unreachable, timed out, or refused the query."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


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
            return [Sample({}, _float(result[1]))] if result else []
        data = result
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
        return [Sample({}, _float(data[1]))]  # a scalar: [timestamp, "value"]
    samples: list[Sample] = []
    for item in data or []:
        if isinstance(item, dict) and "value" in item:
            samples.append(Sample(dict(item.get("metric") or {}), _float(item["value"][1])))
    return samples


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


class PrometheusSource:
    """Instant queries through ``prometheus-api-client``.

    ``observe`` is called with (seconds, error) after each query so the
    operator can export query latency and errors without this class knowing
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
        observe: Callable[[float, bool], None] | None = None,
    ) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        self.timeout = timeout
        self._observe = observe
        session = requests.Session()
        if ca_bundle:
            session.verify = ca_bundle
        # One quick retry: a down Prometheus must turn into "inconclusive" within
        # seconds, not hold the reconcile loop through a long backoff.
        self._client = PrometheusConnect(
            url=url,
            headers=headers,
            auth=auth,
            disable_ssl=False,
            retry=Retry(total=1, backoff_factor=0.1, status_forcelist=[502, 503, 504]),
            session=session,
            timeout=int(max(1, timeout)),
        )

    def instant(self, query: str) -> list[Sample]:
        return self._ask(
            lambda: self._client.custom_query(query=query, params={"timeout": self.timeout}),
            parse_result,
        )

    def range(self, query: str, seconds: float, step: float) -> list[float]:
        """Values of a range query over the last ``seconds``, one per ``step`` seconds.

        The values of every series returned are pooled, oldest first per series; NaN
        stays NaN (the caller drops it). No data is an empty list; an unreachable or
        refusing Prometheus raises :class:`SourceError`, as for :meth:`instant`.
        """
        end = datetime.now(UTC)

        def pooled(result: Any) -> list[float]:
            return [
                _float(point[1])
                for series in result or []
                if isinstance(series, dict)
                for point in series.get("values") or []
            ]

        start = end - timedelta(seconds=max(seconds, step))
        return self._query_range(query, start, end, step, pooled)

    def series(
        self, query: str, *, start: datetime, end: datetime, step: float
    ) -> list[list[tuple[datetime, float]]]:
        """Each series of a range query over [start, end], as points (see :func:`parse_range`).

        For a picture of a whole rollout (``kubectl modelrollout report``), where the
        times matter and series are kept apart.
        """
        return self._query_range(query, start, end, step, parse_range)

    def _query_range(
        self, query: str, start: datetime, end: datetime, step: float, parse: Callable[[Any], T]
    ) -> T:
        return self._ask(
            lambda: self._client.custom_query_range(
                query=query,
                start_time=start,
                end_time=end,
                step=f"{max(step, 0.001):g}",  # float seconds: any step, no unit parsing
                params={"timeout": self.timeout},
            ),
            parse,
        )

    def _ask(self, call: Callable[[], Any], parse: Callable[[Any], T]) -> T:
        """One query, timed for ``observe``; any failure to answer is a :class:`SourceError`."""
        started = time.monotonic()
        failed = False
        try:
            return parse(call())
        except Exception as exc:
            failed = True
            raise SourceError(f"prometheus at {self.url}: {_short(exc)}") from exc
        finally:
            if self._observe is not None:
                self._observe(time.monotonic() - started, failed)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
