"""Event-driven reconcile: each rollout sleeps until it is due or woken.

Polling every rollout on a timer cost CPU in proportion to the number of
rollouts, finished or not (48% of a core for 200 rollouts at a 1 s tick).
Here one kopf daemon per ModelRollout reconciles, asks the engine when the
rollout is next due (:func:`modelrollout.engine.next_wake`), and sleeps until
then or until woken. A finished rollout has no due time: it sleeps until a
change wakes it and costs nothing meanwhile.

What wakes a rollout (:class:`Wakeups` holds one ``asyncio.Event`` per uid):

- a change of its spec (``metadata.generation``) or of its request annotation,
  seen by an ``on.event`` handler. Status-only updates, the operator's own
  included, change neither, so its writes never wake it in a loop;
- a change of its route (HTTPRoute, VirtualService, Service), seen by
  ``on.event`` handlers on those kinds and mapped to its owners by a kopf
  index; a drifted route is thus restored as soon as it drifts;
- its due time, capped by ``--tick`` for active rollouts (a bound on how late
  a change that no watch reports is noticed), and a slow ``--resync`` for an
  active rollout with nothing due. Terminal rollouts have neither.

Why a daemon per rollout rather than one scheduler task with a heap: kopf
already starts and stops daemons with the object's life, its label filter
(the shard) and the peering (a paused replica stops them all), and hands
each one a body that it keeps fresh; a sleeping daemon is one idle asyncio
task. A heap would have to redo all of that.

The reconcile itself (:func:`modelrollout.operator.reconcile.reconcile`) is
unchanged and runs in a worker thread: it is blocking I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.engine import next_wake
from modelrollout.engine.admission import Slot
from modelrollout.engine.types import GuardFinding
from modelrollout.operator.guard import Guard
from modelrollout.operator.patching import merge_patch, plain
from modelrollout.operator.reconcile import Adapters, StatusWriter, reconcile

log = logging.getLogger("modelrollout")

T = TypeVar("T")

#: (router kind, namespace, object name): the object that carries a rollout's traffic.
RouteKey = tuple[str, str, str]


# ---------------------------------------------------------------- what wakes whom


def wake_key(body: Mapping[str, Any]) -> tuple[object, object]:
    """What, when it changes, means a human or a GitOps tool asked for something."""
    meta = body.get("metadata") or {}
    return meta.get("generation"), (meta.get("annotations") or {}).get(REQUEST_ANNOTATION)


def route_of(spec: Mapping[str, Any], namespace: str) -> RouteKey | None:
    """The route object a rollout's spec names (read leniently: the spec may be invalid)."""
    routing = spec.get("trafficRouting") or {}
    for kind, field in (
        ("gatewayAPI", "httpRoute"),
        ("istio", "virtualService"),
        ("service", "name"),
    ):
        name = (routing.get(kind) or {}).get(field)
        if isinstance(name, str) and name:
            return kind, namespace, name
    return None


def route_digest(body: Mapping[str, Any]) -> str:
    """A fingerprint of a route's spec: its status (written by gateways) wakes no one."""
    spec = json.dumps(plain(body.get("spec") or {}), sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()


class Wakeups:
    """One wake-up event per rollout (by uid), and what was last seen of rollouts and routes.

    Kept in kopf's memo; touched only from the event loop.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._keys: dict[str, tuple[object, object]] = {}
        self._routes: dict[RouteKey, str | None] = {}

    def event(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def wake(self, uid: str) -> None:
        event = self._events.get(uid)
        if event is not None:
            event.set()

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)
        self._keys.pop(uid, None)

    def rollout_seen(self, uid: str, key: tuple[object, object]) -> bool:
        """Record a rollout's wake key; True when it changed since last seen (not at first)."""
        before = self._keys.get(uid)
        self._keys[uid] = key
        return before is not None and before != key

    def route_seen(self, route: RouteKey, digest: str | None) -> bool:
        """Record a route's fingerprint (None: gone); True when it is new or changed."""
        before = self._routes.get(route, "")
        if digest is None:
            self._routes.pop(route, None)
        else:
            self._routes[route] = digest
        return before != digest

    def __len__(self) -> int:
        return len(self._events)


# ---------------------------------------------------------------------- how long


@dataclass(frozen=True)
class Timing:
    tick: float = 5.0
    """The longest an active rollout with a due time sleeps (``--tick``)."""
    resync: float = 300.0
    """The longest an active rollout with nothing due sleeps (``--resync``)."""
    retry: float = 5.0
    """After a reconcile that failed, or whose writes did not all land."""
    floor: float = 1.0
    """The shortest sleep, so a state the engine cannot clear never spins."""
    slack: float = 0.05
    """Added to a due time: the engine's clock has whole seconds."""


def sleep_for(due: datetime | None, now: datetime, *, active: bool, timing: Timing) -> float | None:
    """Seconds to sleep before the next reconcile; None: until woken.

    ``now`` is the precise time (the engine's own is rounded down to the second).
    """
    if due is None:
        return timing.resync if active else None
    delay = (due - now).total_seconds() + timing.slack
    return min(max(delay, timing.floor), timing.tick if active else timing.resync)


# ------------------------------------------------------------------- the daemon


class Flag(Protocol):
    """kopf's ``stopped`` flag, as far as the loop uses it."""

    def __bool__(self) -> bool: ...


class _Recorder:
    """The status writer of one reconcile: it notes whether a write went out."""

    def __init__(self, inner: StatusWriter) -> None:
        self.inner = inner
        self.writes = 0

    def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.inner.patch_status(namespace, name, patch)
        self.writes += 1


def _clock() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Outcome:
    """What one reconcile left behind, for the scheduler."""

    due: datetime | None
    active: bool
    wrote: bool
    settled: bool = True
    written: dict[str, Any] | None = None
    """The whole status as written, when this reconcile wrote it."""
    """False when the decided status did not land (a route patch failed first)."""


def reconcile_once(
    body: dict[str, Any],
    adapters: Adapters,
    now: datetime,
    others: Iterable[Slot] = (),
    guard: GuardFinding | None = None,
) -> Outcome:
    """One reconcile at ``now``, then when the rollout is next due. Blocking; run it in a thread.

    ``others``: every rollout's claim on a slot, for the concurrency limits; ``guard``:
    what the fast guard found since the last reconcile.
    """
    recorder = _Recorder(adapters.status)
    engine_now = now.replace(microsecond=0)
    scoped = dataclasses.replace(adapters, status=recorder, clock=lambda: engine_now)
    decision = reconcile(body, scoped, others=others, guard=guard)
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    if decision is None:  # a spec the models refuse: only a new spec can help
        return Outcome(due=None, active=False, wrote=recorder.writes > 0)
    raw = body.get("status") or {}
    settled = recorder.writes > 0 or not merge_patch(raw, dict(decision.status))
    status = ModelRolloutStatus.model_validate(decision.status)
    try:
        spec = ModelRolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError:  # pragma: no cover - reconcile returned a decision, so it parsed
        return Outcome(due=None, active=False, wrote=recorder.writes > 0)
    due = next_wake(spec, status, engine_now, generation=generation)
    active = not status.phase.is_terminal
    wrote = recorder.writes > 0
    return Outcome(
        due=due,
        active=active,
        wrote=wrote,
        settled=settled,
        written=dict(decision.status) if wrote else None,
    )


def _canon(status: Mapping[str, Any]) -> str:
    return json.dumps(status, sort_keys=True, separators=(",", ":"))


class OwnWrites:
    """The statuses one replica wrote for one rollout, to tell a stale body from a fresh one.

    ``superseded`` holds every status this replica knows to be older than its
    last write: the bases it decided from and its earlier writes. A body
    whose status is one of those has not caught up yet; any other status is
    the last write itself or someone else's, newer, and the body is taken as
    it is.
    """

    LIMIT = 64

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.superseded: set[str] = set()

    def wrote(self, base: Mapping[str, Any], status: dict[str, Any]) -> None:
        self.superseded.add(_canon(base))
        if self.last is not None:
            self.superseded.add(_canon(self.last))
        self.last = status
        if len(self.superseded) > self.LIMIT:  # pragma: no cover - a watch stalled for long
            self.superseded.clear()
            self.last = None

    def freshest(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body``, with the last written status in place of one it has overwritten."""
        if self.last is None:
            return body
        if _canon(body.get("status") or {}) in self.superseded:
            return {**body, "status": plain(self.last)}
        self.last, self.superseded = None, set()
        return body


def urgent(body: Mapping[str, Any]) -> bool:
    """Whether a rollout has work waiting: a spec not yet seen, a request, or a stage that
    runs. A finished, up-to-date rollout only checks its route: it can wait its turn."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    if (meta.get("annotations") or {}).get(REQUEST_ANNOTATION):
        return True
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    phase = status.get("phase")
    return phase not in {p.value for p in Phase if p.is_terminal}


class Lanes:
    """Every rollout's reconcile runs in a worker thread; the urgent ones go first.

    After a start or a takeover every daemon reconciles at once. Without an order,
    a rollout given a new candidate while its replica was away queues behind every
    finished rollout that only checks its route (1,250 of them in a shard of 5,000).
    At most ``slots`` reconciles run at once (asyncio's default executor has as many
    threads); a free slot goes to the longest-waiting urgent reconcile, then to the
    rest in arrival order.
    """

    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots or min(32, (os.cpu_count() or 1) + 4)
        self._free = self.slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def run(self, urgent: bool, fn: Callable[..., T], *args: Any) -> T:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (0 if urgent else 1, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed the slot, then cancelled: pass it on
                raise
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():  # a cancelled waiter's turn is done already: skip it
                turn.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        return sum(not turn.done() for _, _, turn in self._waiting)


async def drive(
    *,
    body: Mapping[str, Any],
    uid: str,
    stopped: Flag,
    stop_signal: Callable[[], Any],
    adapters: Adapters,
    wakeups: Wakeups,
    timing: Timing,
    clock: Callable[[], datetime] = _clock,
    others: Callable[[], Iterable[Slot]] = tuple,
    guard: Guard | None = None,
    lanes: Lanes | None = None,
) -> None:
    """The life of one rollout in this replica: reconcile, sleep until due or woken, repeat.

    ``body`` is kopf's live view of the object, refreshed by every watch event.
    A wake-up soon after the operator's own status write (typically its own
    route change echoing back) can find a body that does not show that write
    yet, even one newer than the body it decided from: kopf adds its finalizer
    and annotations to a new object at the same moment. Deciding from the older
    status would take a step twice and patch against the wrong base. The
    replica is the status's only writer, so while the body still shows a
    status this replica has since overwritten (:class:`OwnWrites`), its last
    written status stands in for the body's. No timeout: under load the watch
    can lag by many seconds.
    """
    wake = wakeups.event(uid)

    async def on_stop() -> None:
        await stop_signal()
        wake.set()

    watcher = asyncio.create_task(on_stop())
    own = OwnWrites()
    lanes = lanes or Lanes()
    if guard is not None:
        guard.watch(uid, body)
    try:
        while not stopped:
            wake.clear()
            snapshot = own.freshest(plain(body))
            started = clock()
            try:
                finding = guard.take(uid) if guard is not None else None
                outcome = await lanes.run(
                    urgent(snapshot) or finding is not None,
                    reconcile_once, snapshot, adapters, started, list(others()), finding,
                )  # fmt: skip
            except Exception:
                meta = snapshot.get("metadata") or {}
                log.exception("%s/%s: reconcile failed", meta.get("namespace"), meta.get("name"))
                delay: float | None = timing.retry
            else:
                if outcome.written is not None:
                    own.wrote(snapshot.get("status") or {}, outcome.written)
                delay = (
                    sleep_for(outcome.due, clock(), active=outcome.active, timing=timing)
                    if outcome.settled
                    else timing.retry
                )
            if stopped:
                break
            await _sleep(wake, delay)
    finally:
        watcher.cancel()
        if guard is not None:
            guard.unwatch(uid)


async def _sleep(wake: asyncio.Event, delay: float | None) -> None:
    if delay is None:
        await wake.wait()
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout=delay)


__all__ = [
    "Lanes",
    "Outcome",
    "RouteKey",
    "Timing",
    "Wakeups",
    "drive",
    "plain",
    "reconcile_once",
    "route_digest",
    "route_of",
    "sleep_for",
    "urgent",
    "wake_key",
]
