"""The operator's gate gauges: every gate's value and limit, gone when the rollout is."""

from __future__ import annotations

import math
from typing import Any

from modelrollout.engine import Decision
from modelrollout.operator.metrics import OperatorMetrics

BODY: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "fraud"}, "status": {}}


def check(at: str, stage: str, *results: dict[str, Any]) -> Decision:
    status = {
        "phase": "Progressing",
        "weights": {"stable": 90, "candidate": 10},
        "lastAnalysis": {"at": at, "stage": stage, "verdict": "Pass", "results": list(results)},
    }
    return Decision(status=status, traffic=None)


LATENCY = {"metric": "p99", "value": 0.2, "max": 0.5, "verdict": "Pass"}
THROUGHPUT = {"metric": "rps", "value": 3.0, "min": 1.0, "verdict": "Pass"}
BAND = {"metric": "score", "value": 0.5, "min": 0.1, "max": 0.9, "verdict": "Pass"}
NODATA = {"metric": "drift", "max": 0.2, "verdict": "Inconclusive"}


def sample(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    value = m.registry.get_sample_value(name, {"namespace": "ml", "rollout": "fraud", **labels})
    return value


def test_each_gate_value_and_each_bound_of_its_limit_is_a_gauge() -> None:
    m = OperatorMetrics()
    m.observe(BODY, check("t1", "canary", LATENCY, THROUGHPUT, BAND), 0.01)
    assert sample(m, "modelrollout_gate_value", gate="p99", stage="canary") == 0.2
    assert sample(m, "modelrollout_gate_limit", gate="p99", stage="canary", bound="max") == 0.5
    assert sample(m, "modelrollout_gate_limit", gate="p99", stage="canary", bound="min") is None
    assert sample(m, "modelrollout_gate_limit", gate="rps", stage="canary", bound="min") == 1.0
    assert sample(m, "modelrollout_gate_limit", gate="score", stage="canary", bound="min") == 0.1
    assert sample(m, "modelrollout_gate_limit", gate="score", stage="canary", bound="max") == 0.9


def test_a_gate_without_data_shows_as_nan_not_as_zero() -> None:
    m = OperatorMetrics()
    m.observe(BODY, check("t1", "shadow", NODATA), 0.01)
    value = sample(m, "modelrollout_gate_value", gate="drift", stage="shadow")
    assert value is not None
    assert math.isnan(value)


def test_a_new_stage_replaces_the_series_of_the_last_one() -> None:
    m = OperatorMetrics()
    m.observe(BODY, check("t1", "shadow", LATENCY), 0.01)
    m.observe(BODY, check("t2", "canary", THROUGHPUT), 0.01)
    assert sample(m, "modelrollout_gate_value", gate="p99", stage="shadow") is None
    assert sample(m, "modelrollout_gate_limit", gate="p99", stage="shadow", bound="max") is None
    assert sample(m, "modelrollout_gate_value", gate="rps", stage="canary") == 3.0


def test_a_deleted_rollout_leaves_no_gate_series() -> None:
    m = OperatorMetrics()
    m.observe(BODY, check("t1", "canary", LATENCY, BAND), 0.01)
    m.forget("ml", "fraud")
    names = {
        s.name
        for family in m.registry.collect()
        for s in family.samples
        if s.labels.get("rollout") == "fraud"
    }
    assert not names & {"modelrollout_gate_value", "modelrollout_gate_limit"}
