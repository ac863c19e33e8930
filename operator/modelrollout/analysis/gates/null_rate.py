"""``nullRate``: null outputs over requests in the interval, against max."""

from __future__ import annotations

from modelrollout.analysis.gates import common
from modelrollout.api.gates import MetricGate

NULL_OUTPUTS_METRIC = "model_null_outputs_total"


def template(gate: MetricGate) -> str:
    assert gate.null_rate is not None
    return common.per_request(gate.null_rate.metric or NULL_OUTPUTS_METRIC)


window, limits, evaluate, queries, limit_text = common.threshold_kind(template)
