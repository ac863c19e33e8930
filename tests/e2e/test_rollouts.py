"""The operator as a real process, against the real API server and a real Prometheus.

Each test reads as Given / When / Then. Manifests are applied with kubectl,
model servers export real metrics that Prometheus scrapes every second, and
the traffic generator splits requests as the HTTPRoute says at that moment.
"""

from __future__ import annotations

import pytest

from modelrollout.devenv import manifests as m

from .world import World, history

pytestmark = pytest.mark.e2e


def test_a_healthy_candidate_goes_through_shadow_and_every_step_to_promotion(world: World) -> None:
    # Given a model with v1 serving and v2 healthy, and the operator running
    world.model("fraud")
    world.operator()
    # When a rollout with a shadow stage and two canary steps is applied
    world.apply(m.rollout("fraud", world.ns))
    # Then v2 is first mirrored, never weighted, while in shadow
    shadow = world.wait_status("fraud", lambda s: s.get("stage") == "shadow", 30, "shadow")
    assert shadow["weights"]["candidate"] == 0
    assert world.route_mirror("fraud") == 100
    assert world.route_backends("fraud").get("fraud-v2", 0) == 0
    # and it ends promoted with all traffic on v2
    status = world.wait_phase("fraud", "Succeeded", timeout=150)
    assert status["stableVersion"] == "v2"
    assert world.route_backends("fraud") == {"fraud-v2": 100}
    assert world.route_mirror("fraud") == 0
    # and the steps and the Events came in order
    assert [w for r, w in history(status) if r == "WeightChanged"] == [25, 50]
    reasons = [r for r in world.reasons("fraud") if r != "AnalysisInconclusive"]
    assert reasons == ["RolloutStarted", "ShadowPassed", "WeightChanged", "WeightChanged", "Promoted"]
    # and the route's unrelated rule is untouched
    assert world.get("httproute", "fraud")["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "docs-site", "port": 80, "weight": 1}
    ]
