"""kopf's ToggleSet wakes its waiters only when its state changes (no O(N²) start-up stall)."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles

from modelrollout.operator.kopf_fixes import patch_drop_managed_fields, patch_toggle_sets


@pytest.fixture(autouse=True)
def patched() -> None:
    assert patch_toggle_sets()
    assert patch_toggle_sets()  # idempotent


def test_waiters_for_an_all_set_wake_once_when_the_last_toggle_is_dropped() -> None:
    async def scenario() -> tuple[int, int]:
        toggles = aiotoggles.ToggleSet(all)
        mine = [await toggles.make_toggle(name=str(i)) for i in range(500)]
        notified = 0
        notify_all = toggles._condition.notify_all

        def counting() -> None:
            nonlocal notified
            notified += 1
            notify_all()

        toggles._condition.notify_all = counting  # type: ignore[method-assign]
        done = 0

        async def worker(toggle: aiotoggles.Toggle) -> None:
            nonlocal done
            await toggles.drop_toggle(toggle)
            await toggles.wait_for(True)
            done += 1

        await asyncio.wait_for(asyncio.gather(*(worker(t) for t in mine)), timeout=10)
        return notified, done

    notified, done = asyncio.run(scenario())
    assert done == 500  # every worker went on once all were dropped
    assert notified == 1  # and only the last drop woke them


def test_a_waiter_sees_every_change_of_state() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        toggles = aiotoggles.ToggleSet(any)
        assert toggles.is_off()
        first = await toggles.make_toggle(True, name="on")  # off -> on
        assert toggles.is_on()

        async def wait_off() -> None:
            await toggles.wait_for(False)
            seen.append("off")

        waiter = asyncio.create_task(wait_off())
        await asyncio.sleep(0)
        await toggles.make_toggle(False, name="off")  # still on: no wake-up needed
        await asyncio.sleep(0)
        assert seen == []
        await toggles.drop_toggle(first)  # on -> off: the waiter wakes
        await asyncio.wait_for(waiter, timeout=1)
        other = await toggles.make_toggle(False, name="x")
        await toggles.drop_toggles([other])
        assert toggles.is_off()
        return seen

    assert asyncio.run(scenario()) == ["off"]


def test_watch_events_reach_kopf_without_managed_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf._core.reactor import processing

    seen: list[dict[str, object]] = []

    async def recorder(**kwargs: object) -> None:
        seen.append(kwargs)

    monkeypatch.setattr(processing, "process_resource_event", recorder)
    assert patch_drop_managed_fields()
    assert patch_drop_managed_fields()  # idempotent: wrapped once
    body = {
        "metadata": {"name": "fd", "managedFields": [{"manager": "kubectl"}], "labels": {"a": "b"}},
        "spec": {"model": "m"},
    }
    asyncio.run(processing.process_resource_event(raw_event={"type": "ADDED", "object": body}))
    assert len(seen) == 1
    got = seen[0]["raw_event"]
    assert isinstance(got, dict)
    assert got["object"] == {
        "metadata": {"name": "fd", "labels": {"a": "b"}},
        "spec": {"model": "m"},
    }
    # an event without an object (kopf's own markers) passes as it is
    asyncio.run(processing.process_resource_event(raw_event={"type": None}))
    assert seen[1]["raw_event"] == {"type": None}
