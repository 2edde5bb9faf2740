"""Benchmark: every method on N private facts of a model, one erasure per fact, in one run.

The model is restored between erasures (each :func:`run_erasure` restores it). Per method: mean and
standard deviation of every metric, per-fact wall time split into locate / edit / evaluate, and the
ratios of FeatureEdit to the neuron baseline measured in the same run. With ``attacks``, every
erasure that produced an edit is also attacked (:mod:`editing.attacks`) before and after it, and
each method's summary gains ``attacks``: per attack the mean numbers and AttackSuccess rates.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from editing.acceptance import metric, number
from editing.baseline import default_baseline_cache
from editing.erase import PAPER_FIGURES, run_erasure
from editing.methods import MethodParams, SaeParams, method_names, method_spec
from editing.models import LoadedModel
from editing.request import ErasureRequest, model_params
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
    "entries_changed",
)
TIMED_STAGES = ("locate", "edit", "evaluate")
# Per fact (one fact per run): mean P(target | edit prompt) before and after the erasure.
FACT_METRICS = ("prob_before", "prob_after")


def _summary(values: list[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {
        "mean": round(statistics.fmean(vals), 4),
        "std": round(statistics.pstdev(vals), 4) if len(vals) > 1 else 0.0,
        "median": round(statistics.median(vals), 6),
        "n": len(vals),
    }


def bench_facts(loaded: LoadedModel, n_facts: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_facts`` facts to erase, spread over the relations (deterministic).

    On a demo world: its private facts; on a model whose registry entry names a ``facts_file``
    (a TOFU-style fine-tune, :mod:`editing.world.tofu`): that file's facts. On another model:
    the shipped genuine-knowledge facts it knows
    (:func:`editing.realdata.bench_data.real_bench_facts`, which also gives the model's entry a
    Locality file of the other known facts and the held-out Wikipedia text for ΔPPL when the
    registry names none).
    """
    if loaded.entry.facts_file:
        from editing.world.tofu_data import registered_facts

        facts = registered_facts(loaded.entry.facts_file)
        return request_facts(round_robin(facts, n_facts, random.Random(seed)))
    if not loaded.entry.is_demo:
        from editing.realdata.bench_data import real_bench_facts

        return real_bench_facts(loaded, n_facts, seed)
    world = demo_world_of(loaded.entry, loaded.home, purpose="bench", progress=True)
    return request_facts(round_robin(world.private_facts(), n_facts, random.Random(seed)))


def _attack(
    loaded: LoadedModel,
    edit: Any,
    request: ErasureRequest,
    attacks: Sequence[str],
    budgets: dict[str, dict[str, int | float]] | None,
    before_cache: dict[Any, Any],
) -> dict[str, Any]:
    """The attacks on one erasure's fact: attack name -> AttackResult."""
    from editing.attacks import AttackCase
    from editing.attacks.suite import run_attacks

    case = AttackCase.from_fact(request.facts[0])
    (results,) = run_attacks(loaded, edit, [case], attacks, budgets, before_cache=before_cache)
    return results


def _fact_probs(result: Any) -> dict[str, float | None]:
    """P(target) before and after the erasure of the run's one fact (None if not measured)."""
    metrics = result.facts[0].metrics if result.facts else None
    return {
        f"prob_{when}": number(getattr(getattr(metrics, when, None), "prob", None))
        for when in ("before", "after")
    }


def _params(loaded: LoadedModel, method: str, values: dict[str, Any]) -> MethodParams:
    """``method``'s params from ``values``, the model's own defaults for the others
    (:func:`editing.request.model_params`; ConfigError naming the method if it is unknown)."""
    method_spec(method)
    return model_params(method, values, loaded.entry.method_defaults(method))


def run_bench(
    loaded: LoadedModel,
    n_facts: int = 30,
    methods: tuple[str, ...] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    attacks: Sequence[str] = (),
    attack_budgets: dict[str, dict[str, int | float]] | None = None,
    leak_samples: int = 5,
) -> dict[str, Any]:
    """Run the benchmark (default: every registered method); per-method summaries, rows, ratios.

    ``params`` maps a method name to its parameters (the model's own defaults, then the params
    class's, for the others; the document's ``params`` are the ones used);
    ``leak_samples`` is the number of sampled continuations per prompt behind the leak rates.
    ``attacks`` (registered attack names) are run on every edit, with ``attack_budgets``
    overrides; the unedited model's scores are measured once per fact and shared by the methods.
    """
    from editing.attacks.suite import BeforeKey, summarise

    methods = tuple(method_names()) if methods is None else methods
    attacked: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    before_cache: dict[BeforeKey, Any] = {}
    method_params = {m: _params(loaded, m, (params or {}).get(m, {})) for m in methods}
    facts = bench_facts(loaded, n_facts, seed)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for p in method_params.values():  # SAEs load once, before timing: loading is not locating
        if isinstance(p, SaeParams):
            for layer in p.layers if p.layers is not None else loaded.sae_layers(p.site):
                loaded.sae(p.site, layer)
    cache = default_baseline_cache(loaded)
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
            result = run_erasure(request, loaded, leak_samples=leak_samples, baseline_cache=cache)
            row = {"relation": fact["relation"], "status": result.status}
            for name in METRICS:
                row[name] = number(metric(result.metrics, name))
            row.update(_fact_probs(result))
            leaks = [f.metrics.after.leak_rate for f in result.facts if f.metrics.after]
            row["leak_after_hits"] = sum(r.hits or 0 for r in leaks if r)  # with the secret
            row["leak_after_samples"] = sum(r.count or 0 for r in leaks if r)
            for stage in TIMED_STAGES:
                row[f"seconds_{stage}"] = round(result.timings.get(stage, 0.0), 4)
            if attacks and result.edit is not None:
                found = _attack(loaded, result.edit, request, attacks, attack_budgets, before_cache)
                attacked[method].append(found)
                row["attacks"] = {name: r.model_dump() for name, r in found.items()}
            rows[method].append(row)
            done += 1
            if progress:
                progress(done, total)
    summary: dict[str, Any] = {}
    for method, method_rows in rows.items():
        summary[method] = {
            name: _summary([r[name] for r in method_rows]) for name in METRICS + FACT_METRICS
        }
        summary[method]["seconds"] = {
            stage: _summary([r[f"seconds_{stage}"] for r in method_rows]) for stage in TIMED_STAGES
        }
        summary[method]["accepted"] = sum(r["status"] == "succeeded" for r in method_rows)
        summary[method]["nothing_to_erase"] = sum(
            r["status"] == "nothing_to_erase" for r in method_rows
        )
        if attacks:
            summary[method]["attacks"] = summarise(attacked[method])
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
        "seed": seed,
        "facts": len(facts),
        "methods": list(methods),
        "params": {m: p.model_dump() for m, p in method_params.items()},
        "attacks": list(attacks),
        "summary": summary,
        "ratios": ratios,
        "paper": PAPER_FIGURES,
        "leak_samples": leak_samples,
        "per_fact": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, population std, min and max of per-seed figures (None where a seed had none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "per_seed": list(values)}
    return {
        "mean": round(statistics.fmean(vals), 4),
        "std": round(statistics.pstdev(vals), 4),
        "min": round(min(vals), 6),
        "max": round(max(vals), 6),
        "per_seed": list(values),
    }


def across_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method, over the runs of :func:`run_bench_seeds` (one per seed of fact selection):
    every metric's per-seed mean, with their mean ± spread; the share of erasures accepted; and
    per attack the share of facts each success flag held after the edit, and the mean values."""
    out: dict[str, Any] = {}
    for method in runs[0]["summary"]:
        per = [r["summary"][method] for r in runs]
        entry: dict[str, Any] = {
            name: _spread([p[name]["mean"] for p in per]) for name in METRICS + FACT_METRICS
        }
        entry["accepted_share"] = _spread(
            [p["accepted"] / r["facts"] if r["facts"] else None for p, r in zip(per, runs)]
        )
        attacks: dict[str, Any] = {}
        for name in dict.fromkeys(a for p in per for a in p.get("attacks", {})):
            after = [p["attacks"].get(name, {}).get("after") or {} for p in per]
            attacks[name] = {
                kind: {
                    key: _spread([a.get(kind, {}).get(key) for a in after])
                    for key in dict.fromkeys(k for a in after for k in a.get(kind, {}))
                }
                for kind in ("success", "values", "worst")
            }
        if attacks:
            entry["attacks"] = attacks
        out[method] = entry
    return out


def run_bench_seeds(
    loaded: LoadedModel,
    seeds: Sequence[int],
    n_facts: int = 30,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`run_bench` once per seed of fact selection (issue #13: figures that hold across
    fact sets, reported as mean ± spread); one seed gives :func:`run_bench`'s document as is.

    ``kwargs`` are :func:`run_bench`'s; ``progress(done, total)`` counts erasures over all seeds.
    """
    seeds = list(dict.fromkeys(seeds))
    if len(seeds) == 1:
        return run_bench(loaded, n_facts, seed=seeds[0], progress=progress, **kwargs)
    runs: list[dict[str, Any]] = []
    offset = 0

    def step(done: int, total: int) -> None:
        if progress:
            progress(offset + done, total * len(seeds))

    started = time.perf_counter()
    for seed in seeds:
        run = run_bench(loaded, n_facts, seed=seed, progress=step, **kwargs)
        offset += run["facts"] * len(run["methods"])
        runs.append(run)
    return {
        "model": loaded.model_id,
        "seeds": seeds,
        "facts": n_facts,
        "methods": runs[0]["methods"],
        "params": runs[0]["params"],
        "attacks": runs[0]["attacks"],
        "leak_samples": runs[0]["leak_samples"],
        "across_seeds": across_seeds(runs),
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
