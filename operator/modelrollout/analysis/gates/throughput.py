"""``throughput``: requests per second over the interval, against min (or max)."""

from __future__ import annotations

from modelrollout.analysis.gates import common
from modelrollout.api.gates import MetricGate


def template(gate: MetricGate) -> str:
    assert gate.throughput is not None
    requests = gate.throughput.metric or common.REQUESTS_METRIC
    return f"sum(rate({requests}{common.VERSION_TEMPLATE}[{{{{interval}}}}]))"


window, limits, evaluate, queries, limit_text = common.threshold_kind(template, "requests/s")
