"""The fast guard's shell: read the running rollouts, ask Prometheus in batches, wake the broken.

One asyncio task per replica, every ``--guard-interval`` (default 2 s):

1. take the rollouts this replica drives (each daemon registers its live body with
   :meth:`Guard.watch`) whose candidate takes traffic; a finished or held one costs a
   dict lookup;
2. in a worker thread: parse them, build the targets and the batched queries
   (:mod:`modelrollout.analysis.guard`, pure), ask each rollout's Prometheus (the same
   policy-checked source as the checks: a refused address is never asked), judge;
3. keep each finding for its rollout and wake its daemon, which hands the finding to the
   engine with its next reconcile (:func:`modelrollout.operator.scheduling.drive`).

The engine acts on a finding only while the candidate and stage it measured still run,
so a finding that arrives late (the rollout moved on) is dropped there, not here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelrollout.analysis import guard as core
from modelrollout.analysis.policy import Refused
from modelrollout.analysis.source import SourceError
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.engine.types import GuardFinding
from modelrollout.operator.patching import plain
from modelrollout.operator.reconcile import Adapters

log = logging.getLogger("modelrollout")

_QUIET = frozenset(p.value for p in Phase if p.is_terminal) | {Phase.PENDING.value}


def measuring(body: Mapping[str, Any]) -> bool:
    """Does the raw body show a running candidate with traffic? (no parsing: it is cheap)"""
    status = body.get("status") or {}
    if not isinstance(status, Mapping) or status.get("phase") in _QUIET:
        return False
    weights = status.get("weights") or {}
    candidate = weights.get("candidate") if isinstance(weights, Mapping) else None
    return bool(candidate) or bool(status.get("mirrorPercent"))


class Guard:
    """The rollouts this replica drives, and what the guard found of them."""

    def __init__(
        self,
        adapters: Adapters,
        *,
        interval: float,
        observe: Callable[[float, int, int], None] | None = None,
    ) -> None:
        self.adapters = adapters
        self.interval = interval
        self._observe = observe
        self._bodies: dict[str, Mapping[str, Any]] = {}
        self._found: dict[str, GuardFinding] = {}

    # -- the daemons' side (event loop) ------------------------------------------

    def watch(self, uid: str, body: Mapping[str, Any]) -> None:
        self._bodies[uid] = body

    def unwatch(self, uid: str) -> None:
        self._bodies.pop(uid, None)
        self._found.pop(uid, None)

    def take(self, uid: str) -> GuardFinding | None:
        return self._found.pop(uid, None)

    # -- a round ------------------------------------------------------------------

    def candidates(self) -> dict[str, dict[str, Any]]:
        """Plain copies of the bodies worth a look this round (event loop)."""
        return {uid: plain(b) for uid, b in self._bodies.items() if measuring(b)}

    def round(self, bodies: Mapping[str, dict[str, Any]], now: datetime) -> dict[str, GuardFinding]:
        """Judge every guarded gate of ``bodies``; the findings by uid. Blocking I/O."""
        targets: dict[str | None, list[core.Target]] = {}
        statuses: dict[str, ModelRolloutStatus] = {}
        for uid, body in bodies.items():
            try:
                spec = ModelRolloutSpec.model_validate(body.get("spec") or {})
                status = ModelRolloutStatus.model_validate(body.get("status") or {})
            except ValidationError:
                continue  # the reconcile says what is wrong with it
            namespace = str((body.get("metadata") or {}).get("namespace") or "default")
            found = core.targets_of(uid, spec, status, namespace, now)
            if found:
                statuses[uid] = status
                targets.setdefault(spec.analysis.prometheus.address, []).extend(found)
        judged: list[tuple[core.Target, Any]] = []
        for address, group in targets.items():
            source = self.adapters.source_for(address)
            if isinstance(source, Refused):
                continue
            for batch in core.batches(group):
                try:
                    samples = source.instant(batch.promql)
                except SourceError as exc:
                    # The scheduled checks say so where the user looks; the guard waits.
                    log.debug("fast guard: %s", exc)
                    continue
                judged.extend(core.judge(batch, samples))
        return core.findings(judged, statuses)

    async def run(self, wake: Callable[[str], None]) -> None:
        """Forever: a round every ``interval``; wake the rollouts with a finding."""
        while True:
            await asyncio.sleep(self.interval)
            bodies = self.candidates()
            if not bodies:
                continue
            started = time.monotonic()
            try:
                found = await asyncio.to_thread(
                    self.round, bodies, datetime.now(UTC).replace(tzinfo=None, microsecond=0)
                )
            except Exception:
                log.exception("fast guard: a round failed")
                continue
            for uid, finding in found.items():
                if uid in self._bodies:
                    self._found[uid] = finding
                    wake(uid)
            if self._observe is not None:
                self._observe(time.monotonic() - started, len(bodies), len(found))


__all__ = ["Guard", "measuring"]
