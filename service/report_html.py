"""The compliance report as one self-contained HTML page (``.../report?format=html``).

Renders :func:`service.report_content.build_report_document`: the acceptance decision with
thresholds vs measured values, before/after charts (inline SVG), per fact its keyed fingerprint
and located units, the edit's footprint, lineage, file hashes, code version and history. Every
value is HTML-escaped; the page loads nothing (inline CSS and SVG, no script, no link), so it can
be filed as is and viewed under ``Content-Security-Policy: default-src 'none'``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from editing.report import ErasureReport
from service.report_chart import chart_svg
from service.report_content import Chart, ReportDocument, Table, Text, build_report_document

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:62rem;color:#222;
padding:0 1rem}h1{font-size:1.45rem;margin-bottom:.3rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .55rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.mono{font:12px ui-monospace,monospace;
word-break:break-all}
figure{margin:.8rem 0}.verdict{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;
font-weight:700}.verdict.accepted{background:#e3f4e6;color:#17692b}.verdict.rejected{background:
#fbe4e4;color:#a4161a}.ok{color:#17692b;font-weight:600}.bad{color:#a4161a;font-weight:600}
.note{color:#666}
"""


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="mono">{html.escape(c)}</td>'
            if i in table.mono
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def document_html(doc: ReportDocument) -> str:
    """The HTML page of a report document."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Erasure report <code>{html.escape(doc.erasure_id)}</code></h1>",
    ]
    if doc.verdict is not None:
        parts.append(
            f'<p><span class="verdict {doc.verdict}">{html.escape(doc.verdict.upper())}</span> '
            f"status <b>{html.escape(doc.status)}</b></p>"
        )
    for section in doc.sections:
        level = 3 if section.level == 3 else 2
        parts.append(f"<h{level}>{html.escape(section.title)}</h{level}>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_table_html(block))
            elif isinstance(block, Chart):
                parts.append(f"<figure>{chart_svg(block)}</figure>")
            elif isinstance(block, Text):
                cls = "" if block.tone == "plain" else f' class="{block.tone}"'
                parts.append(f"<p{cls}>{html.escape(block.text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report_html(
    report: ErasureReport | Mapping[str, Any],
    *,
    erasure_id: str,
    status: str,
    history: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The HTML page of ``report`` (typed, or the stored JSON) and the erasure's history."""
    return document_html(
        build_report_document(report, erasure_id=erasure_id, status=status, history=history)
    )
