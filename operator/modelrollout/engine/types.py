"""Values that go into the engine and come out of it.

The engine reads no clock and does no I/O: the kopf shell gathers these
observations, calls :func:`modelrollout.engine.decide`, and carries out the
decision (one status patch, one traffic change, events after the patch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from modelrollout.api.gates import MetricGate
from modelrollout.api.status import GateResult


class RequestVerb(StrEnum):
    """One-off commands a human sends through the CLI (an annotation on the object)."""

    PROMOTE = "promote"
    """Pass the current gate or pause; go on to the next step."""
    PROMOTE_FULL = "promote-full"
    """Skip every remaining step and analysis: promote now."""
    ABORT = "abort"
    """Send all traffic back to stable now."""
    PAUSE = "pause"
    """Hold where it is until resumed."""
    RESUME = "resume"
    """Lift a pause set by the pause command or by inconclusive analysis."""
    RETRY = "retry"
    """Start the same candidate again from its first stage after a rollback."""
    UNDO = "undo"
    """Within the rollback window after a promotion: all traffic back to the previous version."""


@dataclass(frozen=True)
class Request:
    """A command read from the ``modelrollout.io/request`` annotation: ``verb:id``."""

    verb: RequestVerb
    id: str

    @classmethod
    def parse(cls, text: str | None) -> Request | None:
        if not text or ":" not in text:
            return None
        verb, _, id_ = text.partition(":")
        try:
            return cls(RequestVerb(verb.strip()), id_.strip())
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.verb.value}:{self.id}"


@dataclass(frozen=True)
class TrafficState:
    """What the route holds: the share of live traffic on the candidate, and mirrored to it."""

    candidate_weight: int
    mirror_percent: int


@dataclass(frozen=True)
class RouteBackend:
    """One backend the model's rule sends live traffic to, as the router found it."""

    service: str
    weight: int
    version: str | None = None
    """The version, when the route names it directly (a Service's selector); else the
    engine parses it out of ``service`` with ``spec.serviceTemplate``."""
    rule: int = 0
    """Which rule (or http route) of the route object the backend is in."""


@dataclass(frozen=True)
class Admission:
    """Whether a rollout may take a rollout slot now (``--max-concurrent-rollouts``).

    The shell counts the rollouts that hold a slot and the ones waiting for one
    (operator-wide and per namespace) and hands the engine this answer: the
    engine never starts a rollout that is not admitted.
    """

    admitted: bool
    position: int = 0
    """Place in line among the rollouts waiting for a slot: 1 is next."""
    limit: int = 0
    """The limit that holds this rollout back."""
    scope: str = ""
    """Where that limit counts: ``operator-wide`` or ``in namespace <ns>``."""


@dataclass(frozen=True)
class GateRefusal:
    """A gate whose query Prometheus refused (or whose template cannot be filled in)."""

    gate: str
    reason: str
    """Short and sanitized: Prometheus's parse error, or the unknown placeholder."""


@dataclass(frozen=True)
class GuardFinding:
    """Gates the fast guard showed bad between checks (``analysis/guard.py``).

    The same tests as the check, on the same counts since the stage start. It names the
    candidate and stage it measured: the engine acts on it only while they still run.
    """

    candidate_version: str
    stage: str
    stage_started_at: str | None
    results: tuple[GateResult, ...]


@dataclass(frozen=True)
class Preflight:
    """What sending every gate's rendered query once, before any traffic, found.

    The shell sends the queries (:attr:`Plan.preflight` says when); the engine only
    reads the outcome. A refusal is the manifest's fault and ends the rollout
    (``InvalidGate``); an unreachable Prometheus is nobody's fault yet: it waits.
    """

    refused: tuple[GateRefusal, ...] = ()
    unreachable: str | None = None
    """Why Prometheus gave no answer (sanitized), when it gave none."""

    @property
    def passed(self) -> bool:
        return not self.refused and self.unreachable is None


@dataclass(frozen=True)
class Observations:
    """Everything the shell saw this tick."""

    generation: int = 1
    request: Request | None = None
    analysis: list[GateResult] | None = None
    """Results of a check run this tick (``None``: no check ran)."""
    traffic: TrafficState | None = None
    """What the router read back from the route; ``None`` when it could not read it."""
    traffic_error: str | None = None
    """Why the router could not read or change the route (missing object, no rule, ...)."""
    deleting: bool = False
    route_backends: tuple[RouteBackend, ...] | None = None
    """What the model's rule sends live traffic to, read only while no stable version is
    known (``spec.stable`` omitted): the first stable version is seeded from it."""
    admission: Admission | None = None
    """``None``: no limit on concurrent rollouts, every start is admitted."""
    replicas: dict[str, int | None] | None = None
    """Replicas of each version's Deployment the plan asked for (``None`` for a version:
    no such Deployment); ``None`` when the shell read none."""

    preflight: Preflight | None = None
    """The outcome of the preflight the plan asked for; ``None``: none ran this tick."""
    retry_every: float | None = None
    """Seconds until the shell tries again (its tick): what "retrying every Ns" says."""
    guard: GuardFinding | None = None
    """Gates the fast guard showed bad since the last reconcile; ``None``: none."""


@dataclass(frozen=True)
class TrafficIntent:
    """The split the route should hold. ``candidate_version`` None means stable only."""

    stable_version: str
    candidate_version: str | None
    candidate_weight: int
    mirror_percent: int
    retired_versions: tuple[str, ...] = ()
    """Versions that must leave the route (an old candidate replaced mid-rollout)."""

    @property
    def stable_weight(self) -> int:
        return 100 - self.candidate_weight

    @property
    def state(self) -> TrafficState:
        return TrafficState(self.candidate_weight, self.mirror_percent)


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What the shell should measure before it calls decide."""

    check_due: bool
    candidate_version: str | None = None
    stable_version: str | None = None
    stage: str | None = None
    gates: tuple[MetricGate, ...] = ()
    """The gates to measure in this stage."""
    read_replicas: tuple[str, ...] = ()
    """Versions whose Deployment's replicas the shell should read (a scale-down is due)."""

    """The gates to measure in this stage (for a preflight: every gate of the rollout)."""
    preflight: bool = False
    """A new candidate is about to get traffic: send each gate's query once first."""


@dataclass(frozen=True)
class Decision:
    status: dict[str, object]
    """The whole next status, in wire form (camelCase), ready for one merge patch."""
    traffic: TrafficIntent | None
    """None when there is nothing to route (no stable version known)."""
    events: list[Event] = field(default_factory=list)
    release_finalizer: bool = False
    scale: dict[str, int] = field(default_factory=dict)
    """Replicas to set on versions' Deployments: 0 to scale the old version down after a
    blue-green switch, the recorded count to restore it on a rollback or an undo."""
