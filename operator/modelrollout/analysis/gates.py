"""Gates: turn a metric source's answer into a verdict with its value and limit.

A gate measures the candidate; its verdict is a value (Pass, Fail,
Inconclusive), never an exception. No data, NaN, an empty or a multi-series
result, and an unreachable source are all *inconclusive*; what that leads to
is set per gate (``onInconclusive``) and applied by the engine.

Built-in gates need no PromQL; they assume the metric names and labels that
``docs/metrics-conventions.md`` lists (``model`` and ``version`` labels):

- ``latency``:    ``histogram_quantile(q, sum by (le) (rate(<hist>_bucket{...}[interval])))``
- ``errorRate``:  errors / requests over the interval
- ``throughput``: requests per second over the interval
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from modelrollout.analysis.source import MetricSource, SourceError
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult, Verdict

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A query template names a variable the rollout does not have."""


@dataclass(frozen=True)
class GateContext:
    """The rollout's variables, for query templates."""

    model: str
    namespace: str
    candidate_version: str
    stable_version: str
    interval: str
    stage: str = ""
    stage_seconds: float = 0.0
    """Seconds since the current stage started (0: unknown). Windows that run "since the
    stage start" (accuracy, compare) read it; see ``ml_gates.stage_seconds``."""
    previous: Sequence[GateResult] = ()
    """Results of earlier checks in this stage, newest first: the mSPRT keeps its
    always-valid p-value there. See ``ml_gates.previous_results``."""

    def variables(self, role: str = "candidate") -> dict[str, str]:
        version = self.candidate_version if role == "candidate" else self.stable_version
        return {
            "model": self.model,
            "namespace": self.namespace,
            "version": version,
            "role": role,
            "interval": self.interval,
            "stableVersion": self.stable_version,
            "candidateVersion": self.candidate_version,
            "stage": self.stage,
        }


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; an unknown name is an error, never left in the query."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise TemplateError(
                f"unknown variable {{{{{name}}}}} (known: {', '.join(sorted(variables))})"
            )
        return variables[name]

    return _VAR.sub(sub, template)


def _selector(labels: str = "") -> str:
    base = 'model="{{model}}",version="{{version}}"'
    return "{" + base + ("," + labels if labels else "") + "}"


def builtin_query(gate: MetricGate) -> str | None:
    """The PromQL template of a built-in gate (None for a ``query`` gate)."""
    if gate.latency is not None:
        q, metric = gate.latency.quantile, gate.latency.metric
        return (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate({metric}_bucket{_selector()}[{{{{interval}}}}])))"
        )
    if gate.error_rate is not None:
        errors = gate.error_rate.metric or "model_request_errors_total"
        return (
            f"sum(rate({errors}{_selector()}[{{{{interval}}}}])) / "
            f"sum(rate(model_requests_total{_selector()}[{{{{interval}}}}]))"
        )
    if gate.throughput is not None:
        requests = gate.throughput.metric or "model_requests_total"
        return f"sum(rate({requests}{_selector()}[{{{{interval}}}}]))"
    return None


def query_of(gate: MetricGate) -> str:
    q = gate.query or builtin_query(gate)
    assert q is not None, "validated: a gate has exactly one source"
    return q


def judge(value: float, gate: MetricGate) -> Verdict:
    if gate.min is not None and value < gate.min:
        return Verdict.FAIL
    if gate.max is not None and value > gate.max:
        return Verdict.FAIL
    return Verdict.PASS


def _result(
    gate: MetricGate, verdict: Verdict, value: float | None, reason: str | None
) -> GateResult:
    return GateResult(
        metric=gate.name, value=value, min=gate.min, max=gate.max, verdict=verdict, reason=reason
    )


def evaluate_threshold(gate: MetricGate, source: MetricSource, ctx: GateContext) -> GateResult:
    try:
        promql = render(query_of(gate), ctx.variables())
    except TemplateError as exc:
        return _result(gate, Verdict.INCONCLUSIVE, None, str(exc))
    try:
        samples = source.instant(promql)
    except SourceError as exc:
        return _result(gate, Verdict.INCONCLUSIVE, None, f"unreachable: {exc}")
    if not samples:
        return _result(gate, Verdict.INCONCLUSIVE, None, "no data")
    if len(samples) > 1:
        return _result(
            gate,
            Verdict.INCONCLUSIVE,
            None,
            f"{len(samples)} series returned; a gate needs exactly one (aggregate with sum)",
        )
    value = samples[0].value
    if math.isnan(value) or math.isinf(value):
        return _result(gate, Verdict.INCONCLUSIVE, None, f"value is {value} (no requests?)")
    verdict = judge(value, gate)
    return _result(gate, verdict, value, None)


Evaluator = Callable[[MetricGate, MetricSource, GateContext], GateResult]


def evaluate(gates: list[MetricGate], source: MetricSource, ctx: GateContext) -> list[GateResult]:
    """One check: every gate once. Never raises for a measurement problem."""
    return [evaluator_for(g)(g, source, ctx) for g in gates]


def evaluator_for(gate: MetricGate) -> Evaluator:
    """The evaluator of a gate's kind: thresholds here, the ML judges in ``ml_gates``."""
    from modelrollout.analysis import ml_gates  # it builds on this module: import late

    return ml_gates.evaluator_for(gate, threshold=evaluate_threshold)
