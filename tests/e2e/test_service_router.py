"""Users without a mesh: a plain Service, its selector and the replica ratio."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import wait_for

from .world import World

pytestmark = pytest.mark.e2e

ROUTING = {"service": {"name": "plain"}}


def replicas(world: World, name: str) -> int:
    return int(world.get("deployment", name)["spec"].get("replicas", 1))


def selector(world: World) -> dict[str, Any]:
    sel: dict[str, Any] = world.get("service", "plain")["spec"]["selector"]
    return sel


def test_a_canary_through_a_plain_service_moves_by_replica_ratio_and_ends_on_the_candidate(
    world: World,
) -> None:
    # Given v1 with 4 replicas behind the one Service, and v2 with none yet
    world.model("plain", router="service", route="plain", replicas=(4, 0))
    world.operator()
    strategy = {
        "canary": {
            "steps": [
                {"setWeight": 25},
                {"pause": {"duration": "12s"}},
                {"setWeight": 50},
                {"pause": {"duration": "12s"}},
            ]
        }
    }
    world.apply(m.rollout("plain", world.ns, strategy=strategy, routing=ROUTING))
    # Then at 25% the Service spans both versions and one replica of four is v2's
    status = world.wait_status(
        "plain", lambda s: s.get("weights", {}).get("candidate") == 25, 60, "weight 25"
    )
    assert status["weightsApproximate"] is True
    assert selector(world) == {"app": "plain"}
    assert (replicas(world, "plain-v1"), replicas(world, "plain-v2")) == (3, 1)
    # and the traffic generator, reading the ready replicas, splits about the same way
    wait_for(lambda: world.stacks[0].split().get("weights"), 20, "a split")
    # and it ends with the selector pinned to v2
    world.wait_phase("plain", "Succeeded", timeout=120)
    assert selector(world) == {"app": "plain", "version": "v2"}
    assert (replicas(world, "plain-v1"), replicas(world, "plain-v2")) == (2, 2)


def test_blue_green_through_a_plain_service_switches_the_selector_and_back(
    world: World,
) -> None:
    stack = world.model("plain", router="service", route="plain", replicas=(2, 2))
    world.operator()
    strategy = {
        "blueGreen": {
            "previewDuration": "6s",
            "postPromotionDuration": "5m",
            "scaleDownDelay": "10m",
        }
    }
    analysis = {
        "interval": "6s",
        "failureLimit": 2,
        "metrics": [
            {"name": "error-rate", "errorRate": {}, "max": 0.05, "stages": ["postPromotion"]}
        ],
    }
    world.apply(m.rollout("plain", world.ns, strategy=strategy, routing=ROUTING, analysis=analysis))
    world.wait_status("plain", lambda s: s.get("phase") == "Promoting", 60, "the switch")
    assert selector(world) == {"app": "plain", "version": "v2"}
    stack.set_faults("v2", error_rate=0.5)
    world.wait_phase("plain", "RolledBack", timeout=90)
    assert selector(world) == {"app": "plain", "version": "v1"}
    assert replicas(world, "plain-v1") == 2, "v1 kept its capacity: the switch back is instant"
