"""``errorRate``: errors over requests in the interval, against max."""

from __future__ import annotations

from modelrollout.analysis.gates.common import (
    interval_window,
    min_max_text,
    own_limits,
    per_request,
    threshold_evaluator,
    version_queries,
)
from modelrollout.api.gates import MetricGate

ERRORS_METRIC = "model_request_errors_total"

window = interval_window
limits = own_limits


def template(gate: MetricGate) -> str:
    assert gate.error_rate is not None
    return per_request(gate.error_rate.metric or ERRORS_METRIC)


evaluate = threshold_evaluator(template)
queries = version_queries(template)


def limit_text(gate: MetricGate) -> str:
    return min_max_text(own_limits(gate))
