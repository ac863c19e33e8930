"""The event-driven shell's pure parts: how long to sleep, what wakes whom, who owns what."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from modelrollout.api.base import REQUEST_ANNOTATION
from modelrollout.operator.scheduling import (
    Lanes,
    OwnWrites,
    Timing,
    Wakeups,
    drive,
    reconcile_once,
    route_digest,
    route_of,
    sleep_for,
    urgent,
    wake_key,
)
from modelrollout.operator.sharding import (
    FINALIZER,
    SHARD_LABEL,
    UNLABELLED,
    Claim,
    claim,
    finalizer_for,
    peering_for,
    selector_for,
    shard_of,
    unclaimed,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, 300_000)
TIMING = Timing(tick=5.0, resync=300.0, floor=1.0, slack=0.05)


@pytest.mark.parametrize(
    ("due", "active", "expected"),
    [
        pytest.param(None, False, None, id="a-finished-rollout-sleeps-until-woken"),
        pytest.param(None, True, 300.0, id="an-active-rollout-with-nothing-due-resyncs-slowly"),
        pytest.param(NOW.replace(microsecond=0) + timedelta(seconds=3), True, 2.75,
                     id="a-due-time-soon-is-slept-to-just-after-its-second"),
        pytest.param(NOW + timedelta(seconds=60), True, 5.0,
                     id="a-due-time-later-is-capped-by-the-tick"),
        pytest.param(NOW - timedelta(seconds=1), True, 1.0,
                     id="a-due-time-already-past-waits-the-floor-never-spins"),
    ],
)  # fmt: skip
def test_sleep_for(due: datetime | None, active: bool, expected: float | None) -> None:
    got = sleep_for(due, NOW, active=active, timing=TIMING)
    assert got == (pytest.approx(expected) if expected is not None else None)


def body(generation: int = 1, request: str | None = None, **meta: Any) -> dict[str, Any]:
    annotations = {"modelrollout.io/request": request} if request else {}
    annotations["modelrollout.io/last-handled-configuration"] = meta.pop("diffbase", "x")
    return {"metadata": {"generation": generation, "annotations": annotations, **meta}}


def test_a_status_write_or_kopfs_own_annotations_do_not_change_the_wake_key() -> None:
    before = wake_key(body(resourceVersion="1"))
    assert wake_key(body(resourceVersion="2", diffbase="y")) == before


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(body(generation=2), id="a-new-spec"),
        pytest.param(body(request="promote:1"), id="a-human-request"),
    ],
)
def test_a_new_spec_or_a_request_changes_the_wake_key(after: dict[str, Any]) -> None:
    assert wake_key(after) != wake_key(body())


def test_wakeups_wake_on_change_but_not_at_first_sight_nor_on_the_same_key() -> None:
    async def scenario() -> list[bool]:
        w = Wakeups()
        event = w.event("uid-1")
        seen = [w.rollout_seen("uid-1", (1, None)), w.rollout_seen("uid-1", (1, None))]
        assert not event.is_set()
        seen.append(w.rollout_seen("uid-1", (2, None)))
        w.wake("uid-1")
        w.wake("someone-else")  # no event of its own: nothing to do, no error
        assert event.is_set()
        w.forget("uid-1")
        assert len(w) == 0
        return seen

    assert asyncio.run(scenario()) == [False, False, True]


def test_a_route_wakes_its_owners_when_new_changed_or_gone_but_not_when_its_status_changes() -> (
    None
):
    w = Wakeups()
    key = ("gatewayAPI", "ml", "fraud")
    route = {"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 1}]}]}}
    assert w.route_seen(key, route_digest(route)) is True
    status_only = {**route, "status": {"parents": [{"controllerName": "gw"}]}}
    assert w.route_seen(key, route_digest(status_only)) is False
    edited = {"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 2}]}]}}
    assert w.route_seen(key, route_digest(edited)) is True
    assert w.route_seen(key, None) is True


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        pytest.param({"gatewayAPI": {"httpRoute": "r"}}, ("gatewayAPI", "ml", "r"), id="httproute"),
        pytest.param({"istio": {"virtualService": "vs"}}, ("istio", "ml", "vs"), id="istio"),
        pytest.param({"service": {"name": "svc"}}, ("service", "ml", "svc"), id="service"),
        pytest.param({}, None, id="no-routing-no-route"),
        pytest.param({"gatewayAPI": {}}, None, id="a-broken-spec-no-route"),
    ],
)
def test_the_route_a_spec_names(routing: dict[str, Any], expected: object) -> None:
    assert route_of({"trafficRouting": routing}, "ml") == expected


# ------------------------------------------------------------------------ sharding


def test_the_shard_is_a_stable_hash_of_the_uid_not_pythons_salted_one() -> None:
    # Fixed values: every replica, every restart and every Python agree on them.
    assert shard_of("8d0c1a39-3f1e-4c7e-9d57-6a1c2b3d4e5f", 2) == 1
    assert shard_of("8d0c1a39-3f1e-4c7e-9d57-6a1c2b3d4e5f", 3) == 2
    assert shard_of("anything", 1) == 0


def test_shards_split_many_uids_roughly_evenly() -> None:
    counts = Counter(shard_of(f"uid-{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_each_shard_has_its_own_finalizer_and_peering_but_one_shard_keeps_the_old_names() -> None:
    assert finalizer_for(0, 1) == FINALIZER == "modelrollout.io/finalizer"
    assert finalizer_for(1, 3) == "modelrollout.io/finalizer-1"
    assert peering_for("mr", 0, 1) == "mr"
    assert peering_for("mr", 2, 3) == "mr-shard-2"


UID = "8d0c1a39-3f1e-4c7e-9d57-6a1c2b3d4e5f"  # shard 1 of 2


@pytest.mark.parametrize(
    ("labels", "finalizers", "deleting", "shard", "shards", "expected"),
    [
        pytest.param({}, [], False, 1, 2, Claim("1", None),
                     id="an-unlabelled-rollout-is-labelled-by-its-shard"),
        pytest.param({}, [], False, 0, 2, Claim("1", None),
                     id="another-shard-labels-it-for-its-owner-and-leaves-the-finalizers"),
        pytest.param({SHARD_LABEL: "0"}, ["modelrollout.io/finalizer-0"], False, 0, 2,
                     Claim("1", None),
                     id="a-rollout-labelled-here-that-hashes-elsewhere-is-handed-over"),
        pytest.param({SHARD_LABEL: "1"}, [], False, 0, 2, None,
                     id="another-shards-rollout-labelled-for-it-is-left-alone"),
        pytest.param({SHARD_LABEL: "1"}, ["modelrollout.io/finalizer-1"], False, 1, 2, None,
                     id="a-rollout-already-labelled-needs-nothing"),
        pytest.param({SHARD_LABEL: "0"}, ["modelrollout.io/finalizer-0", "other.io/keep"], False,
                     1, 2, Claim("1", ["other.io/keep"]),
                     id="a-rollout-labelled-for-another-shard-count-is-taken-over"),
        pytest.param({}, [FINALIZER], False, 1, 2, Claim("1", []),
                     id="from-one-operator-to-shards-the-old-finalizer-goes"),
        pytest.param({SHARD_LABEL: "1"}, ["modelrollout.io/finalizer-1"], False, 0, 1,
                     Claim(None, []), id="back-to-one-operator-label-and-shard-finalizer-go"),
        pytest.param({}, [FINALIZER], False, 0, 1, None,
                     id="one-operator-and-an-unlabelled-rollout-need-nothing"),
        pytest.param({}, [FINALIZER], True, 1, 2, None,
                     id="a-rollout-being-deleted-is-never-taken-over"),
    ],
)  # fmt: skip
def test_claim(
    labels: dict[str, str],
    finalizers: list[str],
    deleting: bool,
    shard: int,
    shards: int,
    expected: Claim | None,
) -> None:
    got = claim(
        uid=UID,
        labels=labels,
        finalizers=finalizers,
        deleting=deleting,
        shard=shard,
        shards=shards,
    )
    assert got == expected


def test_a_replica_watches_only_its_shard_through_the_api_server() -> None:
    assert selector_for(2, 4) == "modelrollout.io/shard=2"
    assert selector_for(0, 1) is None  # one shard: every rollout
    assert UNLABELLED == "!modelrollout.io/shard"


def _listed(uid: str, **meta: object) -> dict[str, object]:
    return {"metadata": {"uid": uid, "namespace": "ml", "name": f"r-{uid}", **meta}}


def test_of_the_unlabelled_rollouts_a_shard_labels_only_its_own() -> None:
    uids = [f"uid-{i}" for i in range(40)]
    listed = [_listed(u) for u in uids]
    claimed = {s: unclaimed(listed, shard=s, shards=4) for s in range(4)}
    # every rollout is labelled by exactly one shard, its own, and nothing else is patched
    names = [name for got in claimed.values() for _, name, _ in got]
    assert sorted(names) == sorted(f"r-{u}" for u in uids)
    for s, got in claimed.items():
        for namespace, name, c in got:
            assert namespace == "ml"
            assert shard_of(name.removeprefix("r-"), 4) == s
            assert c == Claim(str(s), None)


def test_the_unclaimed_skip_deletions_foreign_shards_and_one_shard() -> None:
    mine = next(f"uid-{i}" for i in range(100) if shard_of(f"uid-{i}", 2) == 1)
    being_deleted = _listed(mine, deletionTimestamp="2026-12-04T00:00:00Z")
    assert unclaimed([being_deleted], shard=1, shards=2) == []
    assert unclaimed([_listed(mine)], shard=0, shards=2) == []
    assert unclaimed([_listed(mine)], shard=0, shards=1) == []
    assert unclaimed([{"metadata": "junk"}, {}], shard=1, shards=2) == []
    # the old single operator's finalizer goes when a shard labels the rollout
    assert unclaimed([_listed(mine, finalizers=[FINALIZER])], shard=1, shards=2) == [
        ("ml", f"r-{mine}", Claim("1", []))
    ]


def test_a_claim_patches_the_label_and_only_then_the_finalizers() -> None:
    assert Claim("1", None).patch() == {"labels": {SHARD_LABEL: "1"}}
    assert Claim(None, []).patch() == {"labels": {SHARD_LABEL: None}, "finalizers": []}


# ------------------------------------------------------------------ one reconcile


def test_one_reconcile_writes_once_and_says_when_it_is_next_due() -> None:
    from .test_reconcile import follow, setup

    journal, _router, adapters, body = setup()
    first = reconcile_once(body, adapters, NOW)
    assert (first.wrote, first.active, first.settled) == (True, True, True)
    # the canary set its first weight; its pause of 1m ends a minute later
    assert first.due == NOW.replace(microsecond=0) + timedelta(seconds=30)  # first check first
    follow(body, journal)
    again = reconcile_once(body, adapters, NOW + timedelta(seconds=1))
    assert (again.wrote, again.due) == (False, first.due), "nothing new: no write, same due time"


def test_a_decision_whose_route_change_failed_is_retried_soon() -> None:
    from modelrollout.traffic.base import RouteError

    from .test_reconcile import setup

    _journal, router, adapters, body = setup()

    def refuse(*_: Any) -> bool:
        raise RouteError("conflict")

    router.apply = refuse  # type: ignore[method-assign]
    outcome = reconcile_once(body, adapters, NOW)
    assert (outcome.wrote, outcome.settled) == (False, False)


# ------------------------------------------------------------------------ the loop


class Stop:
    """kopf's ``stopped`` flag, for the loop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()


def run_loop(body: dict[str, Any], adapters: Any, poke: Any) -> None:
    """Run the daemon's loop on ``body``; ``poke(wakeups)`` acts while it sleeps."""

    async def scenario() -> None:
        wakeups, stop = Wakeups(), Stop()
        task = asyncio.create_task(
            drive(
                body=body, uid="u", stopped=stop, stop_signal=stop.event.wait,
                adapters=adapters, wakeups=wakeups, timing=Timing(tick=60, resync=60),
            )
        )  # fmt: skip
        await asyncio.sleep(0.5)
        await poke(wakeups)
        stop.event.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_a_wake_before_the_watch_shows_the_own_write_decides_from_what_was_written() -> None:
    from .test_reconcile import setup

    journal, _router, adapters, body = setup()

    async def poke(wakeups: Wakeups) -> None:
        # kopf's own finalizer patch lands (a newer body) but our status write is not in it
        body["metadata"]["resourceVersion"] = "2"
        wakeups.wake("u")
        await asyncio.sleep(0.5)

    run_loop(body, adapters, poke)
    kinds = [kind for kind, _ in journal.calls]
    assert kinds.count("status") == 1, "the second decision found nothing new"
    assert [r for k, r in journal.calls if k == "event"].count("RolloutStarted") == 1


def test_a_sleeping_rollout_is_reconciled_again_only_when_woken() -> None:
    from .test_reconcile import follow, setup

    journal, _router, adapters, body = setup()
    runs: list[int] = []
    observe = adapters.observe

    def count(*args: Any) -> None:
        runs.append(1)
        if observe is not None:
            observe(*args)

    adapters.observe = count

    async def poke(wakeups: Wakeups) -> None:
        follow(body, journal)  # the watch delivers the write
        journal.calls.clear()
        await asyncio.sleep(0.5)
        assert len(runs) == 1, "asleep until its next check, a minute away"
        wakeups.wake("u")
        await asyncio.sleep(0.5)

    run_loop(body, adapters, poke)
    assert len(runs) == 2
    assert [k for k, _ in journal.calls if k == "status"] == [], "woken, nothing new: no write"


def test_own_writes_stand_in_for_a_body_that_has_not_caught_up_however_long_it_lags() -> None:
    own = OwnWrites()
    w0, w1, w2 = {"phase": "Pending"}, {"phase": "Progressing", "n": 1}, {"phase": "Succeeded"}
    assert own.freshest({"status": w0})["status"] == w0, "nothing written yet: the body"
    own.wrote(w0, w1)
    own.wrote(w1, w2)  # decided again from the stand-in before the watch caught up
    for lagging in (w0, w1):
        assert own.freshest({"status": lagging, "spec": 1}) == {"status": w2, "spec": 1}
    assert own.freshest({"status": w2})["status"] == w2, "caught up"
    assert own.freshest({"status": w0})["status"] == w0, "after catching up, the body again"


def test_a_status_someone_else_wrote_is_taken_as_it_is() -> None:
    own = OwnWrites()
    own.wrote({}, {"phase": "Progressing"})
    theirs = {"phase": "Paused", "by": "kubectl"}
    assert own.freshest({"status": theirs})["status"] == theirs


# ------------------------------------------------------------- the order of reconciles


def _body(phase: str | None, generation: int = 2, observed: int | None = 2,
          request: str | None = None) -> dict[str, Any]:  # fmt: skip
    annotations = {REQUEST_ANNOTATION: request} if request else {}
    return {
        "metadata": {"generation": generation, "annotations": annotations},
        "status": {"phase": phase, "observedGeneration": observed} if phase else {},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_body("Succeeded"), False, id="finished-and-up-to-date-can-wait"),
        pytest.param(_body("RolledBack"), False, id="rolled-back-and-up-to-date-can-wait"),
        pytest.param(_body("Failed"), False, id="failed-and-up-to-date-can-wait"),
        pytest.param(_body("Succeeded", generation=3), True, id="a-new-spec-is-urgent"),
        pytest.param(_body("Succeeded", request='{"action":"undo"}'), True,
                     id="a-request-is-urgent"),
        pytest.param(_body("Progressing"), True, id="a-running-stage-is-urgent"),
        pytest.param(_body("Paused"), True, id="a-paused-stage-is-urgent"),
        pytest.param(_body(None), True, id="never-seen-is-urgent"),
    ],
)  # fmt: skip
def test_urgent(body: dict[str, Any], expected: bool) -> None:
    assert urgent(body) is expected


def test_a_free_slot_goes_to_the_urgent_reconciles_first_then_in_arrival_order() -> None:
    order: list[str] = []
    gate = threading.Event()

    async def scenario() -> None:
        lanes = Lanes(slots=1)
        first = asyncio.create_task(lanes.run(False, gate.wait))
        await asyncio.sleep(0.05)  # the one slot is taken
        tasks = []
        for name, is_urgent in (("a", False), ("b", False), ("u1", True), ("c", False),
                                ("u2", True)):  # fmt: skip
            tasks.append(asyncio.create_task(lanes.run(is_urgent, order.append, name)))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert lanes.waiting == 5
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, *tasks), 5)
        assert lanes.waiting == 0

    asyncio.run(scenario())
    assert order == ["u1", "u2", "a", "b", "c"]


def test_a_cancelled_waiter_neither_runs_nor_keeps_a_slot() -> None:
    ran: list[str] = []
    gate = threading.Event()

    async def scenario() -> int:
        lanes = Lanes(slots=1)
        first = asyncio.create_task(lanes.run(False, gate.wait))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(lanes.run(True, ran.append, "gone"))
        kept = asyncio.create_task(lanes.run(False, ran.append, "kept"))
        await asyncio.sleep(0.05)
        gone.cancel()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, kept), 5)
        with pytest.raises(asyncio.CancelledError):
            await gone
        # and the slot is free again: a new reconcile runs at once
        await asyncio.wait_for(lanes.run(False, ran.append, "after"), 1)
        return lanes._free

    assert asyncio.run(scenario()) == 1
    assert ran == ["kept", "after"]
