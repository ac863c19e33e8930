"""The pure decision core: ``decide(spec, status, observations, now) -> Decision``."""

from modelrollout.engine.decide import active_gates, decide, plan
from modelrollout.engine.types import (
    Decision,
    Event,
    EventType,
    GateRefusal,
    Observations,
    Plan,
    Preflight,
    Request,
    RequestVerb,
    TrafficIntent,
    TrafficState,
)

__all__ = [
    "Decision",
    "Event",
    "EventType",
    "GateRefusal",
    "Observations",
    "Plan",
    "Preflight",
    "Request",
    "RequestVerb",
    "TrafficIntent",
    "TrafficState",
    "active_gates",
    "decide",
    "plan",
]
