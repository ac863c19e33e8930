"""The fast guard against the real Prometheus: a breach between checks is rolled back at once.

The rollouts here check once a minute and roll back after three failed checks in a
row, so the scheduled checks alone would take minutes. The guard's batched queries
(``label_replace`` ... ``or`` ..., one per gate kind) must parse and answer in a real
Prometheus, and the breach must be acted on before the first scheduled check after it.
Decision lag is measured in ``make bench-guard`` (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import time
from typing import Any

from modelrollout_devenv import manifests as m

from .world import World

SLOW_CHECKS: dict[str, Any] = {
    "interval": "1m",
    "failureLimit": 3,
    "metrics": [
        {"name": "errors", "errorRate": {}, "max": 0.05},
        {"name": "p99", "latency": {"quantile": 0.99}, "max": 0.5},
    ],
}
HOLD_AT_20: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 50}]}
}


def weight_is(w: int) -> Any:
    return lambda s: s.get("weights", {}).get("candidate") == w


def test_a_breach_between_checks_is_rolled_back_by_the_guard_before_the_next_check(
    world: World,
) -> None:
    # Given two canaries at 20% whose gates are checked once a minute
    stacks = {name: world.model(name) for name in ("calm", "breaks")}
    op = world.operator(extra=["--guard-interval", "1s"])
    for name in stacks:
        world.apply(m.rollout(name, world.ns, strategy=HOLD_AT_20, analysis=SLOW_CHECKS))
    for name in stacks:
        world.wait_status(name, weight_is(20), 60, "weight 20")
    time.sleep(5)  # some healthy traffic first: the test runs on counts since the stage start
    # When one candidate starts failing every request
    stacks["breaks"].set_faults("v2", error_rate=1.0)
    broke = time.monotonic()
    # Then the guard rolls it back long before the next scheduled check (a minute away)
    status = world.wait_phase("breaks", "RolledBack", timeout=45)
    assert time.monotonic() - broke < 45
    assert status["message"].startswith("rolled back by the fast guard: gate errors")
    assert "shown outside the limit" in status["message"]
    assert world.route_backends("breaks") == {"breaks-v1": 100, "breaks-v2": 0}
    assert status["consecutiveFailures"] == 0, "no scheduled check had failed"
    [guard_run] = [
        run for run in status["analysisLedger"]
        if any(r["reason"].startswith("fast guard: ") for r in run["results"])
    ]  # fmt: skip
    assert guard_run["verdict"] == "Fail"
    assert "RolledBack" in world.reasons("breaks")
    # and the healthy one, looked at by the same batched queries, runs on
    calm = world.status("calm")
    assert calm["phase"] != "RolledBack"
    assert calm["weights"]["candidate"] == 20
    # and the operator says how many rounds it ran, over both rollouts
    metrics = op.metrics()
    assert "modelrollout_guard_findings_total 1.0" in metrics
    rounds = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("modelrollout_guard_round_seconds_count")
    ]
    assert rounds
    assert rounds[0] >= 5
