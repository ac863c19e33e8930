"""What the plugin shows, as data: pure functions of a ModelRollout dict (and its Events).

This is the CLI's view model. Nothing here reads the cluster or the clock
(``now`` is an argument) and nothing draws: :mod:`modelrollout.cli.render` turns
these objects into tables and rich text, :mod:`modelrollout.cli.report` into a
picture. That keeps every row and line testable from a hand-written status,
and lets ``status --watch`` redraw the same page it prints once.

Objects are read as dicts, not through the pydantic models: a CLI must still
show a rollout written by a newer operator (an unknown phase, an extra
field) instead of failing to parse it. The words of the domain (phases,
verdicts, pause reasons, defaults, how a limit reads) come from the API and
the engine, never written out here a second time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from modelrollout.api.spec import Analysis, BlueGreenStrategy, ShadowStrategy
from modelrollout.api.status import Phase, Stage, Verdict, limit_text
from modelrollout.engine.decide import PAUSE_APPROVAL, PAUSE_SPEC

Obj = Mapping[str, Any]

#: Phases after which a rollout moves only for a new candidate or a retry.
TERMINAL_PHASES = frozenset(p for p in Phase if p.is_terminal)
#: Terminal phases that did not promote: where ``retry`` applies.
STOPPED_PHASES = TERMINAL_PHASES - {Phase.SUCCEEDED}

#: Fail > Inconclusive > Pass: the gate a reader should look at first.
VERDICT_SEVERITY: dict[str, int] = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}

#: What the API server fills in when a manifest leaves these out (a hand-made object may
#: not have them): the pydantic models' own defaults.
DEFAULT_ANALYSIS = Analysis()
DEFAULT_SHADOW = ShadowStrategy()
DEFAULT_BLUE_GREEN = BlueGreenStrategy()


# ------------------------------------------------------------------------ basics


def dig(obj: Any, *path: str) -> Any:
    """``obj[a][b]...`` or None when any level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def name_of(obj: Obj) -> str:
    return str(dig(obj, "metadata", "name") or "")


def namespace_of(obj: Obj) -> str:
    return str(dig(obj, "metadata", "namespace") or "")


def parse_time(text: Any) -> datetime | None:
    """An API timestamp (``...Z``, fractional seconds, or an offset) as an aware UTC datetime."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # Python takes at most microseconds
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def human_age(seconds: float) -> str:
    """kubectl's HumanDuration: ``45s``, ``3m20s``, ``25m``, ``5h10m``, ``3d4h``, ``40d``."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def age(text: Any, now: datetime) -> str:
    """How long ago a timestamp was, kubectl style; ``<unknown>`` when there is none."""
    t = parse_time(text)
    return "<unknown>" if t is None else human_age((now - t).total_seconds())


def fmt_duration(seconds: float | None) -> str:
    """A span of time to the second: ``45s``, ``12m30s``, ``2h5m``."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m" if m else f"{h}h"
    if m:
        return f"{m}m{sec}s" if sec else f"{m}m"
    return f"{sec}s"


def fmt_value(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def _num(value: Any) -> float | None:
    """A number from the wire, or None (a bool or a string is not a limit)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# -------------------------------------------------------------------------- gates


def gate_limit(result: Obj, *, none: str = "-") -> str:
    """A gate's limits as the operator writes them in Events: ``<= 0.5``; ``none`` for none."""
    return limit_text(_num(result.get("min")), _num(result.get("max"))) or none


def gate_margin(result: Obj) -> float:
    """How far the value is inside its limits, relative to them; negative means beyond.

    Among gates of the same verdict, the one with the smallest margin is the
    worst: the failing gate furthest past its limit, or the passing gate
    closest to failing.
    """
    value = result.get("value")
    if not isinstance(value, int | float):
        return 0.0
    margins = []
    for key, sign in (("max", 1.0), ("min", -1.0)):
        limit = result.get(key)
        if isinstance(limit, int | float):
            scale = abs(limit) or 1.0
            margins.append(sign * (limit - value) / scale)
    return min(margins, default=0.0)


def worst_gate(status: Obj | None) -> dict[str, Any] | None:
    """The gate of the last analysis to look at first: Fail > Inconclusive > Pass."""
    results = [r for r in _list(dig(status, "lastAnalysis", "results")) if isinstance(r, Mapping)]
    if not results:
        return None
    ranked = sorted(
        enumerate(results),
        key=lambda ir: (
            VERDICT_SEVERITY.get(str(ir[1].get("verdict")), 3),
            gate_margin(ir[1]),
            ir[0],
        ),
    )
    return dict(ranked[0][1])


def gate_summary(result: Obj | None) -> str:
    """One gate in a few words: ``Fail p99-latency 0.62 (max 0.5)``."""
    if not result:
        return "-"
    return (
        f"{result.get('verdict', '?')} {result.get('metric', '?')} "
        f"{fmt_value(result.get('value'))} ({gate_limit(result)})"
    )


@dataclass(frozen=True)
class GateLine:
    """One gate of one check, as the ``status`` page lists it."""

    metric: str
    value: str
    limit: str
    samples: str
    verdict: str
    reason: str


def gate_line(result: Obj) -> GateLine:
    samples = "-"
    if result.get("samples") is not None:
        samples = fmt_value(result["samples"])
        if result.get("neededSamples") is not None:
            samples += f"/{fmt_value(result['neededSamples'])}"
    return GateLine(
        metric=str(result.get("metric", "?")),
        value=fmt_value(result.get("value")),
        limit=gate_limit(result),
        samples=samples,
        verdict=str(result.get("verdict", "?")),
        reason=str(result.get("reason") or ""),
    )


# ------------------------------------------------------------------------- steps


def canary_steps(obj: Obj) -> list[dict[str, Any]]:
    return [
        s for s in _list(dig(obj, "spec", "strategy", "canary", "steps")) if isinstance(s, dict)
    ]


def step_text(obj: Obj) -> str:
    """``3/6``: the canary step the rollout is at, of how many; ``-`` outside a canary."""
    steps = canary_steps(obj)
    if not steps:
        return "-"
    status = obj.get("status") or {}
    index = status.get("stepIndex")
    if status.get("phase") == Phase.SUCCEEDED:
        return f"{len(steps)}/{len(steps)}"
    if isinstance(index, int):
        return f"{min(index, len(steps))}/{len(steps)}"
    return "-"


def describe_step(step: Obj) -> str:
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = dig(step, "pause", "duration")
        return f"pause {duration}" if duration else "pause until promoted (human gate)"
    if "analysis" in step:
        checks = dig(step, "analysis", "checks") or 1
        return f"analysis: {checks} passing check{'s' if checks != 1 else ''} in a row"
    return str(dict(step))


StepState = Literal["done", "current", "pending", "stopped"]

#: The key of the strategy's last line, after every stage.
PROMOTE_KEY = "promote"


@dataclass(frozen=True)
class StepLine:
    """One line of the strategy as ``status`` shows it."""

    key: str
    """``shadow``, ``0``..``n-1`` for canary steps, ``preview``, ``postPromotion``, ``promote``."""
    label: str
    state: StepState


def _stopped_position(status: Obj) -> tuple[str | None, int | None]:
    """Where a rolled-back or failed rollout stopped: (stage, step index).

    The rollback itself records stage ``done``, so the stage comes from the
    last history entry before it that was still in a stage.
    """
    index = status.get("stepIndex")
    for entry in reversed(_list(status.get("history"))):
        stage = dig(entry, "stage")
        if stage and stage != Stage.DONE:
            return str(stage), index if isinstance(index, int) else dig(entry, "stepIndex")
    last = status.get("lastAnalysis") or {}
    if last.get("stage"):
        return str(last["stage"]), index if isinstance(index, int) else last.get("stepIndex")
    return None, index if isinstance(index, int) else None


def strategy_steps(obj: Obj) -> list[StepLine]:
    """The strategy as a list of steps with where the rollout is among them."""
    strategy = dig(obj, "spec", "strategy") or {}
    status = obj.get("status") or {}
    lines: list[tuple[str, str, str]] = []  # (key, label, stage)
    shadow = strategy.get("shadow")
    if isinstance(shadow, Mapping):
        mirror = shadow.get("mirrorPercent", DEFAULT_SHADOW.mirror_percent)
        duration = shadow.get("duration", DEFAULT_SHADOW.duration)
        lines.append((Stage.SHADOW, f"shadow: mirror {mirror}% for {duration}", Stage.SHADOW))
    steps = canary_steps(obj)
    blue_green = strategy.get("blueGreen")
    if steps:
        lines += [(str(i), describe_step(s), Stage.CANARY) for i, s in enumerate(steps)]
    elif isinstance(blue_green, Mapping):
        bg = DEFAULT_BLUE_GREEN
        lines.append(
            (
                Stage.PREVIEW,
                f"preview: weight {blue_green.get('previewWeight', bg.preview_weight)}%, mirror "
                f"{blue_green.get('previewMirrorPercent', bg.preview_mirror_percent)}% for "
                f"{blue_green.get('previewDuration', bg.preview_duration)}",
                Stage.PREVIEW,
            )
        )
        lines.append(
            (
                Stage.POST_PROMOTION,
                f"switch, then post-promotion checks for "
                f"{blue_green.get('postPromotionDuration', bg.post_promotion_duration)} "
                f"(old version warm {blue_green.get('scaleDownDelay', bg.scale_down_delay)})",
                Stage.POST_PROMOTION,
            )
        )
    lines.append((PROMOTE_KEY, "promote: candidate becomes stable", Stage.DONE))

    phase = status.get("phase")
    stage = status.get("stage")
    index = status.get("stepIndex")
    terminal_stop = phase in STOPPED_PHASES
    if phase == Phase.SUCCEEDED:
        position = len(lines)
    else:
        if terminal_stop:
            stage, index = _stopped_position(status)
        position = _position(lines, stage, index)
    out = []
    for i, (key, label, _) in enumerate(lines):
        state: StepState
        if position < 0 or i > position:
            state = "pending"
        elif i < position:
            state = "done"
        else:
            state = "stopped" if terminal_stop else "current"
        out.append(StepLine(key, label, state))
    return out


def _position(lines: list[tuple[str, str, str]], stage: Any, index: Any) -> int:
    """The index in ``lines`` of the step (stage, step index) is at; -1 when unknown."""
    if stage == Stage.CANARY:
        i = index if isinstance(index, int) else 0
        keys = [k for k, _, s in lines if s == Stage.CANARY]
        key = str(i) if i < len(keys) else PROMOTE_KEY
        return next(n for n, (k, _, _) in enumerate(lines) if k == key)
    for n, (key, _, _) in enumerate(lines):
        if key == stage:
            return n
    return -1


# ---------------------------------------------------------------------------- list


@dataclass(frozen=True)
class ListRow:
    namespace: str
    name: str
    model: str
    stable: str
    candidate: str
    phase: str
    stage: str
    step: str
    weight: str
    mirror: str
    gate: str
    age: str
    message: str
    waiting: str
    last_check: str


def list_row(obj: Obj, now: datetime) -> ListRow:
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    weights = status.get("weights") or {}
    stable = status.get("stableVersion") or dig(spec, "stable", "version") or "-"
    waiting = status.get("awaitingApproval") or (
        f"paused: {status['pauseReason']}" if status.get("pauseReason") else ""
    )
    return ListRow(
        namespace=namespace_of(obj),
        name=name_of(obj),
        model=str(spec.get("model") or "-"),
        stable=str(stable),
        candidate=str(dig(spec, "candidate", "version") or status.get("candidateVersion") or "-"),
        phase=str(status.get("phase") or Phase.PENDING),
        stage=str(status.get("stage") or "-"),
        step=step_text(obj),
        weight=f"{weights.get('candidate', 0)}%",
        mirror=f"{status.get('mirrorPercent', 0)}%",
        gate=gate_summary(worst_gate(status)),
        age=age(dig(obj, "metadata", "creationTimestamp"), now),
        message=str(status.get("message") or ""),
        waiting=str(waiting or "-"),
        last_check=age(status.get("lastCheckAt"), now) if status.get("lastCheckAt") else "-",
    )


# -------------------------------------------------------------------------- events


def event_time(event: Obj) -> datetime | None:
    """When an Event last happened: lastTimestamp, else eventTime (events.k8s.io style)."""
    for value in (
        event.get("lastTimestamp"),
        dig(event, "series", "lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        dig(event, "metadata", "creationTimestamp"),
    ):
        t = parse_time(value)
        if t is not None:
            return t
    return None


def recent_events(events: Iterable[Obj], limit: int = 10) -> list[Obj]:
    """The ``limit`` most recent Events, oldest first (as ``kubectl describe`` lists them)."""
    epoch = datetime.min.replace(tzinfo=UTC)

    def key(e: Obj) -> tuple[datetime, int]:
        # Timestamps have whole seconds; within one, the order of creation (resourceVersion,
        # an etcd revision) is the order the operator sent them.
        rv = str(dig(e, "metadata", "resourceVersion") or "0")
        return (event_time(e) or epoch, int(rv) if rv.isdigit() else 0)

    ordered = sorted(events, key=key)
    return ordered[-limit:] if limit > 0 else []


# -------------------------------------------------------------------------- status


def next_action(obj: Obj) -> str | None:
    """What a human can do now, as the command to type; None when the rollout needs nobody."""
    status = obj.get("status") or {}
    name = name_of(obj)
    phase = status.get("phase")
    if phase == Phase.PAUSED:
        reason = status.get("pauseReason")
        if status.get("awaitingApproval") or reason == PAUSE_APPROVAL:
            checkpoint = status.get("awaitingApproval") or "a gate"
            return f"waiting for approval at {checkpoint}: kubectl modelrollout promote {name}"
        if reason == PAUSE_SPEC:
            return "paused by spec.paused: set it to false in the manifest to resume"
        return f"resume with: kubectl modelrollout resume {name}"
    if phase in STOPPED_PHASES:
        return f"start this candidate again with: kubectl modelrollout retry {name}"
    if phase == Phase.SUCCEEDED and status.get("stage") == Stage.ROLLBACK_WINDOW:
        return (
            f"back to {status.get('previousStableVersion')} until {status.get('undoUntil')} "
            f"with: kubectl modelrollout undo {name}"
        )
    return None


def lag_notes(obj: Obj) -> list[str]:
    """Say so when the status lags the spec: it describes a rollout the user may not expect."""
    status = obj.get("status") or {}
    notes = []
    wanted = dig(obj, "spec", "candidate", "version")
    running = status.get("candidateVersion")
    if wanted and running and wanted != running:
        notes.append(
            f"spec asks for candidate {wanted}; the status still describes {running} "
            "(the operator has not picked the change up yet)"
        )
    generation = dig(obj, "metadata", "generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        notes.append(f"status is from generation {observed}, the spec is at {generation}")
    return notes


def step_note(line: StepLine, phase: str) -> str:
    """What the strategy list says next to a step: where the rollout is, or stopped."""
    if line.state == "current":
        return "← here" + (f" ({phase.lower()})" if phase == Phase.PAUSED else "")
    if line.state == "stopped":
        return f"← {phase} here"
    return ""


@dataclass(frozen=True)
class Traffic:
    """Who gets how much live traffic, and the mirrored share."""

    stable: str
    candidate: str
    stable_weight: int
    candidate_weight: int
    mirror: int
    approximate: bool
    """A plain Service carries the canary by replica ratio."""


@dataclass(frozen=True)
class AnalysisSummary:
    """The last check and the counters that decide rollback and pause."""

    age: str
    where: str
    """``canary step 3``, ``shadow``."""
    verdict: str
    gates: list[GateLine]
    failures: int
    failure_limit: int
    inconclusive: int
    inconclusive_limit: int
    passes: int


@dataclass(frozen=True)
class ConditionLine:
    type: str
    status: str
    reason: str
    since: str
    message: str


@dataclass(frozen=True)
class EventLine:
    when: str
    """``18m``, ``18m (x3)``: how long ago, and how often when it repeated."""
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class StatusPage:
    """``kubectl modelrollout status NAME``: every part a human needs, in reading order."""

    namespace: str
    name: str
    model: str
    phase: str
    pause_reason: str | None
    """Shown after the phase while Paused."""
    stage: str
    """``canary, step 3/6``; the stage alone outside a canary."""
    traffic: Traffic
    message: str | None
    next_action: str | None
    started: str | None
    """``2026-03-01T12:00:00Z (30m ago)``."""
    notes: list[str]
    steps: list[tuple[StepLine, str]]
    """Each line of the strategy with its note (:func:`step_note`)."""
    analysis: AnalysisSummary | None
    analysis_expected: bool
    """Gates are set but no check ran yet."""
    conditions: list[ConditionLine] = field(default_factory=list)
    events: list[EventLine] = field(default_factory=list)


def status_page(
    obj: Obj, events: Sequence[Obj], now: datetime, *, max_events: int = 10
) -> StatusPage:
    """The ``status`` page of one rollout, from its object and its Events."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = str(status.get("phase") or Phase.PENDING)
    weights = status.get("weights") or {}
    candidate_weight = int(weights.get("candidate", 0) or 0)
    stage = status.get("stage") or "-"
    started = status.get("rolloutStartedAt")
    analysis = spec.get("analysis") or {}
    return StatusPage(
        namespace=namespace_of(obj),
        name=name_of(obj),
        model=str(spec.get("model", "?")),
        phase=phase,
        pause_reason=str(status["pauseReason"]) if status.get("pauseReason") else None,
        stage=str(stage) + (f", step {step_text(obj)}" if stage == Stage.CANARY else ""),
        traffic=Traffic(
            stable=str(status.get("stableVersion") or dig(spec, "stable", "version") or "?"),
            candidate=str(
                status.get("candidateVersion") or dig(spec, "candidate", "version") or "?"
            ),
            stable_weight=int(weights.get("stable", 100 - candidate_weight) or 0),
            candidate_weight=candidate_weight,
            mirror=int(status.get("mirrorPercent", 0) or 0),
            approximate=bool(status.get("weightsApproximate")),
        ),
        message=str(status["message"]) if status.get("message") else None,
        next_action=next_action(obj),
        started=f"{started} ({age(started, now)} ago)" if started else None,
        notes=lag_notes(obj),
        steps=[(line, step_note(line, phase)) for line in strategy_steps(obj)],
        analysis=analysis_summary(obj, now),
        analysis_expected=bool(analysis.get("metrics")),
        conditions=[
            ConditionLine(
                type=str(c.get("type", "")),
                status=str(c.get("status", "")),
                reason=str(c.get("reason", "")),
                since=age(c.get("lastTransitionTime"), now),
                message=str(c.get("message") or ""),
            )
            for c in _list(status.get("conditions"))
            if isinstance(c, Mapping)
        ],
        events=[event_line(e, now) for e in recent_events(events, max_events)],
    )


def analysis_summary(obj: Obj, now: datetime) -> AnalysisSummary | None:
    """The last check, its gates and the counters; None before the first check."""
    status = obj.get("status") or {}
    last = status.get("lastAnalysis")
    if not isinstance(last, Mapping):
        return None
    analysis = dig(obj, "spec", "analysis") or {}
    where = str(last.get("stage", "?"))
    if last.get("stepIndex") is not None and last.get("stage") == Stage.CANARY:
        where += f" step {last['stepIndex']}"
    return AnalysisSummary(
        age=age(last.get("at"), now),
        where=where,
        verdict=str(last.get("verdict", "?")),
        gates=[gate_line(r) for r in _list(last.get("results")) if isinstance(r, Mapping)],
        failures=status.get("consecutiveFailures", 0),
        failure_limit=analysis.get("failureLimit", DEFAULT_ANALYSIS.failure_limit),
        inconclusive=status.get("consecutiveInconclusive", 0),
        inconclusive_limit=analysis.get("inconclusiveLimit", DEFAULT_ANALYSIS.inconclusive_limit),
        passes=status.get("consecutivePasses", 0),
    )


def event_line(event: Obj, now: datetime) -> EventLine:
    t = event_time(event)
    when = human_age((now - t).total_seconds()) if t else "<unknown>"
    count = event.get("count")
    if isinstance(count, int) and count > 1:
        when += f" (x{count})"
    return EventLine(
        when=when,
        type=str(event.get("type", "")),
        reason=str(event.get("reason", "")),
        message=str(event.get("message") or event.get("note") or ""),
    )


# ------------------------------------------------------------------------- history

#: History reasons that begin a rollout attempt.
START_REASONS = frozenset({"RolloutStarted", "CandidateReplaced", "Retried", "UpToDate"})
#: History reasons that end one, and the outcome they mean.
OUTCOME_REASONS = {
    "Promoted": "Promoted",
    "RolledBack": "RolledBack",
    "Aborted": "Aborted",
    "Invalid": "Failed",
    "UpToDate": "UpToDate",
    "Undone": "Undone",
}


@dataclass(frozen=True)
class RolloutRecord:
    """One attempt at rolling out one candidate, summarised from ``status.history``."""

    candidate: str
    started_at: str
    started_by: str
    """The history reason that began it (RolloutStarted, Retried, ...); ``?`` when truncated."""
    outcome: str
    """Promoted, RolledBack, Aborted, Failed, UpToDate, Replaced, in progress, or unknown."""
    ended_at: str | None
    duration_seconds: float | None
    reason: str
    entries: int
    truncated: bool = False
    """The history was capped: the attempt began before its oldest kept entry."""


def group_history(status: Obj | None, now: datetime) -> list[RolloutRecord]:
    """``status.history`` split into rollout attempts with their outcomes, oldest first.

    An attempt begins at a start reason or where the candidate changes, and
    ends at its outcome entry. The last attempt is "in progress" while the
    phase is not terminal; an attempt cut short by a new candidate is "Replaced".
    """
    history = [e for e in _list(dig(status, "history")) if isinstance(e, Mapping)]
    groups: list[list[Obj]] = []
    for entry in history:
        reason = entry.get("reason")
        candidate = entry.get("candidateVersion")
        if (
            not groups
            or reason in START_REASONS
            or (candidate and groups[-1][0].get("candidateVersion") not in (None, candidate))
        ):
            groups.append([entry])
        else:
            groups[-1].append(entry)
    phase = dig(status, "phase")
    records = []
    for n, group in enumerate(groups):
        first = group[0]
        is_last = n == len(groups) - 1
        outcome_entry = next(
            (e for e in reversed(group) if e.get("reason") in OUTCOME_REASONS), None
        )
        end_entry: Obj | None = outcome_entry
        if outcome_entry is not None:
            outcome = OUTCOME_REASONS[str(outcome_entry["reason"])]
        elif is_last and phase not in TERMINAL_PHASES:
            outcome = "in progress"
        elif not is_last and groups[n + 1][0].get("reason") == "CandidateReplaced":
            outcome = "Replaced"
            end_entry = groups[n + 1][0]
        elif is_last and phase in TERMINAL_PHASES:
            outcome = str(phase)
            end_entry = group[-1]
        else:
            outcome = "unknown"
        start = parse_time(first.get("at"))
        end: datetime | None = now
        if outcome != "in progress":
            end = parse_time(end_entry.get("at")) if end_entry is not None else None
        duration = (end - start).total_seconds() if start and end else None
        reason_entry = end_entry if end_entry is not None and outcome != "Replaced" else group[-1]
        records.append(
            RolloutRecord(
                candidate=str(first.get("candidateVersion") or "?"),
                started_at=str(first.get("at") or "?"),
                started_by=str(first.get("reason"))
                if first.get("reason") in START_REASONS
                else "?",
                outcome=outcome,
                ended_at=str(end_entry.get("at"))
                if end_entry is not None and outcome != "in progress"
                else None,
                duration_seconds=duration,
                reason=str(reason_entry.get("message") or reason_entry.get("reason") or ""),
                entries=len(group),
                truncated=n == 0 and first.get("reason") not in START_REASONS,
            )
        )
    return records


# ------------------------------------------------------------------------ timeline

#: History reasons the report marks on its timeline.
MARKER_REASONS = frozenset(
    {
        "RolloutStarted",
        "CandidateReplaced",
        "Retried",
        "ShadowPassed",
        "WeightChanged",
        "Paused",
        "Resumed",
        "Switched",
        "Promoted",
        "RolledBack",
        "Aborted",
        "Undone",
        "ScaledDown",
    }
)


@dataclass(frozen=True)
class Marker:
    at: datetime
    label: str
    reason: str
    message: str


@dataclass(frozen=True)
class GatePoint:
    at: datetime
    value: float | None
    verdict: str
    min: float | None
    max: float | None


@dataclass(frozen=True)
class GateSeries:
    """One series from Prometheus in a gate's panel (``report --prometheus``)."""

    label: str
    points: list[tuple[datetime, float]]
    same_scale: bool = True
    """The gate's own value (drawn against its limits); else on a second axis."""


@dataclass
class Timeline:
    """What the report draws, already in plotting form."""

    title: str
    traffic: list[tuple[datetime, int, int]]
    """(time, candidate weight %, mirror %) at each history entry."""
    end: datetime
    """Where the last traffic step ends: now while in progress, else the last entry."""
    gates: dict[str, list[GatePoint]]
    markers: list[Marker]
    prometheus: dict[str, list[GateSeries]] = field(default_factory=dict)
    """Each gate's queries over the whole timeline, when ``--prometheus`` was given."""
    notes: dict[str, str] = field(default_factory=dict)
    """Per gate: what ``--prometheus`` could not draw, and why."""
    prometheus_url: str | None = None


def marker_label(entry: Obj, previous: Obj | None = None) -> str:
    """``WeightChanged → 20% @ step 2``, ``RolledBack @ step 3``, ``ShadowPassed @ shadow``.

    Where it happened is the step index when the entry has one (a rollback
    keeps the step it stopped at); else the stage, or for entries recorded
    after the stage was left (a rollback records stage ``done``), the stage of
    the entry before.
    """
    reason = str(entry.get("reason", "?"))
    label = reason
    if reason == "WeightChanged":
        label += f" → {entry.get('weight', 0)}%"
    elif reason in ("RolloutStarted", "CandidateReplaced", "Retried") and entry.get(
        "candidateVersion"
    ):
        label += f" {entry['candidateVersion']}"
    step = entry.get("stepIndex")
    stage = entry.get("stage")
    if isinstance(step, int):
        label += f" @ step {step}"
    elif stage and stage != Stage.DONE:
        label += f" @ {stage}"
    elif previous is not None and previous.get("stage") not in (None, Stage.DONE):
        label += f" @ {previous['stage']}"
    return label


def build_timeline(obj: Obj, now: datetime) -> Timeline:
    """The traffic steps, gate points and markers of a rollout, from its status alone."""
    status = obj.get("status") or {}
    history = [e for e in status.get("history") or [] if isinstance(e, Mapping)]
    traffic: list[tuple[datetime, int, int]] = []
    markers: list[Marker] = []
    previous: Obj | None = None
    for entry in history:
        at = parse_time(entry.get("at"))
        if at is None:
            continue
        traffic.append(
            (at, int(entry.get("weight", 0) or 0), int(entry.get("mirrorPercent", 0) or 0))
        )
        if entry.get("reason") in MARKER_REASONS:
            markers.append(
                Marker(
                    at,
                    marker_label(entry, previous),
                    str(entry["reason"]),
                    str(entry.get("message") or ""),
                )
            )
        previous = entry

    gates: dict[str, list[GatePoint]] = {}
    for run in status.get("analysisLedger") or []:
        at = parse_time(dig(run, "at"))
        if at is None:
            continue
        for r in dig(run, "results") or []:
            if not isinstance(r, Mapping) or not r.get("metric"):
                continue
            value = r.get("value")
            gates.setdefault(str(r["metric"]), []).append(
                GatePoint(
                    at,
                    float(value) if isinstance(value, int | float) else None,
                    str(r.get("verdict", "?")),
                    _num(r.get("min")),
                    _num(r.get("max")),
                )
            )

    running = status.get("phase") not in TERMINAL_PHASES
    times = [t for t, _, _ in traffic] + [p.at for ps in gates.values() for p in ps]
    end = max(times, default=now)
    if running and traffic:
        end = max(end, now)
    title = f"ModelRollout {namespace_of(obj)}/{name_of(obj)}"
    model = (obj.get("spec") or {}).get("model")
    if model:
        title += f" (model {model})"
    return Timeline(title, traffic, end, gates, markers)
