"""The gate registry: every kind found by its field, one context for every caller.

What ``report --prometheus`` draws of each kind is checked in test_report_prometheus.py;
how each kind judges, in test_gates_threshold.py and test_gates_ml.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from modelrollout.analysis import gates
from modelrollout.analysis.gates import context_for
from modelrollout.api.gates import MetricGate
from modelrollout.api.status import ModelRolloutStatus, Stage

from .engine_harness import make_spec
from .test_gates_ml import MSPRT

NOW = datetime(2026, 1, 1, 12, 10, 0)

#: One gate of every kind, with the limit text ``report`` shows for it.
ONE_OF_EACH: list[tuple[dict[str, Any], str]] = [
    ({"query": 'up{version="{{version}}"}', "min": 1}, "min 1"),
    ({"latency": {"quantile": 0.99}, "max": 0.5}, "p99 max 0.5"),
    ({"errorRate": {}, "max": 0.01}, "max 0.01"),
    ({"throughput": {}, "min": 5}, "requests/s min 5"),
    ({"nullRate": {}, "max": 0.02}, "max 0.02"),
    ({"drift": {"metric": "model_input_feature"}, "max": 0.1}, "psi max 0.1 (anytime-valid)"),
    (
        {"drift": {"metric": "m", "method": "chi2"}, "min": 0.01},
        "chi2: differ (e-value) or within PSI 0.1",
    ),
    ({"agreement": {}, "min": 0.95}, "agreement min 0.95 (anytime-valid)"),
    (
        {"compare": {"query": 'x{version="{{version}}"}', "direction": "increase"}},
        "no increase beyond 10% of stable's median (equivalence)",
    ),
    ({"compare": MSPRT}, "no increase beyond 0.02 shown (anytime-valid)"),
    (
        {"score": {"metrics": [{"name": "a", "query": "q", "direction": "either"}]}},
        "score min 95 (marginal from 75)",
    ),
    ({"accuracy": {"maxDrop": 0.03}}, "drop at most 0.03 (anytime-valid)"),
]

NOT_A_KIND = {"name", "min", "max", "min_samples", "on_inconclusive", "stages"}


def test_every_source_field_of_a_gate_has_a_kind_in_the_registry() -> None:
    assert set(gates.KINDS) == set(MetricGate.model_fields) - NOT_A_KIND


@pytest.mark.parametrize(
    ("fields", "text"),
    [pytest.param(f, t, id=t.split()[0] + "-" + next(iter(f))) for f, t in ONE_OF_EACH],
)
def test_each_kind_is_found_by_its_field_and_says_its_limit(
    fields: dict[str, Any], text: str
) -> None:
    gate = MetricGate.model_validate({"name": "g", **fields})
    field = next(k for k in fields if k not in ("min", "max"))
    head, *rest = gates.kind_name(gate).split("_")
    assert head + "".join(w.title() for w in rest) == field
    assert gates.limit_text(gate) == text


def test_the_context_comes_from_the_status_first_then_the_spec() -> None:
    spec = make_spec(candidate={"version": "v3"})
    status = ModelRolloutStatus(
        stage=Stage.CANARY,
        stage_started_at="2026-01-01T12:00:00Z",
        stable_version="v1",
        candidate_version="v2",
    )
    ctx = context_for(spec, status, namespace="ml", now=NOW)
    assert (ctx.model, ctx.namespace, ctx.interval) == ("fraud-detector", "ml", "30s")
    assert (ctx.candidate_version, ctx.stable_version) == ("v2", "v1")
    assert (ctx.stage, ctx.stage_seconds, ctx.previous) == ("canary", 600.0, ())
    fresh = context_for(spec, ModelRolloutStatus(), namespace="ml", now=NOW)
    assert (fresh.candidate_version, fresh.stable_version, fresh.stage) == ("v3", "v1", "")
    assert fresh.stage_seconds == 0


def test_a_caller_that_knows_better_overrides_versions_stage_and_seconds() -> None:
    status = ModelRolloutStatus(stage=Stage.CANARY, stage_started_at="2026-01-01T12:00:00Z")
    ctx = context_for(
        make_spec(),
        status,
        namespace="ml",
        now=NOW,
        candidate_version="v9",
        stable_version="v8",
        stage="",
        seconds_in_stage=42.0,
    )
    assert (ctx.candidate_version, ctx.stable_version, ctx.stage) == ("v9", "v8", "")
    assert ctx.stage_seconds == 42.0
