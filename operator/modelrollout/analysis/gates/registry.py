"""The gate kinds: one module each, found by the field a ``MetricGate`` sets.

Every kind module exposes the same five names (:class:`GateKind`): ``evaluate`` (one
check), ``queries`` (what ``report --prometheus`` draws), ``limit_text`` (the limit in
words), ``window`` (the window ``minSamples`` counts requests in) and ``limits`` (the
min and max its results show). Adding a kind is its API model, one module and one line
in :data:`KINDS`; the operator, ``modelrollout analyze`` and ``report`` all go through
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modelrollout.analysis.gates import (
    accuracy,
    agreement,
    compare,
    drift,
    error_rate,
    latency,
    llm,
    null_rate,
    query,
    score,
    throughput,
)
from modelrollout.analysis.gates.common import Evaluator, GateContext, Limits, Plot
from modelrollout.analysis.gates.min_samples import with_min_samples
from modelrollout.analysis.source import MetricSource
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult


class GateKind(Protocol):
    """What a gate kind module provides."""

    @property
    def evaluate(self) -> Evaluator: ...
    @property
    def queries(self) -> Callable[[MetricGate, GateContext], Plot]: ...
    @property
    def limit_text(self) -> Callable[[MetricGate], str]: ...
    @property
    def window(self) -> Callable[[MetricGate, GateContext], str]: ...
    @property
    def limits(self) -> Callable[[MetricGate], Limits]: ...


#: ``MetricGate`` field -> the module of that kind.
KINDS: dict[str, GateKind] = {
    "query": query,
    "latency": latency,
    "error_rate": error_rate,
    "throughput": throughput,
    "null_rate": null_rate,
    "drift": drift,
    "agreement": agreement,
    "compare": compare,
    "score": score,
    "accuracy": accuracy,
    "time_to_first_token": llm.time_to_first_token,
    "inter_token_latency": llm.inter_token_latency,
    "queue_time": llm.queue_time,
    "output_tokens_per_second": llm.output_tokens_per_second,
    "kv_cache_usage": llm.kv_cache_usage,
    "cost_per_thousand_tokens": llm.cost_per_thousand_tokens,
}


def kind_name(gate: MetricGate) -> str:
    """The ``MetricGate`` field that makes the gate's kind (``error_rate``, ``drift``...)."""
    [name] = [k for k in KINDS if getattr(gate, k) is not None]  # validated: exactly one
    return name


def kind_of(gate: MetricGate) -> GateKind:
    return KINDS[kind_name(gate)]


def evaluator_for(gate: MetricGate) -> Evaluator:
    """The evaluator of a gate's kind, behind ``minSamples`` when the gate sets it."""
    kind = kind_of(gate)
    if gate.min_samples is None:
        return kind.evaluate
    return with_min_samples(kind.evaluate, window=kind.window, limits=kind.limits)


def evaluate(gates: list[MetricGate], source: MetricSource, ctx: GateContext) -> list[GateResult]:
    """One check: every gate once. Never raises for a measurement problem."""
    return [evaluator_for(g)(g, source, ctx) for g in gates]


def queries(gate: MetricGate, ctx: GateContext) -> Plot:
    """What ``report --prometheus`` draws of the gate (may raise ``TemplateError``)."""
    return kind_of(gate).queries(gate, ctx)


def preflight_queries(gate: MetricGate, ctx: GateContext) -> tuple[str, ...]:
    """The gate's PromQL, rendered for this rollout: what a preflight sends once.

    The expressions ``report`` draws, for each version: the gate's own template (or the
    kinds' built-in shapes around the metric names it gives). A kind with nothing to draw
    (``drift``) sends nothing: it writes its queries from metric names alone. May raise
    ``TemplateError`` (an unknown placeholder), which is the gate's fault as well.
    """
    return tuple(dict.fromkeys(s.promql for s in queries(gate, ctx).series))


def limit_text(gate: MetricGate) -> str:
    """The gate's limit in words, from its spec (``max 0.5``, ``score min 95 ...``)."""
    return kind_of(gate).limit_text(gate)
