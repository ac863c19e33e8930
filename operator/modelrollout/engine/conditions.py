"""Status conditions in the kstatus convention, computed from the phase.

Flux, kstatus and ``kubectl wait --for=condition=Ready`` read health from
``Ready``, ``Reconciling`` and ``Stalled`` with ``observedGeneration``; we
add ``Paused`` and ``TrafficInSync`` for humans. A condition's
``lastTransitionTime`` changes only when its status does, so a reconcile that
changes nothing writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from modelrollout.api.base import format_ts
from modelrollout.api.status import Condition, ModelRolloutStatus, Phase
from modelrollout.engine.types import Observations

CondStatus = Literal["True", "False", "Unknown"]


def _want(
    s: ModelRolloutStatus, obs: Observations, drift: bool
) -> list[tuple[str, CondStatus, str, str]]:
    msg = s.message or ""
    phase = s.phase
    why = _why(s)
    ready: CondStatus = "True" if phase == Phase.SUCCEEDED else "False"
    reconciling: CondStatus = (
        "True"
        if phase in (Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTING)
        else "False"
    )
    stalled: CondStatus = "True" if phase in (Phase.FAILED, Phase.ROLLED_BACK) else "False"
    paused: CondStatus = "True" if phase == Phase.PAUSED else "False"
    conds = [
        ("Ready", ready, why, msg),
        ("Reconciling", reconciling, why, msg if reconciling == "True" else ""),
        ("Stalled", stalled, why, msg if stalled == "True" else ""),
        ("Paused", paused, s.pause_reason or phase.value, msg if paused == "True" else ""),
    ]
    if obs.traffic_error is not None:
        conds.append(("TrafficInSync", "False", "RouteUnavailable", obs.traffic_error))
    elif obs.traffic is not None:
        in_sync = not drift
        conds.append(
            (
                "TrafficInSync",
                "True" if in_sync else "False",
                "InSync" if in_sync else "ManualEdit",
                "" if in_sync else "the route was changed by hand; the operator restored it",
            )
        )
    return conds


def _why(s: ModelRolloutStatus) -> str:
    """The conditions' reason: the phase, or for Pending and Failed what put it there
    (``InvalidGate``, ``PrometheusUnreachable``...), as the last history entry says."""
    last = s.history[-1] if s.history else None
    if s.phase in (Phase.PENDING, Phase.FAILED) and last is not None and last.phase == s.phase:
        return last.reason
    return s.phase.value


def set_conditions(s: ModelRolloutStatus, obs: Observations, now: datetime, *, drift: bool) -> None:
    """Replace ``s.conditions``, keeping each one's transition time while its status holds."""
    old = {c.type: c for c in s.conditions}
    out: list[Condition] = []
    for type_, status, reason, message in _want(s, obs, drift):
        prev = old.pop(type_, None)
        since = (
            prev.last_transition_time
            if prev is not None and prev.status == status
            else format_ts(now)
        )
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=obs.generation,
            )
        )
    out.extend(c for c in old.values() if c.type == "TrafficInSync")
    s.conditions = out
