"""Chart layout for the compliance report: a :class:`~service.report_content.Chart` as shapes.

:func:`layout_chart` places horizontal grouped bars, value labels, threshold markers and a
legend in a box of fixed width (y grows downwards, like SVG). :func:`chart_svg` writes them as
inline SVG (escaped, no script, no external reference); the PDF renderer draws the same shapes
with reportlab. Missing values (None) draw no bar and say ``n/a``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from service.report_content import Chart, fmt

WIDTH = 640.0
LABEL_W = 170.0  # group labels, left
VALUE_W = 70.0  # value labels, right of the bar area
BAR_H = 14.0
BAR_GAP = 3.0
GROUP_GAP = 12.0
TOP = 36.0  # title and legend
BOTTOM = 10.0
FONT = 11.0
COLORS = ("#5b7bb2", "#e07b39", "#3d9970", "#b05fa5")
MARKER = "#222222"


@dataclass(frozen=True)
class Rect:
    """A filled rectangle (x, y: top left)."""

    x: float
    y: float
    w: float
    h: float
    fill: str


@dataclass(frozen=True)
class Line:
    """A line segment."""

    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str
    width: float = 1.0
    dash: bool = False


@dataclass(frozen=True)
class Label:
    """Text at baseline (x, y); ``anchor`` is ``start``, ``middle`` or ``end``."""

    x: float
    y: float
    text: str
    size: float = FONT
    anchor: str = "start"
    bold: bool = False
    fill: str = "#222222"


Shape = Rect | Line | Label


def layout_chart(chart: Chart) -> tuple[float, float, list[Shape]]:
    """``(width, height, shapes)`` of ``chart``."""
    values = [v for _, vals in chart.groups for v in vals if v is not None]
    top = chart.scale if chart.scale is not None else max([v for v in values if v > 0] or [1.0])
    top = top or 1.0
    for marker in chart.markers.values():
        top = max(top, marker)
    area_x, area_w = LABEL_W, WIDTH - LABEL_W - VALUE_W
    shapes: list[Shape] = [Label(0, 14, chart.title, FONT + 1, bold=True)]
    x = 0.0
    for i, name in enumerate(chart.series):  # legend
        shapes.append(Rect(x, 21, 10, 10, COLORS[i % len(COLORS)]))
        shapes.append(Label(x + 14, 30, name, FONT - 1))
        x += 14 + 7 * len(name) + 18
    if chart.markers:
        shapes.append(Line(x, 26, x + 14, 26, MARKER, 2, dash=True))
        shapes.append(Label(x + 18, 30, "threshold", FONT - 1))
    y = TOP
    group_h = len(chart.series) * (BAR_H + BAR_GAP) - BAR_GAP
    for label, vals in chart.groups:
        short = label if len(label) <= 26 else label[:23] + "..."
        shapes.append(Label(LABEL_W - 8, y + group_h / 2 + 4, short, anchor="end"))
        for i, value in enumerate(vals):
            by = y + i * (BAR_H + BAR_GAP)
            if value is None:
                shapes.append(Label(area_x + 4, by + BAR_H - 3, "n/a", FONT - 1, fill="#777777"))
                continue
            w = max(0.0, min(1.0, value / top)) * area_w  # a negative value: no bar, its label
            shapes.append(Rect(area_x, by, max(w, 1.0), BAR_H, COLORS[i % len(COLORS)]))
            shapes.append(Label(area_x + w + 4, by + BAR_H - 3, fmt(value), FONT - 1))
        if label in chart.markers:
            mx = area_x + min(1.0, chart.markers[label] / top) * area_w
            shapes.append(Line(mx, y - 3, mx, y + group_h + 3, MARKER, 2, dash=True))
        y += group_h + GROUP_GAP
    axis_bottom = y - GROUP_GAP + 4
    shapes.append(Line(area_x, TOP - 4, area_x, axis_bottom, "#888888"))
    shapes.append(
        Label(
            area_x + area_w,
            axis_bottom + 12,
            f"scale 0 - {fmt(top)}",
            FONT - 2,
            "end",
            fill="#777777",
        )
    )
    return WIDTH, axis_bottom + 12 + BOTTOM, shapes


def chart_svg(chart: Chart) -> str:
    """Inline SVG of ``chart`` (every text escaped)."""
    width, height, shapes = layout_chart(chart)
    title = html.escape(chart.title)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{title}" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        'font-family="system-ui,sans-serif">'
    ]
    for s in shapes:
        if isinstance(s, Rect):
            parts.append(
                f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                f'fill="{s.fill}"/>'
            )
        elif isinstance(s, Line):
            dash = ' stroke-dasharray="4 3"' if s.dash else ""
            parts.append(
                f'<line x1="{s.x1:.1f}" y1="{s.y1:.1f}" x2="{s.x2:.1f}" y2="{s.y2:.1f}" '
                f'stroke="{s.stroke}" stroke-width="{s.width}"{dash}/>'
            )
        else:
            weight = ' font-weight="600"' if s.bold else ""
            parts.append(
                f'<text x="{s.x:.1f}" y="{s.y:.1f}" font-size="{s.size}" '
                f'text-anchor="{s.anchor}" fill="{s.fill}"{weight}>{html.escape(s.text)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
