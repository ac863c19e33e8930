"""How the plugin draws what :mod:`modelrollout.cli.view` computes: plain tables and rich text.

Only presentation lives here: column layouts, colours, marks and the order
of a page's parts. Every word and number comes from a view object, so a
change of wording is tested on the view and a change of layout here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from modelrollout.api.status import Phase, Verdict
from modelrollout.cli import view
from modelrollout.cli.view import Obj, RolloutRecord

PHASE_STYLE: dict[str, str] = {
    Phase.PENDING: "dim",
    Phase.SHADOWING: "cyan",
    Phase.PROGRESSING: "cyan",
    Phase.PAUSED: "yellow",
    Phase.PROMOTING: "blue",
    Phase.SUCCEEDED: "green",
    Phase.ROLLED_BACK: "red",
    Phase.FAILED: "red bold",
}
VERDICT_STYLE: dict[str, str] = {
    Verdict.PASS: "green",
    Verdict.FAIL: "red",
    Verdict.INCONCLUSIVE: "yellow",
}
STEP_MARKS = {
    "done": ("✓", "green"),
    "current": ("▶", "bold cyan"),
    "pending": ("·", "dim"),
    "stopped": ("✗", "bold red"),
}


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns separated by three spaces, as ``kubectl get`` prints them (easy to grep and cut)."""
    all_rows = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- list

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
    rows = [asdict(view.list_row(o, now)) for o in objs]
    return plain_table([h for h, _ in columns], [[r[k] for _, k in columns] for r in rows])


# -------------------------------------------------------------------------- status


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


def _verdict(verdict: str) -> Text:
    return Text(verdict, style=VERDICT_STYLE.get(verdict, ""))


def status_view(obj: Obj, events: Sequence[Obj], now: datetime, *, max_events: int = 10) -> Group:
    """``kubectl modelrollout status NAME``: the status page, drawn."""
    return draw_status(view.status_page(obj, events, now, max_events=max_events))


def draw_status(page: view.StatusPage) -> Group:
    phase_text = Text(page.phase, style=PHASE_STYLE.get(page.phase, ""))
    if page.phase == Phase.PAUSED and page.pause_reason:
        phase_text.append(f" ({page.pause_reason})", style="yellow")
    t = page.traffic
    traffic = Text()
    traffic.append(f"stable {t.stable} {t.stable_weight}%  ")
    traffic.append(_bar(t.candidate_weight), style="cyan")
    traffic.append(f"  candidate {t.candidate} {t.candidate_weight}%   mirror {t.mirror}%")
    if t.approximate:
        traffic.append("  (approximate: replica ratio)", style="dim")
    rows: list[tuple[str, RenderableType | str]] = [
        ("Phase", phase_text),
        ("Stage", page.stage),
        ("Versions", f"stable {t.stable} → candidate {t.candidate}"),
        ("Traffic", traffic),
    ]
    if page.message:
        rows.append(("Message", page.message))
    if page.next_action:
        rows.append(("Next", Text(page.next_action, style="yellow")))
    if page.started:
        rows.append(("Started", page.started))
    for note in page.notes:
        rows.append(("Note", Text(note, style="yellow")))

    title = Text()
    title.append("ModelRollout ", style="bold")
    title.append(f"{page.namespace}/{page.name}", style="bold cyan")
    title.append(f"   model {page.model}")
    parts: list[RenderableType] = [title, _kv(rows)]

    parts.append(_section("Strategy"))
    steps_table = _table("", "STEP", "")
    steps_table.show_header = False
    for line, note in page.steps:
        mark, style = STEP_MARKS[line.state]
        where = line.key if line.key.isdigit() else ""
        steps_table.add_row(
            Text(mark, style=style),
            Text(f"{where:>2} {line.label}".strip()),
            Text(note, style=style),
        )
    parts.append(steps_table)

    a = page.analysis
    if a is not None:
        header = Text(f"\nAnalysis  last check {a.age} ago, {a.where}: ", style="bold")
        header.append(_verdict(a.verdict))
        parts.append(header)
        gates = _table("GATE", "VALUE", "LIMIT", "SAMPLES", "VERDICT", "REASON")
        for g in a.gates:
            gates.add_row(g.metric, g.value, g.limit, g.samples, _verdict(g.verdict), g.reason)
        parts.append(gates)
        parts.append(
            Text(
                f"in a row: {a.failures} failed (rollback at {a.failure_limit}), "
                f"{a.inconclusive} inconclusive (pause at {a.inconclusive_limit}), "
                f"{a.passes} passed",
                style="dim",
            )
        )
    elif page.analysis_expected:
        parts.append(_section("Analysis"))
        parts.append(Text("no check yet", style="dim"))

    if page.conditions:
        parts.append(_section("Conditions"))
        table = _table("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
        for c in page.conditions:
            table.add_row(c.type, c.status, c.reason, c.since, c.message)
        parts.append(table)

    parts.append(_section("Events"))
    if not page.events:
        parts.append(Text("<none>", style="dim"))
    else:
        table = _table("AGE", "TYPE", "REASON", "MESSAGE")
        for e in page.events:
            style = "yellow" if e.type == "Warning" else ""
            table.add_row(e.when, Text(e.type, style=style), e.reason, e.message)
        parts.append(table)
    return Group(*parts)


def status_line(obj: Obj) -> str:
    """The status in one line, for ``status --watch`` without a terminal (CI logs)."""
    status = obj.get("status") or {}
    weights = status.get("weights") or {}
    parts = [
        str(status.get("phase") or Phase.PENDING),
        f"stage={status.get('stage') or '-'}",
        f"step={view.step_text(obj)}",
        f"weight={weights.get('candidate', 0)}%",
        f"mirror={status.get('mirrorPercent', 0)}%",
    ]
    gate = view.worst_gate(status)
    if gate:
        parts.append(f"gate={view.gate_summary(gate)}")
    if status.get("awaitingApproval"):
        parts.append(f"awaiting={status['awaitingApproval']}")
    line = " ".join(parts)
    if status.get("message"):
        line += f" | {status['message']}"
    return line


# ------------------------------------------------------------------------- history


def history_table(records: Sequence[RolloutRecord]) -> str:
    """``kubectl modelrollout history``: one line per attempt, newest last."""
    rows = []
    for r in records:
        started = ("≤ " if r.truncated else "") + r.started_at
        candidate = r.candidate + (" (retry)" if r.started_by == "Retried" else "")
        duration = view.fmt_duration(r.duration_seconds)
        if r.outcome == "in progress" and r.duration_seconds is not None:
            duration += " so far"
        rows.append([started, candidate, r.outcome, duration, r.reason])
    return plain_table(["STARTED", "CANDIDATE", "OUTCOME", "DURATION", "REASON"], rows)
