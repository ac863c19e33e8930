"""What the plugin shows, as pure functions of a ModelRollout dict (and its Events).

Nothing here reads the cluster or the clock: ``now`` is an argument, the
object is the dict the API server returned. That keeps every table and view
testable from a hand-written status, and lets ``status --watch`` redraw the
same view it prints once.

Objects are read as dicts, not through the pydantic models: a CLI must still
show a rollout written by a newer operator (an unknown phase, an extra
field) instead of failing to parse it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

Obj = Mapping[str, Any]

PHASE_STYLE = {
    "Pending": "dim",
    "Shadowing": "cyan",
    "Progressing": "cyan",
    "Paused": "yellow",
    "Promoting": "blue",
    "Succeeded": "green",
    "RolledBack": "red",
    "Failed": "red bold",
}
VERDICT_STYLE = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow"}

#: Fail > Inconclusive > Pass: the gate a reader should look at first.
VERDICT_SEVERITY = {"Fail": 0, "Inconclusive": 1, "Pass": 2}

TERMINAL_PHASES = frozenset({"Succeeded", "RolledBack", "Failed"})

#: Default limits of ``spec.analysis`` (the CRD defaults them; a hand-made object may not).
DEFAULT_FAILURE_LIMIT = 2
DEFAULT_INCONCLUSIVE_LIMIT = 3


# ------------------------------------------------------------------------ basics


def _d(obj: Any, *path: str) -> Any:
    """``obj[a][b]...`` or None when any level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def name_of(obj: Obj) -> str:
    return str(_d(obj, "metadata", "name") or "")


def namespace_of(obj: Obj) -> str:
    return str(_d(obj, "metadata", "namespace") or "")


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


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns separated by three spaces, as ``kubectl get`` prints them (easy to grep and cut)."""
    all_rows = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    ]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------- gates


def limit_text(result: Obj) -> str:
    """``max 0.5``, ``min 0.9``, ``min 0.9, max 1``; ``-`` when the gate has no limit."""
    parts = []
    if result.get("min") is not None:
        parts.append(f"min {fmt_value(result['min'])}")
    if result.get("max") is not None:
        parts.append(f"max {fmt_value(result['max'])}")
    return ", ".join(parts) or "-"


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
    results = [r for r in _list(_d(status, "lastAnalysis", "results")) if isinstance(r, Mapping)]
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
        f"{fmt_value(result.get('value'))} ({limit_text(result)})"
    )


# ------------------------------------------------------------------------- steps


def canary_steps(obj: Obj) -> list[dict[str, Any]]:
    return [s for s in _list(_d(obj, "spec", "strategy", "canary", "steps")) if isinstance(s, dict)]


def step_text(obj: Obj) -> str:
    """``3/6``: the canary step the rollout is at, of how many; ``-`` outside a canary."""
    steps = canary_steps(obj)
    if not steps:
        return "-"
    status = obj.get("status") or {}
    index = status.get("stepIndex")
    if status.get("phase") == "Succeeded":
        return f"{len(steps)}/{len(steps)}"
    if isinstance(index, int):
        return f"{min(index, len(steps))}/{len(steps)}"
    return "-"


def describe_step(step: Obj) -> str:
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = _d(step, "pause", "duration")
        return f"pause {duration}" if duration else "pause until promoted (human gate)"
    if "analysis" in step:
        checks = _d(step, "analysis", "checks") or 1
        return f"analysis: {checks} passing check{'s' if checks != 1 else ''} in a row"
    return str(dict(step))


StepState = Literal["done", "current", "pending", "stopped"]


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
        stage = _d(entry, "stage")
        if stage and stage != "done":
            return str(stage), index if isinstance(index, int) else _d(entry, "stepIndex")
    last = status.get("lastAnalysis") or {}
    if last.get("stage"):
        return str(last["stage"]), index if isinstance(index, int) else last.get("stepIndex")
    return None, index if isinstance(index, int) else None


def strategy_steps(obj: Obj) -> list[StepLine]:
    """The strategy as a list of steps with where the rollout is among them."""
    strategy = _d(obj, "spec", "strategy") or {}
    status = obj.get("status") or {}
    lines: list[tuple[str, str, str]] = []  # (key, label, stage)
    shadow = strategy.get("shadow")
    if isinstance(shadow, Mapping):
        mirror = shadow.get("mirrorPercent", 100)
        lines.append(
            ("shadow", f"shadow: mirror {mirror}% for {shadow.get('duration', '10m')}", "shadow")
        )
    steps = canary_steps(obj)
    blue_green = strategy.get("blueGreen")
    if steps:
        lines += [(str(i), describe_step(s), "canary") for i, s in enumerate(steps)]
    elif isinstance(blue_green, Mapping):
        lines.append(
            (
                "preview",
                f"preview: weight {blue_green.get('previewWeight', 0)}%, mirror "
                f"{blue_green.get('previewMirrorPercent', 0)}% for "
                f"{blue_green.get('previewDuration', '5m')}",
                "preview",
            )
        )
        lines.append(
            (
                "postPromotion",
                f"switch, then post-promotion checks for "
                f"{blue_green.get('postPromotionDuration', '5m')} "
                f"(old version warm {blue_green.get('scaleDownDelay', '10m')})",
                "postPromotion",
            )
        )
    lines.append(("promote", "promote: candidate becomes stable", "done"))

    phase = status.get("phase")
    stage = status.get("stage")
    index = status.get("stepIndex")
    terminal_stop = phase in ("RolledBack", "Failed")
    if phase == "Succeeded":
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
    if stage == "canary":
        i = index if isinstance(index, int) else 0
        keys = [k for k, _, s in lines if s == "canary"]
        key = str(i) if i < len(keys) else "promote"
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
    stable = status.get("stableVersion") or _d(spec, "stable", "version") or "-"
    waiting = status.get("awaitingApproval") or (
        f"paused: {status['pauseReason']}" if status.get("pauseReason") else ""
    )
    return ListRow(
        namespace=namespace_of(obj),
        name=name_of(obj),
        model=str(spec.get("model") or "-"),
        stable=str(stable),
        candidate=str(_d(spec, "candidate", "version") or status.get("candidateVersion") or "-"),
        phase=str(status.get("phase") or "Pending"),
        stage=str(status.get("stage") or "-"),
        step=step_text(obj),
        weight=f"{weights.get('candidate', 0)}%",
        mirror=f"{status.get('mirrorPercent', 0)}%",
        gate=gate_summary(worst_gate(status)),
        age=age(_d(obj, "metadata", "creationTimestamp"), now),
        message=str(status.get("message") or ""),
        waiting=str(waiting or "-"),
        last_check=age(status.get("lastCheckAt"), now) if status.get("lastCheckAt") else "-",
    )


LIST_COLUMNS = [
    ("NAME", "name"),
    ("MODEL", "model"),
    ("STABLE", "stable"),
    ("CANDIDATE", "candidate"),
    ("PHASE", "phase"),
    ("STAGE", "stage"),
    ("STEP", "step"),
    ("WEIGHT", "weight"),
    ("MIRROR", "mirror"),
    ("GATE", "gate"),
    ("AGE", "age"),
]
WIDE_COLUMNS = [("WAITING", "waiting"), ("LAST-CHECK", "last_check"), ("MESSAGE", "message")]


def list_table(
    objs: Sequence[Obj], now: datetime, *, wide: bool = False, all_namespaces: bool = False
) -> str:
    """``kubectl modelrollout list``: one line per rollout, kubectl's plain column layout."""
    columns = list(LIST_COLUMNS) + (WIDE_COLUMNS if wide else [])
    if all_namespaces:
        columns.insert(0, ("NAMESPACE", "namespace"))
    rows = [asdict(list_row(o, now)) for o in objs]
    return plain_table([h for h, _ in columns], [[r[k] for _, k in columns] for r in rows])


# -------------------------------------------------------------------------- events


def event_time(event: Obj) -> datetime | None:
    """When an Event last happened: lastTimestamp, else eventTime (events.k8s.io style)."""
    for value in (
        event.get("lastTimestamp"),
        _d(event, "series", "lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        _d(event, "metadata", "creationTimestamp"),
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
        rv = str(_d(e, "metadata", "resourceVersion") or "0")
        return (event_time(e) or epoch, int(rv) if rv.isdigit() else 0)

    ordered = sorted(events, key=key)
    return ordered[-limit:] if limit > 0 else []


# -------------------------------------------------------------------------- status


def next_action(obj: Obj) -> str | None:
    """What a human can do now, as the command to type; None when the rollout needs nobody."""
    status = obj.get("status") or {}
    name = name_of(obj)
    phase = status.get("phase")
    if phase == "Paused":
        reason = status.get("pauseReason")
        if status.get("awaitingApproval") or reason == "gate":
            gate = status.get("awaitingApproval") or "a gate"
            return f"waiting for approval at {gate}: kubectl modelrollout promote {name}"
        if reason == "spec":
            return "paused by spec.paused: set it to false in the manifest to resume"
        return f"resume with: kubectl modelrollout resume {name}"
    if phase in ("RolledBack", "Failed"):
        return f"start this candidate again with: kubectl modelrollout retry {name}"
    return None


def _lag_notes(obj: Obj) -> list[str]:
    """Say so when the status lags the spec: it describes a rollout the user may not expect."""
    status = obj.get("status") or {}
    notes = []
    wanted = _d(obj, "spec", "candidate", "version")
    running = status.get("candidateVersion")
    if wanted and running and wanted != running:
        notes.append(
            f"spec asks for candidate {wanted}; the status still describes {running} "
            "(the operator has not picked the change up yet)"
        )
    generation = _d(obj, "metadata", "generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        notes.append(f"status is from generation {observed}, the spec is at {generation}")
    return notes


def _bar(weight: int, width: int = 20) -> str:
    filled = round(max(0, min(100, weight)) * width / 100)
    return "█" * filled + "░" * (width - filled)


def _section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _kv(rows: Sequence[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _table(*headers: str) -> Table:
    table = Table(
        box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0)
    )
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def status_view(obj: Obj, events: Sequence[Obj], now: datetime, *, max_events: int = 10) -> Group:
    """``kubectl modelrollout status NAME``: every part a human needs, in reading order."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    weights = status.get("weights") or {}
    candidate_weight = int(weights.get("candidate", 0) or 0)
    stable_weight = int(weights.get("stable", 100 - candidate_weight) or 0)
    mirror = int(status.get("mirrorPercent", 0) or 0)
    stable = status.get("stableVersion") or _d(spec, "stable", "version") or "?"
    candidate = status.get("candidateVersion") or _d(spec, "candidate", "version") or "?"

    phase_text = Text(phase, style=PHASE_STYLE.get(phase, ""))
    if phase == "Paused" and status.get("pauseReason"):
        phase_text.append(f" ({status['pauseReason']})", style="yellow")
    stage = status.get("stage") or "-"
    stage_text = str(stage) + (f", step {step_text(obj)}" if stage == "canary" else "")
    traffic = Text()
    traffic.append(f"stable {stable} {stable_weight}%  ")
    traffic.append(_bar(candidate_weight), style="cyan")
    traffic.append(f"  candidate {candidate} {candidate_weight}%   mirror {mirror}%")
    if status.get("weightsApproximate"):
        traffic.append("  (approximate: replica ratio)", style="dim")
    rows: list[tuple[str, RenderableType | str]] = [
        ("Phase", phase_text),
        ("Stage", stage_text),
        ("Versions", f"stable {stable} → candidate {candidate}"),
        ("Traffic", traffic),
    ]
    if status.get("message"):
        rows.append(("Message", str(status["message"])))
    action = next_action(obj)
    if action:
        rows.append(("Next", Text(action, style="yellow")))
    if status.get("rolloutStartedAt"):
        rows.append(
            (
                "Started",
                f"{status['rolloutStartedAt']} ({age(status['rolloutStartedAt'], now)} ago)",
            )
        )
    for note in _lag_notes(obj):
        rows.append(("Note", Text(note, style="yellow")))

    title = Text()
    title.append("ModelRollout ", style="bold")
    title.append(f"{namespace_of(obj)}/{name_of(obj)}", style="bold cyan")
    title.append(f"   model {spec.get('model', '?')}")
    parts: list[RenderableType] = [title, _kv(rows)]

    # Strategy
    parts.append(_section("Strategy"))
    marks = {"done": ("✓", "green"), "current": ("▶", "bold cyan"), "pending": ("·", "dim"),
             "stopped": ("✗", "bold red")}  # fmt: skip
    steps_table = _table("", "STEP", "")
    steps_table.show_header = False
    for line in strategy_steps(obj):
        mark, style = marks[line.state]
        where = line.key if line.key.isdigit() else ""
        note = ""
        if line.state == "current":
            note = "← here" + (f" ({phase.lower()})" if phase == "Paused" else "")
        elif line.state == "stopped":
            note = f"← {phase} here"
        steps_table.add_row(
            Text(mark, style=style),
            Text(f"{where:>2} {line.label}".strip()),
            Text(note, style=style),
        )
    parts.append(steps_table)

    # Analysis
    last = status.get("lastAnalysis")
    analysis = spec.get("analysis") or {}
    if isinstance(last, Mapping):
        where = str(last.get("stage", "?"))
        if last.get("stepIndex") is not None and last.get("stage") == "canary":
            where += f" step {last['stepIndex']}"
        header = Text(
            f"\nAnalysis  last check {age(last.get('at'), now)} ago, {where}: ", style="bold"
        )
        verdict = str(last.get("verdict", "?"))
        header.append(verdict, style=VERDICT_STYLE.get(verdict, ""))
        parts.append(header)
        gates = _table("GATE", "VALUE", "LIMIT", "SAMPLES", "VERDICT", "REASON")
        for r in _list(last.get("results")):
            if not isinstance(r, Mapping):
                continue
            samples = "-"
            if r.get("samples") is not None:
                samples = fmt_value(r["samples"])
                if r.get("neededSamples") is not None:
                    samples += f"/{fmt_value(r['neededSamples'])}"
            v = str(r.get("verdict", "?"))
            gates.add_row(
                str(r.get("metric", "?")),
                fmt_value(r.get("value")),
                limit_text(r),
                samples,
                Text(v, style=VERDICT_STYLE.get(v, "")),
                str(r.get("reason") or ""),
            )
        parts.append(gates)
        failure_limit = analysis.get("failureLimit", DEFAULT_FAILURE_LIMIT)
        inconclusive_limit = analysis.get("inconclusiveLimit", DEFAULT_INCONCLUSIVE_LIMIT)
        parts.append(
            Text(
                f"in a row: {status.get('consecutiveFailures', 0)} failed (rollback at "
                f"{failure_limit}), {status.get('consecutiveInconclusive', 0)} inconclusive "
                f"(pause at {inconclusive_limit}), {status.get('consecutivePasses', 0)} passed",
                style="dim",
            )
        )
    elif analysis.get("metrics"):
        parts.append(_section("Analysis"))
        parts.append(Text("no check yet", style="dim"))

    # Conditions
    conditions = [c for c in _list(status.get("conditions")) if isinstance(c, Mapping)]
    if conditions:
        parts.append(_section("Conditions"))
        table = _table("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
        for c in conditions:
            table.add_row(
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now),
                str(c.get("message") or ""),
            )
        parts.append(table)

    # Events
    parts.append(_section("Events"))
    shown = recent_events(events, max_events)
    if not shown:
        parts.append(Text("<none>", style="dim"))
    else:
        table = _table("AGE", "TYPE", "REASON", "MESSAGE")
        for e in shown:
            t = event_time(e)
            when = human_age((now - t).total_seconds()) if t else "<unknown>"
            count = e.get("count")
            if isinstance(count, int) and count > 1:
                when += f" (x{count})"
            kind = str(e.get("type", ""))
            table.add_row(
                when,
                Text(kind, style="yellow" if kind == "Warning" else ""),
                str(e.get("reason", "")),
                str(e.get("message") or e.get("note") or ""),
            )
        parts.append(table)
    return Group(*parts)


def status_line(obj: Obj) -> str:
    """The status in one line, for ``status --watch`` without a terminal (CI logs)."""
    status = obj.get("status") or {}
    weights = status.get("weights") or {}
    parts = [
        str(status.get("phase") or "Pending"),
        f"stage={status.get('stage') or '-'}",
        f"step={step_text(obj)}",
        f"weight={weights.get('candidate', 0)}%",
        f"mirror={status.get('mirrorPercent', 0)}%",
    ]
    gate = worst_gate(status)
    if gate:
        parts.append(f"gate={gate_summary(gate)}")
    if status.get("awaitingApproval"):
        parts.append(f"awaiting={status['awaitingApproval']}")
    line = " ".join(parts)
    if status.get("message"):
        line += f" | {status['message']}"
    return line


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
    history = [e for e in _list(_d(status, "history")) if isinstance(e, Mapping)]
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
    phase = _d(status, "phase")
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


def history_table(records: Sequence[RolloutRecord]) -> str:
    """``kubectl modelrollout history``: one line per attempt, newest last."""
    rows = []
    for r in records:
        started = ("≤ " if r.truncated else "") + r.started_at
        candidate = r.candidate + (" (retry)" if r.started_by == "Retried" else "")
        duration = fmt_duration(r.duration_seconds)
        if r.outcome == "in progress" and r.duration_seconds is not None:
            duration += " so far"
        rows.append([started, candidate, r.outcome, duration, r.reason])
    return plain_table(["STARTED", "CANDIDATE", "OUTCOME", "DURATION", "REASON"], rows)
