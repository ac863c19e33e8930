"""ML gates end to end: a model can be fast, error-free and wrong.

Real model servers, real Prometheus, the operator as a process. Each test
switches one kind of fault on the candidate and checks that the gate made for
it, and only that gate, decides.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout_devenv import manifests as m

from .world import World

pytestmark = pytest.mark.e2e

STRATEGY = {
    "shadow": {"mirrorPercent": 100, "duration": "20s"},
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "12s"}}]},
}


def analysis(*extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "interval": "6s",
        "failureLimit": 2,
        "inconclusiveLimit": 4,
        "metrics": [
            {"name": "p99-latency", "latency": {"quantile": 0.99}, "max": 0.25},
            {"name": "error-rate", "errorRate": {}, "max": 0.05},
            *extra,
        ],
    }


INPUT_DRIFT = {
    "name": "input-drift",
    "drift": {
        "metric": "model_input_feature",
        "labels": {"feature": "f0"},
        "method": "psi",
        "window": "30s",
        "minSamples": 200,
    },
    "max": 0.2,
}
AGREEMENT = {
    "name": "shadow-agreement",
    "agreement": {"confidence": 0.95, "maxUnpairedFraction": 0.2, "minPairs": 100, "window": "30s"},
    "min": 0.9,
    "stages": ["shadow"],
}


def results(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in status["lastAnalysis"]["results"]}


def test_shifted_inputs_are_rolled_back_by_the_drift_gate_alone(world: World) -> None:
    # Given v2 whose preprocessing shifts feature f0 (latency and errors are fine)
    world.model("drift", faults={"v2": {"input_shift": 1.0}})
    world.operator()
    # When it is rolled out with an input-drift gate beside latency and errors
    world.apply(m.rollout("drift", world.ns, strategy=STRATEGY, analysis=analysis(INPUT_DRIFT)))
    # Then the drift gate rolls it back, while the other gates do not fail (each has
    # passed or is still gathering evidence: which comes first is a race of evidence)
    status = world.wait_phase("drift", "RolledBack", timeout=120)
    last = results(status)
    assert last["input-drift"]["verdict"] == "Fail"
    assert last["input-drift"]["value"] > 0.2
    assert last["input-drift"]["samples"] >= 200
    assert last["p99-latency"]["verdict"] in ("Pass", "Inconclusive")
    assert last["error-rate"]["verdict"] in ("Pass", "Inconclusive")
    assert "input-drift" in status["message"]
    assert "p99-latency" not in status["message"]


def test_a_candidate_that_disagrees_with_stable_in_shadow_never_gets_live_traffic(
    world: World,
) -> None:
    # Given v2 that answers differently on a third of the requests
    world.model("disagree", faults={"v2": {"prediction_skew": 0.35}})
    world.operator()
    world.apply(m.rollout("disagree", world.ns, strategy=STRATEGY, analysis=analysis(AGREEMENT)))
    # Then the agreement gate stops it in shadow
    status = world.wait_phase("disagree", "RolledBack", timeout=120)
    assert all(h.get("weight", 0) == 0 for h in status["history"])
    agreement = results(status)["shadow-agreement"]
    assert agreement["verdict"] == "Fail"
    assert agreement["value"] < 0.9  # the agreement rate; its CS lies wholly below 0.9
    assert agreement["upper"] < 0.9
    assert world.route_backends("disagree") == {"disagree-v1": 100, "disagree-v2": 0}


def test_a_healthy_candidate_with_ordinary_noise_is_promoted(world: World) -> None:
    # Given a healthy v2 (its answers differ from v1's on a few percent of inputs)
    world.model("healthy")
    world.operator()
    world.apply(
        m.rollout("healthy", world.ns, strategy=STRATEGY, analysis=analysis(INPUT_DRIFT, AGREEMENT))
    )
    # Then every gate passes and it is promoted
    status = world.wait_phase("healthy", "Succeeded", timeout=150)
    shadow_checks = [r for r in status["analysisLedger"] if r["stage"] == "shadow"]
    assert shadow_checks, "gates were checked in shadow"
    agreement = [
        res
        for run in shadow_checks
        for res in run["results"]
        if res["metric"] == "shadow-agreement" and res["verdict"] == "Pass"
    ]
    assert agreement, "agreement passed at least once in shadow"
    assert agreement[-1]["value"] >= 0.9
