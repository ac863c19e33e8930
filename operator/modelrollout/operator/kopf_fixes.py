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

Applied at operator start (``modelrollout run``), idempotent, and a no-op
if kopf's ``ToggleSet`` no longer has the shape it patches.
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


__all__ = ["patch_toggle_sets"]
