"""The compliance report as a PDF (``GET /v1/erasures/{id}/report?format=pdf``), with reportlab.

Renders the same :class:`~service.report_content.ReportDocument` as the HTML page: tables as
reportlab tables of escaped paragraphs, charts as vector drawings of the shapes
:func:`service.report_chart.layout_chart` places. reportlab is pure Python (no system library);
it is imported only when a PDF is asked for.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from editing.report import ErasureReport
from service.report_chart import Label, Line, Rect, layout_chart
from service.report_content import Chart, ReportDocument, Table, Text, build_report_document

_TONES = {"ok": "#17692b", "bad": "#a4161a", "note": "#666666", "plain": "#222222"}


def _col_widths(table: Table, avail: float, minimum: float = 36.0) -> list[float]:
    """Column widths: a minimum each, the rest shared by (capped) content length."""
    weights = []
    for i, header in enumerate(table.headers):
        cells = [len(r[i]) for r in table.rows if i < len(r)] or [0]
        cap = 48 if i in table.mono else 40
        weights.append(max(len(header), 4, min(cap, max(cells))))
    spare = max(0.0, avail - minimum * len(weights))
    total = sum(weights)
    return [minimum + spare * w / total for w in weights]


def _drawing(chart: Chart, avail: float) -> Any:
    from reportlab.graphics.shapes import Drawing, Group, String
    from reportlab.graphics.shapes import Line as RLLine
    from reportlab.graphics.shapes import Rect as RLRect
    from reportlab.lib.colors import HexColor

    width, height, shapes = layout_chart(chart)
    scale = min(1.0, avail / width)
    group = Group()
    for s in shapes:
        if isinstance(s, Rect):
            group.add(
                RLRect(
                    s.x, height - s.y - s.h, s.w, s.h, fillColor=HexColor(s.fill), strokeColor=None
                )
            )
        elif isinstance(s, Line):
            group.add(
                RLLine(
                    s.x1,
                    height - s.y1,
                    s.x2,
                    height - s.y2,
                    strokeColor=HexColor(s.stroke),
                    strokeWidth=s.width,
                    strokeDashArray=[4, 3] if s.dash else None,
                )
            )
        elif isinstance(s, Label):
            group.add(
                String(
                    s.x,
                    height - s.y,
                    s.text,
                    fontName="Helvetica-Bold" if s.bold else "Helvetica",
                    fontSize=s.size,
                    fillColor=HexColor(s.fill),
                    textAnchor=s.anchor,
                )
            )
    group.scale(scale, scale)
    drawing = Drawing(width * scale, height * scale)
    drawing.add(group)
    return drawing


def document_pdf(doc: ReportDocument) -> bytes:
    """The PDF bytes of a report document (A4)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, TableStyle
    from reportlab.platypus import Table as RLTable

    styles = getSampleStyleSheet()
    cell = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=8, leading=10)
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    mono = ParagraphStyle("mono", parent=cell, fontName="Courier", fontSize=7, leading=9)
    out = io.BytesIO()
    margin = 15 * mm
    template = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin,
        title=doc.title,
        author="featureedit",
        subject="Compliance report of an erasure (no secret: keyed fingerprints only)",
    )
    avail = A4[0] - 2 * margin
    story: list[Any] = [Paragraph(escape(doc.title), styles["Title"])]
    if doc.verdict is not None:
        tone = "ok" if doc.verdict == "accepted" else "bad"
        story.append(
            Paragraph(
                f'<font color="{_TONES[tone]}"><b>{escape(doc.verdict.upper())}</b></font>'
                f" - status <b>{escape(doc.status)}</b>",
                styles["Heading3"],
            )
        )
    for section in doc.sections:
        style = styles["Heading2"] if section.level == 2 else styles["Heading3"]
        story.append(Paragraph(escape(section.title), style))
        for block in section.blocks:
            if isinstance(block, Table):
                rows = [[Paragraph(escape(h), head) for h in block.headers]]
                rows += [
                    [
                        Paragraph(escape(c), mono if i in block.mono else cell)
                        for i, c in enumerate(r)
                    ]
                    for r in block.rows
                ]
                table = RLTable(rows, colWidths=_col_widths(block, avail), repeatRows=1)
                table.setStyle(
                    TableStyle(
                        [
                            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
                            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f0f0")),
                            ("VALIGN", (0, 0), (-1, -1), "TOP"),
                        ]
                    )
                )
                story += [table, Spacer(1, 4)]
            elif isinstance(block, Chart):
                story += [_drawing(block, avail), Spacer(1, 4)]
            elif isinstance(block, Text):
                color = _TONES.get(block.tone, _TONES["plain"])
                text = f'<font color="{color}">{escape(block.text)}</font>'
                story += [Paragraph(text, styles["BodyText"]), Spacer(1, 3)]
    template.build(story)
    return out.getvalue()


def render_report_pdf(
    report: ErasureReport | Mapping[str, Any],
    *,
    erasure_id: str,
    status: str,
    history: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """The PDF of ``report`` (typed, or the stored JSON) and the erasure's history."""
    return document_pdf(
        build_report_document(report, erasure_id=erasure_id, status=status, history=history)
    )
