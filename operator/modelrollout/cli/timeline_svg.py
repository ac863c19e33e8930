"""A rollout's timeline as inline SVG: the picture ``report`` draws, without matplotlib.

The dashboard shows it in the browser. It draws the same pure
:class:`~modelrollout.cli.view.Timeline` as the report: the candidate's
weight and mirror share as steps, one small panel per gate with its values
coloured by verdict against its limits, and a line for each marker (weight
changes, pauses, promotion, rollback, undo) with the history's words as its
tooltip. Every piece of text comes from the object, which a tenant writes, so
all of it is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from modelrollout.cli.report import MARKER_COLORS, VERDICT_COLORS
from modelrollout.cli.view import GatePoint, Timeline, fmt_value

WIDTH = 720
LEFT, RIGHT, TOP = 48, 12, 8
TRAFFIC_HEIGHT = 110
GATE_HEIGHT = 56
GAP = 22
WEIGHT_COLOR = "#1f77b4"
MIRROR_COLOR = "#17becf"
LIMIT_COLOR = "#d62728"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


class _Scale:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, t: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (t - self.start).total_seconds() / self.span


def _steps(points: Sequence[tuple[float, float]], end_x: float) -> str:
    """An SVG path that holds each value until the next point (traffic changes in steps)."""
    if not points:
        return ""
    parts = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    parts += [f"H{x:.1f}V{y:.1f}" for x, y in points[1:]]
    parts.append(f"H{end_x:.1f}")
    return "".join(parts)


def _gate_panel(name: str, points: list[GatePoint], top: float, scale: _Scale) -> list[str]:
    values = [p.value for p in points if p.value is not None]
    limits = sorted({v for p in points for v in (p.min, p.max) if v is not None})
    span = values + limits
    low, high = (min(span), max(span)) if span else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 1.0, high + 1.0
    pad = (high - low) * 0.1
    low, high = low - pad, high + pad

    def y(v: float) -> float:
        return top + GATE_HEIGHT * (1 - (v - low) / (high - low))

    out = [
        f'<g class="gate" data-gate="{_attr(name)}">',
        f'<rect x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}" height="{GATE_HEIGHT}" '
        'fill="#fafafa" stroke="#ddd"/>',
        f'<text x="{LEFT + 4}" y="{top + 12:.1f}" class="label">{escape(name)}</text>',
    ]
    for limit in limits:
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="{LIMIT_COLOR}" stroke-dasharray="4 3"><title>limit {limit:g}</title></line>'
        )
    for p in points:
        color = VERDICT_COLORS.get(p.verdict, "#7f7f7f")
        cy = y(p.value) if p.value is not None else top + GATE_HEIGHT - 4
        shape = "circle" if p.value is not None else "rect"
        tip = f"{name}: {fmt_value(p.value)} ({p.verdict}) at {p.at:%H:%M:%S}"
        if shape == "circle":
            out.append(
                f'<circle cx="{scale.x(p.at):.1f}" cy="{cy:.1f}" r="3.5" fill="{color}" '
                f'data-verdict="{_attr(p.verdict)}"><title>{escape(tip)}</title></circle>'
            )
        else:  # no data: a hollow square on the panel's floor
            out.append(
                f'<rect x="{scale.x(p.at) - 3:.1f}" y="{cy - 3:.1f}" width="6" height="6" '
                f'fill="none" stroke="{color}" data-verdict="{_attr(p.verdict)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    out.append("</g>")
    return out


def timeline_svg(timeline: Timeline) -> str:
    """The whole timeline as one ``<svg>`` element, sized to its panels."""
    times = [t for t, _, _ in timeline.traffic]
    times += [p.at for ps in timeline.gates.values() for p in ps]
    times += [m.at for m in timeline.markers]
    start = min(times, default=timeline.end)
    end = max(timeline.end, *times) if times else timeline.end
    scale = _Scale(start, end)
    height = TOP + TRAFFIC_HEIGHT + len(timeline.gates) * (GATE_HEIGHT + GAP) + GAP

    def y(percent: float) -> float:
        return TOP + TRAFFIC_HEIGHT * (1 - percent / 100)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="{_attr(timeline.title)}">',
        f"<title>{escape(timeline.title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{TRAFFIC_HEIGHT}" '
        'fill="#fafafa" stroke="#ddd"/>',
    ]
    for percent in (0, 50, 100):
        out.append(
            f'<text x="{LEFT - 6}" y="{y(percent) + 4:.1f}" text-anchor="end" class="axis">'
            f"{percent}%</text>"
        )
    end_x = scale.x(end)
    weight = [(scale.x(t), y(w)) for t, w, _ in timeline.traffic]
    mirror = [(scale.x(t), y(m)) for t, _, m in timeline.traffic]
    if weight:
        out.append(
            f'<path class="weight" d="{_steps(weight, end_x)}" fill="none" '
            f'stroke="{WEIGHT_COLOR}" stroke-width="2"><title>candidate weight</title></path>'
        )
    if any(m for _, _, m in timeline.traffic):
        out.append(
            f'<path class="mirror" d="{_steps(mirror, end_x)}" fill="none" '
            f'stroke="{MIRROR_COLOR}" stroke-width="1.5" stroke-dasharray="5 3">'
            "<title>mirrored share</title></path>"
        )
    top = TOP + TRAFFIC_HEIGHT + GAP
    for name, points in timeline.gates.items():
        out += _gate_panel(name, points, top, scale)
        top += GATE_HEIGHT + GAP
    bottom = height - GAP
    for marker in timeline.markers:
        x = scale.x(marker.at)
        color = MARKER_COLORS.get(marker.reason, "#7f7f7f")
        tip = f"{marker.at:%H:%M:%S} {marker.label}: {marker.message}"
        out.append(
            f'<line class="marker" data-reason="{_attr(marker.reason)}" x1="{x:.1f}" '
            f'x2="{x:.1f}" y1="{TOP}" y2="{bottom:.1f}" stroke="{color}" stroke-width="1" '
            f'opacity="0.7"><title>{escape(tip)}</title></line>'
        )
    when = "%H:%M:%S" if scale.span < 86400 else "%Y-%m-%d %H:%M"
    out.append(
        f'<text x="{LEFT}" y="{height - 6}" class="axis">{start.strftime(when)}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{height - 6}" text-anchor="end" class="axis">'
        f"{end.strftime(when)}</text>"
    )
    out.append("</svg>")
    return "".join(out)
