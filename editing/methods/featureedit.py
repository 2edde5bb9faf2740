"""FeatureEdit: erase a fact by editing the down-projection along SAE feature directions.

Variants (METHOD.md "FeatureEdit"):

- ``rows`` (the paper's, literal): zero the rows ``W[j, :]`` where ``|d_j| > tau2 * max |d|``.
- ``project``: remove the feature's write direction from the whole layer, ``W -= v (v^T W)``.
- ``project-cols`` (default): the same projection on only the neuron columns that carry the fact's
  write along the feature (``c_k = a_k v^T W[:, k] > 0``, largest first, up to ``rho`` of the
  total).

With the ``attribution`` selector features are added greedily, best first, until no edit prompt
reproduces the target and, on every edit prompt, the whole target's teacher-forced probability is
at most ``leak_bound`` (at most ``max_features``); with ``activation`` every selected feature is
edited at once.

With ``refine="flatten"`` (projection variants) the greedy loop is followed by a constrained
refinement of the down-projection columns (:mod:`editing.methods.flatten`): trained until the
whole secret's sampling probability is at most ``leak_bound`` on every edit prompt and no layer's
logit lens (Head Projection, Probability Delta) ranks a secret token high, with a KL locality
term on control prompts (with ``refine_controls="request"`` also on every fact's control prompts
of the request, read on the answers the model gave when the request began).

With ``refine_scope="request"`` (opt-in) a request's facts (a chunk's, when chunked) are only
projected one after another; :meth:`FeatureEdit.finish_request` then runs ONE refinement of all
of them (every fact's edit prompts and secret, the columns changed since the request began, the
locality term on every fact's control prompts against the model as it was then, weighted
``refine_request_locality`` from two facts on), instead of one per fact against the model as the
earlier facts left it, whose damage compounds (docs/benchmarks.md, *Multi-fact requests*).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch

from editing.adapters import ModelAdapter
from editing.locate import FeatureEvidence, Unit, feature_evidence, rank_features
from editing.methods.base import FactCase, FactOutcome, RequestFinish
from editing.methods.flatten import (
    ControlReference,
    FlattenConfig,
    FlattenResult,
    answers_reference,
    flatten,
    flatten_rows,
    reference,
    rows_reference,
    snapshot,
)
from editing.methods.params import FeatureEditParams
from editing.models import LoadedModel
from editing.scoring import TargetScore, score_targets


def _load(loaded: LoadedModel, weights: dict[int, torch.Tensor]) -> None:
    """Write canonical down-projection ``weights`` (per layer) into the model, in place."""
    with torch.no_grad():
        for layer, w in weights.items():
            loaded.adapter.down_proj_weight(layer).copy_(w)


def leaking_prompts(scores: list[TargetScore], leak_bound: float) -> int:
    """Edit prompts that still give the secret away: greedy decoding reproduces it, or sampling
    at temperature 1 would produce it with probability above ``leak_bound``.

    ``exp(logprob)`` of the whole target under teacher forcing is exactly the probability that
    one sampled continuation (temperature 1, no top-k) begins with the target's tokens.
    """
    return sum(s.reproduced or math.exp(s.logprob) > leak_bound for s in scores)


def leak_state(loaded: LoadedModel, case: FactCase, leak_bound: float) -> tuple[int, float]:
    """``(leaking edit prompts, largest teacher-forced P(secret))`` of the model as it is now."""
    scores = score_targets(
        loaded.model, loaded.tokenizer, case.edit_prompts, [case.secret] * len(case.edit_prompts)
    )
    return leaking_prompts(scores, leak_bound), max(math.exp(s.logprob) for s in scores)


def edit_feature(
    adapter: ModelAdapter,
    layer: int,
    direction: torch.Tensor,
    variant: str,
    tau2: float = 0.5,
    rho: float = 0.8,
    neuron_mean: torch.Tensor | None = None,
    strength: float = 1.0,
) -> int:
    """Apply one feature's edit to ``layer`` in place; return the number of entries touched.

    For the projection variants ``strength`` scales what is removed: 1.0 removes the columns'
    write along the feature exactly, above 1 it writes against the feature (negative scaling).
    """
    weight = adapter.down_proj_weight(layer)
    with torch.no_grad():
        if variant == "rows":
            d = direction.float().abs()
            rows = (d > tau2 * d.max()).nonzero().squeeze(1).to(weight.device)
            weight.index_fill_(0, rows, 0.0)
            return int(rows.numel()) * weight.shape[1]
        v = adapter.write_direction(layer, direction)
        v = v / v.norm().clamp_min(1e-12)
        w = weight.float()
        writes = v @ w  # [d_mlp]: each neuron column's write along v
        if variant == "project":
            cols = torch.arange(w.shape[1], device=w.device)
        elif variant == "project-cols":
            if neuron_mean is None:
                raise ValueError("project-cols needs the neurons' mean activations")
            contrib = neuron_mean.to(w.device).float() * writes
            order = contrib.argsort(descending=True)
            pos = contrib[order]
            pos = pos[pos > 0]
            if pos.numel() == 0:
                return 0
            keep = int((pos.cumsum(0) < rho * pos.sum()).sum()) + 1
            cols = order[: min(keep, pos.numel())]
        else:
            raise ValueError(f"unknown variant {variant!r}")
        new = w[:, cols] - strength * v[:, None] * writes[cols][None, :]
        weight[:, cols] = new.to(weight.dtype)
        return int(cols.numel()) * w.shape[0]


# FlattenConfig field -> the FeatureEditParams field it takes
FLATTEN_KNOBS = {
    "steps": "refine_steps",
    "lr": "refine_lr",
    "rank": "refine_rank",
    "tokens": "refine_tokens",
    "locality": "refine_locality",
    "entropy": "refine_entropy",
    "extra_columns": "refine_extra_columns",
    "leak_bound": "leak_bound",
    "exposure": "refine_exposure",
    "exposure_candidates": "refine_exposure_candidates",
    "exposure_quantile": "refine_exposure_quantile",
    "exposure_anchor": "refine_exposure_anchor",
    "stranger": "refine_stranger",
    "stranger_subjects": "refine_stranger_subjects",
    "stranger_margin": "refine_stranger_margin",
    "digit_rank": "refine_digit_rank",
}


class FeatureEdit:
    """SAE-feature erasure (the paper's FeatureEdit and our variants)."""

    def __init__(self, params: FeatureEditParams) -> None:
        self.params = params
        # locate_on="request": the down-projections before this instance's first fact (an
        # instance serves one request, or one chunk of it)
        self._start: dict[int, torch.Tensor] | None = None
        # refine_controls="request": the request's control prompts on the answers the model gave
        # before this instance's first fact (computed once)
        self._request_ref: ControlReference | None = None
        self._request_ref_done = False
        # refine_scope="request": the down-projections before this instance's first fact and
        # the facts projected since, refined together by finish_request
        self._joint_start: dict[int, torch.Tensor] | None = None
        self._joint_cases: list[FactCase] = []

    def _evidence(self, loaded: LoadedModel, *args: Any, **kwargs: Any) -> FeatureEvidence:
        """:func:`feature_evidence` on the weights ``locate_on`` names: the current ones, or
        those of the request's start swapped in for the call (the current ones put back)."""
        if self.params.locate_on == "current" or self._start is None:
            return feature_evidence(loaded, *args, **kwargs)
        now = snapshot(loaded, list(self._start))
        try:
            _load(loaded, self._start)
            return feature_evidence(loaded, *args, **kwargs)
        finally:
            _load(loaded, now)

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Locate features for ``case`` and edit them into the down-projections.

        With a greedy selector, features are edited best first until no edit prompt reproduces
        the target and its teacher-forced probability is at most ``leak_bound`` on every edit
        prompt. When the candidates run out first, the features are located again on the
        edited model (at most ``relocate_rounds`` times): the first edits shift where the rest
        of the fact is carried, and features that were below the specificity filter's bar or
        inactive before can now carry it. Features already edited are not picked twice; the cap
        ``max_features`` holds over all rounds.
        """
        p = self.params
        layers = p.layers if p.layers is not None else loaded.sae_layers(p.site)
        greedy = p.selector != "activation"
        chosen: list[Unit] = []
        seen: set[tuple[int, int]] = set()
        entries = 0
        still_leaking = len(case.edit_prompts)
        max_prob: float | None = None
        first_ranked: list[Unit] = []
        rounds_run = 0
        t_locate = t_edit = 0.0
        refine = p.refine == "flatten" and p.variant != "rows"
        joint = refine and p.joint_refinement()
        if p.locate_on == "request" and self._start is None:
            self._start = snapshot(loaded, list(range(loaded.adapter.n_layers)))
        if joint and self._joint_start is None:
            self._joint_start = snapshot(loaded, list(range(loaded.adapter.n_layers)))
        if refine and not joint:
            base = snapshot(loaded, list(range(loaded.adapter.n_layers)))
            control_ref = reference(
                loaded, case.control_prompts, case.secret, own=p.refine_locality_own
            )
        if refine and p.refine_controls == "request" and not self._request_ref_done:
            self._request_ref = answers_reference(loaded, case.request_controls)
            self._request_ref_done = True
        for round_no in range(1 + (p.relocate_rounds if greedy else 0)):
            t0 = time.perf_counter()
            ev = self._evidence(
                loaded,
                case.edit_prompts,
                case.secret,
                p.site,
                layers,
                case.control_prompts,
                objective=p.objective,
                every_token=p.positions == "target",
                subject=case.subject if p.positions == "subject" else None,
                control_subjects=case.control_subjects,
            )
            ranked = rank_features(ev, p.selector, p.tau1, p.gamma, p.min_prompts)
            ranked = [u for u in ranked if (u.layer, u.index) not in seen]
            t_locate += time.perf_counter() - t0
            if round_no == 0:
                first_ranked = ranked
            if not ranked:
                break
            rounds_run += 1
            t0 = time.perf_counter()
            budget = len(ranked) if not greedy else p.max_features - len(chosen)
            for unit in ranked[:budget]:
                direction = loaded.sae(p.site, unit.layer).W_dec[unit.index].detach()
                entries += edit_feature(
                    loaded.adapter,
                    unit.layer,
                    direction,
                    p.variant,
                    p.tau2,
                    p.rho,
                    ev.neuron_mean.get(unit.layer),
                    p.strength,
                )
                chosen.append(unit)
                seen.add((unit.layer, unit.index))
                if greedy:
                    still_leaking, max_prob = leak_state(loaded, case, p.leak_bound)
                    if still_leaking == 0:
                        break
            t_edit += time.perf_counter() - t0
            if not greedy or still_leaking == 0 or len(chosen) >= p.max_features:
                break
        refined: dict[str, float | int | bool | str] = {}
        if joint:  # refined with the request's other facts by finish_request
            self._joint_cases.append(case)
            refined = {"refine_scope": "request"}
        elif refine and (chosen or p.refine_extra_columns):
            t0 = time.perf_counter()
            result = flatten(
                loaded,
                case.edit_prompts,
                case.secret,
                base,
                [control_ref, self._request_ref],
                self._flatten_config(),
                subject=case.subject,
            )
            t_edit += time.perf_counter() - t0
            still_leaking, max_prob = leak_state(loaded, case, p.leak_bound)
            refined = self._refined(result)
        return FactOutcome(
            units=chosen,
            timings={"locate": t_locate, "edit": t_edit},
            evidence={
                "candidates": len(first_ranked),
                "candidates_top": [u.to_dict() for u in first_ranked[:20]],
                "locate_rounds": rounds_run,
                "edit_prompts_still_leaking": still_leaking,
                "edit_prompts_max_target_prob": None if max_prob is None else round(max_prob, 6),
                "entries_touched": entries,
                **refined,
            },
        )

    def finish_request(self, loaded: LoadedModel) -> RequestFinish:
        """``refine_scope="request"``: ONE refinement of every fact projected since this
        instance's first fact (:func:`~editing.methods.flatten.flatten_rows` on all their edit
        prompts and secrets), on the columns changed since then (+ ``refine_extra_columns``),
        the locality term on every fact's control prompts teacher-forced on its secret, read
        on the model as it was before the first fact (and, with ``refine_controls="request"``,
        on the answers it gave then). Each fact's evidence: the joint run's figures and its own
        leak state after it. Nothing to do (empty) for the other scopes."""
        cases, start = self._joint_cases, self._joint_start
        self._joint_cases, self._joint_start = [], None
        if not cases or start is None:
            return RequestFinish()
        p = self.params
        t0 = time.perf_counter()
        now = snapshot(loaded, list(start))
        try:  # the controls' reference on the weights of the request's start
            _load(loaded, start)
            controls = [(q, c.secret) for c in cases for q in c.control_prompts]
            control_ref = rows_reference(loaded, controls, own=p.refine_locality_own)
        finally:
            _load(loaded, now)
        result = flatten_rows(
            loaded,
            [(q, c.secret) for c in cases for q in c.edit_prompts],
            start,
            [control_ref, self._request_ref],
            self._joint_config(len(cases)),
        )
        evidence: dict[int, dict[str, Any]] = {}
        for case in cases:
            still_leaking, max_prob = leak_state(loaded, case, p.leak_bound)
            evidence[case.index] = {
                "edit_prompts_still_leaking": still_leaking,
                "edit_prompts_max_target_prob": round(max_prob, 6),
                "refine_facts": len(cases),
                **self._refined(result),
            }
        return RequestFinish(evidence, time.perf_counter() - t0)

    def _flatten_config(self) -> FlattenConfig:
        """The refinement's knobs from the ``refine_*`` parameters (:data:`FLATTEN_KNOBS`)."""
        return FlattenConfig(**{k: getattr(self.params, v) for k, v in FLATTEN_KNOBS.items()})

    def _joint_config(self, facts: int) -> FlattenConfig:
        """The joint refinement's knobs: :meth:`_flatten_config`, with the request-scope
        locality weight and leak target when it covers two or more ``facts``."""
        p, cfg = self.params, self._flatten_config()
        if facts < 2:
            return cfg
        locality, bound = p.refine_request_locality, p.refine_request_leak_bound
        return replace(
            cfg,
            locality=cfg.locality if locality is None else locality,
            leak_bound=cfg.leak_bound if bound is None else bound,
        )

    def _refined(self, result: FlattenResult) -> dict[str, float | int | bool | str]:
        """A refinement's evidence: steps, columns, convergence, the hinge losses it has on."""
        p = self.params
        refined: dict[str, float | int | bool | str] = {
            "refine_steps": result.steps,
            "refine_columns": result.columns,
            "refine_converged": result.converged,
            "refine_rank_loss": round(result.rank_loss, 6),
        }
        if p.refine_exposure > 0:
            refined["refine_exposure_loss"] = round(result.exposure_loss, 6)
        if p.refine_stranger > 0:
            refined["refine_stranger_loss"] = round(result.stranger_loss, 6)
        if p.refine_digit_rank > 0:
            refined["refine_digit_loss"] = round(result.digit_loss, 6)
        if p.joint_refinement():
            refined["refine_scope"] = "request"
        return refined
