from __future__ import annotations

from typing import Any

import pytest

from modelrollout.operator.patching import merge_patch


def apply(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = apply(out[k], v)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({"a": 1}, {"a": 1}, id="same"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, id="removed-key"),
        pytest.param({"w": {"s": 90, "c": 10}}, {"w": {"s": 75, "c": 25}}, id="nested"),
        pytest.param({"h": [1, 2]}, {"h": [1, 2, 3]}, id="list-replaced"),
        pytest.param({}, {"phase": "Progressing", "w": {"c": 5}}, id="from-empty"),
    ],
)
def test_applying_the_patch_gives_the_new_document(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    patch = merge_patch(old, new)
    assert apply(old, patch) == new
    assert (patch == {}) == (old == new)
