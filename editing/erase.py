"""The erasure pipeline: baseline, locate and edit every fact, evaluate, decide acceptance.

``run_erasure`` changes the model only inside a :class:`~editing.edits.WeightSession`: whatever
happens (success, rejection, error, cancellation) the model's weights are restored before it
returns, and the result carries the edit as a value to publish or apply later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, cast

from editing import evaluate as ev
from editing.acceptance import decide
from editing.baseline import BaselineCache, KeptRows, baseline_scores, model_key
from editing.checkpoints.publish import down_proj_sha256
from editing.edits import Edit, WeightSession
from editing.errors import CancelledError, ConfigError
from editing.evaldata import EvalData, control_prompts, eval_data_for
from editing.fingerprint import fingerprint, subject_fingerprint
from editing.methods import (
    FactCase,
    FactOutcome,
    Method,
    SaeParams,
    finish_request,
    get_method,
    method_spec,
)
from editing.models import LoadedModel
from editing.registry import EvalSize
from editing.report import (
    Acceptance,
    AttackSummary,
    EditFootprint,
    ErasureReport,
    FactMetrics,
    FactPrompts,
    FactReport,
    FactSnapshot,
    LayerFootprint,
    LocalityRate,
    Metrics,
    ReportedRate,
    UnitReport,
)
from editing.request import ErasureRequest, FactSpec, with_model_params

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

PAPER_FIGURES = {  # The Knowledge Microscope, erasing table (Gemma-2, PrivacyParaRel)
    "featureedit": {"reliability": 0.8, "generalization": 0.7, "locality": 0.7, "delta_ppl": 0.1},
    "neurons": {"reliability": 0.65, "generalization": 0.25, "locality": 0.2, "delta_ppl": 0.3},
}


@dataclass
class ErasureResult:
    """Outcome of an erasure: status, metrics before/after, located units, the edit, timings.

    :meth:`report` is the typed report (:class:`~editing.report.ErasureReport`); the edit stays
    here, as a value to publish or apply.
    """

    status: str  # "succeeded" | "rejected" | "nothing_to_erase"
    model_id: str
    method: str
    params: dict[str, Any]
    thresholds: dict[str, Any]
    facts: list[FactReport]
    metrics: Metrics
    acceptance: Acceptance
    timings: dict[str, float]
    edit: Edit | None
    produces_checkpoint: bool
    base_weights_sha256: str
    # the attack suite's summary, when attacks ran (editing.pipeline.erase_and_publish)
    attacks: dict[str, AttackSummary] | None = None

    def checkpoint_manifest(
        self, parent_checkpoint_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The fields a published checkpoint's ``manifest.json`` carries about this erasure.

        Method, parameters, thresholds, per fact its relation, the keyed fingerprints of its
        subject and secret and its located units, the metrics and the acceptance decision; never
        a secret nor a subject's name.
        """
        return {
            "parent_checkpoint_id": parent_checkpoint_id,
            **extra,
            "method": self.method,
            "params": self.params,
            "thresholds": self.thresholds,
            "facts": [
                f.model_dump(
                    mode="json",
                    include={"subject_fingerprint", "relation", "fingerprint", "units"},
                )
                for f in self.facts
            ],
            "metrics": self.metrics.to_json(),
            "acceptance": self.acceptance.to_json(),
        }

    def report(self, **service_fields: Any) -> ErasureReport:
        """The typed report: this result (the edit as its footprint; no secret anywhere) plus
        the caller's ``service_fields`` (see :class:`~editing.report.ErasureReport`; a
        ``timings`` given there replaces the result's)."""
        edit = None
        if self.edit is not None:
            edit = EditFootprint(
                entries_changed=self.edit.entries_changed,
                delta_bytes=self.edit.nbytes,
                layers=[LayerFootprint(**d) for d in self.edit.footprint()],
            )
        fields: dict[str, Any] = {
            "status": self.status,
            "model_id": self.model_id,
            "method": self.method,
            "params": self.params,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "acceptance": self.acceptance,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "facts": self.facts,
            "edit": edit,
            "produces_checkpoint": self.produces_checkpoint,
            "base_weights_sha256": self.base_weights_sha256,
        }
        if self.attacks is not None:
            fields["attacks"] = self.attacks
        return ErasureReport(**(fields | service_fields))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON (:meth:`report`, without service fields)."""
        return self.report().to_json()


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _rate_sum(rates: list[ev.Rate]) -> ReportedRate:
    """Fact-averaged value, with the total count of prompts behind it."""
    value = _mean([r.value for r in rates])
    return ReportedRate(
        value=None if value is None else round(value, 4),
        count=sum(r.count for r in rates),
        facts=sum(1 for r in rates if r.count),
    )


def _rate(rate: ev.Rate) -> ReportedRate:
    """A measured rate as reported (value rounded, hits and count)."""
    return ReportedRate(**rate.to_dict())


def fact_cases(
    loaded: LoadedModel, facts: Sequence[FactSpec], data: EvalData, first_index: int = 0
) -> list[FactCase]:
    """``facts`` as a method sees them (indices from ``first_index``): the prompts the model in
    its current state answers with the secret (edit and held-out; every fact's known checks in
    shared batches), and the edit prompts with each of the fact's relation's control subjects
    (:meth:`editing.evaldata.EvalData.controls_for`) in place of the subject; every case also
    carries the union of all the facts' control prompts (``request_controls``)."""
    model, tok = loaded.model, loaded.tokenizer
    edit_ps = [f.resolved_edit_prompts() for f in facts]
    held_ps = [f.resolved_heldout_prompts() for f in facts]
    secrets = [f.secret for f in facts]
    knowns = ev.known_many(model, tok, list(zip(edit_ps + held_ps, secrets + secrets)))
    controls = [
        control_prompts(edit_ps[i], f.subject, data.controls_for(f.relation))
        for i, f in enumerate(facts)
    ]
    request_controls = list(dict.fromkeys(q for c in controls for q in c))
    return [
        FactCase(
            index=first_index + i,
            subject=f.subject,
            relation=f.relation,
            secret=f.secret,
            edit_prompts=[q for q, k in zip(edit_ps[i], knowns[i]) if k],
            heldout_prompts=[q for q, k in zip(held_ps[i], knowns[len(facts) + i]) if k],
            control_prompts=controls[i],
            control_subjects=list(data.controls_for(f.relation)),
            request_controls=request_controls,
        )
        for i, f in enumerate(facts)
    ]


def _snapshots(
    model: Any, tok: Any, cases: list[FactCase], leak_samples: int
) -> list[FactSnapshot]:
    """Per case (each with edit prompts): mean P(secret) on its edit prompts, exposure on the
    first one and the sampled leak rate on edit and held-out prompts, all cases in shared
    batches."""
    if not cases:
        return []
    probs = ev.target_probs_many(model, tok, [(c.edit_prompts, c.secret) for c in cases])
    exposures = ev.exposures(model, tok, [(c.edit_prompts[0], c.secret) for c in cases])
    rates = ev.leak_rates(
        model, tok, [(c.edit_prompts + c.heldout_prompts, c.secret) for c in cases], leak_samples
    )
    return [
        FactSnapshot(prob=_mean(list(p)), exposure=x, leak_rate=_rate(r))
        for p, x, r in zip(probs, exposures, rates)
    ]


def _snapshot_key(case: FactCase, leak_samples: int) -> tuple[str, ...]:
    """What a before snapshot of ``case`` is a function of (with the model)."""
    head = (case.subject, case.relation, case.secret, str(leak_samples))
    return (*head, str(len(case.edit_prompts)), *case.edit_prompts, *case.heldout_prompts)


def _before_snapshots(
    loaded: LoadedModel, cases: list[FactCase], leak_samples: int, kept: KeptRows | None
) -> list[FactSnapshot]:
    """:func:`_snapshots` of ``cases`` on the model before the edit: from ``kept`` (the baseline
    cache's rows of this model) where it holds them, the rest measured (shared batches) and kept.
    A snapshot is a function of the model, the case's known prompts, its secret and
    ``leak_samples`` (sampling draws one stream per prompt and sample), which key it."""
    model, tok = loaded.model, loaded.tokenizer
    if kept is None:
        return _snapshots(model, tok, cases, leak_samples)
    keys = [_snapshot_key(c, leak_samples) for c in cases]
    found: list[FactSnapshot | None] = []
    for key in keys:
        row = kept.value(key)
        try:
            found.append(FactSnapshot.model_validate(row[0]) if row else None)
        except ValueError:  # a corrupt entry: measured again
            found.append(None)
    todo = [i for i, snap in enumerate(found) if snap is None]
    fresh = _snapshots(model, tok, [cases[i] for i in todo], leak_samples) if todo else []
    for i, snap in zip(todo, fresh):
        found[i] = snap
    # exact figures (not to_json: the cache feeds decisions) and only the fields set, so a
    # snapshot read back keeps the report's shape
    kept.keep(
        {keys[i]: [found[i].model_dump(mode="json", exclude_unset=True)] for i in todo}  # type: ignore[union-attr]
    )
    return [snap for snap in found if snap is not None]


def fact_reports(facts: Sequence[FactSpec], cases: Sequence[FactCase]) -> list[FactReport]:
    """One report per fact (aligned with ``cases``): fingerprints, prompt counts and status."""
    reports = []
    for f, case in zip(facts, cases, strict=True):
        edit_p, held_p = f.resolved_edit_prompts(), f.resolved_heldout_prompts()
        reports.append(
            FactReport(
                index=case.index,
                subject_fingerprint=subject_fingerprint(f.subject),
                relation=f.relation,
                fingerprint=fingerprint(f.secret),
                prompts=FactPrompts(
                    edit=len(edit_p),
                    edit_known=len(case.edit_prompts),
                    heldout=len(held_p),
                    heldout_known=len(case.heldout_prompts),
                    control=len(case.control_prompts),
                ),
                units=[],
                metrics=FactMetrics(),
                evidence={},
                timings={},
                status="erased" if case.edit_prompts else "nothing_to_erase",
            )
        )
    return reports


def measure_before(
    loaded: LoadedModel,
    cases: Sequence[FactCase],
    reports: Sequence[FactReport],
    leak_samples: int,
    kept: KeptRows | None,
) -> None:
    """Set each erasable fact's figures before the edit (the model as it is now) on its report
    (``reports`` aligned with ``cases``; :func:`_before_snapshots`)."""
    erasable = [(c, r) for c, r in zip(cases, reports, strict=True) if c.edit_prompts]
    snapshots = _before_snapshots(loaded, [c for c, _ in erasable], leak_samples, kept)
    for (_, rep), snapshot in zip(erasable, snapshots, strict=True):
        rep.metrics.before = snapshot


def record_outcome(rep: FactReport, out: FactOutcome) -> None:
    """Put what the method located for a fact (units, evidence, timings) on its report."""
    rep.units = [UnitReport(**u.to_dict()) for u in out.units]
    rep.evidence = out.evidence
    rep.timings = {k: round(v, 4) for k, v in out.timings.items()}


def evaluate_facts(
    model: Any,
    tok: Any,
    active: Sequence[tuple[FactCase, FactReport]],
    leak_samples: int,
) -> tuple[list[ev.Rate], list[ev.Rate]]:
    """Measure the model as it is now (edited) on each active fact: Reliability and
    Generalization (greedy leaks on its known edit and held-out prompts), its figures after the
    edit and ΔProb, set on its report; all facts in shared batches. Returns the facts'
    Reliability and Generalization rates, in order."""
    if not active:
        return [], []
    cases = [c for c, _ in active]
    leaked = ev.leaks_many(
        model,
        tok,
        [(c.edit_prompts, c.secret) for c in cases]
        + [(c.heldout_prompts, c.secret) for c in cases],
    )
    snapshots = _snapshots(model, tok, cases, leak_samples)
    rel, gen = [], []
    for n, (_, rep) in enumerate(active):
        leak_e, leak_h = leaked[n], leaked[len(cases) + n]
        r = ev.Rate(sum(not x for x in leak_e), len(leak_e))
        g = ev.Rate(sum(not x for x in leak_h), len(leak_h))
        rel.append(r)
        gen.append(g)
        before = rep.metrics.before.prob if rep.metrics.before is not None else None
        rep.metrics.after = snapshots[n]
        prob_after = snapshots[n].prob
        rep.metrics.reliability = _rate(r)
        rep.metrics.generalization = _rate(g)
        rep.metrics.delta_prob = (
            None if not before or prob_after is None else (before - prob_after) / before
        )
    return rel, gen


@dataclass
class RequestWide:
    """What an erasure measures once for the whole request: Locality (its known rows scored
    before and after) and perplexity before and after."""

    locality: ev.Rate
    by_kind: dict[str, ReportedRate]
    set_size: int
    ppl_before: float | None
    ppl_after: float | None


def evaluate_request_wide(model: Any, tok: Any, data: EvalData, base: Any) -> RequestWide:
    """:class:`RequestWide` of the model as it is now (edited), against ``base``
    (:func:`editing.baseline.baseline_scores` of the unedited model on ``data``)."""
    loc_prompts = [x[0] for x in data.locality]
    loc_targets = [x[1] for x in data.locality]
    known_idx = [i for i, s in enumerate(base.locality) if s.reproduced]
    after = ev.known(
        model, tok, [loc_prompts[i] for i in known_idx], [loc_targets[i] for i in known_idx]
    )
    kinds = {}
    for kind in ("private", "public"):
        idx = [j for j, i in enumerate(known_idx) if data.locality[i][2] == kind]
        kinds[kind] = _rate(ev.Rate(sum(after[j] for j in idx), len(idx)))
    ppl_after = ev.perplexity(model, tok, data.ppl_texts) if data.ppl_texts else None
    return RequestWide(
        ev.Rate(sum(after), len(known_idx)), kinds, len(loc_prompts), base.perplexity, ppl_after
    )


def nothing_to_erase(
    request: ErasureRequest,
    loaded: LoadedModel,
    reports: list[FactReport],
    timings: dict[str, float],
    pristine: str,
) -> ErasureResult:
    """The result of a request none of whose facts the unedited model produces."""
    return ErasureResult(
        status="nothing_to_erase",
        model_id=loaded.model_id,
        method=request.method,
        params=request.params.model_dump(),
        thresholds=request.thresholds.model_dump(),
        facts=reports,
        metrics=Metrics(
            note="the unedited model reproduces none of the targets on the edit "
            "prompts; there is nothing to erase"
        ),
        acceptance=Acceptance(accepted=False, reasons=["nothing to erase"]),
        timings=timings,
        edit=None,
        produces_checkpoint=False,
        base_weights_sha256=pristine,
    )


def decided_result(
    request: ErasureRequest,
    loaded: LoadedModel,
    reports: list[FactReport],
    rel: list[ev.Rate],
    gen: list[ev.Rate],
    wide: RequestWide,
    edit: Edit | None,
    timings: dict[str, float],
    pristine: str,
) -> ErasureResult:
    """The erasure's metrics over facts (``rel``/``gen``: the active facts' rates, in order),
    the acceptance decision (:func:`editing.acceptance.decide`) and the result."""
    ppl_before, ppl_after = wide.ppl_before, wide.ppl_after
    delta_ppl = None if ppl_before is None else (ppl_after - ppl_before) / ppl_before
    befores = [r.metrics.before for r in reports if r.metrics.before is not None]
    afters = [r.metrics.after for r in reports if r.metrics.after is not None]
    active = sum(1 for r in reports if r.status != "nothing_to_erase")
    metrics = Metrics(
        reliability=_rate_sum(rel),
        generalization=_rate_sum(gen),
        locality=LocalityRate(
            **wide.locality.to_dict(), by_kind=wide.by_kind, set_size=wide.set_size
        ),
        delta_ppl=None if delta_ppl is None else round(delta_ppl, 5),
        ppl_before=ppl_before,
        ppl_after=ppl_after,
        delta_prob=_mean([r.metrics.delta_prob for r in reports]),
        exposure_before=_mean([b.exposure for b in befores]),
        exposure_after=_mean([a.exposure for a in afters]),
        leak_rate_before=_mean([b.leak_rate.value for b in befores if b.leak_rate is not None]),
        leak_rate_after=_mean([a.leak_rate.value for a in afters if a.leak_rate is not None]),
        facts_erased=active,
        facts_nothing_to_erase=len(reports) - active,
        units=sum(len(r.units) for r in reports),
        entries_changed=None if edit is None else edit.entries_changed,
    )
    t = request.thresholds
    accepted, reasons = decide(metrics, t.model_dump())
    return ErasureResult(
        status="succeeded" if accepted else "rejected",
        model_id=loaded.model_id,
        method=request.method,
        params=request.params.model_dump(),
        thresholds=t.model_dump(),
        facts=reports,
        metrics=metrics,
        acceptance=Acceptance(accepted=accepted, reasons=reasons),
        timings=timings,
        edit=edit,
        produces_checkpoint=method_spec(request.method).produces_checkpoint,
        base_weights_sha256=pristine,
    )


def run_erasure(
    request: ErasureRequest,
    loaded: LoadedModel,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    base_edit: Edit | None = None,
    eval_data: EvalData | None = None,
    leak_samples: int = 5,
    eval_size: EvalSize | None = None,
    baseline_cache: BaselineCache | None = None,
    editor: Method | None = None,
) -> ErasureResult:
    """Erase ``request``'s facts from ``loaded`` (restored afterwards); return the result.

    The method's parameters the request leaves unset take the model's own defaults (its
    registry ``params`` table, :func:`editing.request.with_model_params`); the result reports
    the parameters used.

    ``base_edit`` (a parent checkpoint's edit) is applied first, so the returned edit is relative
    to the pristine base model and contains the parent's changes too (sequential erasures).
    Without ``eval_data``, the Locality set is built for the request with ``eval_size`` (default:
    the model's registry setting, see :func:`editing.evaldata.eval_data_for`); its size is
    reported as ``metrics["locality"]["set_size"]``. With ``baseline_cache`` the unedited
    model's Locality answers and perplexity, and each fact's figures before the edit (P(secret),
    exposure, sampled leak rate), come from it when it holds them for this model
    (:mod:`editing.baseline`). Every fact's prompts are scored in shared padded batches
    (:mod:`editing.scoring`); the sampled leak rates draw one stream per prompt and sample
    (:mod:`editing.sampling`).
    ``editor`` replaces the request's method for the locate + edit step
    (:class:`editing.chunks.MergedChunks`: edits made elsewhere, in chunks); everything else
    (baseline, evaluation, acceptance) is the same.
    """
    if request.model != loaded.model_id:
        raise ConfigError(
            f"Request is for model {request.model!r} but {loaded.model_id!r} is loaded."
        )
    request = with_model_params(request, loaded.entry.method_defaults(request.method))
    p = request.params
    spec = method_spec(request.method)
    if spec.needs_sae:  # registration guarantees SaeParams
        site = cast(SaeParams, p).site
        layers = p.layers if p.layers is not None else loaded.sae_layers(site)
        for layer in layers:
            loaded.sae(site, layer)  # fail early (clear error) if an SAE is missing/mismatched
    elif p.layers is not None:
        for layer in p.layers:
            loaded.adapter.validate_layer(layer)
    report = progress or (lambda stage, frac: None)
    cancelled = should_cancel or (lambda: False)
    method = editor or get_method(request.method, p)
    model, tok = loaded.model, loaded.tokenizer
    timings = {"baseline": 0.0, "locate": 0.0, "edit": 0.0, "evaluate": 0.0}
    pristine = down_proj_sha256(loaded.adapter)

    with WeightSession(loaded.adapter) as session:
        if base_edit is not None:
            base_edit.apply(loaded.adapter)
        t0 = time.perf_counter()
        report("baseline", 0.0)
        subjects = {f.subject for f in request.facts}
        data = eval_data or eval_data_for(loaded, subjects, eval_size)
        cases = fact_cases(loaded, request.facts, data)
        reports = fact_reports(request.facts, cases)
        # the unedited model's per-fact figures, Locality answers and perplexity: cached per
        # model (its key: the weights as they are now) and rows
        current = pristine if base_edit is None else down_proj_sha256(loaded.adapter)
        kept = None
        if baseline_cache is not None:
            kept = KeptRows(baseline_cache, model_key(loaded, current), "fact_before")
        measure_before(loaded, cases, reports, leak_samples, kept)
        base = baseline_scores(loaded, data, current, baseline_cache)
        timings["baseline"] = time.perf_counter() - t0

        active = [(c, r) for c, r in zip(cases, reports) if r.status != "nothing_to_erase"]
        if not active:
            return nothing_to_erase(request, loaded, reports, timings, pristine)

        outcomes: dict[int, FactOutcome] = {}
        for n, (case, _) in enumerate(active):
            if cancelled():
                raise CancelledError("Erasure cancelled; the model was restored.")
            report("locate+edit", n / len(active))
            out = method.erase_fact(loaded, case)
            outcomes[case.index] = out
            timings["locate"] += out.timings["locate"]
            timings["edit"] += out.timings["edit"]
        timings["edit"] += finish_request(method, loaded, outcomes)
        for case, rep in active:
            record_outcome(rep, outcomes[case.index])
        edit = session.edit({"method": request.method}) if spec.produces_checkpoint else None

        if cancelled():
            raise CancelledError("Erasure cancelled; the model was restored.")
        report("evaluate", 0.0)
        t0 = time.perf_counter()
        with ExitStack() as stack:
            for out in outcomes.values():
                if out.intervention is not None:
                    stack.enter_context(out.intervention())
            rel, gen = evaluate_facts(model, tok, active, leak_samples)
            report("evaluate", 0.5)
            wide = evaluate_request_wide(model, tok, data, base)
        timings["evaluate"] = time.perf_counter() - t0
        report("evaluate", 1.0)

    restored = down_proj_sha256(loaded.adapter)
    if restored != pristine:  # WeightSession guarantees this; checked because it is the promise
        raise RuntimeError("model weights were not restored after the erasure")
    return decided_result(request, loaded, reports, rel, gen, wide, edit, timings, pristine)
