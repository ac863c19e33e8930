"""``query``: the candidate's value of a PromQL template, against min and max."""

from __future__ import annotations

from modelrollout.analysis.gates import common
from modelrollout.api.gates import MetricGate


def template(gate: MetricGate) -> str:
    assert gate.query is not None
    return gate.query


window, limits, evaluate, queries, limit_text = common.threshold_kind(template)
