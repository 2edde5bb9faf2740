"""A chunked request's merged edit, evaluated in pieces: per-fact work on fact ranges, then once.

Most of a large request's cost is per fact (docs/benchmarks.md, *Per-fact cost*): each fact's
figures before the edit, its Reliability and Generalization, its figures after the edit
(P(secret), exposure, sampled leak) and the attack suite on it. With the chunks' patches merged
into one edit (:func:`editing.chunks.merge_chunk_edits`), that work is split over the same fact
ranges as the chunks: :func:`evaluate_fact_range` measures facts ``[start, stop)`` of the request
**on the merged edit** (the security claim is the merged edit's, never a chunk's own) and returns
a :class:`FactsEvaluation` (numbers, fingerprints and flags only). :func:`finish_chunked` then
measures what belongs to the request as a whole (Locality and perplexity, before and after the
merged edit), gathers the ranges' figures in the request's order and decides acceptance with the
same functions :func:`editing.erase.run_erasure` and :func:`editing.attack_gate.attack_result`
use, so a gathered result equals the unsplit evaluation of the same edit (up to the float
rounding of batches of other sizes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from editing import evaluate as ev
from editing.attack_gate import AttackPlan, decide_attacked, planned_attacks
from editing.attacks.base import AttackCase, AttackResult
from editing.baseline import (
    BaselineCache,
    KeptRows,
    attack_before_cache,
    baseline_scores,
    model_key,
)
from editing.checkpoints.publish import down_proj_sha256
from editing.chunks import ChunkEdit, bound_edit, chunk_outcome
from editing.edits import Edit, WeightSession
from editing.erase import (
    decided_result,
    evaluate_facts,
    evaluate_request_wide,
    fact_cases,
    fact_reports,
    measure_before,
    nothing_to_erase,
    record_outcome,
)
from editing.errors import CancelledError, CorruptCacheError
from editing.evaldata import eval_data_for
from editing.models import LoadedModel
from editing.pipeline import Erasure
from editing.registry import EvalSize
from editing.report import FactReport
from editing.request import ErasureRequest, with_model_params

EVAL_FORMAT = "featureedit-facts-evaluation"
EVAL_FORMAT_VERSION = 1
LEAK_SAMPLES = 5  # run_erasure's default, which the worker's erasure job uses


def plan_to_json(plan: AttackPlan) -> dict[str, Any]:
    """``plan`` as JSON (kept with the merged edit, so every worker runs the same suite)."""
    return {
        "names": list(plan.names),
        "budgets": {k: dict(v) for k, v in plan.budgets.items()},
        "limits": dict(plan.limits),
    }


def plan_from_json(doc: dict[str, Any]) -> AttackPlan:
    """:func:`plan_to_json`'s document read back."""
    return AttackPlan(list(doc["names"]), dict(doc["budgets"]), dict(doc["limits"]))


@dataclass
class FactsEvaluation:
    """Facts ``[start, stop)`` of a request measured on its merged edit (no secret, no name)."""

    start: int
    stop: int
    reports: list[FactReport]  # one per fact of the range, before/after figures set
    # per active fact of the range: Reliability hits and count, Generalization hits and count
    rates: list[list[int]]
    attacks: list[dict[str, AttackResult]]  # per fact of the range: attack name -> result
    timings: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The evaluation as JSON (exact figures: they feed the decision)."""
        doc = {
            "format": EVAL_FORMAT,
            "version": EVAL_FORMAT_VERSION,
            "start": self.start,
            "stop": self.stop,
            "reports": [r.model_dump(mode="json", exclude_unset=True) for r in self.reports],
            "rates": self.rates,
            "attacks": [
                {name: r.model_dump(mode="json") for name, r in per.items()} for per in self.attacks
            ],
            "timings": self.timings,
        }
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FactsEvaluation:
        """:meth:`to_bytes`'s document read back (CorruptCacheError if it is not one)."""
        try:
            doc = json.loads(data)
            if doc.get("format") != EVAL_FORMAT or doc.get("version") != EVAL_FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
            return cls(
                start=int(doc["start"]),
                stop=int(doc["stop"]),
                reports=[FactReport.model_validate(r) for r in doc["reports"]],
                rates=[[int(x) for x in r] for r in doc["rates"]],
                attacks=[
                    {name: AttackResult.model_validate(r) for name, r in per.items()}
                    for per in doc["attacks"]
                ],
                timings={k: float(v) for k, v in doc["timings"].items()},
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise CorruptCacheError(f"a chunk's stored evaluation is unreadable: {exc}") from None


def evaluate_fact_range(
    request: ErasureRequest,
    loaded: LoadedModel,
    merged: ChunkEdit,
    start: int,
    stop: int,
    *,
    base_edit: Edit | None = None,
    eval_size: EvalSize | None = None,
    baseline_cache: BaselineCache | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> FactsEvaluation:
    """Facts ``[start, stop)`` of ``request`` before and after the merged edit ``merged``
    (:func:`editing.chunks.merge_chunk_edits`, its attack plan in ``merged.extra["plan"]``).

    Before (the base model, plus ``base_edit``): which prompts each fact's model answers and its
    figures (from ``baseline_cache`` where kept). After (the merged edit applied to the
    pristine model in ``loaded``): Reliability, Generalization and the figures after, as
    :func:`editing.erase.run_erasure` measures them, and the plan's attacks on every fact of the
    range, as :func:`editing.attack_gate.attack_result` runs them. ``loaded`` is restored.
    CancelledError when ``should_cancel`` says so (checked between the steps).
    """
    t0 = time.perf_counter()
    cancelled = should_cancel or (lambda: False)
    request = with_model_params(request, loaded.entry.method_defaults(request.method))
    facts = request.facts[start:stop]
    data = eval_data_for(loaded, {f.subject for f in request.facts}, eval_size)
    edit = bound_edit(loaded, merged)
    timings: dict[str, float] = {}
    with WeightSession(loaded.adapter) as session:
        if base_edit is not None:
            base_edit.apply(loaded.adapter)
        cases = fact_cases(loaded, facts, data, start)
        reports = fact_reports(facts, cases)
        kept = None
        if baseline_cache is not None:
            current = down_proj_sha256(loaded.adapter)
            kept = KeptRows(baseline_cache, model_key(loaded, current), "fact_before")
        measure_before(loaded, cases, reports, LEAK_SAMPLES, kept)
        timings["baseline"] = time.perf_counter() - t0
        if cancelled():
            raise CancelledError("Erasure cancelled; the model was restored.")
        t1 = time.perf_counter()
        session.restore()
        edit.apply(loaded.adapter)
        active = [(c, r) for c, r in zip(cases, reports) if r.status != "nothing_to_erase"]
        rel, gen = evaluate_facts(loaded.model, loaded.tokenizer, active, LEAK_SAMPLES)
        timings["evaluate"] = time.perf_counter() - t1
    if cancelled():
        raise CancelledError("Erasure cancelled; the model was restored.")
    t2 = time.perf_counter()
    per_fact = _attacks(request, loaded, merged, edit, start, stop, baseline_cache)
    timings["attacks"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    rates = [[r.hits, r.count, g.hits, g.count] for r, g in zip(rel, gen, strict=True)]
    return FactsEvaluation(
        start, stop, reports, rates, per_fact, {k: round(v, 4) for k, v in timings.items()}
    )


def _attacks(
    request: ErasureRequest,
    loaded: LoadedModel,
    merged: ChunkEdit,
    edit: Edit,
    start: int,
    stop: int,
    cache: BaselineCache | None,
) -> list[dict[str, AttackResult]]:
    """The merged edit's attack plan on facts ``[start, stop)`` (none planned: empty dicts)."""
    from editing.attacks.suite import run_attacks

    plan = plan_from_json(merged.extra.get("plan") or plan_to_json(AttackPlan()))
    _, names = planned_attacks(plan, request.thresholds.model_dump())
    cases = [AttackCase.from_fact(f) for f in request.facts[start:stop]]
    if not names:
        return [{} for _ in cases]
    budgets = {name: dict(b) for name, b in plan.budgets.items()}
    before = attack_before_cache(loaded, cache)
    return run_attacks(loaded, edit, cases, names, budgets, None, before)


def finish_chunked(
    request: ErasureRequest,
    loaded: LoadedModel,
    merged: ChunkEdit,
    parts: Sequence[FactsEvaluation],
    *,
    base_edit: Edit | None = None,
    eval_size: EvalSize | None = None,
    baseline_cache: BaselineCache | None = None,
) -> Erasure:
    """The chunked request's result on its merged edit: the fact ranges' evaluations ``parts``
    (together every fact once) gathered in order, Locality and perplexity measured here
    before and after the merged edit, acceptance decided (with the attacks, as
    :func:`editing.attack_gate.attack_result` decides it). Not published
    (:func:`editing.pipeline.publish_result`). ``loaded`` is restored."""
    t0 = time.perf_counter()
    request = with_model_params(request, loaded.entry.method_defaults(request.method))
    ordered = sorted(parts, key=lambda p: p.start)
    covered = [i for p in ordered for i in range(p.start, p.stop)]
    if covered != list(range(len(request.facts))):
        raise ValueError("the evaluated fact ranges do not cover the request's facts once")
    pristine = down_proj_sha256(loaded.adapter)
    data = eval_data_for(loaded, {f.subject for f in request.facts}, eval_size)
    edit = bound_edit(loaded, merged)
    reports = [r for p in ordered for r in p.reports]
    timings = {"baseline": 0.0, "locate": 0.0, "edit": 0.0, "evaluate": 0.0}
    for rep in reports:
        out = chunk_outcome(merged, int(rep.index or 0))
        if rep.status != "nothing_to_erase":
            record_outcome(rep, out)
            timings["locate"] += out.timings.get("locate", 0.0)
            timings["edit"] += out.timings.get("edit", 0.0)
    for stage in ("baseline", "evaluate"):  # the ranges' worker-seconds, then this step's own
        timings[stage] += sum(p.timings.get(stage, 0.0) for p in ordered)
    with WeightSession(loaded.adapter) as session:
        if base_edit is not None:
            base_edit.apply(loaded.adapter)
        current = down_proj_sha256(loaded.adapter)
        base = baseline_scores(loaded, data, current, baseline_cache)
        timings["baseline"] += time.perf_counter() - t0
        if all(r.status == "nothing_to_erase" for r in reports):
            return Erasure(nothing_to_erase(request, loaded, reports, timings, pristine))
        t1 = time.perf_counter()
        session.restore()
        edit.apply(loaded.adapter)
        wide = evaluate_request_wide(loaded.model, loaded.tokenizer, data, base)
        timings["evaluate"] += time.perf_counter() - t1
    rel = [ev.Rate(r[0], r[1]) for p in ordered for r in p.rates]
    gen = [ev.Rate(r[2], r[3]) for p in ordered for r in p.rates]
    result = decided_result(request, loaded, reports, rel, gen, wide, edit, timings, pristine)
    plan = plan_from_json(merged.extra.get("plan") or plan_to_json(AttackPlan()))
    thresholds, names = planned_attacks(plan, result.thresholds)
    out = Erasure(result)
    if names:
        per_fact = [a for p in ordered for a in p.attacks]
        out.result = decide_attacked(result, thresholds, per_fact)
        out.timings["attacks"] = round(sum(p.timings.get("attacks", 0.0) for p in ordered), 4)
    return out
