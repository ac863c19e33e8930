"""The operator as SREs run it: its own metrics, and several replicas sharing the work."""

from __future__ import annotations

import time

import pytest

from modelrollout_devenv import manifests as m
from modelrollout_devenv.prometheus import Target
from modelrollout_devenv.stack import wait_for

from .world import ROOT, World, history

pytestmark = pytest.mark.e2e


def test_prometheus_scrapes_the_operator_and_sees_phase_and_weight_change(world: World) -> None:
    # Given the operator, scraped by the real Prometheus
    world.model("observed")
    op = world.operator()
    world.targets.put(
        f"operator-{world.ns}", [Target(f"operator-{world.ns}", f"127.0.0.1:{op.metrics_port}")]
    )
    try:
        # When a canary runs to promotion
        world.apply(m.rollout("observed", world.ns))
        world.wait_phase("observed", "Succeeded", timeout=150)
        time.sleep(3)  # one more scrape after the end
        # Then Prometheus saw the candidate's weight go through the steps
        sel = f'namespace="{world.ns}",rollout="observed"'
        seen = world.prometheus.query(
            f"max_over_time(modelrollout_candidate_weight_percent{{{sel}}}[5m])"
        )
        assert seen, "the operator's weight gauge reached Prometheus"
        assert float(seen[0]["value"][1]) == 50
        # and the phase move from Shadowing to Succeeded
        for phase in ("Shadowing", "Progressing", "Succeeded"):
            result = world.prometheus.query(
                f'max_over_time(modelrollout_rollout_phase{{{sel},phase="{phase}"}}[5m])'
            )
            assert result, phase
            assert float(result[0]["value"][1]) == 1, phase
        decisions = world.prometheus.query(
            f'modelrollout_decisions_total{{{sel},reason="Promoted"}}'
        )
        assert decisions, "the Promoted decision is counted"
        assert float(decisions[0]["value"][1]) == 1
        verdicts = world.prometheus.query(
            f'modelrollout_gate_verdicts_total{{{sel},verdict="Pass"}}'
        )
        assert verdicts, "gate verdicts are counted"
        # and each gate's value and limit, stage by stage
        latency = world.prometheus.query(
            f'max_over_time(modelrollout_gate_value{{{sel},gate="p99-latency"}}[5m])'
        )
        assert latency, "the gate value gauge reached Prometheus"
        assert 0 < float(latency[0]["value"][1]) < 0.25
        limit = world.prometheus.query(
            f'modelrollout_gate_limit{{{sel},gate="throughput",bound="min"}}'
        )
        assert limit, "the gate limit gauge reached Prometheus"
        assert float(limit[0]["value"][1]) == 0.5
        queries = world.prometheus.query("modelrollout_prometheus_query_seconds_count")
        assert queries, "query latency is exported"
    finally:
        world.targets.drop(f"operator-{world.ns}")


def test_two_replicas_share_the_work_and_the_other_takes_over_without_repeating_a_step(
    world: World,
) -> None:
    # Given kopf's peering resources and two replicas of the operator
    world.cluster.install_crds([ROOT / "crds" / "kopf-peering.yaml"])
    world.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "modelrollout", "namespace": world.ns},
        }
    )
    world.model("shared")
    peering = ["--peering", "modelrollout", "--peering-lifetime", "10s"]
    leader = world.operator(extra=[*peering, "--priority", "200"])
    follower = world.operator(extra=[*peering, "--priority", "100"])
    strategy = {
        "canary": {
            "steps": [
                {"setWeight": 20},
                {"pause": {"duration": "10s"}},
                {"setWeight": 40},
                {"pause": {"duration": "15s"}},
                {"setWeight": 60},
                {"pause": {"duration": "5s"}},
            ]
        }
    }
    # When a rollout runs, and the acting replica stops mid-step
    world.apply(m.rollout("shared", world.ns, strategy=strategy))
    world.wait_status(
        "shared", lambda s: s.get("weights", {}).get("candidate") == 40, 90, "weight 40"
    )
    leader.stop()
    # Then the other one carries it to the end, no step repeated or skipped
    status = world.wait_phase("shared", "Succeeded", timeout=120)
    assert [w for r, w in history(status) if r == "WeightChanged"] == [20, 40, 60]
    # and only one replica acted at a time: the follower stood by until the leader left
    wait_for(lambda: "Resuming operations" in follower.log_path.read_text(), 5, "a takeover")
    reasons = world.reasons("shared")
    assert reasons.count("Promoted") == 1
    assert reasons.count("RolloutStarted") == 1
