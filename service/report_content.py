"""The compliance report as a document: sections of tables, charts and text, format-neutral.

:func:`build_report_document` turns the worker's stored report (validated once into an
:class:`editing.report.ErasureReport`, any age: see :func:`editing.report.load_report`) and the
erasure's status history into a :class:`ReportDocument`; :mod:`service.report_html` and
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

from pydantic import BaseModel

from editing.acceptance import Check, assess, assess_attacks, number
from editing.report import (
    CheckpointSummary,
    ErasureReport,
    FactReport,
    FactSnapshot,
    LocalityRate,
    load_report,
)

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
    if isinstance(value, BaseModel):  # a typed part of the report (e.g. a rate): as stored
        value = value.model_dump(mode="json", exclude_unset=True)
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
def _summary(report: ErasureReport, erasure_id: str, status: str) -> Section:
    ckpt = report.checkpoint or CheckpointSummary()
    rows = [
        ("erasure id", erasure_id),
        ("status", status),
        ("model", report.base_model_id),
        ("method", report.method),
        ("facts", len(report.facts)),
        ("checkpoint id", report.published_checkpoint_id),
        ("parent checkpoint", report.parent_checkpoint_id),
        ("requested at", report.created_at),
        ("finished at", report.finished_at),
        ("checkpoint created at", ckpt.created_at),
        ("attempts", report.attempts),
    ]
    return Section("Summary", [_kv(rows)])


def _acceptance(report: ErasureReport) -> Section:
    blocks: list[Block] = []
    accepted = report.accepted
    if accepted is True:
        blocks.append(Text("ACCEPTED: every measured criterion meets its threshold.", "ok"))
    elif accepted is False:
        blocks.append(Text("REJECTED: nothing was published.", "bad"))
    else:
        blocks.append(Text("No acceptance decision was recorded.", "note"))
    rows = []
    bars: list[tuple[str, tuple[float | None, ...]]] = []
    markers: dict[str, float] = {}
    dppl: float | None = None
    max_dppl: float | None = None
    attacks = {name: a.to_json() for name, a in (report.attacks or {}).items()}
    checks = assess(report.metrics, report.thresholds)
    if report.attacks is not None:
        checks += assess_attacks(attacks, report.thresholds)
    reasons = report.acceptance.reasons if report.acceptance is not None else []

    def _shown(check: Check) -> str:
        """The check's verdict as decided: figures on a secret are stored coarsely, so a
        measured check fails exactly when the recorded decision gave it as a reason."""
        if report.acceptance is None or check.verdict not in ("pass", "FAIL"):
            return check.verdict
        return "FAIL" if any(r.startswith(f"{check.name} ") for r in reasons) else "pass"

    for check in checks:
        rows.append((check.name, check.metric, f"{check.rule} {fmt(check.bar)}", _shown(check)))
        if check.rule == ">=":
            bars.append((check.name, (check.measured,)))
            if check.bar is not None:
                markers[check.name] = check.bar
        elif check.name == "delta_ppl":
            dppl, max_dppl = check.measured, check.bar
    blocks.append(_table(("criterion", "measured", "threshold", "result"), rows))
    for reason in reasons:
        blocks.append(Text(f"Reason: {fmt(reason)}", "bad"))
    if any(v[0] is not None for _, v in bars):
        blocks.append(
            Chart("Measured vs threshold (share of prompts)", ("measured",), bars, 1.0, markers)
        )
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


_BEFORE_AFTER = (  # label, metric before, metric after, chart scale
    ("leak rate", "leak_rate_before", "leak_rate_after", 1.0),
    ("exposure (bits)", "exposure_before", "exposure_after", None),
    ("perplexity", "ppl_before", "ppl_after", None),
)


def _metrics(report: ErasureReport) -> Section:
    m = report.metrics
    measured = dict(m.present())  # the metrics the report holds, in order (unknown ones too)
    blocks: list[Block] = []
    present = [p for p in _BEFORE_AFTER if p[1] in measured or p[2] in measured]
    for label, before, after, scale in present:
        values = (number(getattr(m, before)), number(getattr(m, after)))
        if any(v is not None for v in values):
            blocks.append(
                Chart(f"{label}, mean over facts", SERIES_BEFORE_AFTER, [(label, values)], scale)
            )
    if present:
        blocks.append(
            _table(
                ("metric", "before", "after"),
                [(n, getattr(m, b), getattr(m, a)) for n, b, a, _ in present],
            )
        )
    paired = {k for _, b, a, _ in _BEFORE_AFTER for k in (b, a)}
    rows: list[tuple[str, Any]] = []
    for key, value in measured.items():
        if key in paired:
            continue
        if isinstance(value, LocalityRate) and "by_kind" in value.model_fields_set:
            overall = value.model_dump(mode="json", exclude_unset=True, exclude={"by_kind"})
            rows.append((key, overall))
            rows.extend((f"{key} ({kind} facts)", rate) for kind, rate in value.by_kind.items())
        else:
            rows.append((key, value))
    if rows:
        blocks.append(_table(("metric", "value"), rows))
    return Section("Metrics before and after the edit", blocks)


def _attacks(report: ErasureReport) -> Section:
    """Each attack of the suite: its budget, every figure before and after the edit (means over
    facts, and with several facts the worst fact's; success = share of facts whose whole secret
    the attacker recovered), its control."""
    title = "Attacks on the edit"
    if report.attacks is None:
        return Section(title, [Text("No attack was run on this erasure.", "note")])
    blocks: list[Block] = [
        Text(
            "Each attack ran on the model before the edit (the pristine model) and after it; "
            "success is the share of facts on which the attacker recovered the whole secret, "
            "a figure is the mean over facts and 'worst fact' its largest on one fact "
            "(see docs/attacks.md for each attack's budget and success definition)."
        )
    ]
    for name, attack in report.attacks.items():
        before = attack.before.model_dump() if attack.before is not None else {}
        after = attack.after.model_dump() if attack.after is not None else {}
        rows = []
        parts = [("success", "success "), ("values", "")]
        if (attack.facts or 0) > 1:  # the worst fact's figure, which the limits bound
            parts.append(("worst", "worst fact "))
        for part, label in parts:
            keys = dict.fromkeys([*before.get(part, {}), *after.get(part, {})])
            rows += [
                (label + key, before.get(part, {}).get(key), after.get(part, {}).get(key))
                for key in keys
            ]
        budget = ", ".join(f"{k}={fmt(v)}" for k, v in attack.budget.items()) or "-"
        blocks.append(Text(f"{name} (facts: {fmt(attack.facts)}; budget: {budget})"))
        blocks.append(_table(("figure", "before", "after"), rows))
        if attack.control:
            blocks.append(_table(("control", "after"), sorted(attack.control.items())))
    return Section(title, blocks)


def _snapshot_fields(before: FactSnapshot, after: FactSnapshot) -> list[str]:
    """The fields measured before or after, in order (prob, exposure, leak_rate)."""
    return [
        name
        for name in FactSnapshot.model_fields
        if name in before.model_fields_set or name in after.model_fields_set
    ]


def _fact(i: int, fact: FactReport) -> Section:
    fm = fact.metrics
    before, after = fm.before or FactSnapshot(), fm.after or FactSnapshot()
    prompts = fact.prompts

    def count(n: int | None) -> str:
        return "-" if n is None else str(n)

    blocks: list[Block] = [
        _kv(
            [
                ("subject fingerprint (keyed; no name in this report)", fact.subject_fingerprint),
                ("relation", fact.relation),
                ("fingerprint (keyed; the secret is not in this report)", fact.fingerprint),
                ("status", fact.status if "status" in fact.model_fields_set else None),
                (
                    "prompts known / given (edit, held-out)",
                    f"{count(prompts.edit_known)}/{count(prompts.edit)}, "
                    f"{count(prompts.heldout_known)}/{count(prompts.heldout)}",
                ),
                ("control prompts", prompts.control),
                ("reliability", fm.reliability),
                ("generalization", fm.generalization),
                ("delta prob", fm.delta_prob),
            ]
        )
    ]
    keys = _snapshot_fields(before, after)
    rate_groups = [
        (label, (number(getattr(before, key)), number(getattr(after, key))))
        for label, key in (("target probability", "prob"), ("leak rate", "leak_rate"))
        if key in keys
    ]
    if rate_groups:
        blocks.append(Chart("Before vs after (0-1)", SERIES_BEFORE_AFTER, rate_groups, 1.0))
    exposure = (before.exposure, after.exposure)
    if any(v is not None for v in exposure):
        blocks.append(Chart("Exposure (bits)", SERIES_BEFORE_AFTER, [("exposure", exposure)]))
    if keys:
        blocks.append(
            _table(
                ("", "before", "after"),
                [(k, getattr(before, k), getattr(after, k)) for k in keys],
            )
        )
    units = fact.units
    blocks.append(Text(f"Located units: {len(units)} (features or neurons the edit targets)."))
    if units:
        blocks.append(
            _table(_UNIT_COLUMNS, [[getattr(u, c) for c in _UNIT_COLUMNS] for u in units])
        )
        top = sorted(units, key=lambda u: -(u.activation or 0.0))[:10]
        groups = [
            (
                f"{u.kind or '?'} L{_or_unknown(u.layer)}#{_or_unknown(u.index)}",
                (u.activation, u.control_activation),
            )
            for u in top
        ]
        if any(v is not None for _, vals in groups for v in vals):
            blocks.append(
                Chart("Activation on the fact vs on control prompts", ("fact", "control"), groups)
            )
    title = f"Fact {i + 1}: {fmt(fact.relation)}"
    return Section(title, blocks, level=3)


def _or_unknown(n: int | None) -> str:
    return "?" if n is None else str(n)


_PUBLISHED_AS = {
    "full": "full model (safetensors) + forward patch; no pre-edit values",
    "delta": "forward patch only (rebuild with featureedit apply-delta on the base model); no "
    "pre-edit values",
}


def _footprint(report: ErasureReport) -> Section:
    edit = report.edit
    ckpt = report.checkpoint
    if edit is None:
        return Section("Edit footprint", [Text("No weight edit was made.", "note")])
    layers = edit.layers
    params = sorted({str(d.param) for d in layers})
    rows = [
        ("weight entries changed", edit.entries_changed),
        ("layers touched", ", ".join(str(d.layer) for d in layers) or "-"),
        ("tensors touched", ", ".join(params) or "-"),
        ("delta size (tensors: indices, old and new values)", fmt_bytes(edit.delta_bytes)),
        (
            "delta size on disk (delta/ files)",
            fmt_bytes(None if ckpt is None else ckpt.delta_bytes_on_disk),
        ),
        ("checkpoint size on disk", fmt_bytes(None if ckpt is None else ckpt.total_bytes)),
        ("published as", _PUBLISHED_AS.get(str(ckpt.publish), "-") if ckpt else "-"),
        (
            "what stays private",
            "the pre-edit values (revert data) and the subject names: sealed in the operator's "
            "private erasure record, never downloadable, so the published files cannot undo the "
            "erasure or say whom it concerns",
        ),
    ]
    per_layer = []
    for d in layers:
        shown = ", ".join(str(x) for x in d.indices[:_INDEX_PREVIEW])
        if len(d.indices) > _INDEX_PREVIEW:
            shown += f", ... ({len(d.indices)} in all)"
        per_layer.append(
            (
                d.layer,
                d.param,
                d.axis,
                shown or "(whole matrix)",
                d.entries_changed,
                d.base_sha256,
                d.new_sha256,
            )
        )
    headers = ("layer", "tensor", "axis", "indices", "entries", "base sha256", "new sha256")
    return Section("Edit footprint", [_kv(rows), _table(headers, per_layer, mono=(5, 6))])


def _lineage(report: ErasureReport) -> Section:
    ckpt = report.checkpoint or CheckpointSummary()
    base = ckpt.base_model
    rows = [
        ("base model id", (base and base.model_id) or report.base_model_id),
        ("base model type", base and base.model_type),
        (
            "base down-projection sha256",
            (base and base.down_proj_sha256) or report.base_weights_sha256,
        ),
        ("edited down-projection sha256", ckpt.edited_down_proj_sha256),
        ("parent checkpoint", report.parent_checkpoint_id),
        ("checkpoint id", report.published_checkpoint_id),
    ]
    blocks: list[Block] = [_kv(rows, mono=("value",))]
    files = ckpt.files
    if files:
        blocks.append(Text(f"Files of the published checkpoint ({len(files)}), with their sha256:"))
        blocks.append(
            _table(
                ("file", "bytes", "sha256"),
                [(f.name, f.size, f.sha256) for f in files],
                mono=(2,),
            )
        )
    else:
        blocks.append(Text("No checkpoint was published for this erasure.", "note"))
    return Section("Lineage and hashes", blocks)


def _method(report: ErasureReport) -> Section:
    blocks: list[Block] = []
    if report.params:
        blocks.append(_table(("parameter", "value"), sorted(report.params.items())))
    if report.thresholds:
        blocks.append(_table(("threshold", "value"), sorted(report.thresholds.items())))
    return Section(f"Method ({fmt(report.method)}) and parameters", blocks)


def _provenance(report: ErasureReport, history: Sequence[Mapping[str, Any]]) -> Section:
    code = report.code_version
    cache = report.model_cache
    rows = [
        ("package", f"{fmt(code and code.package)} {fmt(code and code.version)}"),
        ("git commit", code and code.git_commit),
        ("uncommitted changes", code and code.git_dirty),
        ("worker", report.worker),
        ("model was already loaded", cache and cache.cached),
    ]
    blocks: list[Block] = [_kv(rows)]
    stages = [(k, v) for k, v in report.timings.items() if k != "model_cached"]
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
    report: ErasureReport | Mapping[str, Any],
    *,
    erasure_id: str,
    status: str,
    history: Sequence[Mapping[str, Any]] = (),
) -> ReportDocument:
    """The compliance report of one erasure, from the worker's report (typed, or the stored JSON:
    validated once) and the status history. A typed report is rendered as its JSON document:
    figures on a secret are stated coarsely (:mod:`editing.disclosure`)."""
    report = load_report(report.to_json() if isinstance(report, ErasureReport) else report)
    accepted = report.accepted
    decision = None if accepted is None else ("accepted" if accepted else "rejected")
    sections = [_summary(report, erasure_id, status), _acceptance(report), _metrics(report)]
    sections.append(_attacks(report))
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
    sections.extend(_fact(i, f) for i, f in enumerate(report.facts))
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
