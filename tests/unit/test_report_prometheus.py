"""``report --prometheus`` for every gate kind, against a fake range source.

Each kind's plottable queries come from the analysis registry; the fake answers every
query with one series (or fails), so what is checked here is which queries a kind asks,
what the report keeps of the answers, and that no kind makes the report fail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrollout.analysis.source import SourceError
from modelrollout.cli import report, view

from .test_gates_registry import ONE_OF_EACH

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


class FakeRange:
    """Answers every range query with one series of three points; remembers the queries."""

    def __init__(self, fail: Exception | None = None, series: int = 1) -> None:
        self.fail = fail
        self.count = series
        self.queries: list[str] = []

    def series(
        self, query: str, *, start: datetime, end: datetime, step: float
    ) -> list[list[tuple[datetime, float]]]:
        self.queries.append(query)
        if self.fail is not None:
            raise self.fail
        points = [(start + timedelta(minutes=m), 0.1 * m) for m in (1, 2, 3)]
        return [points] * self.count


def rollout(*metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "namespace": "ml"},
        "spec": {
            "model": "fraud-detector",
            "stable": {"version": "v1"},
            "candidate": {"version": "v2"},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-detector"}},
            "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
            "analysis": {"interval": "1m", "metrics": list(metrics)},
        },
        "status": {
            "phase": "Progressing",
            "stage": "canary",
            "stableVersion": "v1",
            "candidateVersion": "v2",
            "history": [
                {"at": "2026-01-01T12:00:00Z", "reason": "RolloutStarted", "weight": 0},
                {"at": "2026-01-01T12:01:00Z", "reason": "WeightChanged", "weight": 10},
            ],
        },
    }


def gather(*metrics: dict[str, Any], source: FakeRange | None = None) -> report.Gathered:
    return report.prometheus_series(rollout(*metrics), source or FakeRange(), START, END)


EACH_KIND = [
    pytest.param({"name": "g", **fields}, id=f"{next(iter(fields))}-{i}")
    for i, (fields, _) in enumerate(ONE_OF_EACH)
]


@pytest.mark.parametrize("gate", EACH_KIND)
def test_every_kind_of_gate_is_drawn_or_noted_never_an_error(
    gate: dict[str, Any], tmp_path: Path
) -> None:
    source = FakeRange()
    gathered = gather(gate, source=source)
    assert gathered.warnings == []
    assert gathered.series.get("g") or gathered.notes.get("g")
    assert "{{" not in " ".join(source.queries)  # every template variable filled in
    timeline = view.build_timeline(rollout(gate), END)
    timeline.prometheus, timeline.notes = gathered.series, gathered.notes
    timeline.prometheus_url = "http://prometheus"
    paths = report.write_report(rollout(gate), str(tmp_path / "r"), END, timeline)
    page = paths[1].read_text()
    assert "Grey lines: gate queries from Prometheus at http://prometheus" in page


@pytest.mark.parametrize(
    ("gate", "labels"),
    [
        pytest.param(
            {"name": "g", "nullRate": {}, "max": 0.1},
            ["candidate v2", "stable v1"],
            id="null-rate-value-of-both-versions",
        ),
        pytest.param(
            {"name": "g", "query": "vector(1)", "max": 2},
            ["candidate v2"],
            id="a-query-without-version-once",
        ),
        pytest.param(
            {"name": "g", "agreement": {}, "min": 0.9}, ["agreement rate"], id="agreement-rate"
        ),
        pytest.param(
            {"name": "g", "accuracy": {}}, ["accuracy difference"], id="accuracy-difference"
        ),
    ],
)
def test_kinds_with_a_value_series_draw_it_against_the_limits(
    gate: dict[str, Any], labels: list[str]
) -> None:
    gathered = gather(gate)
    assert [s.label for s in gathered.series["g"]] == labels
    assert all(s.same_scale for s in gathered.series["g"])
    assert len(gathered.series["g"][0].points) == 3


def test_null_rate_reads_null_outputs_over_requests_of_each_version() -> None:
    source = FakeRange()
    gather({"name": "g", "nullRate": {}, "max": 0.1}, source=source)
    assert source.queries == [
        f'sum(rate(model_null_outputs_total{{model="fraud-detector",version="{v}"}}[1m])) / '
        f'sum(rate(model_requests_total{{model="fraud-detector",version="{v}"}}[1m]))'
        for v in ("v2", "v1")
    ]


def test_drift_has_no_series_and_says_so_in_a_note() -> None:
    source = FakeRange()
    gathered = gather({"name": "g", "drift": {"metric": "m"}, "max": 0.1}, source=source)
    assert source.queries == []
    assert "g" not in gathered.series
    assert "no series" in gathered.notes["g"]


def test_score_draws_each_metrics_query_per_version_on_its_own_axis() -> None:
    metrics = [
        {"name": "lat", "query": 'x{version="{{version}}"}[{{window}}]', "direction": "increase"},
        {"name": "cpu", "query": 'cpu{version="{{version}}"}', "direction": "increase"},
    ]
    source = FakeRange()
    gathered = gather({"name": "g", "score": {"metrics": metrics, "step": "1m"}}, source=source)
    assert [s.label for s in gathered.series["g"]] == [
        "lat candidate v2",
        "lat stable v1",
        "cpu candidate v2",
        "cpu stable v1",
    ]
    assert not any(s.same_scale for s in gathered.series["g"])
    assert source.queries[0] == 'x{version="v2"}[1m]'
    assert "score" in gathered.notes["g"]


def test_msprt_draws_the_compared_rate_of_each_version() -> None:
    gate = {"name": "g", **ONE_OF_EACH[9][0]}
    source = FakeRange()
    gathered = gather(gate, source=source)
    assert [s.label for s in gathered.series["g"]] == ["rate candidate v2", "rate stable v1"]
    assert source.queries[1] == (
        'sum(rate(model_request_errors_total{model="fraud-detector",version="v1"}[1m])) / '
        'sum(rate(model_requests_total{model="fraud-detector",version="v1"}[1m]))'
    )


def test_an_unreachable_prometheus_is_one_warning_per_gate() -> None:
    source = FakeRange(fail=SourceError("prometheus at http://x: connection refused"))
    gathered = gather(
        {"name": "a", "nullRate": {}, "max": 0.1},
        {"name": "b", "latency": {}, "max": 0.5},
        source=source,
    )
    assert gathered.warnings == [
        "gate a: prometheus at http://x: connection refused",
        "gate b: prometheus at http://x: connection refused",
    ]
    assert gathered.series == {}


def test_an_unknown_template_variable_and_several_series_are_warnings() -> None:
    bad = gather({"name": "bad", "query": "x{{nope}}", "max": 1})
    assert bad.warnings[0].startswith("gate bad: unknown variable {{nope}}")
    many = gather({"name": "m", "query": "x", "max": 1}, source=FakeRange(series=2))
    assert many.warnings == ["gate m: 2 series returned; showing the first"]
    assert len(many.series["m"]) == 1


def test_a_spec_the_models_refuse_is_a_warning_not_a_crash() -> None:
    obj = rollout({"name": "g", "max": 1})
    gathered = report.prometheus_series(obj, FakeRange(), START, END)
    assert gathered.series == {}
    assert gathered.warnings[0].startswith("spec: ")


def test_the_page_lists_each_gate_with_its_kind_and_limit(tmp_path: Path) -> None:
    obj = rollout({"name": "p99", "latency": {}, "max": 0.5}, {"name": "a", "accuracy": {}})
    (path,) = report.write_report(obj, str(tmp_path / "r.html"), END)
    page = path.read_text()
    assert "<td>p99</td><td>latency</td><td>p99 max 0.5</td>" in page
    assert "<td>a</td><td>accuracy</td><td>drop at most 0.02 (anytime-valid)</td>" in page
