"""Bad input at scale: random ModelRollout manifests against the real API server.

Hypothesis builds manifests from a valid one and spoils one or more fields each time:
wrong types, huge numbers, unicode, 1 MB strings, unknown fields, query templates with
placeholders nobody defines. Each goes to the real API server (strict field validation,
as ``kubectl apply`` sends it) with the operator running. Then either the API server
refused it, naming the field, or it was stored and the operator reported on it in the
status (Failed with a message, or a phase that says where it is; never silence), while a
healthy rollout applied alongside still runs to promotion and the operator never
restarts. Run this file alone: it is bounded to 150 cases, under three minutes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelrollout_devenv import manifests as m
from modelrollout_devenv.stack import wait_for

from .test_faults import record, starts
from .world import World

pytestmark = pytest.mark.e2e

CASES = 150
GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelrollouts"

#: Fields of a valid spec that the strategy spoils (paths under ``spec``).
FIELDS: list[tuple[str | int, ...]] = [
    ("model",),
    ("stable", "version"),
    ("candidate", "version"),
    ("trafficRouting", "gatewayAPI", "httpRoute"),
    ("trafficRouting", "gatewayAPI"),
    ("strategy", "canary", "steps", 0, "setWeight"),
    ("strategy", "canary", "steps", 1, "pause", "duration"),
    ("strategy", "canary", "steps"),
    ("strategy", "shadow"),
    ("analysis", "interval"),
    ("analysis", "failureLimit"),
    ("analysis", "inconclusiveLimit"),
    ("analysis", "metrics", 0, "name"),
    ("analysis", "metrics", 0, "max"),
    ("analysis", "metrics", 0, "query"),
    ("analysis", "metrics"),
    ("analysis", "prometheus", "address"),
    ("paused",),
    ("automation",),
    ("unknownField",),
    ("analysis", "metrics", 0, "notAField"),
]

big_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**300]),
    st.floats(allow_nan=False, allow_infinity=False),
)
templates = st.builds(
    lambda name, junk: f'sum(rate(x{{version="{{{{{name}}}}}"}}[1m])){junk}',
    st.sampled_from(["versoin", "model", "nope", " spaced ", "candidateVersion", "stage"]),
    st.sampled_from(["", " / 0", "{{", "}}", ")", " or vector(1)"]),
)
values = st.one_of(
    big_numbers,
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=20),
    st.just("x" * 1_000_000),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    templates,
)
spoils = st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=3)


def spoiled(base: dict[str, Any], changes: list[tuple[tuple[str | int, ...], Any]]) -> Any:
    """``base`` with each path set to a value (missing parents are made as dicts)."""
    obj = copy.deepcopy(base)
    for path, value in changes:
        node: Any = obj["spec"]
        for key in path[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(key, {})
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            last = path[-1]
            fits = isinstance(node, list) and isinstance(last, int) and last < len(node)
            if isinstance(node, dict) or fits:
                node[last] = value
    return obj


def names_a_field(message: str, changes: list[tuple[tuple[str | int, ...], Any]]) -> bool:
    """The refusal points at a spoiled field: by its name or its parent's."""
    for path, _ in changes:
        names = [str(k) for k in path if isinstance(k, str)]
        if any(n in message for n in names[-2:]):
            return True
    return False


def test_random_bad_manifests_are_refused_by_name_or_reported_and_never_stall_others(
    world: World,
) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    # Given a healthy rollout, the operator, and a route shared by whatever gets in
    world.model("healthy")
    op = world.operator(tick="2s")
    world.apply(m.http_route("bad-input", world.ns, "v1"))
    api = client.CustomObjectsApi(world.cluster.api_client())
    base = m.rollout("bad-input", world.ns)
    world.apply(m.rollout("healthy", world.ns))
    refused: list[str] = []
    accepted: list[str] = []
    unnamed: list[str] = []

    # When random spoiled manifests are applied
    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spoils)
    # Once seen in CI: a megabyte in a field the status quotes made every status write
    # too large for the API server (now refused at apply time, and messages are clipped).
    @example([(("analysis", "prometheus", "address"), "x" * 1_000_000)])
    @example([(("analysis", "metrics", 0, "query"), "x" * 1_000_000)])
    @example([(("trafficRouting", "gatewayAPI", "httpRoute"), "x" * 1_000_000)])
    def apply_one(changes: list[tuple[tuple[str | int, ...], Any]]) -> None:
        obj = spoiled(base, changes)
        name = f"bad-{len(refused) + len(accepted):03d}"
        obj["metadata"]["name"] = name
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, world.ns, PLURAL, obj, field_validation="Strict"
            )
        except ApiException as exc:
            message = str(json.loads(exc.body).get("message", "")) if exc.body else ""
            refused.append(name)
            if exc.status not in (400, 413, 422) or not names_a_field(message, changes):
                unnamed.append(f"{exc.status}: {message[:300]}")
            return
        accepted.append(name)

    apply_one()

    # Then each refusal named a field
    assert not unnamed, unnamed[:5]

    # and every stored one has a status that says where it is
    def reported(name: str) -> dict[str, Any] | None:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, world.ns, PLURAL, name)
        status = obj.get("status") or {}
        if not status.get("phase"):
            return None
        if status["phase"] in ("Pending", "Paused", "Failed") and not status.get("message"):
            return None
        return status

    phases: dict[str, int] = {}
    for name in accepted:
        status = wait_for(lambda n=name: reported(n), 60, f"{name} reported in its status")
        phases[status["phase"]] = phases.get(status["phase"], 0) + 1
    # and the healthy rollout alongside was not held up, nor the operator crashed
    world.wait_phase("healthy", "Succeeded", timeout=180)
    assert op.process is not None
    assert op.process.running
    assert starts(op) == 1
    record(
        "bad-input",
        cases=len(refused) + len(accepted),
        refused_by_the_api_server=len(refused),
        accepted_and_reported=len(accepted),
        phases_of_accepted=phases,
    )
