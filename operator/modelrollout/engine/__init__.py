"""The pure decision core: ``decide(spec, status, observations, now) -> Decision``."""

from modelrollout.engine.decide import active_gates, decide, plan
from modelrollout.engine.types import (
    Admission,
    Decision,
    Event,
    EventType,
    GateRefusal,
    GuardFinding,
    Observations,
    Plan,
    Preflight,
    Request,
    RequestVerb,
    RouteBackend,
    TrafficIntent,
    TrafficState,
)
from modelrollout.engine.wake import next_wake

__all__ = [
    "Admission",
    "Decision",
    "Event",
    "EventType",
    "GateRefusal",
    "GuardFinding",
    "Observations",
    "Plan",
    "Preflight",
    "Request",
    "RequestVerb",
    "RouteBackend",
    "TrafficIntent",
    "TrafficState",
    "active_gates",
    "decide",
    "next_wake",
    "plan",
]
