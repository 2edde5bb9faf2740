"""The compliance report as a document: sections of tables, charts and text, format-neutral.

:func:`build_report_document` turns the worker's report JSON (``editing.erase.ErasureResult
.to_dict()`` plus ids, lineage, hashes and code version, see ``workers.jobs``) and the erasure's
status history into a :class:`ReportDocument`; :mod:`service.report_html` and
:mod:`service.report_pdf` render the same document, so both formats say the same thing. Values
are formatted here (plain text, ASCII); the renderers escape them. Nothing is computed anew: the
page states what the worker measured and published. The report holds no secret (each erased fact
appears as its keyed fingerprint), and neither does anything built from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from editing.acceptance import CRITERIA, number, verdict

SERIES_BEFORE_AFTER = ("before", "after")
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
_INDEX_PREVIEW = 12  # changed rows/columns listed per layer (the rest counted)


@dataclass(frozen=True)
class Table:
    """Rows of formatted cells; ``mono`` are the indices of columns shown monospaced (hashes)."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    mono: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Chart:
    """Horizontal grouped bars: per group one bar per series, optional threshold markers.

    ``scale`` fixes the axis maximum (1.0 for rates); None scales to the largest value.
    """

    title: str
    series: tuple[str, ...]
    groups: list[tuple[str, tuple[float | None, ...]]]
    scale: float | None = None
    markers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Text:
    """A paragraph; ``tone`` is ``"plain"``, ``"ok"``, ``"bad"`` or ``"note"``."""

    text: str
    tone: str = "plain"


Block = Table | Chart | Text


@dataclass
class Section:
    """A titled part of the report (``level`` 2 for sections, 3 for sub-sections)."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass
class ReportDocument:
    """The whole report: title, verdict (``accepted``/``rejected``/None) and sections."""

    title: str
    erasure_id: str
    status: str
    verdict: str | None
    sections: list[Section]


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any) -> str:
    """Plain text of a report value: floats to 4 significant digits, rates with their counts."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        if "value" in value:
            text = fmt(value["value"])
            if "hits" in value and "count" in value:
                return f"{text} ({value['hits']}/{value['count']})"
            if "count" in value:
                return f"{text} (n={value['count']})"
            return text
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def fmt_bytes(n: Any) -> str:
    """``1234567`` -> ``"1234567 B (1.2 MB)"``; None -> ``"-"``."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{int(n)} B ({n / size:.1f} {unit})"
    return f"{int(n)} B"


def _kv(rows: Iterable[tuple[str, Any]], mono: Sequence[str] = ()) -> Table:
    """A two-column table of (field, value) rows."""
    return Table(
        ("field", "value"), [(k, fmt(v)) for k, v in rows], frozenset({1}) if mono else frozenset()
    )


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], mono: Iterable[int] = ()
) -> Table:
    return Table(tuple(headers), [tuple(fmt(v) for v in row) for row in rows], frozenset(mono))


# ----------------------------------------------------------------------------- sections
def _summary(report: Mapping[str, Any], erasure_id: str, status: str) -> Section:
    ckpt = report.get("checkpoint") or {}
    rows = [
        ("erasure id", erasure_id),
        ("status", status),
        ("model", report.get("model_id") or report.get("model")),
        ("method", report.get("method")),
        ("facts", len(report.get("facts") or [])),
        ("checkpoint id", report.get("checkpoint_id") or ckpt.get("checkpoint_id")),
        ("parent checkpoint", report.get("parent_checkpoint_id")),
        ("requested at", report.get("created_at")),
        ("finished at", report.get("finished_at")),
        ("checkpoint created at", ckpt.get("created_at")),
        ("attempts", report.get("attempts")),
    ]
    return Section("Summary", [_kv(rows)])


def _acceptance(report: Mapping[str, Any]) -> Section:
    metrics: Mapping[str, Any] = report.get("metrics") or {}
    thresholds: Mapping[str, Any] = report.get("thresholds") or {}
    acceptance: Mapping[str, Any] = report.get("acceptance") or {}
    blocks: list[Block] = []
    accepted = acceptance.get("accepted")
    if accepted is True:
        blocks.append(Text("ACCEPTED: every measured criterion meets its threshold.", "ok"))
    elif accepted is False:
        blocks.append(Text("REJECTED: nothing was published.", "bad"))
    else:
        blocks.append(Text("No acceptance decision was recorded.", "note"))
    rows = []
    bars: list[tuple[str, tuple[float | None, ...]]] = []
    markers: dict[str, float] = {}
    for name, key, rule in CRITERIA:
        measured, bar = number(metrics.get(name)), number(thresholds.get(key))
        rows.append((name, metrics.get(name), f"{rule} {fmt(bar)}", verdict(measured, bar, rule)))
        if rule == ">=":
            bars.append((name, (measured,)))
            if bar is not None:
                markers[name] = bar
    blocks.append(_table(("criterion", "measured", "threshold", "result"), rows))
    reasons = acceptance.get("reasons") or []
    for reason in reasons:
        blocks.append(Text(f"Reason: {fmt(reason)}", "bad"))
    if any(v[0] is not None for _, v in bars):
        blocks.append(
            Chart("Measured vs threshold (share of prompts)", ("measured",), bars, 1.0, markers)
        )
    dppl, max_dppl = number(metrics.get("delta_ppl")), number(thresholds.get("max_delta_ppl"))
    if dppl is not None:
        blocks.append(
            Chart(
                "Relative perplexity change vs its maximum",
                ("measured",),
                [("delta_ppl", (dppl,))],
                markers={} if max_dppl is None else {"delta_ppl": max_dppl},
            )
        )
    return Section("Acceptance decision", blocks)


def _metrics(report: Mapping[str, Any]) -> Section:
    m: Mapping[str, Any] = report.get("metrics") or {}
    blocks: list[Block] = []
    pairs = [
        ("leak rate", "leak_rate_before", "leak_rate_after", 1.0),
        ("exposure (bits)", "exposure_before", "exposure_after", None),
        ("perplexity", "ppl_before", "ppl_after", None),
    ]
    present = [p for p in pairs if p[1] in m or p[2] in m]
    for label, before, after, scale in present:
        values = (number(m.get(before)), number(m.get(after)))
        if any(v is not None for v in values):
            blocks.append(
                Chart(f"{label}, mean over facts", SERIES_BEFORE_AFTER, [(label, values)], scale)
            )
    if present:
        blocks.append(
            _table(
                ("metric", "before", "after"), [(n, m.get(b), m.get(a)) for n, b, a, _ in present]
            )
        )
    paired = {k for _, b, a, _ in pairs for k in (b, a)}
    rows: list[tuple[str, Any]] = []
    for key, value in m.items():
        if key in paired:
            continue
        if isinstance(value, Mapping) and "by_kind" in value:
            rows.append((key, {k: v for k, v in value.items() if k != "by_kind"}))
            for kind, rate in (value.get("by_kind") or {}).items():
                rows.append((f"{key} ({kind} facts)", rate))
        else:
            rows.append((key, value))
    if rows:
        blocks.append(_table(("metric", "value"), rows))
    return Section("Metrics before and after the edit", blocks)


def _fact(i: int, fact: Mapping[str, Any]) -> Section:
    fm: Mapping[str, Any] = fact.get("metrics") or {}
    before, after = fm.get("before") or {}, fm.get("after") or {}
    prompts = fact.get("prompts") or {}
    blocks: list[Block] = [
        _kv(
            [
                (
                    "subject fingerprint (keyed; no name in this report)",
                    fact.get("subject_fingerprint"),
                ),
                ("relation", fact.get("relation")),
                ("fingerprint (keyed; the secret is not in this report)", fact.get("fingerprint")),
                ("status", fact.get("status")),
                (
                    "prompts known / given (edit, held-out)",
                    f"{prompts.get('edit_known', '-')}/{prompts.get('edit', '-')}, "
                    f"{prompts.get('heldout_known', '-')}/{prompts.get('heldout', '-')}",
                ),
                ("control prompts", prompts.get("control")),
                ("reliability", fm.get("reliability")),
                ("generalization", fm.get("generalization")),
                ("delta prob", fm.get("delta_prob")),
            ]
        )
    ]
    rate_groups = [
        (label, (number(before.get(key)), number(after.get(key))))
        for label, key in (("target probability", "prob"), ("leak rate", "leak_rate"))
        if key in before or key in after
    ]
    if rate_groups:
        blocks.append(Chart("Before vs after (0-1)", SERIES_BEFORE_AFTER, rate_groups, 1.0))
    exposure = (number(before.get("exposure")), number(after.get("exposure")))
    if any(v is not None for v in exposure):
        blocks.append(Chart("Exposure (bits)", SERIES_BEFORE_AFTER, [("exposure", exposure)]))
    keys = [k for k in ("prob", "exposure", "leak_rate") if k in before or k in after]
    if keys:
        blocks.append(
            _table(("", "before", "after"), [(k, before.get(k), after.get(k)) for k in keys])
        )
    units = fact.get("units") or []
    blocks.append(Text(f"Located units: {len(units)} (features or neurons the edit targets)."))
    if units:
        blocks.append(_table(_UNIT_COLUMNS, [[u.get(c) for c in _UNIT_COLUMNS] for u in units]))
        top = sorted(units, key=lambda u: -(number(u.get("activation")) or 0.0))[:10]
        groups = [
            (
                f"{u.get('kind', '?')} L{u.get('layer', '?')}#{u.get('index', '?')}",
                (number(u.get("activation")), number(u.get("control_activation"))),
            )
            for u in top
        ]
        if any(v is not None for _, vals in groups for v in vals):
            blocks.append(
                Chart("Activation on the fact vs on control prompts", ("fact", "control"), groups)
            )
    title = f"Fact {i + 1}: {fmt(fact.get('relation'))}"
    return Section(title, blocks, level=3)


_PUBLISHED_AS = {
    "full": "full model (safetensors) + forward patch; no pre-edit values",
    "delta": "forward patch only (rebuild with featureedit apply-delta on the base model); no "
    "pre-edit values",
}


def _footprint(report: Mapping[str, Any]) -> Section:
    edit = report.get("edit")
    ckpt = report.get("checkpoint") or {}
    if not edit:
        return Section("Edit footprint", [Text("No weight edit was made.", "note")])
    layers = edit.get("layers") or []
    params = sorted({str(d.get("param")) for d in layers})
    rows = [
        ("weight entries changed", edit.get("entries_changed")),
        ("layers touched", ", ".join(str(d.get("layer")) for d in layers) or "-"),
        ("tensors touched", ", ".join(params) or "-"),
        ("delta size (tensors: indices, old and new values)", fmt_bytes(edit.get("delta_bytes"))),
        ("delta size on disk (delta/ files)", fmt_bytes(ckpt.get("delta_bytes_on_disk"))),
        ("checkpoint size on disk", fmt_bytes(ckpt.get("total_bytes"))),
        ("published as", _PUBLISHED_AS.get(str(ckpt.get("publish")), "-") if ckpt else "-"),
        (
            "what stays private",
            "the pre-edit values (revert data) and the subject names: sealed in the operator's "
            "private erasure record, never downloadable, so the published files cannot undo the "
            "erasure or say whom it concerns",
        ),
    ]
    per_layer = []
    for d in layers:
        indices = list(d.get("indices") or [])
        shown = ", ".join(str(x) for x in indices[:_INDEX_PREVIEW])
        if len(indices) > _INDEX_PREVIEW:
            shown += f", ... ({len(indices)} in all)"
        per_layer.append(
            (
                d.get("layer"),
                d.get("param"),
                d.get("axis"),
                shown or "(whole matrix)",
                d.get("entries_changed"),
                d.get("base_sha256"),
                d.get("new_sha256"),
            )
        )
    headers = ("layer", "tensor", "axis", "indices", "entries", "base sha256", "new sha256")
    return Section("Edit footprint", [_kv(rows), _table(headers, per_layer, mono=(5, 6))])


def _lineage(report: Mapping[str, Any]) -> Section:
    ckpt = report.get("checkpoint") or {}
    base = ckpt.get("base_model") or {}
    rows = [
        ("base model id", base.get("model_id") or report.get("model_id") or report.get("model")),
        ("base model type", base.get("model_type")),
        (
            "base down-projection sha256",
            base.get("down_proj_sha256") or report.get("base_weights_sha256"),
        ),
        ("edited down-projection sha256", ckpt.get("edited_down_proj_sha256")),
        ("parent checkpoint", report.get("parent_checkpoint_id")),
        ("checkpoint id", report.get("checkpoint_id") or ckpt.get("checkpoint_id")),
    ]
    blocks: list[Block] = [_kv(rows, mono=("value",))]
    files = ckpt.get("files") or []
    if files:
        blocks.append(Text(f"Files of the published checkpoint ({len(files)}), with their sha256:"))
        blocks.append(
            _table(
                ("file", "bytes", "sha256"),
                [(f.get("name"), f.get("size"), f.get("sha256")) for f in files],
                mono=(2,),
            )
        )
    else:
        blocks.append(Text("No checkpoint was published for this erasure.", "note"))
    return Section("Lineage and hashes", blocks)


def _method(report: Mapping[str, Any]) -> Section:
    params = report.get("params") or {}
    thresholds = report.get("thresholds") or {}
    blocks: list[Block] = []
    if params:
        blocks.append(_table(("parameter", "value"), sorted(params.items())))
    if thresholds:
        blocks.append(_table(("threshold", "value"), sorted(thresholds.items())))
    return Section(f"Method ({fmt(report.get('method'))}) and parameters", blocks)


def _provenance(report: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Section:
    code = report.get("code_version") or {}
    cache = report.get("model_cache") or {}
    rows = [
        ("package", f"{fmt(code.get('package'))} {fmt(code.get('version'))}"),
        ("git commit", code.get("git_commit")),
        ("uncommitted changes", code.get("git_dirty")),
        ("worker", report.get("worker")),
        ("model was already loaded", cache.get("cached")),
    ]
    blocks: list[Block] = [_kv(rows)]
    timings = report.get("timings") or {}
    stages = [(k, v) for k, v in timings.items() if k != "model_cached"]
    if stages:
        blocks.append(_table(("stage", "seconds"), stages))
    if history:
        blocks.append(
            _table(
                ("at (UTC)", "status", "stage", "progress", "detail"),
                [
                    (
                        e.get("at"),
                        e.get("status"),
                        e.get("stage"),
                        e.get("progress"),
                        e.get("detail"),
                    )
                    for e in history
                ],
            )
        )
    return Section("Code version, timings and history", blocks)


def build_report_document(
    report: Mapping[str, Any],
    *,
    erasure_id: str,
    status: str,
    history: Sequence[Mapping[str, Any]] = (),
) -> ReportDocument:
    """The compliance report of one erasure, from the worker's report and the status history."""
    accepted = (report.get("acceptance") or {}).get("accepted")
    decision = None if accepted is None else ("accepted" if accepted else "rejected")
    sections = [_summary(report, erasure_id, status), _acceptance(report), _metrics(report)]
    facts = report.get("facts") or []
    sections.append(
        Section(
            "Erased facts",
            [
                Text(
                    "Each fact is identified by a keyed fingerprint of its private target "
                    "(HMAC-SHA256 under the service's key): the target itself appears nowhere "
                    "in this report."
                )
            ],
        )
    )
    sections.extend(_fact(i, f) for i, f in enumerate(facts))
    sections += [
        _footprint(report),
        _lineage(report),
        _method(report),
        _provenance(report, history),
    ]
    return ReportDocument(
        title=f"Erasure report {erasure_id}",
        erasure_id=erasure_id,
        status=status,
        verdict=decision,
        sections=sections,
    )
