"""Who may start a rollout now: ``--max-concurrent-rollouts`` and its per-namespace twin.

A pure computation over a summary of every rollout the operator serves (the
shell keeps one in a kopf index). A rollout *holds* a slot from its start
until it ends (Shadowing, Progressing, Paused, Promoting); one that has a new
candidate to start *waits* for a slot. Waiting rollouts are admitted in the
order they started to wait (``status.waitingSince``, which the engine writes
the first time it holds one back; one that has not waited yet comes after
them, by creation time), each while both limits have room; one held back by
its namespace's limit does not block a rollout of another namespace.

Why the order of waiting and not of creation: with GitOps one ModelRollout
object lives for years and gets a new candidate every release, so its
creation time says nothing about how long its release has waited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelrollout.engine.types import Admission

#: Phases in which a rollout holds a slot.
HOLDING = frozenset({"Shadowing", "Progressing", "Paused", "Promoting"})


@dataclass(frozen=True)
class Slot:
    """One rollout as admission sees it."""

    namespace: str
    name: str
    holds: bool
    waits: bool
    order: tuple[int, str]
    """Sort key in the line: (0, waitingSince) once it waited, else (1, creationTimestamp)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def summarize(body: Mapping[str, Any]) -> Slot:
    """A Slot from a raw ModelRollout (as the index stores it)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    wanted = (spec.get("candidate") or {}).get("version")
    stable = status.get("stableVersion") or (spec.get("stable") or {}).get("version")
    holds = phase in HOLDING
    waits = (
        not holds and bool(wanted) and wanted != status.get("candidateVersion") and wanted != stable
    )
    since = status.get("waitingSince")
    order = (0, str(since)) if since else (1, str(meta.get("creationTimestamp") or ""))
    return Slot(str(meta.get("namespace") or ""), str(meta.get("name") or ""), holds, waits, order)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_message(a: Admission) -> str:
    """What a held-back rollout says in status.message."""
    return f"waiting: {_ordinal(a.position)} in line for a rollout slot (limit {a.limit} {a.scope})"


def admit(
    me: Slot,
    others: Iterable[Slot],
    *,
    limit: int | None,
    per_namespace: int | None,
) -> Admission | None:
    """May ``me`` start now? None when no limit is set (every start is admitted).

    ``me`` is treated as waiting (it asks because it has something to start);
    ``others`` may include a stale copy of ``me``, which is left out.
    """
    if not limit and not per_namespace:
        return None
    if me.holds:
        return Admission(admitted=True)
    rest = [s for s in others if s.key != me.key]
    used = sum(s.holds for s in rest)
    used_ns: dict[str, int] = {}
    for s in rest:
        if s.holds:
            used_ns[s.namespace] = used_ns.get(s.namespace, 0) + 1
    line = sorted([*(s for s in rest if s.waits), me], key=lambda s: (s.order, s.key))
    ahead_all = ahead_ns = 0
    for s in line:
        room = (not limit or used < limit) and (
            not per_namespace or used_ns.get(s.namespace, 0) < per_namespace
        )
        if s.key == me.key:
            if room:
                return Admission(admitted=True)
            if limit and used >= limit:
                return Admission(False, ahead_all + 1, limit, "operator-wide")
            assert per_namespace
            return Admission(False, ahead_ns + 1, per_namespace, f"in namespace {me.namespace}")
        if room:
            used += 1
            used_ns[s.namespace] = used_ns.get(s.namespace, 0) + 1
        else:
            ahead_all += 1
            ahead_ns += s.namespace == me.namespace
    raise AssertionError("me is always in the line")  # pragma: no cover
