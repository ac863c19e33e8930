"""``latency``: a quantile of the request duration histogram, against max (or min)."""

from __future__ import annotations

from modelrollout.analysis.gates import common
from modelrollout.api.gates import MetricGate


def template(gate: MetricGate) -> str:
    """``histogram_quantile(q, sum by (le) (rate(<hist>_bucket{...}[interval])))``."""
    assert gate.latency is not None
    q, metric = gate.latency.quantile, gate.latency.metric
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({metric}_bucket{common.VERSION_TEMPLATE}[{{{{interval}}}}])))"
    )


def _measure(gate: MetricGate) -> str:
    assert gate.latency is not None
    return f"p{gate.latency.quantile * 100:g}"


window, limits, evaluate, queries, limit_text = common.threshold_kind(template, _measure)
