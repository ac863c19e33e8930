"""``errorRate``: errors over requests in the interval, against max."""

from __future__ import annotations

from modelrollout.analysis.gates import common
from modelrollout.api.gates import MetricGate

ERRORS_METRIC = "model_request_errors_total"


def template(gate: MetricGate) -> str:
    assert gate.error_rate is not None
    return common.per_request(gate.error_rate.metric or ERRORS_METRIC)


window, limits, evaluate, queries, limit_text = common.threshold_kind(template)
