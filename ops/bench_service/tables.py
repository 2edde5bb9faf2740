"""The service benchmark's result as plain-text tables (``featureedit bench --service``) or a
Markdown section for ``docs/benchmarks.md`` (``--markdown``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_COLUMNS = (
    ("scenario", "job"),
    ("method", "method"),
    ("facts", "facts"),
    ("status", "status"),
    ("queue_wait", "queue"),
    ("model_load", "load"),
    ("baseline", "baseline"),
    ("locate", "locate"),
    ("edit", "edit"),
    ("evaluate", "evaluate"),
    ("publish", "publish"),
    ("worker_other", "other"),
    ("finish", "finish"),
    ("engine", "engine"),
    ("e2e_server", "end to end"),
    ("overhead", "overhead"),
)


# The evaluation-set sweep's table: one row per size and method (from the summary).
_GROWTH_COLUMNS = (
    ("eval_prompts", "prompts"),
    ("locality_set", "set"),
    ("method", "method"),
    ("baseline", "baseline"),
    ("locate", "locate"),
    ("edit", "edit"),
    ("evaluate", "evaluate"),
    ("evaluate_vs_smallest", "evaluate ×smallest"),
    ("locality_ms_per_added_prompt", "ms/added prompt"),
    ("engine", "engine"),
    ("e2e_server", "end to end"),
    ("overhead", "overhead"),
)


# Growth with the fact count: one row per method, worker count and fact count (the summary's
# fact_growth); seconds end to end and split by stage.
_FACT_GROWTH_COLUMNS = (
    ("method", "method"),
    ("workers", "workers"),
    ("facts", "facts"),
    ("chunked", "chunked"),
    ("seconds", "end to end"),
    ("per_fact", "s/fact"),
    ("vs_one_fact", "×1 fact"),
    ("vs_one_worker", "×1 worker"),
    ("queue_wait", "queue"),
    ("model_load", "load"),
    ("chunks", "chunks"),
    ("baseline", "baseline"),
    ("locate", "locate"),
    ("edit", "edit"),
    ("merge", "merge"),
    ("eval_chunks", "eval jobs"),
    ("evaluate", "evaluate"),
    ("attacks", "attacks"),
    ("publish", "publish"),
    ("worker_other", "other"),
    ("reliability", "R"),
    ("locality", "L"),
)


def fact_growth_markdown(growth: list[dict[str, Any]]) -> str:
    """The fact-growth rows (:func:`ops.bench_service.job_times.fact_growth`) as Markdown."""
    return "\n".join(_table(_FACT_GROWTH_COLUMNS, growth, markdown=True))


def _job_label(row: dict[str, Any]) -> str:
    if row["scenario"] == "publish":
        return f"publish {row.get('publish_mode')}"
    prompts = row.get("eval_prompts")
    return row["scenario"] if prompts is None else f"{row['scenario']} {prompts}"


def _cells(row: dict[str, Any], columns: Sequence[tuple[str, str]] = _COLUMNS) -> list[Any]:
    return [_job_label(row) if k == "scenario" else row.get(k) for k, _ in columns]


def growth_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation-set sweep as rows (prompts asked for, set evaluated, method, seconds)."""
    growth = result["summary"].get("eval_growth") or {}
    rows = [
        {"eval_prompts": int(n), "method": method, **stats}
        for method, per_size in growth.items()
        for n, stats in per_size.items()
    ]
    return sorted(rows, key=lambda r: r["eval_prompts"])  # stable: methods in plan order


def _md_cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(
    columns: Sequence[tuple[str, str]], rows: list[dict[str, Any]], markdown: bool
) -> list[str]:
    """``rows`` as a plain-text or Markdown table (lines)."""
    from editing.cli import format_table

    head = [h for _, h in columns]
    if not markdown:
        return format_table(head, [_cells(r, columns) for r in rows]).splitlines()
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(_md_cell(v) for v in _cells(r, columns)) + " |" for r in rows]


def _job_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result["rows"] + ((result["throughput"] or {}).get("rows") or [])


def bench_service_table(result: dict[str, Any]) -> str:
    """Plain-text tables of a result (seconds)."""
    lines = [*_table(_COLUMNS, _job_rows(result), markdown=False), ""]
    facts = result["summary"].get("fact_growth") or []
    if facts:
        lines += ["growth with the fact count (end to end, seconds):"]
        lines += [*_table(_FACT_GROWTH_COLUMNS, facts, markdown=False), ""]
    growth = growth_rows(result)
    if growth:
        lines += ["growth with the evaluation-set size (1 fact, warm):"]
        lines += [*_table(_GROWTH_COLUMNS, growth, markdown=False), ""]
    lines += _summary_lines(result)
    return "\n".join(lines)


def _summary_lines(result: dict[str, Any]) -> list[str]:
    s = result["summary"]
    ml = s["model_load"]
    lines = [
        f"model load: cold {ml['cold_seconds']} s ({ml['cold_jobs']} job), warm "
        f"{ml['warm_seconds']} s ({ml['warm_jobs']} jobs)"
    ]
    for n, r in s["featureedit_vs_neurons"].items():
        lines.append(
            f"{n} fact(s): FeatureEdit/neurons end to end {r['e2e_featureedit_over_neurons']}, "
            f"engine {r['engine_featureedit_over_neurons']}, locate "
            f"{r['locate_featureedit_over_neurons']}"
        )
    for n, r in (s.get("eval_featureedit_vs_neurons") or {}).items():
        lines.append(
            f"evaluation set of {n} prompts: FeatureEdit/neurons end to end "
            f"{r['e2e_featureedit_over_neurons']}, engine {r['engine_featureedit_over_neurons']}, "
            f"evaluate {r['evaluate_featureedit_over_neurons']}"
        )
    publish = s.get("publish") or {}
    for mode, p in publish.items():
        lines.append(
            f"publish {mode}: {p['publish']} s, checkpoint {p['checkpoint_bytes'] / 1e3:.1f} kB "
            f"(mean of {p['jobs']} 1-fact jobs; end to end {p['e2e_server']} s)"
        )
    ratio = s.get("publish_delta_over_full") or {}
    if ratio:
        lines.append(
            f"publish delta/full: time {ratio['publish']}, bytes {ratio['checkpoint_bytes']}, "
            f"end to end {ratio['e2e_server']}"
        )
    t = result["throughput"]
    if t:
        lines.append(
            f"throughput: {t['jobs']} 1-fact jobs on {t['workers']} worker(s) in "
            f"{t['wall_seconds']} s = {t['jobs_per_minute']} jobs/min (mean queue wait "
            f"{t['mean_queue_wait']} s, max {t['max_queue_wait']} s)"
        )
    lines += list(result.get("notes") or [])
    lines.append(f"wall: {result['wall_seconds']} s")
    return lines


def bench_service_markdown(result: dict[str, Any]) -> str:
    """A Markdown section for ``docs/benchmarks.md`` (the command line included)."""
    rows = _job_rows(result)
    out = [
        f"Command: `{result['command']} --markdown` ({result['wall_seconds']} s wall).",
        "",
        "Seconds per job. *queue*: submitted → a worker starts it; *load*: model load (cold on a "
        "worker's first job, warm after); *engine* = baseline + locate + edit + evaluate; "
        "*other*: inside the job but in no stage (the first job's imports); *finish*: after the "
        "job's total (report, terminal write); *overhead* = end to end − engine.",
        "",
        *_table(_COLUMNS, rows, markdown=True),
    ]
    facts = result["summary"].get("fact_growth") or []
    if facts:
        out += [
            "",
            "Growth with the fact count (one request of N facts on a warm stack of 1 or more "
            "workers; *end to end*: submitted → terminal; *×1 fact*: over the same method's "
            "1-fact request on as many workers; *×1 worker*: over the same request on 1 worker; "
            "*chunks*: a chunked request's chunk jobs, split → merge, wall; its *locate* and "
            "*edit* are the chunk jobs' summed over workers; *merge*: adding the chunk patches; "
            "*eval jobs*: the merged edit's evaluation jobs, merge → finish, wall (their "
            "*baseline*, *evaluate* and *attacks* are summed over workers); *attacks*: the "
            "operator's attack suite; *other*: the job's time in no stage above (a chunked "
            "request's: the finishing job's Locality, perplexity and gathering):",
            "",
            *_table(_FACT_GROWTH_COLUMNS, facts, markdown=True),
        ]
    growth = growth_rows(result)
    if growth:
        out += [
            "",
            "Growth with the evaluation-set size (1-fact jobs on a warm worker started with the "
            "size; *prompts*: the size asked for; *set*: the Locality prompts evaluated, capped "
            "by the world's facts; *evaluate ×smallest*: evaluate over the smallest size's; "
            "*ms/added prompt*: (baseline + evaluate) over the smallest size's, per added prompt "
            "— both stages score the set once):",
            "",
            *_table(_GROWTH_COLUMNS, growth, markdown=True),
        ]
    out += [""] + [f"- {line}" for line in _summary_lines(result)]
    sizes = [r for r in rows if r.get("checkpoint_bytes") and r.get("publish_mode") != "delta"]
    if sizes:
        r = sizes[0]
        out.append(
            f"- publish writes the full checkpoint ({r['checkpoint_bytes'] / 1e6:.2f} MB) and its "
            f"delta ({r['delta_bytes'] / 1e3:.1f} kB of it) for {r['facts']} fact(s)"
        )
    return "\n".join(out)
