"""Sharding: N operator replicas split the ModelRollouts by a label, with no other coordination.

Each rollout carries ``modelrollout.io/shard: "<i>"``, where ``i`` is a
stable hash of its uid modulo N (sha256, not Python's salted ``hash()``, so
every replica and every restart computes the same shard). A replica started
with ``--shard I --shards N`` handles only the rollouts labelled ``I``, and
labels the unlabelled (or wrongly labelled) ones that hash to ``I``: the
label is written by the one replica that will own the rollout, so two
replicas never race for it. Kubernetes stays the only coordination engine;
kopf peering keeps standbys *within* a shard.

Each shard has its own finalizer name. kopf removes its finalizer from every
object none of its handlers match, so with one shared name a replica of
shard 0 would strip shard 1's finalizer and let a rollout be deleted without
its traffic going back to stable. When a replica takes a rollout over (a new
shard count, or going from one operator to several), it drops the other
shards' finalizers in the same patch; kopf then adds its own.

With ``--shards 1`` (the default) nothing is labelled, the one finalizer keeps
its historical name, and labels left from a sharded past are removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelrollout.api.base import GROUP

SHARD_LABEL = f"{GROUP}/shard"
FINALIZER = f"{GROUP}/finalizer"


def shard_of(uid: str, shards: int) -> int:
    """The shard a rollout belongs to: a stable hash of its uid, modulo the shard count."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def finalizer_for(shard: int, shards: int) -> str:
    """The finalizer of one shard (the historical name when there is only one)."""
    return FINALIZER if shards <= 1 else f"{FINALIZER}-{shard}"


def peering_for(name: str, shard: int, shards: int) -> str:
    """Replicas of one shard peer among themselves: one acts, the others stand by."""
    return name if shards <= 1 else f"{name}-shard-{shard}"


@dataclass(frozen=True)
class Claim:
    """The metadata patch that makes a rollout this replica's."""

    label: str | None
    """The shard label to set; None removes it."""
    finalizers: list[str] | None
    """The whole finalizer list without other shards' finalizers; None leaves it alone."""

    def patch(self) -> dict[str, object]:
        meta: dict[str, object] = {"labels": {SHARD_LABEL: self.label}}
        if self.finalizers is not None:
            meta["finalizers"] = self.finalizers
        return meta


def claim(
    *,
    uid: str,
    labels: Mapping[str, str],
    finalizers: Sequence[str],
    deleting: bool,
    shard: int,
    shards: int,
) -> Claim | None:
    """What to patch so that a rollout this replica owns is labelled for it; None: nothing.

    A rollout being deleted is left alone: Kubernetes refuses new finalizers
    on it, so taking it over would delete it without sending traffic back.
    """
    if deleting:
        return None
    if shards > 1 and shard_of(uid, shards) != shard:
        return None
    want = str(shard) if shards > 1 else None
    own = finalizer_for(shard, shards)
    foreign = [f for f in finalizers if f.startswith(FINALIZER) and f != own]
    if labels.get(SHARD_LABEL) == want and not foreign:
        return None
    kept = [f for f in finalizers if f not in foreign] if foreign else None
    return Claim(label=want, finalizers=kept)


__all__ = [
    "FINALIZER",
    "SHARD_LABEL",
    "Claim",
    "claim",
    "finalizer_for",
    "peering_for",
    "shard_of",
]
