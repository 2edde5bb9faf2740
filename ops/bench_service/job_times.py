"""One service job's stage times (from its record and public document) and the summary of a
run: cold vs warm model load, scaling with the fact count, FeatureEdit over neurons, publish
modes, growth with the evaluation-set size."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.records import TERMINAL, epoch_of

if TYPE_CHECKING:
    from ops.bench_service.plan import ServiceBenchPlan

JOB_STAGES = ("queue_wait", "model_load", "baseline", "locate", "edit", "evaluate", "publish")
ENGINE_STAGES = ("baseline", "locate", "edit", "evaluate")
# a chunked request (workers.chunks): the chunk jobs' wall time (split to merge), the merge of
# their patches and the evaluation jobs' wall time (merge to finish); its locate, edit, and the
# per-fact part of baseline, evaluate and attacks are those jobs' worker-seconds (summed), outside
# the finishing job's total
CHUNK_STAGES = ("chunks", "merge", "eval_chunks")
# the time split of the growth table (wall-clock stages of one request, as the service ran it)
GROWTH_STAGES = (
    "queue_wait",
    "model_load",
    "chunks",
    "baseline",
    "locate",
    "edit",
    "merge",
    "eval_chunks",
    "evaluate",
    "attacks",
    "publish",
)


def job_row(record: dict[str, Any], public: dict[str, Any], e2e_client: float) -> dict[str, Any]:
    """One job's stage times (seconds) from its record (with history) and public document."""
    created = epoch_of(record["created_at"])
    history = record.get("history", [])
    running = next((e for e in history if e["status"] == "running"), None)
    end = next((e for e in reversed(history) if e["status"] in TERMINAL), None)
    t = public.get("timings") or {}
    row: dict[str, Any] = {
        "status": public["status"],
        "facts": len(public.get("facts", [])),
        "method": public["method"],
        "cold": not bool(t.get("model_cached", 1.0)),
        "queue_wait": round(epoch_of(running["at"]) - created, 4) if running else None,
    }
    for stage in (*JOB_STAGES[1:], *CHUNK_STAGES, "attacks"):
        row[stage] = round(float(t.get(stage, 0.0)), 4)
    row["chunked"] = "chunks" in t
    row["worker_total"] = round(float(t.get("total", 0.0)), 4)
    # inside the job but in no stage (e.g. the first job's imports), and after ``total``
    # (report, terminal record write) until the terminal event; a chunked request's job is the
    # finishing job (its locate, edit and per-fact scoring ran in the chunk and evaluation jobs:
    # its own Locality and perplexity are in *other*)
    inside = ("model_load", "publish") if row["chunked"] else (*JOB_STAGES[1:], "attacks")
    row["worker_other"] = round(row["worker_total"] - sum(row[s] for s in inside), 4)
    row["engine"] = round(sum(row[s] for s in ENGINE_STAGES), 4)
    row["e2e_server"] = round(epoch_of(end["at"]) - created, 4) if end else None
    row["e2e_client"] = round(e2e_client, 4)
    row["finish"] = (
        None
        if row["e2e_server"] is None or row["queue_wait"] is None
        else round(row["e2e_server"] - row["queue_wait"] - row["worker_total"], 4)
    )
    row["overhead"] = (
        None if row["e2e_server"] is None else round(row["e2e_server"] - row["engine"], 4)
    )
    row["overhead_share"] = (
        None if not row["e2e_server"] else round(row["overhead"] / row["e2e_server"], 3)
    )
    row["checkpoint_id"] = public.get("checkpoint_id")
    metrics = public.get("metrics") or {}
    for name in ("reliability", "generalization", "locality"):
        v = metrics.get(name)
        row[name] = v.get("value") if isinstance(v, dict) else v
    locality = metrics.get("locality")
    row["locality_set"] = locality.get("set_size") if isinstance(locality, dict) else None
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarize(rows: list[dict[str, Any]], plan: ServiceBenchPlan) -> dict[str, Any]:
    """Cold vs warm model load, per-fact-count scaling, method ratios, overhead shares."""
    cold = [r["model_load"] for r in rows if r["cold"]]
    warm = [r["model_load"] for r in rows if not r["cold"]]
    out: dict[str, Any] = {
        "model_load": {
            "cold_seconds": round(statistics.fmean(cold), 4) if cold else None,
            "warm_seconds": round(statistics.fmean(warm), 4) if warm else None,
            "cold_jobs": len(cold),
            "warm_jobs": len(warm),
        }
    }
    scaling = _by_method(rows, plan.methods, "scaling", "facts", plan.fact_counts)
    for per_n in scaling.values():
        for n, stats in per_n.items():
            stats["engine_per_fact"] = round(stats["engine"] / int(n), 4)
    out["scaling"] = scaling
    out["featureedit_vs_neurons"] = _method_ratios(scaling, ("e2e_server", "engine", "locate"))
    growth = _by_method(rows, plan.methods, "eval-size", "eval_prompts", plan.eval_sizes)
    for per_size in growth.values():
        smallest = next(iter(per_size.values()))
        for stats in per_size.values():
            stats["evaluate_vs_smallest"] = _ratio(stats["evaluate"], smallest["evaluate"])
            # baseline and evaluate each score the Locality set once (before, after the edit);
            # the rest of both (the request's own prompts, perplexity) does not depend on it
            added = (stats["locality_set"] or 0) - (smallest["locality_set"] or 0)
            scoring = stats["baseline"] + stats["evaluate"]
            stats["locality_ms_per_added_prompt"] = (
                round(1000 * (scoring - smallest["baseline"] - smallest["evaluate"]) / added, 3)
                if added > 0
                else None
            )
    out["publish"] = _publish_modes(rows, plan.publish_modes)
    full, delta = out["publish"].get("full"), out["publish"].get("delta")
    out["publish_delta_over_full"] = (
        {k: _ratio(delta[k], full[k]) for k in ("publish", "checkpoint_bytes", "e2e_server")}
        if full and delta
        else {}
    )
    out["eval_growth"] = growth
    out["fact_growth"] = fact_growth(rows)
    out["eval_featureedit_vs_neurons"] = _method_ratios(
        growth, ("e2e_server", "engine", "evaluate")
    )
    return out


def _publish_modes(rows: list[dict[str, Any]], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per publish mode: the mean publish seconds, checkpoint bytes and end to end of its jobs."""
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        jobs = [r for r in rows if r["scenario"] == "publish" and r.get("publish_mode") == mode]
        if jobs:
            out[mode] = {"jobs": len(jobs)} | {
                k: round(statistics.fmean(r[k] for r in jobs), 4)
                for k in ("publish", "checkpoint_bytes", "delta_bytes", "e2e_server", "overhead")
            }
    return out


def _by_method(
    rows: list[dict[str, Any]],
    methods: Sequence[str],
    scenario: str,
    key: str,
    values: Sequence[int],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {str(value): stage times}}`` of the first ``scenario`` row per method, value."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        for value in values:
            match = [
                r
                for r in rows
                if r["scenario"] == scenario and r["method"] == method and r.get(key) == value
            ]
            if match:
                r = match[0]
                out.setdefault(method, {})[str(value)] = {
                    k: r[k]
                    for k in (*JOB_STAGES, "engine", "e2e_server", "overhead", "locality_set")
                }
    return out


def _method_ratios(
    table: dict[str, dict[str, dict[str, Any]]], keys: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """Per value of ``table`` (see :func:`_by_method`): FeatureEdit / neurons of each key."""
    ratios: dict[str, dict[str, float | None]] = {}
    fe_all, nb_all = table.get("featureedit", {}), table.get("neurons", {})
    for n, fe in fe_all.items():
        nb = nb_all.get(n)
        if nb is not None:
            ratios[n] = {
                f"{k.removesuffix('_server')}_featureedit_over_neurons": _ratio(fe[k], nb[k])
                for k in keys
            }
    return ratios


def fact_growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, worker count and fact count (``scaling`` jobs): end-to-end seconds, seconds
    per fact, the ratio to the same method's 1-fact job on as many workers, the ratio to one
    worker at the same fact count, and the time split by stage (:data:`GROWTH_STAGES`)."""
    scaling = [r for r in rows if r["scenario"] == "scaling" and r["e2e_server"] is not None]
    out: list[dict[str, Any]] = []
    for r in scaling:
        workers = r.get("workers", 1)
        one_fact = next(
            (
                x
                for x in scaling
                if x["method"] == r["method"] and x.get("workers", 1) == workers and x["facts"] == 1
            ),
            None,
        )
        one_worker = next(
            (
                x
                for x in scaling
                if x["method"] == r["method"]
                and x.get("workers", 1) == 1
                and x["facts"] == r["facts"]
            ),
            None,
        )
        out.append(
            {
                "method": r["method"],
                "workers": workers,
                "facts": r["facts"],
                "status": r["status"],
                "chunked": r.get("chunked", False),
                "seconds": r["e2e_server"],
                "per_fact": round(r["e2e_server"] / r["facts"], 4) if r["facts"] else None,
                "vs_one_fact": _ratio(r["e2e_server"], one_fact and one_fact["e2e_server"]),
                "vs_one_worker": _ratio(r["e2e_server"], one_worker and one_worker["e2e_server"]),
                **{k: r.get(k, 0.0) for k in GROWTH_STAGES},
                "worker_other": r.get("worker_other"),
                "reliability": r.get("reliability"),
                "generalization": r.get("generalization"),
                "locality": r.get("locality"),
            }
        )
    return sorted(out, key=lambda g: (g["method"], g["workers"], g["facts"]))
