"""Operator-wide limits, and a rollout that finds its stable version on the route.

The rollouts here have no gates, so they need no model servers: what is under
test is when a rollout may start and what it starts from.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout_devenv import manifests as m

from .world import World, history

pytestmark = pytest.mark.e2e

HELD: dict[str, Any] = {
    "canary": {"steps": [{"setWeight": 30}, {"pause": {"duration": "8s"}}, {"setWeight": 60}]}
}
NO_GATES: dict[str, Any] = {"interval": "5s", "metrics": []}


def test_with_a_limit_of_one_the_second_rollout_waits_in_line_until_the_first_ends(
    world: World,
) -> None:
    # Given the operator with room for one rollout at a time, and two models
    world.apply(*m.model_objects("first", world.ns), *m.model_objects("second", world.ns))
    world.operator(extra=["--max-concurrent-rollouts", "1"])
    # When one rollout starts, and then another
    world.apply(m.rollout("first", world.ns, strategy=HELD, analysis=NO_GATES))
    world.wait_phase("first", "Progressing", timeout=30)
    world.apply(m.rollout("second", world.ns, strategy=HELD, analysis=NO_GATES))
    # Then the second waits in Pending and says where it is in line, and its route is untouched
    waiting = world.wait_status(
        "second", lambda s: s.get("phase") == "Pending" and s.get("message"), 30, "waiting"
    )
    assert waiting["message"] == "waiting: 1st in line for a rollout slot (limit 1 operator-wide)"
    assert world.route_backends("second") == {"second-v1": 100}
    assert world.status("first")["phase"] in ("Progressing", "Succeeded")
    # and it starts once the first has ended, never while the first runs
    first = world.wait_phase("first", "Succeeded", timeout=60)
    second = world.wait_phase("second", "Succeeded", timeout=60)
    assert [r for r, _ in history(second)][:2] == ["Waiting", "RolloutStarted"]
    assert second["rolloutStartedAt"] >= first["history"][-1]["at"]
    assert world.reasons("second").count("Waiting") == 1


def test_a_rollout_without_spec_stable_takes_the_version_the_route_serves(world: World) -> None:
    # Given a route that sends all its traffic to v1, and a rollout that names only v2
    world.apply(*m.model_objects("adopted", world.ns))
    world.operator()
    rollout = m.rollout("adopted", world.ns, strategy=HELD, analysis=NO_GATES)
    del rollout["spec"]["stable"]
    # When it runs
    world.apply(rollout)
    # Then v1 is taken for the stable version and v2 is promoted over it
    status = world.wait_phase("adopted", "Succeeded", timeout=60)
    assert history(status)[0][0] == "StableFromRoute"
    assert status["history"][0]["message"] == (
        "stable version v1: the route sends all live traffic to adopted-v1"
    )
    assert status["stableVersion"] == "v2"
    assert world.route_backends("adopted") == {"adopted-v2": 100}


def test_a_route_split_between_versions_is_refused_with_what_was_seen(world: World) -> None:
    # Given a route that splits the model's traffic between two versions
    route = m.http_route("split", world.ns, "v1")
    route["spec"]["rules"][1]["backendRefs"] = [
        {"name": "split-v1", "port": 80, "weight": 50},
        {"name": "split-v3", "port": 80, "weight": 50},
    ]
    world.apply(*m.model_objects("split", world.ns)[:-1], route)
    world.operator()
    # When a rollout that does not name its stable version is applied
    rollout = m.rollout("split", world.ns, strategy=HELD, analysis=NO_GATES)
    del rollout["spec"]["stable"]
    world.apply(rollout)
    # Then it fails and says what the route holds, and the route is left alone
    status = world.wait_phase("split", "Failed", timeout=30)
    assert "split-v1 (weight 50), split-v3 (weight 50)" in status["message"]
    assert "set spec.stable.version" in status["message"]
    assert world.route_backends("split") == {"split-v1": 50, "split-v3": 50}
