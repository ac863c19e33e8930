"""Every message and reason the engine writes fits in a status, however long its inputs."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from modelrollout.api.crd import MAX_SPEC_STRING, crd
from modelrollout.api.status import ModelRolloutStatus
from modelrollout.engine import Observations, decide
from modelrollout.engine.bounds import MAX_TEXT, bounded, clip

from .engine_harness import T0, make_spec


@given(st.text(max_size=3000), st.integers(min_value=40, max_value=2000))
def test_a_clipped_text_fits_and_keeps_its_start(text: str, limit: int) -> None:
    out = clip(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    else:
        assert "more characters cut" in out
        kept = out[: out.index("... (")]
        assert text.startswith(kept)


def test_only_messages_and_reasons_are_clipped_at_any_depth() -> None:
    long = "x" * 5000
    status = {
        "message": long,
        "stableVersion": long,
        "conditions": [{"type": "Ready", "reason": long, "message": long}],
    }
    out = bounded(status)
    assert len(out["message"]) <= MAX_TEXT
    assert out["stableVersion"] == long
    assert len(out["conditions"][0]["reason"]) <= MAX_TEXT
    assert len(out["conditions"][0]["message"]) <= MAX_TEXT
    assert status["message"] == long  # the input is not changed


def test_a_megabyte_in_an_error_leaves_a_status_and_events_of_a_few_kilobytes() -> None:
    # Given a route whose error quotes a 1 MB name (as a tenant can make it)
    spec = make_spec()
    error = "HTTPRoute ml/" + "r" * 1_000_000 + " not found"
    status = ModelRolloutStatus()
    # When the engine decides on it, tick after tick
    for minute in range(3):
        d = decide(spec, status, Observations(traffic_error=error), T0.replace(minute=minute))
        status = ModelRolloutStatus.model_validate(d.status)
        # Then the status stays small and says what happened, and so does every Event
        assert len(json.dumps(d.status)) < 20 * MAX_TEXT
        assert status.message.startswith("HTTPRoute ml/rrr")
        assert all(len(e.message) <= MAX_TEXT for e in d.events)


def test_every_free_string_of_the_spec_has_a_bound_in_the_crd() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    unbounded: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            is_free_string = node.get("type") == "string" and "enum" not in node
            if is_free_string and not 0 < node.get("maxLength", 0) <= MAX_SPEC_STRING:
                unbounded.append(path)
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "spec")
    assert unbounded == []
