"""Label new rollouts for their shard: the shell around ``sharding.unclaimed``.

With ``--shards N`` a replica's watch selects ``modelrollout.io/shard=<its shard>``
on the API server, so a rollout nobody has labelled yet is in no replica's
watch. Every few seconds each replica lists the unlabelled rollouts
(``!modelrollout.io/shard``, from the API server's watch cache: usually an
empty list) and labels the ones that hash to its own shard; its watch then
delivers them. A new rollout waits at most one round (:data:`CLAIM_EVERY`)
before its replica sees it.

Standbys list too: the label they would write is the same, and a patch that
changes nothing is not written.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from modelrollout.api.base import GROUP, PLURAL, VERSION
from modelrollout.operator.sharding import UNLABELLED, unclaimed

__all__ = ["CLAIM_EVERY", "Claimer", "namespace_matches", "plain_names"]

log = logging.getLogger("modelrollout")

#: Seconds between two lists of the unlabelled rollouts.
CLAIM_EVERY = 2.0


def plain_names(namespaces: Sequence[str]) -> bool:
    """``--namespace`` values that are all plain names (no glob, no ``!``): nothing to
    discover, each namespace can be asked on its own."""
    return bool(namespaces) and not any(set(ns) & set("*?[!") for ns in namespaces)


def namespace_matches(namespace: str, patterns: Sequence[str]) -> bool:
    """kopf's ``--namespace`` globs: any pattern matches and no ``!pattern`` does."""
    if not patterns:
        return True
    keep = [p for p in patterns if not p.startswith("!")]
    drop = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in drop):
        return False
    return not keep or any(fnmatch.fnmatchcase(namespace, p) for p in keep)


class Claimer:
    def __init__(
        self,
        *,
        shard: int,
        shards: int,
        namespaces: Sequence[str],
        field_manager: str,
        every: float = CLAIM_EVERY,
        api: Any = None,
    ) -> None:
        if api is None:
            from kubernetes import client

            api = client.CustomObjectsApi()
        self.api, self.shard, self.shards = api, shard, shards
        self.namespaces, self.field_manager, self.every = list(namespaces), field_manager, every

    def _unlabelled(self) -> list[dict[str, Any]]:
        if plain_names(self.namespaces):
            items: list[dict[str, Any]] = []
            for ns in self.namespaces:
                got = self.api.list_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, label_selector=UNLABELLED, resource_version="0"
                )
                items += got.get("items") or []
            return items
        got = self.api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=UNLABELLED, resource_version="0"
        )
        return [
            item
            for item in got.get("items") or []
            if namespace_matches(
                str((item.get("metadata") or {}).get("namespace")), self.namespaces
            )
        ]

    def once(self) -> int:
        """One list and the patches it calls for; how many rollouts were labelled."""
        from kubernetes.client.exceptions import ApiException

        labelled = 0
        for namespace, name, claim in unclaimed(
            self._unlabelled(), shard=self.shard, shards=self.shards
        ):
            try:
                self.api.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name,
                    {"metadata": claim.patch()}, field_manager=self.field_manager,
                )  # fmt: skip
                labelled += 1
            except ApiException as exc:
                if exc.status != 404:  # deleted meanwhile: nothing to own
                    log.warning("%s/%s: cannot label for shard %d: %s", namespace, name,
                                self.shard, exc.reason)  # fmt: skip
        return labelled

    async def run(self) -> None:
        """A round every ``every`` seconds until cancelled; a failed round is retried."""
        while True:
            try:
                await asyncio.to_thread(self.once)
            except Exception as exc:  # the API server may be away; the next round retries
                log.warning("cannot list unlabelled rollouts: %s", exc)
            await asyncio.sleep(self.every)
