"""Sharding: N operator replicas split the ModelRollouts by a label, with no other coordination.

Each rollout carries ``modelrollout.io/shard: "<i>"``, where ``i`` is a
stable hash of its uid modulo N (sha256, not Python's salted ``hash()``, so
every replica and every restart computes the same shard). A replica started
with ``--shard I --shards N`` watches only the rollouts labelled ``I``: the
label selector goes to the API server, so a replica lists, holds and
processes its own share and nothing else. Kubernetes stays the only
coordination engine; kopf peering keeps standbys *within* a shard.

Who writes the label: a new rollout has none, so no replica's watch shows it.
Each replica lists the unlabelled rollouts every few seconds
(:data:`UNLABELLED`, served from the API server's cache) and labels those that
hash to its own shard (:func:`unclaimed`): the label is written by the shard
that will own the rollout. A rollout labelled ``I`` that hashes elsewhere (the
shard count changed) is relabelled by replica ``I``, which sees it; the
new label takes it out of ``I``'s watch and into its owner's.

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


#: The label selector of the rollouts no shard has labelled yet.
UNLABELLED = f"!{SHARD_LABEL}"


def selector_for(shard: int, shards: int) -> str | None:
    """The label selector of one replica's watch (None with one shard: every rollout)."""
    return f"{SHARD_LABEL}={shard}" if shards > 1 else None


def claim(
    *,
    uid: str,
    labels: Mapping[str, str],
    finalizers: Sequence[str],
    deleting: bool,
    shard: int,
    shards: int,
) -> Claim | None:
    """What to patch so that a rollout is labelled for the shard it hashes to; None: nothing.

    Run by the replica that sees the rollout. The owner also drops the other
    shards' finalizers. Another shard's rollout is only relabelled (handed
    over), never given finalizers: that is its owner's to do.

    A rollout being deleted is left alone: Kubernetes refuses new finalizers
    on it, so taking it over would delete it without sending traffic back.
    """
    if deleting:
        return None
    owner = shard_of(uid, shards)
    if shards > 1 and owner != shard:
        wanted = str(owner)
        return Claim(label=wanted, finalizers=None) if labels.get(SHARD_LABEL) != wanted else None
    want = str(shard) if shards > 1 else None
    own = finalizer_for(shard, shards)
    foreign = [f for f in finalizers if f.startswith(FINALIZER) and f != own]
    if labels.get(SHARD_LABEL) == want and not foreign:
        return None
    kept = [f for f in finalizers if f not in foreign] if foreign else None
    return Claim(label=want, finalizers=kept)


def unclaimed(
    items: Sequence[Mapping[str, object]], *, shard: int, shards: int
) -> list[tuple[str, str, Claim]]:
    """Of the unlabelled rollouts listed, those this shard owns, with the patch that
    labels each: ``(namespace, name, claim)``. The rest is for their own shards."""
    out: list[tuple[str, str, Claim]] = []
    for item in items:
        meta = item.get("metadata")
        if not isinstance(meta, Mapping) or shards <= 1:
            continue
        uid, labels = str(meta.get("uid") or ""), meta.get("labels") or {}
        if not uid or shard_of(uid, shards) != shard or not isinstance(labels, Mapping):
            continue
        wanted = claim(
            uid=uid,
            labels=labels,
            finalizers=list(meta.get("finalizers") or []),
            deleting=meta.get("deletionTimestamp") is not None,
            shard=shard,
            shards=shards,
        )
        if wanted is not None:
            out.append((str(meta.get("namespace") or "default"), str(meta["name"]), wanted))
    return out


__all__ = [
    "FINALIZER",
    "SHARD_LABEL",
    "UNLABELLED",
    "Claim",
    "claim",
    "finalizer_for",
    "peering_for",
    "selector_for",
    "shard_of",
    "unclaimed",
]
