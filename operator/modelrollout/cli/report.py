"""``kubectl modelrollout report``: a rollout's story as a picture (PNG) or a page (HTML).

Everything comes from the object itself: the traffic timeline from
``status.history``, the gate values from ``status.analysisLedger``. So a
report can be made after the fact, from a saved ``-o yaml``, with no
Prometheus; ``--prometheus`` only adds the full-resolution series of each
gate's query on top of the ledger's points.

Building the timeline is pure (:func:`modelrollout.cli.view.build_timeline`); drawing uses
matplotlib's object API with the Agg canvas, never ``pyplot``, so it needs
no display and keeps no global figure state between reports.

matplotlib is an optional extra (``pip install 'modelrollout[report]'``): the
operator and the other commands never draw, and it would add tens of megabytes
to every install and to the image. :func:`require_matplotlib` says so before
the command does any work.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelrollout.api.base import format_ts
from modelrollout.api.status import Phase
from modelrollout.cli.kube import EXIT_FAILED, CliError
from modelrollout.cli.view import (
    GateSeries,
    Obj,
    Timeline,
    build_timeline,
    dig,
    fmt_duration,
    fmt_value,
    gate_limit,
    group_history,
    namespace_of,
)

if TYPE_CHECKING:
    from modelrollout.analysis.gates import Plot
    from modelrollout.api.gates import MetricGate

#: The colour of each kind of marker (:data:`modelrollout.cli.view.MARKER_REASONS`).
MARKER_COLORS = {
    "RolloutStarted": "#444444",
    "CandidateReplaced": "#444444",
    "Retried": "#444444",
    "ShadowPassed": "#17becf",
    "WeightChanged": "#1f77b4",
    "Paused": "#ff7f0e",
    "Resumed": "#999999",
    "Switched": "#9467bd",
    "Promoted": "#2ca02c",
    "RolledBack": "#d62728",
    "Aborted": "#d62728",
    "Undone": "#d62728",
    "ScaledDown": "#7f7f7f",
}
#: Series related to a gate but not its value (own axis): compared metrics, per version.
OTHER_COLORS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
VERDICT_COLORS = {"Pass": "#2ca02c", "Fail": "#d62728", "Inconclusive": "#ff7f0e"}


# --------------------------------------------------------------------------- drawing

#: What ``report`` says when matplotlib is not installed.
MISSING_MATPLOTLIB = (
    "`report` draws with matplotlib, which is not installed: it is an optional extra. "
    "Install it with `pip install 'modelrollout[report]'` (or `pip install matplotlib`)."
)


def require_matplotlib() -> None:
    """Raise a :class:`CliError` (exit 2) saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise CliError(MISSING_MATPLOTLIB, EXIT_FAILED) from exc


def png_bytes(timeline: Timeline) -> bytes:
    """The report's figure: traffic on top, one panel per gate, markers across all panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    gate_names = sorted(set(timeline.gates) | set(timeline.prometheus))
    panels = 1 + len(gate_names)
    fig = Figure(figsize=(12, 3.6 + 2.4 * len(gate_names)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(timeline.title)

    ax = axes[0]
    if timeline.traffic:
        times = [t for t, _, _ in timeline.traffic] + [timeline.end]
        weights = [w for _, w, _ in timeline.traffic] + [timeline.traffic[-1][1]]
        mirrors = [m for _, _, m in timeline.traffic] + [timeline.traffic[-1][2]]
        ax.step(times, weights, where="post", color="#1f77b4", lw=2, label="candidate weight %")
        ax.step(times, mirrors, where="post", color="#17becf", lw=1.5, ls="--", label="mirror %")
        ax.legend(loc="center left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no history yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylim(-5, 105)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel("% of traffic")
    ax.grid(alpha=0.3)

    for name, gax in zip(gate_names, axes[1:], strict=True):
        points = timeline.gates.get(name, [])
        _draw_prometheus(gax, timeline.prometheus.get(name, []), timeline.notes.get(name))
        measured = [p for p in points if p.value is not None]
        if measured:
            gax.plot([p.at for p in measured], [p.value for p in measured], color="#333333", lw=1)
            gax.scatter(
                [p.at for p in measured],
                [p.value for p in measured],
                c=[VERDICT_COLORS.get(p.verdict, "#333333") for p in measured],
                s=28,
                zorder=3,
            )
        missing = [p for p in points if p.value is None]
        if missing:
            gax.scatter([p.at for p in missing], [0.0] * len(missing), marker="x",
                        color=VERDICT_COLORS["Inconclusive"], label="no data")  # fmt: skip
        limits = points[-1] if points else None
        if limits is not None and limits.max is not None:
            gax.axhline(
                limits.max, color="#d62728", ls="--", lw=1, label=f"max {fmt_value(limits.max)}"
            )
        if limits is not None and limits.min is not None:
            gax.axhline(
                limits.min, color="#d62728", ls=":", lw=1, label=f"min {fmt_value(limits.min)}"
            )
        gax.set_ylabel(name, fontsize=9)
        gax.grid(alpha=0.3)
        if gax.get_legend_handles_labels()[0]:
            gax.legend(loc="upper left", fontsize=7)

    span = max(
        (timeline.end - min((m.at for m in timeline.markers), default=timeline.end)),
        timedelta(seconds=1),
    )
    previous: datetime | None = None
    crowd = 0
    for m in timeline.markers:
        color = MARKER_COLORS.get(m.reason, "#444444")
        for a in axes:
            a.axvline(m.at, color=color, lw=1, alpha=0.7)
        # Markers closer than 1% of the span share a spot: fan their labels out sideways.
        crowd = crowd + 1 if previous is not None and m.at - previous < span / 100 else 0
        previous = m.at
        ax.annotate(
            m.label,
            xy=(m.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(9 * crowd, 3),
            textcoords="offset points",
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=7,
            color=color,
            annotation_clip=False,
        )
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw_prometheus(ax: Any, series: list[GateSeries], note: str | None) -> None:
    """Grey: the gate's own value; coloured, on a second axis: related series; a note."""
    own = [s for s in series if s.same_scale]
    for s in own:
        label = "prometheus" if len(own) == 1 else s.label
        ax.plot([t for t, _ in s.points], [v for _, v in s.points], color="#7f7f7f", lw=1,
                ls="-" if "stable" not in s.label else "--", label=label)  # fmt: skip
    other = [s for s in series if not s.same_scale]
    if other:
        twin = ax.twinx()
        for i, s in enumerate(other):
            twin.plot([t for t, _ in s.points], [v for _, v in s.points], lw=0.8, alpha=0.6,
                      color=OTHER_COLORS[i % len(OTHER_COLORS)], label=s.label)  # fmt: skip
        twin.tick_params(labelsize=7)
        twin.legend(loc="upper right", fontsize=6)
    if note:
        ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", va="bottom",
                fontsize=6, color="#555555", wrap=True)  # fmt: skip


def write_png(timeline: Timeline, path: Path) -> Path:
    path.write_bytes(png_bytes(timeline))
    return path


# ------------------------------------------------------------------------------ html

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.Pass { color: #2ca02c; } .Fail { color: #d62728; font-weight: bold; }
.Inconclusive { color: #ff7f0e; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (for cells built here from escaped parts)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_HISTORY_HEADERS = [
    "at",
    "phase",
    "stage",
    "step",
    "weight",
    "mirror",
    "reason",
    "candidate",
    "message",
]


def html_page(obj: Obj, timeline: Timeline, png: bytes, now: datetime) -> str:
    """A self-contained page: the figure inline (base64) and the tables behind it."""
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    e = html.escape
    candidate = status.get("candidateVersion") or dig(spec.get("candidate"), "version") or "?"
    facts = [
        ("model", spec.get("model", "?")),
        ("phase", status.get("phase", Phase.PENDING)),
        ("stable", status.get("stableVersion") or "?"),
        ("candidate", candidate),
    ]
    summary = " · ".join(f"{k} <b>{e(str(v))}</b>" for k, v in facts)
    summary += f" · generated {e(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}"
    rollouts = [
        [r.started_at, r.candidate, r.outcome, fmt_duration(r.duration_seconds), r.reason]
        for r in group_history(status, now)
    ]
    markers = [[format_ts(m.at), m.label, m.message] for m in timeline.markers]
    history = [
        [
            str(h.get("at", "")),
            str(h.get("phase", "")),
            str(h.get("stage", "")),
            "" if h.get("stepIndex") is None else str(h["stepIndex"]),
            f"{h.get('weight', 0)}%",
            f"{h.get('mirrorPercent', 0)}%",
            str(h.get("reason", "")),
            str(h.get("candidateVersion") or ""),
            str(h.get("message") or ""),
        ]
        for h in status.get("history") or []
        if isinstance(h, Mapping)
    ]
    ledger = []
    for run in status.get("analysisLedger") or []:
        if not isinstance(run, Mapping):
            continue
        gates = "<br>".join(
            f"{e(str(r.get('metric', '?')))}: {e(fmt_value(r.get('value')))} "
            f'({e(gate_limit(r))}) <span class="{e(str(r.get("verdict", "")))}">'
            f"{e(str(r.get('verdict', '?')))}</span>"
            + (f" - {e(str(r['reason']))}" if r.get("reason") else "")
            for r in run.get("results") or []
            if isinstance(r, Mapping)
        )
        verdict = str(run.get("verdict", "?"))
        ledger.append(
            [
                e(str(run.get("at", ""))),
                e(str(run.get("stage", ""))),
                "" if run.get("stepIndex") is None else e(str(run["stepIndex"])),
                f'<span class="{e(verdict)}">{e(verdict)}</span>',
                gates,
            ]
        )
    image = base64.b64encode(png).decode("ascii")
    provenance = ""
    if timeline.prometheus_url:
        drawn = ", ".join(
            f"{e(name)} ({len(series[0].points)} points)"
            if len(series) == 1
            else ", ".join(f"{e(name)} {e(s.label)} ({len(s.points)} points)" for s in series)
            for name, series in sorted(timeline.prometheus.items())
        )
        provenance = (
            f"<p>Grey lines: gate queries from Prometheus at {e(timeline.prometheus_url)}: "
            f"{drawn or 'no series returned'}.</p>"
        )
        if timeline.notes:
            notes = "; ".join(f"{e(k)}: {e(v)}" for k, v in sorted(timeline.notes.items()))
            provenance += f"<p>Not drawn as a series: {notes}.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(timeline.title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(timeline.title)}</h1>
<p>{summary}</p>
{provenance}
<img alt="candidate weight, mirror share and gate values over time"
 src="data:image/png;base64,{image}">
<h2>Rollouts</h2>
{_table(["started", "candidate", "outcome", "duration", "reason"], rollouts)}
<h2>Markers</h2>
{_table(["at", "marker", "message"], markers)}
<h2>History</h2>
{_table(_HISTORY_HEADERS, history)}
<h2>Gates</h2>
{_table(["gate", "kind", "limit"], gate_rows(spec))}
<h2>Analysis ledger</h2>
{_table(["at", "stage", "step", "verdict", "gates"], ledger, raw=True)}
</body></html>
"""


def gate_rows(spec: Obj) -> list[list[str]]:
    """(name, kind, limit in words) of each gate of the spec, from the analysis registry."""
    from pydantic import ValidationError

    from modelrollout.analysis import gates
    from modelrollout.api.gates import MetricGate

    rows = []
    for raw in dig(spec, "analysis", "metrics") or []:
        try:
            gate = MetricGate.model_validate(raw)
        except ValidationError as exc:
            rows.append([str(dig(raw, "name") or "?"), "?", _first_line(exc)])
            continue
        rows.append([gate.name, _camel(gates.kind_name(gate)), gates.limit_text(gate)])
    return rows


def _camel(field_name: str) -> str:
    head, *rest = field_name.split("_")
    return head + "".join(w.title() for w in rest)


def output_paths(target: str) -> list[Path]:
    """Which files ``-o`` means: ``x.png``, ``x.html``, or both for a name without either."""
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix == ".png" or suffix in (".html", ".htm"):
        return [path]
    return [Path(f"{target}.png"), Path(f"{target}.html")]


def write_report(
    obj: Obj, target: str, now: datetime, timeline: Timeline | None = None
) -> list[Path]:
    """Write the PNG and/or HTML ``target`` asks for; returns the paths written."""
    timeline = timeline or build_timeline(obj, now)
    png = png_bytes(timeline)
    written = []
    for path in output_paths(target):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            path.write_bytes(png)
        else:
            path.write_text(html_page(obj, timeline, png, now), encoding="utf-8")
        written.append(path)
    return written


# ------------------------------------------------------------------------ prometheus


class RangeReader(Protocol):
    """Answers a range query with its series, each as (time, value) points.

    :class:`modelrollout.analysis.source.PrometheusSource` is the one in production: the
    report asks Prometheus through the same client, TLS and timeout as the operator. A
    source that cannot answer raises :class:`~modelrollout.analysis.source.SourceError`.
    """

    def series(
        self, query: str, *, start: datetime, end: datetime, step: float
    ) -> list[list[tuple[datetime, float]]]: ...


@dataclass
class Gathered:
    """What ``--prometheus`` adds to a report."""

    series: dict[str, list[GateSeries]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    """Per gate: why (part of) it is not drawn, e.g. a drift statistic has no series."""
    warnings: list[str] = field(default_factory=list)
    """What failed: an unreachable Prometheus, a gate that does not parse."""


def prometheus_series(
    obj: Obj,
    source: RangeReader,
    start: datetime,
    end: datetime,
    step_seconds: float | None = None,
) -> Gathered:
    """Each gate's plottable queries over [start, end] at full resolution.

    What a gate kind draws comes from the analysis registry (``queries``): the value for
    each version where PromQL can say it, related series on their own axis, or a note
    where there is nothing to draw. The queries are filled in for the *current*
    candidate and stable versions, as the operator fills them; ``{{stage}}`` is left
    empty since a range spans several stages.
    """
    from pydantic import ValidationError

    from modelrollout.analysis import gates
    from modelrollout.api.spec import ModelRolloutSpec
    from modelrollout.api.status import ModelRolloutStatus

    out = Gathered()
    try:
        spec = ModelRolloutSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        out.warnings.append(f"spec: {_first_line(exc)}")
        return out
    try:
        status = ModelRolloutStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = ModelRolloutStatus()
    ctx = gates.context_for(
        spec, status, namespace=namespace_of(obj), now=end, stage="", seconds_in_stage=0.0
    )
    span = max((end - start).total_seconds(), 60.0)
    # Whole seconds: Prometheus reads "3.6s" as no duration at all. ~500 points: detailed,
    # and far under its 11,000-points-per-series limit.
    step = max(1, math.ceil(step_seconds or span / 500))
    for gate in spec.analysis.metrics:
        try:
            plot = gates.queries(gate, ctx)
        except ValueError as exc:  # TemplateError
            out.warnings.append(f"gate {gate.name}: {_first_line(exc)}")
            continue
        if plot.note:
            out.notes[gate.name] = plot.note
        _gather(out, gate, plot, source, start - timedelta(seconds=step),
                end + timedelta(seconds=step), step)  # fmt: skip
    return out


def _gather(
    out: Gathered,
    gate: MetricGate,
    plot: Plot,
    source: RangeReader,
    start: datetime,
    end: datetime,
    step: int,
) -> None:
    from modelrollout.analysis.source import SourceError

    for s in plot.series:
        try:
            found = source.series(s.promql, start=start, end=end, step=step)
        except SourceError as exc:
            out.warnings.append(f"gate {gate.name}: {_first_line(exc)}")
            return  # one warning per gate: the next query would fail the same way
        if len(found) > 1:
            which = f" ({s.label})" if len(plot.series) > 1 else ""
            out.warnings.append(
                f"gate {gate.name}{which}: {len(found)} series returned; showing the first"
            )
        if found and found[0]:
            out.series.setdefault(gate.name, []).append(GateSeries(s.label, found[0], s.same_scale))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
