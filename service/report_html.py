"""A self-contained HTML page for an erasure report (``GET /v1/erasures/{id}/report?format=html``).

The report is the worker's JSON (``editing.erase.ErasureResult.to_dict()`` plus ids); this page
shows the acceptance decision, the metrics before and after the edit, and per fact the located
units. Every value is HTML-escaped; the page loads nothing (inline CSS, no script).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}code{font-size:.9em}
.ok{color:#17692b;font-weight:600}.bad{color:#a4161a;font-weight:600}
"""

_PAIRS = (
    ("exposure", "exposure_before", "exposure_after"),
    ("leak rate", "leak_rate_before", "leak_rate_after"),
    ("perplexity", "ppl_before", "ppl_after"),
)
_UNIT_COLUMNS = (
    "kind",
    "site",
    "layer",
    "index",
    "score",
    "activation",
    "control_activation",
    "prompt_count",
)


def _e(value: Any) -> str:
    """Escaped text of a value (floats to 4 significant digits, rates as value (count))."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, Mapping):
        if "value" in value:
            count = f" (n={value['count']})" if "count" in value else ""
            return _e(value["value"]) + html.escape(count)
        return html.escape(json.dumps(value, default=str, sort_keys=True))
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report_html(report: Mapping[str, Any], *, erasure_id: str, status: str) -> str:
    """The HTML page of ``report``."""
    metrics: Mapping[str, Any] = report.get("metrics") or {}
    acceptance: Mapping[str, Any] = report.get("acceptance") or {}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Erasure report {html.escape(erasure_id)}</title><style>{_CSS}</style></head>",
        f"<body><h1>Erasure report <code>{html.escape(erasure_id)}</code></h1>",
        _table(
            ["status", "model", "method", "checkpoint"],
            [
                [
                    status,
                    report.get("model_id") or report.get("model"),
                    report.get("method"),
                    report.get("checkpoint_id"),
                ]
            ],
        ),
    ]
    accepted = acceptance.get("accepted")
    if accepted is not None:
        cls, word = ("ok", "accepted") if accepted else ("bad", "rejected")
        parts.append(f'<h2>Acceptance: <span class="{cls}">{word}</span></h2>')
        reasons = acceptance.get("reasons") or []
        if reasons:
            parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
    parts.append("<h2>Metrics before and after</h2>")
    parts.append(
        _table(
            ["metric", "before", "after"],
            [(n, metrics.get(b), metrics.get(a)) for n, b, a in _PAIRS if b in metrics],
        )
    )
    paired = {k for _, b, a in _PAIRS for k in (b, a)}
    others = [(k, v) for k, v in metrics.items() if k not in paired]
    if others:
        parts.append("<h3>Other metrics</h3>")
        parts.append(_table(["metric", "value"], others))
    thresholds = report.get("thresholds") or {}
    if thresholds:
        parts.append("<h3>Thresholds</h3>")
        parts.append(_table(["threshold", "value"], list(thresholds.items())))
    for i, fact in enumerate(report.get("facts") or []):
        fm: Mapping[str, Any] = fact.get("metrics") or {}
        before, after = fm.get("before") or {}, fm.get("after") or {}
        parts.append(
            f"<h2>Fact {i + 1}: {_e(fact.get('subject'))} / {_e(fact.get('relation'))}</h2>"
        )
        parts.append(
            _table(
                ["fingerprint", "status", "reliability", "generalization", "delta prob"],
                [
                    [
                        fact.get("fingerprint"),
                        fact.get("status"),
                        fm.get("reliability"),
                        fm.get("generalization"),
                        fm.get("delta_prob"),
                    ]
                ],
            )
        )
        keys = [k for k in ("prob", "exposure", "leak_rate") if k in before or k in after]
        if keys:
            parts.append(
                _table(["", "before", "after"], [(k, before.get(k), after.get(k)) for k in keys])
            )
        units = fact.get("units") or []
        parts.append(f"<h3>Located units ({len(units)})</h3>")
        if units:
            parts.append(_table(_UNIT_COLUMNS, [[u.get(c) for c in _UNIT_COLUMNS] for u in units]))
    parts.append("</body></html>")
    return "\n".join(parts)
