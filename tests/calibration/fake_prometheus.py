"""A fake Prometheus: answers the gates' PromQL from a simulated ``World``.

It implements the ``MetricSource`` protocol of ``modelrollout.analysis.source``
(``instant(query)`` and ``range(query, seconds, step)``) for the query shapes the
built-in gates send, and nothing else:

- ``sum(increase(NAME{matchers}[D]))`` and ``sum(rate(...))``, with an optional
  ``offset D`` inside the function;
- ``sum by (L1, L2) (increase(...))`` (``le`` for histograms, ``result``, ``class``);
- ``increase(...)`` / ``rate(...)`` on their own (one sample per series);
- ``A / B`` of two of the above (label sets matched one to one);
- ``histogram_quantile(q, sum by (le) (rate(NAME_bucket{...}[D])))``, interpolated
  within the bucket as Prometheus does.

A query of any other shape raises ``UnsupportedQuery``, which is deliberately *not* a
``SourceError``: a gate turns a ``SourceError`` into an inconclusive check, and a harness
that silently answers "inconclusive" to a query it cannot read would calibrate nothing.
Set ``down = True`` to make the source raise ``SourceError`` as an unreachable
Prometheus does.

Differences from Prometheus, on purpose: ``increase`` is the exact difference of the
counter between the window's ends (no extrapolation: the world's counters are scraped at
interval boundaries only, and start at 0 at time 0); matchers support ``=``, ``!=``,
``=~`` and ``!~`` (regexes anchored, as in Prometheus).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from modelrollout.analysis.source import Sample, SourceError
from tests.calibration.world import World


class UnsupportedQuery(Exception):
    """A query this fake cannot read: a harness bug, never a measurement result."""


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_STRING = r'"(?:[^"\\]|\\.)*"'
_MATCHER = re.compile(rf"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*({_STRING})\s*(,|$)")
_FUNCTION = re.compile(
    rf"(increase|rate)\s*\(\s*({_NAME})\s*(\{{(?:[^}}\"]|{_STRING})*\}})?\s*"
    rf"\[\s*([0-9.a-z]+)\s*\]\s*(?:offset\s+([0-9.a-z]+)\s*)?\)"
)
_SUM = re.compile(r"sum\s*(?:by\s*\(([^)]*)\)\s*)?\((.*)\)", re.DOTALL)
_QUANTILE = re.compile(r"histogram_quantile\s*\(\s*([0-9.eE+-]+)\s*,(.*)\)", re.DOTALL)


@functools.lru_cache(maxsize=4096)
def parse_duration(text: str) -> float:
    """Seconds in a PromQL duration (``5m``, ``1m30s``, ``300s``, ``1.5h`` is refused)."""
    if not _DURATION.fullmatch(text):
        raise UnsupportedQuery(f"not a PromQL duration: {text!r}")
    return sum(float(v) * _UNITS[u] for v, u in _DURATION_PART.findall(text))


@dataclass(frozen=True)
class _Matcher:
    label: str
    op: str
    value: str

    def __call__(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.label, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit


def _unescape(quoted: str) -> str:
    body = quoted[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


@functools.lru_cache(maxsize=4096)
def parse_matchers(text: str | None) -> tuple[_Matcher, ...]:
    """``{a="x",b=~"y.*"}`` as matchers; an empty or absent selector matches everything."""
    if not text:
        return ()
    body = text.strip()[1:-1].strip()
    matchers: list[_Matcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise UnsupportedQuery(f"cannot read the label matchers {text!r}")
        matchers.append(_Matcher(m.group(1), m.group(2), _unescape(m.group(3))))
        pos = m.end()
    return tuple(matchers)


@functools.lru_cache(maxsize=4096)
def _strip_parens(expr: str) -> str:
    """Drop whitespace and parentheses that wrap the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and _closing(expr, 0) == len(expr) - 1:
        expr = expr[1:-1].strip()
    return expr


def _scan(expr: str) -> Iterator[tuple[int, str, int]]:
    """Characters outside quoted strings, with the parenthesis depth before each."""
    depth, i, quoted = 0, 0, False
    while i < len(expr):
        ch = expr[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        else:
            yield i, ch, depth
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
        i += 1


@functools.lru_cache(maxsize=4096)
def _closing(expr: str, start: int) -> int:
    """The index of the bracket that closes the one at ``start`` (-1: none)."""
    opened: int | None = None
    for i, ch, depth in _scan(expr):
        if i == start:
            opened = depth
        elif opened is not None and ch in ")]}" and depth == opened + 1:
            return i
    return -1


@functools.lru_cache(maxsize=4096)
def _split_division(expr: str) -> tuple[str, str] | None:
    for i, ch, depth in _scan(expr):
        if ch == "/" and depth == 0:
            return expr[:i], expr[i + 1 :]
    return None


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` on (le, cumulative count) pairs.

    Linear interpolation within the bucket holding rank ``q * total``; the first bucket
    starts at 0 (for a positive bound); a rank in the +Inf bucket gives the largest
    finite bound. No observations: NaN.
    """
    if not 0 <= q <= 1:
        return math.inf if q > 1 else -math.inf
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    counts = [c for _, c in buckets]
    for i in range(1, len(counts)):  # monotone, as Prometheus enforces
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    i = next(j for j, c in enumerate(counts) if c >= rank)
    if i == len(buckets) - 1:
        return buckets[-2][0]
    upper = buckets[i][0]
    lower, below = (buckets[i - 1][0], counts[i - 1]) if i > 0 else (0.0, 0.0)
    if i == 0 and upper <= 0:
        return upper
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


class FakePrometheus:
    """A ``MetricSource`` over a ``World``; answers at ``world.now`` unless ``at`` is set.

    ``queries`` keeps every query asked, in order (tests and studies read it).
    """

    def __init__(self, world: World, *, at: float | None = None) -> None:
        self.world = world
        self.at = at
        self.down = False
        self.queries: list[str] = []
        self._matched: dict[
            tuple[str, str | None], tuple[int, list[list[float]], list[dict[str, str]]]
        ] = {}

    # ------------------------------------------------------------------ MetricSource

    def instant(self, query: str) -> list[Sample]:
        self._ask(query)
        return self.evaluate(query, self.world.now if self.at is None else self.at)

    def range(self, query: str, seconds: float, step: float) -> list[float]:
        """Values at ``now - seconds``, every ``step`` up to ``now``; pooled per series."""
        self._ask(query)
        end = self.world.now if self.at is None else self.at
        if step <= 0:
            raise UnsupportedQuery(f"a range query needs a positive step, got {step}")
        points = math.floor(max(seconds, step) / step + 1e-9)
        per_series: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for k in range(points, -1, -1):
            for sample in self.evaluate(query, end - k * step):
                per_series.setdefault(_key(sample.labels), []).append(sample.value)
        return [v for values in per_series.values() for v in values]

    def _ask(self, query: str) -> None:
        self.queries.append(query)
        if self.down:
            raise SourceError("fake prometheus is down")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, query: str, t: float) -> list[Sample]:
        """The samples ``query`` gives at time ``t`` (seconds since the world began)."""
        expr = _strip_parens(query)
        split = _split_division(expr)
        if split is not None:
            return _divide(self.evaluate(split[0], t), self.evaluate(split[1], t))
        m = _QUANTILE.fullmatch(expr)
        if m is not None:
            return self._quantile(float(m.group(1)), m.group(2), t)
        m = _SUM.fullmatch(expr)
        if m is not None and _closing(expr, m.start(2) - 1) == len(expr) - 1:
            by = [b.strip() for b in (m.group(1) or "").split(",") if b.strip()]
            return _sum(self.evaluate(m.group(2), t), by)
        m = _FUNCTION.fullmatch(expr)
        if m is not None:
            return self._function(m, t)
        raise UnsupportedQuery(f"the fake Prometheus cannot read this query: {query!r}")

    def _function(self, m: re.Match[str], t: float) -> list[Sample]:
        kind, name, selector, window, offset = m.groups()
        matchers = parse_matchers(selector)
        seconds = parse_duration(window)
        end = t - (parse_duration(offset) if offset else 0.0)
        i_end, i_start = self.world.value_index(end), self.world.value_index(end - seconds)
        per: Callable[[float], float] = (lambda v: v / seconds) if kind == "rate" else float
        cached = self._matched.get((name, selector))
        if cached is None or cached[0] != self.world.series_added:
            hits = [(lb, v) for lb, v in self.world.series(name) if all(m(lb) for m in matchers)]
            cached = (self.world.series_added, [v for _, v in hits], [lb for lb, _ in hits])
            self._matched[(name, selector)] = cached
        _, series, labels = cached
        return [
            Sample(dict(lb), per(v[i_end] - v[i_start]))
            for lb, v in zip(labels, series, strict=True)
        ]

    def _quantile(self, q: float, inner: str, t: float) -> list[Sample]:
        groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for s in self.evaluate(inner, t):
            if "le" not in s.labels:
                raise UnsupportedQuery("histogram_quantile over series without an le label")
            rest = {k: v for k, v in s.labels.items() if k != "le"}
            groups.setdefault(_key(rest), []).append((float(s.labels["le"]), s.value))
        return [
            Sample(dict(key), histogram_quantile(q, buckets)) for key, buckets in groups.items()
        ]


def _sum(samples: list[Sample], by: list[str]) -> list[Sample]:
    groups: dict[tuple[tuple[str, str], ...], float] = {}
    for s in samples:
        labels = {k: s.labels[k] for k in by if k in s.labels}
        key = _key(labels)
        groups[key] = groups.get(key, 0.0) + s.value
    return [Sample(dict(key), value) for key, value in groups.items()]


def _divide(left: list[Sample], right: list[Sample]) -> list[Sample]:
    denominators = {_key(s.labels): s.value for s in right}
    out: list[Sample] = []
    for s in left:
        d = denominators.get(_key(s.labels))
        if d is None:
            continue
        if d == 0:
            value = math.nan if s.value == 0 else math.copysign(math.inf, s.value)
        else:
            value = s.value / d
        out.append(Sample(s.labels, value))
    return out
