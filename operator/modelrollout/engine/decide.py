"""The rollout engine: ``decide(spec, status, observations, now) -> Decision``.

A pure function. It reads no clock (``now`` is given), does no I/O, and keeps
every fact it needs to carry on in the status it returns, so an operator that
restarts mid-step resumes from the same step, and each decision can be
replayed from a recorded status in a table test.

One call does what the current state allows and no more: it records the
check that ran, handles a human request, and advances through as many steps
as are ready (a ``setWeight`` followed by a timed pause advances once and
then waits). Progress never goes backwards except by a rollback, an undo after
a promotion (within ``spec.rollbackWindow``), or a new candidate, which
restarts from the first stage.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from modelrollout.api.base import format_ts, parse_duration, parse_ts
from modelrollout.api.gates import InconclusivePolicy, MetricGate
from modelrollout.api.spec import Automation, CanaryStep, ModelRolloutSpec
from modelrollout.api.status import (
    REASON_REFUSED,
    REASON_UNREACHABLE,
    AnalysisRun,
    GateResult,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
    ScaledDown,
    Stage,
    Verdict,
    Weights,
)
from modelrollout.engine.admission import waiting_message
from modelrollout.engine.bounds import bounded, clip
from modelrollout.engine.conditions import set_conditions
from modelrollout.engine.seed import stable_from_route
from modelrollout.engine.types import (
    Admission,
    Decision,
    Event,
    EventType,
    GateRefusal,
    GuardFinding,
    Observations,
    Plan,
    RequestVerb,
    TrafficIntent,
)

HISTORY_LIMIT = 50
LEDGER_LIMIT = 20

#: Pause reasons (``status.pauseReason``) the engine clears by itself, and ones only a
#: human clears. A pause at an approval checkpoint keeps the wire value ``gate``.
PAUSE_INCONCLUSIVE = "inconclusive"
PAUSE_USER = "user"
PAUSE_SPEC = "spec"
PAUSE_APPROVAL = "gate"


# ----------------------------------------------------------------------- planning


def plan(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> Plan:
    """Is a check or a preflight due, of which gates, and which Deployments to read? Pure."""
    due = scale_down_due(spec, status, now)
    return replace(_check_plan(spec, status, now), read_replicas=(due,) if due else ())


def _check_plan(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> Plan:
    if starting(spec, status):
        if not spec.analysis.metrics:
            return Plan(check_due=False)
        # Every gate of every stage: a typo in a post-promotion gate is as fatal as one in
        # the first, and is best found before any traffic moves.
        return Plan(
            check_due=False,
            preflight=True,
            candidate_version=spec.candidate.version,
            stable_version=status.stable_version or (spec.stable.version if spec.stable else None),
            stage=first_stage(spec).value,
            gates=tuple(spec.analysis.metrics),
        )
    gates = active_gates(spec, status)
    if in_rollback_window(status, now):
        # After the promotion: the promoted version is judged against the previous one.
        return Plan(
            check_due=bool(gates) and _check_due(spec, status, now),
            candidate_version=status.stable_version,
            stable_version=status.previous_stable_version,
            stage=Stage.ROLLBACK_WINDOW.value,
            gates=tuple(gates),
        )
    if not gates or status.phase.is_terminal or status.candidate_version is None:
        return Plan(check_due=False)
    if status.candidate_version != spec.candidate.version:
        return Plan(check_due=False)  # a new candidate: start it first, measure later
    no_traffic = status.weights.candidate == 0 and status.mirror_percent == 0
    if no_traffic and status.stage != Stage.PREVIEW:
        # The candidate sees no traffic: nothing to measure. A blue-green preview is the
        # exception: its Service takes direct requests (smoke tests) that no route shows.
        return Plan(check_due=False)
    return Plan(
        check_due=_check_due(spec, status, now),
        candidate_version=status.candidate_version,
        stable_version=status.stable_version,
        stage=status.stage.value if status.stage else None,
        gates=tuple(gates),
    )


def check_due_at(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> datetime:
    """When the next check is due: an interval after the last check or step start.

    ``datetime.min`` when neither is known (due at once). ``plan`` and ``next_wake``
    both read it, so the check a wake-up is for is the one the plan then takes.
    """
    since = max(
        (t for t in (parse_ts(status.last_check_at), parse_ts(status.step_started_at)) if t),
        default=None,
    )
    if since is None:
        return datetime.min
    return since + timedelta(seconds=parse_duration(spec.analysis.interval))


def _check_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> bool:
    return now >= check_due_at(spec, status)


def starting(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """The next decide starts the spec's candidate: it is about to get its first traffic.

    True for a first candidate, a replacement, and one whose preflight failed or has not
    passed yet (its version is not recorded until it starts).
    """
    stable = status.stable_version or (spec.stable.version if spec.stable else None)
    return stable is not None and spec.candidate.version not in (status.candidate_version, stable)


def first_stage(spec: ModelRolloutSpec) -> Stage:
    """The stage a new candidate starts in."""
    if spec.strategy.shadow is not None:
        return Stage.SHADOW
    return Stage.CANARY if spec.strategy.canary is not None else Stage.PREVIEW


def active_gates(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> list[MetricGate]:
    """The gates checked in the current stage.

    A gate without ``stages`` is checked up to the promotion; after it, within
    the rollback window, only the gates that list ``rollbackWindow`` are.
    """
    stage = status.stage
    if stage == Stage.ROLLBACK_WINDOW:
        return [g for g in spec.analysis.metrics if g.stages and stage in g.stages]
    return [g for g in spec.analysis.metrics if g.stages is None or stage in g.stages]


def in_rollback_window(status: ModelRolloutStatus, now: datetime) -> bool:
    """Promoted, and the previous version can still be brought back by an undo."""
    until = parse_ts(status.undo_until)
    return (
        status.phase == Phase.SUCCEEDED
        and status.stage == Stage.ROLLBACK_WINDOW
        and status.previous_stable_version is not None
        and until is not None
        and now < until
    )


def scale_down_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> str | None:
    """The old version whose Deployment is due to be scaled down after a blue-green switch.

    Due at ``scaleDownAt``, but never while a rollback window is open or still
    ahead (before the promotion): an undo must find the previous version ready
    to serve. Before the promotion the old version is still the stable one;
    after it, the previous stable one.
    """
    at = parse_ts(status.scale_down_at)
    if at is None or now < at or status.scaled_down is not None:
        return None
    if status.stage == Stage.POST_PROMOTION and not status.phase.is_terminal:
        return status.stable_version if spec.rollback_window is None else None
    if status.phase == Phase.SUCCEEDED and not in_rollback_window(status, now):
        return status.previous_stable_version
    return None


# ----------------------------------------------------------------------- deciding


class _Tick:
    """The working state of one decide call."""

    def __init__(self, spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> None:
        self.spec = spec
        self.s = status.model_copy(deep=True)
        self.now = now
        self.events: list[Event] = []
        self.retired: tuple[str, ...] = ()
        self.scale: dict[str, int] = {}

    # -- small verbs -----------------------------------------------------------

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, clip(message)))

    def record(self, reason: str, message: str | None = None) -> None:
        s = self.s
        s.history.append(
            HistoryEntry(
                at=format_ts(self.now),
                phase=s.phase,
                stage=s.stage or Stage.DONE,
                step_index=s.step_index,
                weight=s.weights.candidate,
                mirror_percent=s.mirror_percent,
                reason=reason,
                message=message,
                candidate_version=s.candidate_version,
            )
        )
        del s.history[:-HISTORY_LIMIT]

    def set_traffic(self, weight: int, mirror: int) -> None:
        self.s.weights = Weights(stable=100 - weight, candidate=weight)
        self.s.mirror_percent = mirror

    def enter_stage(self, stage: Stage, step_index: int | None = None) -> None:
        s = self.s
        s.stage = stage
        s.step_index = step_index
        s.stage_started_at = format_ts(self.now)
        s.step_started_at = format_ts(self.now)
        s.consecutive_passes = 0

    def elapsed(self, since: str | None) -> float:
        t = parse_ts(since)
        return 0.0 if t is None else (self.now - t).total_seconds()

    def pause(self, kind: str, message: str, checkpoint: str | None = None) -> None:
        s = self.s
        if s.phase == Phase.PAUSED and s.pause_reason == kind and s.awaiting_approval == checkpoint:
            return
        s.phase = Phase.PAUSED
        s.pause_reason = kind
        s.awaiting_approval = checkpoint
        s.message = message
        self.record("Paused", message)
        # A pause that a human must look into (no data) is a warning; a planned checkpoint is not.
        kind_of = EventType.WARNING if kind == PAUSE_INCONCLUSIVE else EventType.NORMAL
        self.event(kind_of, "Paused", message)

    def unpause(self, message: str) -> None:
        s = self.s
        s.pause_reason = None
        s.awaiting_approval = None
        s.phase = self.running_phase()
        s.message = message
        self.record("Resumed", message)
        self.event(EventType.NORMAL, "Resumed", message)

    def hold(self, reason: str, message: str, event: EventType | None) -> None:
        """Stay ``Pending`` (nothing moved for the new candidate), saying why; once per why."""
        s = self.s
        if s.phase == Phase.PENDING and s.message == message:
            return
        s.phase = Phase.PENDING
        s.message = message
        self.record(reason, message)
        if event is not None:
            self.event(event, reason, message)

    def refuse_gates(self, refused: tuple[GateRefusal, ...]) -> None:
        """``Failed`` with ``InvalidGate``: a gate cannot be measured as written.

        The new candidate is not recorded as started and gets nothing; a candidate it
        replaced leaves the route. A fixed manifest passes the next preflight and starts.
        """
        s = self.s
        why = "; ".join(f"gate {r.gate}: {r.reason}" for r in refused)
        message = (
            f"invalid gate: {why}; {self.spec.candidate.version} gets no traffic, "
            f"all of it stays on {s.stable_version}"
        )
        if s.phase == Phase.FAILED and s.message == message:
            return
        previous = s.candidate_version
        if previous and previous != s.stable_version:
            self.retired = (previous,)
        s.candidate_version = None
        s.phase = Phase.FAILED
        s.stage = Stage.DONE
        s.step_index = None
        s.pause_reason = None
        s.awaiting_approval = None
        self.set_traffic(0, 0)
        s.message = message
        self.record("InvalidGate", message)
        self.event(EventType.WARNING, "InvalidGate", message)

    def preflight_passed(self, obs: Observations) -> bool:
        """May the spec's candidate get traffic? Only once every gate's query was accepted.

        Until then nothing moves: a refused query fails the rollout (``InvalidGate``);
        no answer from Prometheus holds it in ``Pending`` and the shell tries again.
        """
        spec = self.spec
        if not spec.analysis.metrics:
            return True
        candidate = spec.candidate.version
        p = obs.preflight
        if p is None:
            self.hold(
                "Preflight",
                f"sending each gate's query to Prometheus once before {candidate} gets traffic",
                None,
            )
            return False
        if p.refused:
            self.refuse_gates(p.refused)
            return False
        if p.unreachable is not None:
            self.hold(
                "PrometheusUnreachable",
                f"{p.unreachable}{_retrying(obs)}; {candidate} gets no traffic until each "
                "gate's query has been checked",
                EventType.WARNING,
            )
            return False
        return True

    def describe(self) -> str:
        """What a running rollout is doing, in a line (after a passing problem is gone)."""
        s = self.s
        canary = self.spec.strategy.canary
        if s.stage == Stage.CANARY and canary is not None and s.step_index:
            return f"canary step {s.step_index} of {len(canary.steps)}"
        return (
            f"rolling out {s.candidate_version} (stable {s.stable_version}): "
            f"{s.stage.value if s.stage else ''}"
        )

    def running_phase(self) -> Phase:
        stage = self.s.stage
        if stage == Stage.SHADOW:
            return Phase.SHADOWING
        if stage == Stage.POST_PROMOTION:
            return Phase.PROMOTING
        return Phase.PROGRESSING

    def approved(self, checkpoint: str) -> bool:
        """An approval checkpoint passes once: the approval is spent when it is used."""
        if self.s.approved_checkpoint == checkpoint:
            self.s.approved_checkpoint = None
            return True
        return False

    # -- whole moves -----------------------------------------------------------

    def start_rollout(self, reason: str) -> None:
        s, spec = self.s, self.spec
        previous = s.candidate_version
        if previous and previous not in (spec.candidate.version, s.stable_version):
            self.retired = (previous,)
        s.candidate_version = spec.candidate.version
        s.rollout_started_at = format_ts(self.now)
        s.waiting_since = None
        s.consecutive_failures = 0
        s.consecutive_inconclusive = 0
        s.pause_reason = None
        s.awaiting_approval = None
        s.approved_checkpoint = None
        s.aborted = None
        # A new rollout ends the last one's rollback window; a scale-down still pending
        # is left to the user (docs/limitations.md).
        s.scale_down_at = None
        s.scaled_down = None
        s.previous_stable_version = None
        s.undo_until = None
        s.last_check_at = None
        if spec.strategy.shadow is not None:
            self.enter_stage(Stage.SHADOW)
            self.set_traffic(0, spec.strategy.shadow.mirror_percent)
        elif spec.strategy.canary is not None:
            self.enter_stage(Stage.CANARY, 0)
            self.set_traffic(0, 0)
        else:
            self.enter_blue_green_preview()
        s.phase = self.running_phase()
        s.message = (
            f"rolling out {s.candidate_version} (stable {s.stable_version}): "
            f"{s.stage.value if s.stage else ''}"
        )
        self.record(reason, s.message)
        self.event(EventType.NORMAL, reason, s.message)

    def wait_for_slot(self, admission: Admission | None) -> None:
        """Hold a new rollout in Pending until a slot is free; say its place in line."""
        assert admission is not None
        s = self.s
        first = s.waiting_since is None or s.phase != Phase.PENDING
        s.phase = Phase.PENDING
        s.message = waiting_message(admission)
        if first:
            s.waiting_since = format_ts(self.now)
            self.record("Waiting", s.message)
            self.event(EventType.NORMAL, "Waiting", s.message)

    def enter_blue_green_preview(self) -> None:
        bg = self.spec.strategy.blue_green
        assert bg is not None
        self.enter_stage(Stage.PREVIEW)
        self.set_traffic(bg.preview_weight, bg.preview_mirror_percent)

    def roll_back(self, reason: str, message: str) -> None:
        s = self.s
        s.phase = Phase.ROLLED_BACK
        s.stage = Stage.DONE
        s.pause_reason = None
        s.awaiting_approval = None
        s.scale_down_at = None  # the old version is the stable one again: it stays
        self.restore(s.stable_version)
        self.set_traffic(0, 0)
        s.message = message
        self.record(reason, message)
        self.event(EventType.WARNING, reason, message)

    def promote(self, message: str) -> None:
        s, window = self.s, self.spec.rollback_window
        old = s.stable_version
        s.stable_version = s.candidate_version
        s.phase = Phase.SUCCEEDED
        s.stage = Stage.DONE
        s.step_index = None
        s.pause_reason = None
        s.awaiting_approval = None
        self.set_traffic(0, 0)
        s.previous_stable_version = old if old != s.stable_version else None
        s.undo_until = None
        if old is not None and old != s.stable_version:
            self.retired = (old,)
        if s.previous_stable_version is not None and window is not None:
            s.undo_until = format_ts(self.now + timedelta(seconds=parse_duration(window)))
            self.enter_stage(Stage.ROLLBACK_WINDOW)
            s.consecutive_failures = 0
            s.consecutive_inconclusive = 0
            message += f"; {old} stays ready for an undo until {s.undo_until}"
        s.message = message
        self.record("Promoted", message)
        self.event(EventType.NORMAL, "Promoted", message)

    # -- after a promotion -----------------------------------------------------

    def window_open(self) -> bool:
        return in_rollback_window(self.s, self.now)

    def restore(self, version: str | None) -> None:
        """Give a scaled-down version back the replicas it had, before traffic returns to it."""
        s = self.s
        if version is not None and s.scaled_down is not None and s.scaled_down.version == version:
            self.scale[version] = s.scaled_down.replicas
            s.scaled_down = None

    def undo(self, why: str) -> None:
        """All traffic back to the version stable before the promotion, in one route write."""
        s = self.s
        promoted, previous = s.stable_version, s.previous_stable_version
        assert previous is not None
        s.stable_version = previous
        s.candidate_version = promoted
        s.phase = Phase.ROLLED_BACK
        s.stage = Stage.DONE
        s.step_index = None
        s.previous_stable_version = None
        s.undo_until = None
        s.scale_down_at = None
        self.restore(previous)
        self.set_traffic(0, 0)
        s.message = f"undone after promotion: all traffic back on {previous} ({why})"
        self.record("Undone", s.message)
        self.event(EventType.WARNING, "Undone", s.message)

    def refuse_undo(self) -> None:
        s = self.s
        if s.phase != Phase.SUCCEEDED or s.previous_stable_version is None:
            why = f"undo only follows a promotion (phase {s.phase.value})"
            if not s.phase.is_terminal:
                why += ": abort stops a rollout in progress"
        elif s.undo_until is None:
            why = "spec.rollbackWindow was not set at the promotion: there is no undo window"
        else:
            why = f"the rollback window closed at {s.undo_until}"
        self.event(EventType.WARNING, "UndoRefused", f"undo refused: {why}")

    def check_in_window(self, results: list[GateResult]) -> None:
        """A check after the promotion: failureLimit failures in a row undo it; no data never."""
        s, spec = self.s, self.spec
        verdict, counted = self.log_check(results)
        if verdict == Verdict.PASS:
            s.consecutive_failures = 0
            s.consecutive_inconclusive = 0
            s.consecutive_passes += 1
            return
        s.consecutive_passes = 0
        if verdict == Verdict.FAIL:
            s.consecutive_failures += 1
            s.consecutive_inconclusive = 0
            why = "; ".join(_explain(r) for r, v in counted if v == Verdict.FAIL)
            limit = spec.analysis.failure_limit
            if s.consecutive_failures >= limit:
                self.undo(
                    f"undone automatically: {why} ({s.consecutive_failures} failed checks in a "
                    f"row in the rollback window, limit {limit})"
                )
            else:
                self.event(
                    EventType.WARNING,
                    "AnalysisFailed",
                    f"after promotion: {why} ({s.consecutive_failures} of {limit} failed "
                    "checks in a row undo it)",
                )
            return
        s.consecutive_inconclusive += 1
        held = "; ".join(
            f"{r.metric}: {r.reason or 'no data'}" for r, v in counted if v == Verdict.INCONCLUSIVE
        )
        self.event(
            EventType.WARNING,
            "AnalysisInconclusive",
            f"after promotion: {held} (no data never undoes a promotion)",
        )

    def close_window(self) -> None:
        s = self.s
        if s.phase != Phase.SUCCEEDED or s.stage != Stage.ROLLBACK_WINDOW or self.window_open():
            return
        s.stage = Stage.DONE
        s.message = (
            f"{s.stable_version} is stable; the rollback window to "
            f"{s.previous_stable_version} closed at {s.undo_until}"
        )
        self.record("RollbackWindowClosed", s.message)
        self.event(EventType.NORMAL, "RollbackWindowClosed", s.message)

    def scale_down(self, obs: Observations) -> None:
        """Blue-green: the old version's Deployment to zero once it is no longer needed."""
        s = self.s
        version = scale_down_due(self.spec, s, self.now)
        if version is None or obs.replicas is None or version not in obs.replicas:
            return  # not due, or the shell has not read the Deployment yet
        s.scale_down_at = None
        replicas = obs.replicas[version]
        deployment = self.spec.deployment_for(self.spec.version_ref(version))
        if replicas is None:
            message = f"no Deployment {deployment} of {version} to scale down"
            self.event(EventType.NORMAL, "ScaledDown", message)
            return
        s.scaled_down = ScaledDown(version=version, replicas=replicas)
        self.scale[version] = 0
        message = (
            f"scaled down {version} (Deployment {deployment}, {replicas} replicas recorded "
            "for a rollback)"
        )
        self.record("ScaledDown", message)
        self.event(EventType.NORMAL, "ScaledDown", message)

    # -- analysis --------------------------------------------------------------

    def log_check(
        self, results: list[GateResult]
    ) -> tuple[Verdict, list[tuple[GateResult, Verdict]]]:
        """Judge a check and keep it in the ledger."""
        s = self.s
        verdict, counted = judge_check(results, self.spec.analysis.metrics)
        run = AnalysisRun(
            at=format_ts(self.now),
            stage=s.stage or Stage.DONE,
            step_index=s.step_index,
            verdict=verdict,
            results=results,
        )
        s.last_analysis = run
        s.analysis_ledger.append(run)
        del s.analysis_ledger[:-LEDGER_LIMIT]
        s.last_check_at = format_ts(self.now)
        return verdict, counted

    def guard_applies(self, finding: GuardFinding) -> bool:
        """The guard measured what runs now: this candidate, in this stage, with traffic."""
        s = self.s
        return (
            not s.phase.is_terminal
            and s.phase != Phase.PENDING
            and s.candidate_version == finding.candidate_version
            and (s.stage.value if s.stage else "") == finding.stage
            and s.stage_started_at == finding.stage_started_at
            and (s.weights.candidate > 0 or s.mirror_percent > 0)
        )

    def take_guard(self, finding: GuardFinding) -> None:
        """A gate shown bad between checks: kept in the ledger, and rolled back at once.

        Not counted towards ``failureLimit``: that limit counts scheduled checks, and a
        shown-bad verdict of an anytime-valid test already carries the gate's whole
        error level (docs/analysis.md, "The fast guard").
        """
        verdict, counted = self.log_check(list(finding.results))
        if verdict != Verdict.FAIL:  # pragma: no cover - the guard reports failures only
            return
        why = "; ".join(_explain(r) for r, v in counted if v == Verdict.FAIL)
        self.roll_back("RolledBack", f"rolled back by the fast guard: {why}")

    def take_check(self, results: list[GateResult]) -> Verdict:
        s, spec = self.s, self.spec
        verdict, counted = self.log_check(results)

        if verdict == Verdict.PASS:
            s.consecutive_failures = 0
            s.consecutive_inconclusive = 0
            s.consecutive_passes += 1
            if s.phase == Phase.PAUSED and s.pause_reason == PAUSE_INCONCLUSIVE:
                self.unpause("analysis has data again: carrying on")
            return verdict

        s.consecutive_passes = 0
        held_back = [r for r, v in counted if v == Verdict.INCONCLUSIVE]
        if verdict == Verdict.INCONCLUSIVE and all(_gathering(r) for r in held_back):
            # Not enough evidence yet is not missing data: the rollout holds where it is
            # (never a pass) without counting towards inconclusiveLimit.
            s.message = "waiting for evidence: " + "; ".join(
                f"{r.metric} has {r.samples or 0:g} of {r.needed_samples:g} samples"
                for r in held_back
            )
            return verdict
        if verdict == Verdict.FAIL:
            s.consecutive_failures += 1
            s.consecutive_inconclusive = 0
            failed = [r for r, v in counted if v == Verdict.FAIL]
            why = "; ".join(_explain(r) for r in failed)
            limit = spec.analysis.failure_limit
            if s.consecutive_failures >= limit:
                self.roll_back(
                    "RolledBack",
                    f"rolled back: {why} ({s.consecutive_failures} failed checks in a row, "
                    f"limit {limit})",
                )
            else:
                self.event(
                    EventType.WARNING,
                    "AnalysisFailed",
                    f"{why} ({s.consecutive_failures} of {limit} failed checks in a row)",
                )
            return verdict

        s.consecutive_inconclusive += 1
        held = [r for r, v in counted if v == Verdict.INCONCLUSIVE]
        why = "; ".join(f"{r.metric}: {r.reason or 'no data'}" for r in held)
        limit = spec.analysis.inconclusive_limit
        whose = _no_answer_reason(held)
        if s.consecutive_inconclusive >= limit:
            self.pause(
                PAUSE_INCONCLUSIVE,
                f"paused: analysis inconclusive {s.consecutive_inconclusive} times in a row "
                f"(limit {limit}): {why}",
            )
            if whose != "AnalysisInconclusive":
                self.event(EventType.WARNING, whose, why)
        else:
            self.event(
                EventType.WARNING,
                whose,
                f"{why} ({s.consecutive_inconclusive} of {limit} inconclusive checks)",
            )
        return verdict

    def held_by_failure(self, what: str) -> bool:
        """A failed check under ``failureLimit`` holds the weight: never more traffic.

        The next check decides: a pass lets the canary go on, one more failure (up to the
        limit) rolls it back. True, with the message saying so, while it holds.
        """
        s = self.s
        if s.consecutive_failures == 0 or not active_gates(self.spec, s):
            return False
        s.message = (
            f"holding at {s.weights.candidate}% instead of {what}: the last check failed "
            f"({s.consecutive_failures} of {self.spec.analysis.failure_limit} failed checks "
            "in a row roll back)"
        )
        return True

    def analysis_allows_promotion(self) -> bool:
        """Never promote without a passing check at the current traffic, if gates exist."""
        if not active_gates(self.spec, self.s):
            return True
        return self.s.consecutive_passes >= 1

    # -- requests --------------------------------------------------------------

    def handle_request(self, obs: Observations) -> None:
        s, req = self.s, obs.request
        if req is None or str(req) == s.handled_request:
            return
        s.handled_request = str(req)
        verb = req.verb
        if verb == RequestVerb.UNDO:
            if self.window_open():
                self.undo(f"{s.stable_version} was promoted; undone by a human")
            else:
                self.refuse_undo()
            return
        if s.phase.is_terminal:
            retryable = s.phase in (
                Phase.ROLLED_BACK,
                Phase.FAILED,
            ) and s.candidate_version not in (
                None,
                s.stable_version,
            )
            if verb == RequestVerb.RETRY and retryable and not admitted(obs):
                assert obs.admission is not None
                self.event(
                    EventType.WARNING,
                    "RequestIgnored",
                    f"retry: no rollout slot is free ({waiting_message(obs.admission)}); "
                    "send it again later",
                )
                return
            if verb == RequestVerb.RETRY and retryable:
                self.start_rollout("Retried")
                return
            self.event(
                EventType.WARNING,
                "RequestIgnored",
                f"{verb.value} does nothing in phase {s.phase.value}",
            )
            return
        if verb == RequestVerb.ABORT:
            s.aborted = True
            self.roll_back("Aborted", "aborted by a human: all traffic back on stable")
        elif verb == RequestVerb.PROMOTE_FULL:
            self.promote(f"promoted {s.candidate_version} by a human, skipping remaining steps")
        elif verb == RequestVerb.PROMOTE:
            if s.phase == Phase.PAUSED and s.pause_reason == PAUSE_SPEC:
                self.event(
                    EventType.WARNING,
                    "RequestIgnored",
                    "spec.paused is true: set it to false in the manifest to go on",
                )
                return
            checkpoint = s.awaiting_approval or _current_checkpoint(self.spec, s)
            s.approved_checkpoint = checkpoint
            if s.phase == Phase.PAUSED:
                self.unpause(f"promoted past {checkpoint} by a human")
            else:
                self.event(EventType.NORMAL, "Approved", f"{checkpoint} approved by a human")
        elif verb == RequestVerb.PAUSE:
            if s.phase != Phase.PAUSED:
                self.pause(PAUSE_USER, "paused by a human")
        elif verb == RequestVerb.RESUME:
            if s.phase != Phase.PAUSED:
                self.event(EventType.WARNING, "RequestIgnored", "resume: the rollout is not paused")
            elif s.pause_reason == PAUSE_SPEC:
                self.event(
                    EventType.WARNING,
                    "RequestIgnored",
                    "spec.paused is true: set it to false in the manifest to resume",
                )
            elif s.pause_reason == PAUSE_APPROVAL:
                self.event(
                    EventType.WARNING,
                    "RequestIgnored",
                    f"waiting at {s.awaiting_approval}: use promote to pass a gate",
                )
            else:
                s.consecutive_inconclusive = 0
                self.unpause("resumed by a human")
        elif verb == RequestVerb.RETRY:
            self.event(
                EventType.WARNING, "RequestIgnored", "retry only follows a rollback or a failure"
            )

    # -- progress --------------------------------------------------------------

    def moving(self) -> bool:
        return not self.s.phase.is_terminal and self.s.phase != Phase.PAUSED

    def advance(self) -> None:
        """Go through every stage that is ready, in order, within this one tick."""
        stages = {
            Stage.SHADOW: self.advance_shadow,
            Stage.CANARY: self.advance_canary,
            Stage.PREVIEW: self.advance_preview,
            Stage.POST_PROMOTION: self.advance_post_promotion,
        }
        for stage, step in stages.items():
            if self.s.stage == stage and self.moving():
                step()

    def await_approval(self, checkpoint: str, message: str) -> bool:
        """An approval checkpoint: True when a human approved it, else pause at it."""
        if self.approved(checkpoint):
            return True
        self.pause(PAUSE_APPROVAL, message, checkpoint=checkpoint)
        return False

    def advance_shadow(self) -> None:
        s, spec = self.s, self.spec
        shadow = spec.strategy.shadow
        assert shadow is not None
        human = self.approved("shadow:end")
        if not human:
            if self.elapsed(s.stage_started_at) < parse_duration(shadow.duration):
                return
            if not self.analysis_allows_promotion():
                return
            if spec.automation in (
                Automation.AFTER_SHADOW,
                Automation.EVERY_STEP,
            ) and not self.await_approval(
                "shadow:end", "shadow passed: waiting for a human to let live traffic in"
            ):
                return
        self.record("ShadowPassed", "shadow stage passed")
        self.event(EventType.NORMAL, "ShadowPassed", f"{s.candidate_version} passed shadow")
        if spec.strategy.canary is not None:
            self.enter_stage(Stage.CANARY, 0)
            self.set_traffic(0, 0)
        else:
            self.enter_blue_green_preview()
        s.phase = self.running_phase()

    def advance_canary(self) -> None:
        s, spec = self.s, self.spec
        canary = spec.strategy.canary
        assert canary is not None
        steps = canary.steps
        while self.moving():
            i = s.step_index or 0
            if i >= len(steps):
                self.try_promote_canary()
                return
            if not self.step_ready(i, steps[i]):
                return
            self.finish_step(i, steps[i])

    def step_ready(self, i: int, step: CanaryStep) -> bool:
        s, spec = self.s, self.spec
        key = f"canary:{i}"
        if step.set_weight is not None:
            raises = step.set_weight > s.weights.candidate
            if raises and self.held_by_failure(f"raising the weight to {step.set_weight}%"):
                return False
            if spec.automation == Automation.EVERY_STEP and raises:
                return self.await_approval(
                    key, f"waiting for approval to raise weight to {step.set_weight}%"
                )
            return True
        if step.pause is not None:
            if step.pause.duration is None:
                return self.await_approval(key, f"human gate at step {i}: promote to go on")
            if self.approved(key):
                return True
            if self.elapsed(s.step_started_at) < parse_duration(step.pause.duration):
                return False
            return not self.held_by_failure(f"ending the pause at step {i}")
        assert step.analysis is not None
        if self.approved(key):
            return True
        return s.consecutive_passes >= step.analysis.checks

    def finish_step(self, i: int, step: CanaryStep) -> None:
        s = self.s
        if step.set_weight is not None and step.set_weight != s.weights.candidate:
            old = s.weights.candidate
            self.set_traffic(step.set_weight, 0)
            s.consecutive_passes = 0
            msg = f"candidate {s.candidate_version} weight {old}% -> {step.set_weight}%"
            self.record("WeightChanged", msg)
            self.event(EventType.NORMAL, "WeightChanged", msg)
        s.step_index = i + 1
        s.step_started_at = format_ts(self.now)
        s.message = f"canary step {i + 1} of {len(self.spec.strategy.canary.steps)}"  # type: ignore[union-attr]

    def try_promote_canary(self) -> None:
        s, spec = self.s, self.spec
        if self.approved("canary:promotion"):
            self.promote(f"promoted {s.candidate_version} by a human after every canary step")
            return
        if not self.analysis_allows_promotion():
            return
        if spec.automation in (
            Automation.BEFORE_PROMOTION,
            Automation.EVERY_STEP,
        ) and not self.await_approval(
            "canary:promotion", "all steps passed: waiting for approval to promote"
        ):
            return
        self.promote(f"promoted {s.candidate_version}: every canary step passed")

    def advance_preview(self) -> None:
        s, spec = self.s, self.spec
        bg = spec.strategy.blue_green
        assert bg is not None
        human = self.approved("preview:promotion")
        if not human:
            if self.elapsed(s.stage_started_at) < parse_duration(bg.preview_duration):
                return
            if not self.analysis_allows_promotion():
                return
            needs_human = not bg.auto_promote or spec.automation in (
                Automation.BEFORE_PROMOTION,
                Automation.EVERY_STEP,
            )
            if needs_human and not self.await_approval(
                "preview:promotion", "preview passed: waiting for approval to switch"
            ):
                return
        self.enter_stage(Stage.POST_PROMOTION)
        self.set_traffic(100, 0)
        s.scale_down_at = format_ts(
            self.now + timedelta(seconds=parse_duration(bg.scale_down_delay))
        )
        s.phase = Phase.PROMOTING
        s.message = (
            f"switched all traffic to {s.candidate_version}; {s.stable_version} stays warm "
            f"until {s.scale_down_at}"
        )
        self.record("Switched", s.message)
        self.event(EventType.NORMAL, "Switched", s.message)

    def advance_post_promotion(self) -> None:
        s, spec = self.s, self.spec
        bg = spec.strategy.blue_green
        assert bg is not None
        if self.approved("postPromotion:end"):
            self.promote(f"promoted {s.candidate_version} by a human after the switch")
            return
        if self.elapsed(s.stage_started_at) < parse_duration(bg.post_promotion_duration):
            return
        if not self.analysis_allows_promotion():
            return
        self.promote(f"promoted {s.candidate_version}: post-promotion analysis passed")


def judge_check(
    results: list[GateResult], gates: list[MetricGate]
) -> tuple[Verdict, list[tuple[GateResult, Verdict]]]:
    """One verdict for a check, after each gate's ``onInconclusive`` policy.

    Returns the verdict and each counted result with the verdict it counts as
    (an ignored inconclusive result is left out; a ``Fail`` policy turns it into
    a failure). Any failure fails the check; else any inconclusive result makes
    it inconclusive; else it passes.
    """
    policies = {g.name: g.on_inconclusive for g in gates}
    counted: list[tuple[GateResult, Verdict]] = []
    for r in results:
        v = r.verdict
        if v == Verdict.INCONCLUSIVE:
            policy = policies.get(r.metric, InconclusivePolicy.HOLD)
            if policy == InconclusivePolicy.IGNORE:
                continue
            if policy == InconclusivePolicy.FAIL:
                v = Verdict.FAIL
        counted.append((r, v))
    if any(v == Verdict.FAIL for _, v in counted):
        return Verdict.FAIL, counted
    if any(v == Verdict.INCONCLUSIVE for _, v in counted):
        return Verdict.INCONCLUSIVE, counted
    return Verdict.PASS, counted


def _no_answer_reason(held: list[GateResult]) -> str:
    """The Event reason of an inconclusive check: a refused query is the manifest's to fix,
    an unreachable Prometheus the platform's, anything else (no data) nobody's yet."""
    reasons = [r.reason or "" for r in held]
    if any(x.startswith(REASON_REFUSED) for x in reasons):
        return "QueryRefused"
    if reasons and all(x.startswith(REASON_UNREACHABLE) for x in reasons):
        return "PrometheusUnreachable"
    return "AnalysisInconclusive"


def _retrying(obs: Observations) -> str:
    every = obs.retry_every
    return f"; retrying every {every:g}s" if every else "; retrying"


def _gathering(r: GateResult) -> bool:
    """An inconclusive result that only lacks samples (it will pass or fail with more)."""
    return r.needed_samples is not None and (r.samples or 0) < r.needed_samples


def _explain(r: GateResult) -> str:
    value = "no data" if r.value is None else f"{r.value:.4g}"
    limit = f"limit {r.limit_text}" if r.limit_text else (r.reason or "no limit")
    if r.limit_text and r.reason:
        limit += f"; {r.reason}"
    return f"gate {r.metric}: {value} ({limit})"


def _current_checkpoint(spec: ModelRolloutSpec, s: ModelRolloutStatus) -> str:
    if s.stage == Stage.SHADOW:
        return "shadow:end"
    if s.stage == Stage.PREVIEW:
        return "preview:promotion"
    if s.stage == Stage.POST_PROMOTION:
        return "postPromotion:end"
    if s.stage == Stage.CANARY and spec.strategy.canary is not None:
        i = s.step_index or 0
        return "canary:promotion" if i >= len(spec.strategy.canary.steps) else f"canary:{i}"
    return "none"  # pragma: no cover - every running stage is named above


def decide(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    obs: Observations,
    now: datetime,
) -> Decision:
    """The next status, the traffic the route should hold, and the events to send."""
    t = _Tick(spec, status, now)
    s = t.s
    drift = _drifted(status, obs)

    if s.stable_version is None and spec.stable is not None:
        s.stable_version = spec.stable.version
    if s.stable_version is None and not _seed_stable(t, obs):
        return _finish(t, obs, drift, traffic=False)

    if obs.traffic_error is not None and not obs.deleting:
        # The route cannot be read: hold everything (weights we cannot apply must not be
        # recorded as applied), say why, and try again next tick.
        before = {c.type: c.reason for c in s.conditions}
        if before.get("TrafficInSync") != "RouteUnavailable":
            t.event(EventType.WARNING, "RouteUnavailable", obs.traffic_error)
        if s.phase == Phase.PENDING or t.moving():
            # The top-level message says why nothing moves (a paused or ended rollout
            # keeps its own why; the TrafficInSync condition tells the route's).
            s.message = f"{obs.traffic_error}{_retrying(obs)}"
        return _finish(t, obs, None, traffic=False)

    if _was_unroutable(status) and t.moving() and s.phase != Phase.PENDING:
        s.message = t.describe()  # the route is back: say what runs again

    if obs.deleting:
        t.set_traffic(0, 0)
        if not s.phase.is_terminal:
            t.event(
                EventType.WARNING,
                "Deleted",
                f"deleted mid-rollout: all traffic back on {s.stable_version}",
            )
        return _finish(t, obs, drift, release=True)

    if s.candidate_version != spec.candidate.version:
        if spec.candidate.version == s.stable_version:
            if not s.phase.is_terminal or s.candidate_version is None:
                if s.candidate_version and s.candidate_version != s.stable_version:
                    t.retired = (s.candidate_version,)
                s.candidate_version = spec.candidate.version
                s.phase = Phase.SUCCEEDED
                s.stage = Stage.DONE
                t.set_traffic(0, 0)
                s.message = f"{s.stable_version} is stable; nothing to roll out"
                t.record("UpToDate", s.message)
            else:
                s.candidate_version = spec.candidate.version
        else:
            running = not s.phase.is_terminal and s.phase != Phase.PENDING
            holds_slot = s.candidate_version is not None and running
            if not holds_slot and not admitted(obs):
                t.wait_for_slot(obs.admission)
                return _finish(t, obs, drift)
            if not t.preflight_passed(obs):
                return _finish(t, obs, drift)
            # A running candidate is being replaced (a hold for preflight keeps its stage).
            restarted = (
                s.candidate_version not in (None, s.stable_version)
                and s.stage not in (None, Stage.DONE)
                and not s.phase.is_terminal
            )
            t.start_rollout("CandidateReplaced" if restarted else "RolloutStarted")

    t.handle_request(obs)

    if not s.phase.is_terminal:
        if spec.paused and s.pause_reason != PAUSE_SPEC:
            t.pause(PAUSE_SPEC, "paused by spec.paused")
        elif not spec.paused and s.pause_reason == PAUSE_SPEC:
            t.unpause("spec.paused was cleared")

    if obs.guard is not None and t.guard_applies(obs.guard):
        t.take_guard(obs.guard)
    if obs.analysis is not None and not s.phase.is_terminal:
        t.take_check(obs.analysis)
    elif obs.analysis is not None and t.window_open():
        t.check_in_window(obs.analysis)

    if s.pause_reason not in (PAUSE_SPEC, PAUSE_USER):
        t.advance()

    t.close_window()
    t.scale_down(obs)
    return _finish(t, obs, drift)


def admitted(obs: Observations) -> bool:
    """May a rollout start now? Always, when the operator sets no limit."""
    return obs.admission is None or obs.admission.admitted


def _seed_stable(t: _Tick, obs: Observations) -> bool:
    """Seed the first stable version from the route; False (and Failed, saying why) if unclear."""
    s = t.s
    found = "the route could not be read"
    if obs.traffic_error is not None:
        found = f"the route could not be read: {obs.traffic_error}"
    elif obs.route_backends is not None:
        version, found = stable_from_route(t.spec, obs.route_backends)
        if version is not None:
            s.stable_version = version
            t.record("StableFromRoute", f"stable version {version}: {found}")
            t.event(EventType.NORMAL, "StableFromRoute", f"stable version {version}: {found}")
            return True
    message = (
        f"no stable version known: {found}; set spec.stable.version to the version "
        "serving now, or make the route send all live traffic to it"
    )
    if s.phase != Phase.FAILED or s.message != message:
        s.phase = Phase.FAILED
        s.message = message
        t.record("Invalid", message)
        t.event(EventType.WARNING, "Invalid", message)
    return False


def _was_unroutable(before: ModelRolloutStatus) -> bool:
    return any(
        c.type == "TrafficInSync" and c.reason == "RouteUnavailable" for c in before.conditions
    )


def _drifted(before: ModelRolloutStatus, obs: Observations) -> tuple[int, int] | None:
    """What the route held, when it is not what the operator left there last tick."""
    if obs.traffic is None or obs.traffic_error is not None or before.phase == Phase.PENDING:
        return None
    if before.stable_version is None:
        return None
    seen = (obs.traffic.candidate_weight, obs.traffic.mirror_percent)
    applied = (before.weights.candidate, before.mirror_percent)
    return seen if seen != applied else None


def _finish(
    t: _Tick,
    obs: Observations,
    drift: tuple[int, int] | None,
    *,
    release: bool = False,
    traffic: bool = True,
) -> Decision:
    s = t.s
    s.observed_generation = obs.generation
    # A plain Service carries a canary by replica ratio: say that the weights are approximate.
    between = 0 < s.weights.candidate < 100
    s.weights_approximate = True if t.spec.traffic_routing.service and between else None
    intent: TrafficIntent | None = None
    if traffic and s.stable_version is not None:
        candidate = s.candidate_version if s.candidate_version != s.stable_version else None
        intent = TrafficIntent(
            stable_version=s.stable_version,
            candidate_version=candidate,
            candidate_weight=s.weights.candidate if candidate else 0,
            mirror_percent=s.mirror_percent if candidate else 0,
            retired_versions=t.retired,
        )
    if drift is not None and not release:
        t.event(
            EventType.WARNING,
            "TrafficDrift",
            f"the route held candidate {drift[0]}% / mirror {drift[1]}%, the operator had set "
            f"{s.weights.candidate}% / {s.mirror_percent}%: restoring",
        )
    set_conditions(s, obs, t.now, drift=drift is not None)
    return Decision(
        status=bounded(s.dump()),
        traffic=intent,
        events=t.events,
        release_finalizer=release,
        scale=t.scale,
    )
