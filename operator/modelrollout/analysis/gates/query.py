"""``query``: the candidate's value of a PromQL template, against min and max."""

from __future__ import annotations

from modelrollout.analysis.gates.common import (
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
    assert gate.query is not None
    return gate.query


evaluate = threshold_evaluator(template)
queries = version_queries(template)


def limit_text(gate: MetricGate) -> str:
    return min_max_text(own_limits(gate))
