"""When a rollout next needs the operator: ``next_wake(spec, status, now)``.

The operator no longer polls every rollout on a timer. After each decision it
asks this pure function when the rollout is next due, and sleeps until then
or until something wakes it (a spec or request change, a change of its
route). A finished or human-held rollout with nothing to measure has no due
time at all and costs nothing until it is woken.

``status`` is the status as decided at ``now``: a deadline at or before
``now`` has been seen by that decision, which advanced or chose to wait for
something else (a passing check, a human). Such deadlines are left out, so a
rollout held back by analysis is not woken again and again before its next
check. The two exceptions answer ``now``: a generation the status has not
observed and a candidate it has not started, the two things a decision
always takes up at once.

The due times mirror :func:`modelrollout.engine.decide.plan` and the stage
logic of ``decide``: a table test and a property test (an event-driven
schedule reaches the same decisions as a one-second tick) keep them together.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from modelrollout.api.base import parse_duration, parse_ts
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, Stage
from modelrollout.engine.decide import active_gates, check_due_at

#: How soon a rollout whose route could not be read tries again (its route's watch
#: wakes it sooner when the route appears or changes).
ROUTE_RETRY = timedelta(seconds=30)

#: How soon a rollout held in Pending looks again: for its preflight (Prometheus not
#: answering yet) or for a slot under the concurrency limits. Neither has a due time,
#: and both are few at any moment, so a short poll costs little.
PENDING_RETRY = timedelta(seconds=5)


def next_wake(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    now: datetime,
    *,
    generation: int | None = None,
) -> datetime | None:
    """The next time a decision could differ from the one taken at ``now``.

    ``None``: nothing is due until something outside changes (a terminal
    phase, a pause only a human lifts with nothing to measure meanwhile).
    A paused rollout whose candidate still takes traffic keeps its checks:
    the engine measures through a pause and rolls back on failure.
    """
    if generation is not None and status.observed_generation != generation:
        return now
    if route_unavailable(status):
        return now + ROUTE_RETRY
    if status.stable_version is None:
        return now if spec.stable is not None else None
    if status.candidate_version != spec.candidate.version:
        # The decision at ``now`` saw this generation and did not start the candidate.
        if status.phase == Phase.PENDING:  # its preflight or a slot holds it back
            return now + PENDING_RETRY
        if status.phase == Phase.FAILED and generation is not None:
            return None  # its preflight failed: only a new spec helps
        return now
    if status.phase == Phase.SUCCEEDED:
        return _earliest_after(_after_promotion(spec, status), now)
    if status.phase.is_terminal:
        return None
    if status.phase == Phase.PENDING:
        return now + PENDING_RETRY
    due = [next_check(spec, status)]
    if status.phase != Phase.PAUSED:
        due.extend(_stage_deadlines(spec, status))
    return _earliest_after(due, now)


def next_check(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> datetime | None:
    """When the next check is due, under the rules of ``plan`` (None: no check to take)."""
    if not active_gates(spec, status) or status.candidate_version is None:
        return None
    no_traffic = status.weights.candidate == 0 and status.mirror_percent == 0
    if no_traffic and status.stage != Stage.PREVIEW:
        return None
    return check_due_at(spec, status)


def _after_promotion(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> list[datetime | None]:
    """A promoted rollout's dues: its rollback window's checks and close, and a scale-down."""
    due: list[datetime | None] = [parse_ts(status.scale_down_at)]
    if status.stage == Stage.ROLLBACK_WINDOW and status.undo_until is not None:
        due.append(parse_ts(status.undo_until))
        if active_gates(spec, status):
            due.append(check_due_at(spec, status))
    return due


def route_unavailable(status: ModelRolloutStatus) -> bool:
    return any(
        c.type == "TrafficInSync" and c.reason == "RouteUnavailable" for c in status.conditions
    )


def _stage_deadlines(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> list[datetime | None]:
    strategy = spec.strategy
    stage_start = parse_ts(status.stage_started_at)
    if status.stage == Stage.SHADOW and strategy.shadow is not None:
        return [_after(stage_start, strategy.shadow.duration)]
    if status.stage == Stage.CANARY and strategy.canary is not None:
        steps = strategy.canary.steps
        i = status.step_index or 0
        if i < len(steps) and (pause := steps[i].pause) is not None and pause.duration:
            return [_after(parse_ts(status.step_started_at), pause.duration)]
        return []  # a weight step is taken at once; an analysis step waits for checks
    if strategy.blue_green is not None:
        bg = strategy.blue_green
        if status.stage == Stage.PREVIEW:
            return [_after(stage_start, bg.preview_duration)]
        if status.stage == Stage.POST_PROMOTION:
            return [_after(stage_start, bg.post_promotion_duration), parse_ts(status.scale_down_at)]
    return []


def _after(start: datetime | None, duration: str) -> datetime | None:
    return None if start is None else start + timedelta(seconds=parse_duration(duration))


def _earliest_after(times: Iterable[datetime | None], now: datetime) -> datetime | None:
    ahead = [t for t in times if t is not None and t > now]
    return min(ahead, default=None)


__all__ = ["PENDING_RETRY", "ROUTE_RETRY", "next_check", "next_wake", "route_unavailable"]
