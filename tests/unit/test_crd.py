"""The committed CRD is the one the models generate, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api import crd
from modelrollout.api.spec import ModelRolloutSpec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "modelrollout.io_modelrollouts.yaml"


def test_the_committed_crd_is_what_the_models_generate() -> None:
    assert COMMITTED.read_text() == crd.render(), (
        "crds/ and the pydantic models disagree: run `make crds` and commit the result"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if "items" in node:
            out.extend(_walk(node["items"], f"{path}[]"))
    return out


def test_every_node_of_the_schema_is_structural() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        assert "type" in node or "x-kubernetes-preserve-unknown-fields" in node, path
        assert not ("additionalProperties" in node and "properties" in node), path


def test_the_crd_has_status_printer_columns_and_the_short_name() -> None:
    version = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Stage", "Weight", "Step", "Age"} <= columns
    last = version["additionalPrinterColumns"][-1]
    assert last == {"name": "Message", "type": "string", "jsonPath": ".status.message"}
    assert crd.crd()["spec"]["names"]["shortNames"] == ["mro"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            ".spec.trafficRouting", "exactly one of gatewayAPI, istio, service", id="router"
        ),
        pytest.param(".spec.strategy", "exactly one of canary, blueGreen", id="strategy"),
        pytest.param(".spec.strategy.canary.steps[]", "exactly one of setWeight", id="step"),
        pytest.param(".spec", "shadow needs a router that can mirror", id="shadow-router"),
        pytest.param(".spec", "KServe cannot mirror", id="kserve-no-mirror"),
        pytest.param(
            ".spec.trafficRouting.kserve",
            "at least one of storageUriTemplate",
            id="kserve-template",
        ),
        pytest.param(
            ".spec.analysis.metrics[].drift",
            "the categories of a counter have no order",
            id="ks-on-a-counter",
        ),
    ],
)
def test_cross_field_rules_travel_to_the_api_server_as_cel(path: str, expected: str) -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = dict(_walk(schema))
    rules = nodes[path].get("x-kubernetes-validations", [])
    assert any(expected in r["message"] for r in rules), rules


def test_weights_are_bounded_and_durations_have_a_pattern() -> None:
    nodes = dict(_walk(crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    weight = nodes[".spec.strategy.canary.steps[].setWeight"]
    assert (weight["minimum"], weight["maximum"]) == (0, 100)
    assert "pattern" in nodes[".spec.strategy.shadow.duration"]


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_rollout_is_valid_for_the_models(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    rollouts = [d for d in docs if d["kind"] == "ModelRollout"]
    assert rollouts, f"{path.name} has no ModelRollout"
    for doc in rollouts:
        ModelRolloutSpec.model_validate(doc["spec"])
