"""``throughput``: requests per second over the interval, against min (or max)."""

from __future__ import annotations

from modelrollout.analysis.gates.common import (
    REQUESTS_METRIC,
    VERSION_TEMPLATE,
    interval_window,
    min_max_text,
    own_limits,
    threshold_evaluator,
    version_queries,
)
from modelrollout.api.gates import MetricGate

window = interval_window
limits = own_limits


def template(gate: MetricGate) -> str:
    assert gate.throughput is not None
    requests = gate.throughput.metric or REQUESTS_METRIC
    return f"sum(rate({requests}{VERSION_TEMPLATE}[{{{{interval}}}}]))"


evaluate = threshold_evaluator(template)
queries = version_queries(template)


def limit_text(gate: MetricGate) -> str:
    return f"requests/s {min_max_text(own_limits(gate))}"
