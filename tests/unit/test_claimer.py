"""The claimer's shell: what it lists, what it patches, and which namespaces it looks in."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout.operator.claimer import Claimer, namespace_matches
from modelrollout.operator.sharding import SHARD_LABEL, UNLABELLED, shard_of


def _item(uid: str, namespace: str = "ml") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": namespace, "name": f"r-{uid}"}}


class FakeApi:
    """CustomObjectsApi as far as the claimer uses it: records calls, serves ``items``."""

    def __init__(self, items: list[dict[str, Any]], fail: dict[str, int] | None = None) -> None:
        self.items, self.fail = items, fail or {}
        self.lists: list[tuple[str | None, str, str]] = []
        self.patches: list[tuple[str, str, dict[str, Any], str]] = []

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                      plural: str, *, label_selector: str,
                                      resource_version: str) -> dict[str, Any]:  # fmt: skip
        self.lists.append((namespace, label_selector, resource_version))
        return {"items": [i for i in self.items if i["metadata"]["namespace"] == namespace]}

    def list_cluster_custom_object(
        self, group: str, version: str, plural: str, *, label_selector: str, resource_version: str
    ) -> dict[str, Any]:
        self.lists.append((None, label_selector, resource_version))
        return {"items": self.items}

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                       plural: str, name: str, body: dict[str, Any], *,
                                       field_manager: str) -> None:  # fmt: skip
        if name in self.fail:
            raise ApiException(status=self.fail[name], reason="injected")
        self.patches.append((namespace, name, body, field_manager))


UIDS = [f"uid-{i}" for i in range(12)]


def test_a_round_lists_only_the_unlabelled_from_the_cache_and_labels_its_own() -> None:
    api = FakeApi([_item(u) for u in UIDS] + [_item("x", namespace="other")])
    claimer = Claimer(shard=1, shards=3, namespaces=["ml"], field_manager="fm", api=api)
    assert claimer.once() == len([u for u in UIDS if shard_of(u, 3) == 1])
    assert api.lists == [("ml", UNLABELLED, "0")]
    assert {name for _, name, _, _ in api.patches} == {
        f"r-{u}" for u in UIDS if shard_of(u, 3) == 1
    }
    assert all(
        body == {"metadata": {"labels": {SHARD_LABEL: "1"}}} and fm == "fm"
        for _, _, body, fm in api.patches
    )


def test_with_namespace_globs_it_lists_cluster_wide_and_keeps_the_matching() -> None:
    items = [_item(u, namespace=ns) for u in UIDS for ns in ("team-a", "kube-system")]
    api = FakeApi(items)
    claimer = Claimer(shard=0, shards=2, namespaces=["team-*"], field_manager="fm", api=api)
    claimer.once()
    assert api.lists == [(None, UNLABELLED, "0")]
    assert api.patches
    assert {ns for ns, _, _, _ in api.patches} == {"team-a"}


def test_a_rollout_gone_meanwhile_is_skipped_and_other_errors_do_not_stop_the_round() -> None:
    mine = [u for u in UIDS if shard_of(u, 2) == 0]
    api = FakeApi([_item(u) for u in mine], fail={f"r-{mine[0]}": 404, f"r-{mine[1]}": 403})
    claimer = Claimer(shard=0, shards=2, namespaces=["ml"], field_manager="fm", api=api)
    assert claimer.once() == len(mine) - 2


@pytest.mark.parametrize(
    ("namespace", "patterns", "expected"),
    [
        ("ml", [], True),
        ("team-a", ["team-*"], True),
        ("ml", ["team-*"], False),
        ("team-a", ["team-*", "!team-a"], False),
        ("ml", ["!kube-*"], True),
        ("kube-system", ["!kube-*"], False),
    ],
)
def test_namespace_globs_follow_kopf(namespace: str, patterns: list[str], expected: bool) -> None:
    assert namespace_matches(namespace, patterns) is expected
