"""The kopf layer's own pieces that need no cluster."""

from __future__ import annotations

from typing import Any

import kopf

from modelrollout.operator.handlers import DigestDiffBaseStorage


def body(spec: dict[str, Any]) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": "fd", "namespace": "ml", "annotations": {}},
            "spec": spec,
        }
    )


def test_the_last_handled_configuration_is_a_small_digest_even_of_a_megabyte_spec() -> None:
    storage = DigestDiffBaseStorage(prefix="modelrollout.io", key="last-handled-configuration")
    huge = storage.build(body=body({"model": "x" * 1_000_000}))
    patch = kopf.Patch()
    storage.store(body=body({}), patch=patch, essence=huge)
    stored = patch["metadata"]["annotations"]
    assert any(k.endswith("last-handled-configuration") for k in stored)
    assert sum(len(v or "") for v in stored.values()) < 500  # capped at 256 KiB in all


def test_the_digest_changes_with_the_spec_and_only_with_it() -> None:
    storage = DigestDiffBaseStorage(prefix="modelrollout.io", key="last-handled-configuration")
    one = storage.build(body=body({"model": "a"}))
    assert storage.build(body=body({"model": "a"})) == one
    assert storage.build(body=body({"model": "b"})) != one
