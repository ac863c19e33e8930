"""``latency``: a quantile of the request duration histogram, against max (or min)."""

from __future__ import annotations

from modelrollout.analysis.gates.common import (
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
    """``histogram_quantile(q, sum by (le) (rate(<hist>_bucket{...}[interval])))``."""
    assert gate.latency is not None
    q, metric = gate.latency.quantile, gate.latency.metric
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({metric}_bucket{VERSION_TEMPLATE}[{{{{interval}}}}])))"
    )


evaluate = threshold_evaluator(template)
queries = version_queries(template)


def limit_text(gate: MetricGate) -> str:
    assert gate.latency is not None
    return f"p{gate.latency.quantile * 100:g} {min_max_text(own_limits(gate))}"
