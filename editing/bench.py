"""Benchmark: every method on N private facts of a model, one erasure per fact, in one run.

The model is restored between erasures (each :func:`run_erasure` restores it). Per method: mean and
standard deviation of every metric, per-fact wall time split into locate / edit / evaluate, and the
ratios of FeatureEdit to the neuron baseline measured in the same run.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from editing.acceptance import metric, number
from editing.erase import PAPER_FIGURES, run_erasure
from editing.methods import MethodParams, SaeParams, method_names, method_spec
from editing.models import LoadedModel
from editing.request import ErasureRequest
from editing.world.corpus import round_robin
from editing.world.demo_facts import demo_world_of, request_facts

METRICS = (
    "reliability",
    "generalization",
    "locality",
    "delta_ppl",
    "delta_prob",
    "exposure_before",
    "exposure_after",
    "leak_rate_before",
    "leak_rate_after",
    "units",
)
TIMED_STAGES = ("locate", "edit", "evaluate")


def _summary(values: list[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": round(statistics.fmean(vals), 4),
        "std": round(statistics.pstdev(vals), 4) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def bench_facts(loaded: LoadedModel, n_facts: int, seed: int = 0) -> list[dict[str, str]]:
    """``n_facts`` private facts of the demo world, spread over the relations (deterministic)."""
    world = demo_world_of(loaded.entry, loaded.home, purpose="bench", progress=True)
    return request_facts(round_robin(world.private_facts(), n_facts, random.Random(seed)))


def _params(method: str, values: dict[str, Any]) -> MethodParams:
    """``method``'s params from ``values`` (ConfigError naming the method if it is unknown)."""
    return method_spec(method).params_cls(**values)


def run_bench(
    loaded: LoadedModel,
    n_facts: int = 30,
    methods: tuple[str, ...] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    leak_samples: int = 5,
) -> dict[str, Any]:
    """Run the benchmark (default: every registered method); per-method summaries, rows, ratios.

    ``params`` maps a method name to its parameters (defaults for the others);
    ``leak_samples`` is the number of sampled continuations per prompt behind the leak rates.
    """
    methods = tuple(method_names()) if methods is None else methods
    method_params = {m: _params(m, (params or {}).get(m, {})) for m in methods}
    facts = bench_facts(loaded, n_facts, seed)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for p in method_params.values():  # SAEs load once, before timing: loading is not locating
        if isinstance(p, SaeParams):
            for layer in p.layers if p.layers is not None else loaded.sae_layers(p.site):
                loaded.sae(p.site, layer)
    total = len(facts) * len(methods)
    done = 0
    started = time.perf_counter()
    for fact in facts:
        for method in methods:
            request = ErasureRequest(
                model=loaded.model_id,
                method=method,
                facts=[fact],
                params=method_params[method],
            )
            result = run_erasure(request, loaded, leak_samples=leak_samples)
            row = {"relation": fact["relation"], "status": result.status}
            for name in METRICS:
                row[name] = number(metric(result.metrics, name))
            leaks = [f.metrics.after.leak_rate for f in result.facts if f.metrics.after]
            row["leak_after_hits"] = sum(r.hits or 0 for r in leaks if r)  # with the secret
            row["leak_after_samples"] = sum(r.count or 0 for r in leaks if r)
            for stage in TIMED_STAGES:
                row[f"seconds_{stage}"] = round(result.timings.get(stage, 0.0), 4)
            rows[method].append(row)
            done += 1
            if progress:
                progress(done, total)
    summary: dict[str, Any] = {}
    for method, method_rows in rows.items():
        summary[method] = {name: _summary([r[name] for r in method_rows]) for name in METRICS}
        summary[method]["seconds"] = {
            stage: _summary([r[f"seconds_{stage}"] for r in method_rows]) for stage in TIMED_STAGES
        }
        summary[method]["accepted"] = sum(r["status"] == "succeeded" for r in method_rows)
        summary[method]["nothing_to_erase"] = sum(
            r["status"] == "nothing_to_erase" for r in method_rows
        )
    ratios: dict[str, float | None] = {}
    if "featureedit" in summary and "neurons" in summary:
        fe, nb = summary["featureedit"], summary["neurons"]
        for name in ("reliability", "generalization", "locality"):
            a, b = fe[name]["mean"], nb[name]["mean"]
            ratios[f"{name}_featureedit_over_neurons"] = (
                None if a is None or not b else round(a / b, 3)
            )
        a, b = fe["seconds"]["locate"]["mean"], nb["seconds"]["locate"]["mean"]
        ratios["locate_speedup_featureedit_vs_neurons"] = (
            None if not a or b is None else round(b / a, 2)
        )
    return {
        "model": loaded.model_id,
        "facts": len(facts),
        "methods": list(methods),
        "params": {m: p.model_dump() for m, p in method_params.items()},
        "summary": summary,
        "ratios": ratios,
        "paper": PAPER_FIGURES,
        "leak_samples": leak_samples,
        "per_fact": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
