"""Tests of ``make calibrate``: the pipeline runs end to end and its outputs are whole.

The numbers themselves are the calibration's business (docs/analysis.md); here a quick
run checks that every scenario goes through the engine and the gates, and that the
table and the JSON have every row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.calibration import calibrate
from tests.calibration.calibrate import (
    BEGIN,
    END,
    SCENARIOS,
    Scenario,
    power_bound,
    run_rollout,
    traffic_for_power,
    write_section,
)
from tests.calibration.world import Kind, Regression


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """One quick calibration into a copy of a page with the markers and text around them."""
    tmp = tmp_path_factory.mktemp("calibrate")
    page, results = tmp / "analysis.md", tmp / "results.json"
    page.write_text(f"# Before\n\n{BEGIN}\nold table\n{END}\n\nAfter.\n")
    argv = ["--quick", "--processes", "1", "--analysis-md", str(page), "--json", str(results)]
    assert calibrate.main(argv) == 0
    return page.read_text(), json.loads(results.read_text())


def test_a_quick_calibration_replaces_the_marked_table_and_nothing_else(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    page, _ = quick_run
    assert page.startswith("# Before\n\n" + BEGIN)
    assert page.endswith(END + "\n\nAfter.\n")
    assert "old table" not in page
    assert page.count(BEGIN) == page.count(END) == 1


@pytest.mark.parametrize(
    "row",
    [
        pytest.param("| three gates at defaults", id="healthy"),
        *(
            pytest.param(f"| {s.label} | `{s.gate}`", id=s.name)
            for s in SCENARIOS.values()
            if s.regression is not None
        ),
    ],
)
def test_the_table_has_a_row_for_every_scenario(
    quick_run: tuple[str, dict[str, object]], row: str
) -> None:
    page, _ = quick_run
    [line] = [x for x in page.splitlines() if x.startswith(row)]
    assert line.count("|") >= 8


def test_the_json_has_every_scenario_and_the_exact_upper_bound(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    _, out = quick_run
    healthy = out["healthy"]
    assert isinstance(healthy, dict)
    assert healthy["runs"] == 20
    assert healthy["rate"] <= healthy["cp95_upper"] <= 1
    regressions = out["regressions"]
    assert isinstance(regressions, dict)
    assert set(regressions) == {n for n, s in SCENARIOS.items() if s.regression is not None}
    for r in regressions.values():
        assert r["runs"] == 3
        assert 0 <= r["power_bound"] <= 1


def test_a_gross_breach_is_rolled_back_at_the_first_check_through_engine_and_gates() -> None:
    broken = Scenario(
        "broken", "errors +50 points", Regression(Kind.ERRORS, error_points=0.5), "error-rate"
    )
    run = run_rollout(broken, 3, max_checks=5)
    assert run.phase == "RolledBack"
    assert run.rolled_back_at == 1
    assert "error-rate" in run.failed_gates


def test_a_healthy_run_checks_every_interval_until_it_ends() -> None:
    run = run_rollout(SCENARIOS["healthy"], 4, max_checks=6)
    # the first interval is the preflight of the gates' queries, before any traffic
    assert run.checks == run.intervals - 1 <= 6
    assert sum(run.verdicts["error-rate"].values()) == run.checks


@pytest.mark.parametrize(
    ("kind", "truth"),
    [
        pytest.param(Kind.ERRORS, {"error_rate": 0.025}, id="errors"),
        pytest.param(Kind.LATENCY, {"share_above": 0.02}, id="latency"),
        pytest.param(Kind.AGREEMENT, {"agreement": 0.93}, id="agreement"),
    ],
)
def test_the_traffic_for_95_percent_is_where_the_fixed_n_bound_crosses_it(
    kind: Kind, truth: dict[str, float]
) -> None:
    alpha = 0.01 / 3
    need = traffic_for_power(kind, truth, alpha, seed=1)
    assert math.isfinite(need)
    assert power_bound(kind, 3 * need, truth, alpha, seed=1) >= 0.95
    assert power_bound(kind, 3 * need * 0.9, truth, alpha, seed=1) < 0.95


def test_writing_a_section_appends_the_markers_when_a_page_has_none(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n")
    write_section(page, "table 1")
    write_section(page, "table 2")
    assert page.read_text() == f"# Page\n\n{BEGIN}\ntable 2\n{END}\n"


def test_writing_a_section_creates_a_missing_page(tmp_path: Path) -> None:
    page = tmp_path / "new.md"
    write_section(page, "table")
    assert page.read_text() == f"{BEGIN}\ntable\n{END}\n"
