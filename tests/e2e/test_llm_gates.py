"""LLM serving gates end to end: a KServe canary of a model served by a vLLM-like server.

The simulated model servers run in LLM mode (vLLM's metric names, streaming-like timing);
Prometheus scrapes them; KServe's own controller (RawDeployment mode, webhooks on
loopback) accepts every write of the InferenceService, and the traffic generator splits
requests as KServe's Serverless canary would (tests/e2e/test_kserve.py says why).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelrollout_devenv import LocalCluster
from modelrollout_devenv import manifests as m
from modelrollout_devenv.kserve_controller import KServeController
from modelrollout_devenv.stack import ModelStack, wait_for

from .conftest import ARTIFACTS
from .world import World, history

pytestmark = pytest.mark.e2e

TTFT = {"name": "ttft-p95", "timeToFirstToken": {"quantile": 0.95}, "max": 0.25}


@pytest.fixture(scope="module")
def kserve(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """KServe's controller with its webhooks, for this module's tests."""
    controller = KServeController(cluster, tmp_path_factory.mktemp("kserve"))
    try:
        controller.start()
        yield
    finally:
        if controller.process is not None and controller.log_path.exists():
            kept = ARTIFACTS / "kserve-llm"
            kept.mkdir(parents=True, exist_ok=True)
            (kept / "kserve-manager.log").write_bytes(controller.log_path.read_bytes())
        controller.stop()


def llm_canary(world: World, model: str, steps: list[dict[str, Any]], *gates: Any) -> ModelStack:
    """An InferenceService serving v1, LLM servers for v1 and v2, a canary with ``gates``."""
    uri = f"gs://models/{model}/{{version}}"
    world.apply(
        m.serving_runtime(world.ns),
        m.inference_service(model, world.ns, uri.format(version="v1")),
    )
    wait_for(
        lambda: any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (world.get("inferenceservice", model).get("status") or {}).get(
                "conditions", []
            )
        ),
        90,
        f"InferenceService {model} Ready",
    )
    stack = world.model(model, objects=False, router="kserve", kserve_storage_uri=uri, llm=True)
    world.operator()
    world.apply(
        m.rollout(
            model,
            world.ns,
            strategy={"canary": {"steps": steps}},
            routing={"kserve": {"inferenceService": model, "storageUriTemplate": uri}},
            analysis={"interval": "4s", "failureLimit": 1, "metrics": list(gates)},
        )
    )
    return stack


def gate_results(status: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        r for run in status.get("analysisLedger", []) for r in run["results"] if r["metric"] == name
    ]


def test_a_kserve_canary_whose_time_to_first_token_regresses_at_25_percent_is_rolled_back(
    world: World, kserve: None
) -> None:
    # Given a KServe canary of an LLM holding at 25%, gated on p95 TTFT <= 0.25 s
    stack = llm_canary(
        world, "chat", [{"setWeight": 25}, {"pause": {"duration": "5m"}}, {"setWeight": 50}], TTFT
    )
    world.wait_status("chat", lambda s: s.get("weights", {}).get("candidate") == 25, 60, "25%")
    wait_for(lambda: stack.split()["shares"].get("chat-v2") == 25.0, 10, "25% on v2")
    # When v2's first token comes 400 ms later (its p95 was about 0.15 s)
    stack.set_faults("v2", ttft_ms=400)
    # Then the TTFT gate fails and KServe's last rolled-out revision takes everything back
    status = world.wait_phase("chat", "RolledBack", timeout=120)
    assert status["stableVersion"] == "v1"
    failed = [r for r in gate_results(status, "ttft-p95") if r["verdict"] == "Fail"]
    assert failed, status.get("analysisLedger")
    assert failed[-1]["value"] > 0.25
    assert "time to first token" in failed[-1]["reason"]
    assert world.get("inferenceservice", "chat")["spec"]["predictor"]["canaryTrafficPercent"] == 0
    wait_for(lambda: stack.split()["shares"] == {"chat-v1": 100.0}, 10, "all traffic on v1")
    assert [w for r, w in history(status) if r == "WeightChanged"] == [25]


def test_a_healthy_llm_canary_passes_its_serving_gates_and_is_promoted(
    world: World, kserve: None
) -> None:
    # Given a KServe canary gated on TTFT, token gaps, tokens per second and cost
    llm_canary(
        world,
        "assist",
        [
            {"setWeight": 25},
            {"pause": {"duration": "12s"}},
            {"setWeight": 50},
            {"pause": {"duration": "12s"}},
        ],
        TTFT,
        {"name": "itl-p99", "interTokenLatency": {"quantile": 0.99}, "max": 0.075},
        {"name": "tokens", "outputTokensPerSecond": {}, "min": 50},
        {"name": "cost", "costPerThousandTokens": {"pricePerGpuHour": 2, "gpus": 1}, "max": 0.01},
    )
    # Then it is promoted, every LLM gate having passed on the candidate's own metrics
    status = world.wait_phase("assist", "Succeeded", timeout=180)
    assert status["stableVersion"] == "v2"
    for name in ("ttft-p95", "itl-p99", "tokens", "cost"):
        verdicts = {r["verdict"] for r in gate_results(status, name)}
        assert "Pass" in verdicts, (name, gate_results(status, name))
        assert "Fail" not in verdicts, (name, gate_results(status, name))
