"""Work-arounds for kopf behaviour that does not scale to thousands of objects.

**Start-up stall with indices.** When a resource has ``@kopf.index``
handlers, kopf gives every object of the initial listing a toggle in one
``ToggleSet(all)`` (``operator_indexed``); each object's worker drops its
toggle once indexed, then waits on the set's ``asyncio.Condition`` until
*every* object is indexed. ``ToggleSet.drop_toggle`` calls ``notify_all``
on every drop, so each of the N drops wakes all the up-to-N waiting
workers, which re-take the lock one by one to find the set still off:
O(N²) wake-ups before a single handler runs. Measured (kopf 1.45.2, 2 busy
cores): 1,000 rollouts take about a minute to start being handled; 5,000
had not started after 5 minutes, every replica's event loop busy in
``Condition.notify_all``.

The fix keeps kopf's semantics: waiters wait for ``is_on()`` to reach a
value, and adding or dropping a toggle can only satisfy a waiter if it
changes ``is_on()``. So :func:`patch_toggle_sets` makes ``make_toggle``,
``drop_toggle`` and ``drop_toggles`` notify only when ``is_on()`` changed
(individual toggles' ``turn_to`` still notifies as before). N drops then
cost O(N) checks and one wake-up of everyone at the end.

**Managed fields held in memory.** kopf keeps the latest body of every
object with a daemon (its "live body"), and every watch event carries
``metadata.managedFields``: the server-side-apply bookkeeping of who set
which field, a tree about as large as the spec and status themselves. No
handler here reads it, and kopf's merge patches do not need it.
:func:`patch_drop_managed_fields` drops it from each watch event before
kopf processes it, which takes it out of every live body.

Both are applied at operator start (``modelrollout run``), idempotent, and a
no-op if kopf's internals no longer have the shape they patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_PATCHED = "_modelrollout_change_only_notify"


def patch_toggle_sets() -> bool:
    """Make kopf's ToggleSet wake its waiters only on a change of state; True if patched."""
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError:  # pragma: no cover - kopf reorganised its internals
        return False
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _PATCHED, False):
        return True
    if not all(hasattr(cls, name) for name in ("make_toggle", "drop_toggle", "drop_toggles")):
        return False  # pragma: no cover

    async def make_toggle(
        self: Any, __val: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: Any, toggle: aiotoggles.Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggles(self: Any, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    cls.make_toggle = make_toggle
    cls.drop_toggle = drop_toggle
    cls.drop_toggles = drop_toggles
    setattr(cls, _PATCHED, True)
    return True


def patch_drop_managed_fields() -> bool:
    """Drop ``metadata.managedFields`` from each watch event before kopf processes it;
    True if patched."""
    try:
        from kopf._core.reactor import processing
    except ImportError:  # pragma: no cover - kopf reorganised its internals
        return False
    original: Any = getattr(processing, "process_resource_event", None)
    if original is None:
        return False  # pragma: no cover
    if getattr(original, _PATCHED, False):
        return True

    async def process_resource_event(*args: Any, **kwargs: Any) -> Any:
        event = kwargs.get("raw_event")
        body = event.get("object") if isinstance(event, dict) else None
        meta = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
        return await original(*args, **kwargs)

    setattr(process_resource_event, _PATCHED, True)
    processing.process_resource_event = process_resource_event
    return True


__all__ = ["patch_drop_managed_fields", "patch_toggle_sets"]
