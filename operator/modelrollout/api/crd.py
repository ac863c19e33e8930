"""Generate the ModelRollout CRD from the pydantic models.

Pydantic writes JSON Schema; the API server wants a *structural* OpenAPI v3
schema. The differences handled here:

- ``$ref``/``$defs`` are inlined (structural schemas have no references);
- ``X | None`` (``anyOf: [X, null]``) becomes ``X``: absent is how an
  optional field is spelled on the wire, we never send ``null``;
- ``title`` and other JSON-Schema-only keys are dropped;
- numeric ``exclusiveMinimum: x`` (JSON Schema 2020) becomes ``minimum: x`` with
  ``exclusiveMinimum: true`` (OpenAPI 3.0);
- ``additionalProperties: false`` is dropped (not allowed next to
  ``properties``); unknown fields are refused by the API server's strict field
  validation, which kubectl uses by default;
- the cross-field rules of the models travel as ``x-kubernetes-validations``
  (CEL), so the API server refuses what the models refuse, with the same words.

Run ``python -m modelrollout.api.crd > crds/modelrollout.io_modelrollouts.yaml``
(``make crds``).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from modelrollout.api.base import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus

_DROP = {"title", "examples", "additionalProperties", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _structural(target, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            inner = _structural(options[0], defs)
            if node.get("default", "absent") is None:
                merged.pop("default", None)
            inner.update({k: v for k, v in merged.items() if k not in _DROP})
            return _structural(inner, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 writes the bound itself; OpenAPI 3.0 a flag beside it.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    return schema


#: The longest string the API server stores in any spec field that has no bound of its own
#: (queries, templates, addresses, names): a tenant's 1 MB string is refused at apply time,
#: naming the field, instead of being carried into requests, Events and the status.
MAX_SPEC_STRING = 8192


def bound_strings(node: Any, limit: int = MAX_SPEC_STRING) -> Any:
    """Give every free string in a schema a ``maxLength`` (enums and own bounds kept)."""
    if isinstance(node, list):
        return [bound_strings(n, limit) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: bound_strings(v, limit) for k, v in node.items()}
    if out.get("type") == "string" and "enum" not in out and "maxLength" not in out:
        out["maxLength"] = limit
    return out


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec_schema = bound_strings(openapi_schema(ModelRolloutSpec))
    status_schema = openapi_schema(ModelRolloutStatus)
    spec_schema.pop("description", None)
    status_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"modelrollout.io/generated-by": "python -m modelrollout.api.crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "ml"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _column("Model", ".spec.model"),
                        _column("Stable", ".status.stableVersion"),
                        _column("Candidate", ".spec.candidate.version"),
                        _column("Phase", ".status.phase"),
                        _column("Stage", ".status.stage"),
                        _column("Step", ".status.stepIndex", "integer"),
                        _column("Weight", ".status.weights.candidate", "integer"),
                        _column("Mirror", ".status.mirrorPercent", "integer", priority=1),
                        _column("Age", ".metadata.creationTimestamp", "date"),
                        # Last and always shown: why it is paused, failed or refused,
                        # without `-o wide` or `describe`.
                        _column("Message", ".status.message"),
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Progressive delivery of one ML model: shadow, "
                            "canary or blue-green, judged on Prometheus metrics.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _column(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


def render() -> str:
    header = (
        "# Generated from the models in operator/modelrollout/api/ by `make crds`. Do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
