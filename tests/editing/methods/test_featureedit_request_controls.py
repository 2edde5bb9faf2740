"""FeatureEdit's ``refine_controls="request"`` (multi-fact requests): the refinement's locality
term also keeps the answers the model gave, when the request began, on every fact's control
prompts of the request. Behaviour, not benchmark figures (docs/benchmarks.md, *Multi-fact
requests*)."""

from __future__ import annotations

import torch

from editing.erase import fact_cases
from editing.evaldata import eval_data_for
from editing.methods.featureedit import FeatureEdit
from editing.methods.flatten import _Forward, answers_reference
from editing.methods.params import FeatureEditParams
from editing.request import FactSpec


def _facts(world, n: int) -> list[FactSpec]:
    """``n`` private facts of distinct subjects and relations."""
    out, subjects, relations = [], set(), set()
    for f in world.private_facts():
        if f.subject not in subjects and f.relation not in relations:
            out.append(FactSpec(subject=f.subject, relation=f.relation, target=f.target))
            subjects.add(f.subject)
            relations.add(f.relation)
        if len(out) == n:
            break
    return out


def test_every_case_carries_the_request_controls_and_no_request_subject(
    small_world, small_model
) -> None:
    facts = _facts(small_world, 3)
    data = eval_data_for(small_model, {f.subject for f in facts})
    cases = fact_cases(small_model, facts, data)
    union = list(dict.fromkeys(q for c in cases for q in c.control_prompts))
    assert union and all(c.request_controls == union for c in cases)
    for prompt in union:
        assert not any(f.subject in prompt for f in facts)  # other facts' subjects: no controls


def test_answers_reference_reads_only_the_answer_positions(small_model) -> None:
    prompts = ["Alex Morgan's phone number is", "Jamie Rivera lives at"]
    ref = answers_reference(small_model, prompts, max_new_tokens=4)
    assert ref is not None
    assert ref.positions is not None and ref.positions.shape == ref.mask.shape
    per_row = ref.positions.sum(1)
    assert bool((per_row >= 1).all()) and bool((per_row <= 4).all())
    assert not bool((ref.positions & ~ref.mask.bool()).any())  # never on padding
    unchanged = ref.kl(_Forward(small_model, {}))
    assert float(unchanged) < 1e-5  # the model as it was: no divergence


def test_the_request_reference_is_taken_once_before_any_edit(small_world, small_model) -> None:
    """The reference is computed on the first fact (the request's start) and kept for the
    later ones; with the default ``refine_controls="fact"`` none is computed."""
    facts = _facts(small_world, 2)
    data = eval_data_for(small_model, {f.subject for f in facts})
    cases = fact_cases(small_model, facts, data)
    layers = list(range(small_model.adapter.n_layers))
    saved = {i: small_model.adapter.down_proj_weight(i).detach().clone() for i in layers}
    try:
        editor = FeatureEdit(FeatureEditParams(refine_controls="request", refine_steps=2))
        editor.erase_fact(small_model, cases[0])
        first = editor._request_ref
        assert first is not None
        editor.erase_fact(small_model, cases[1])
        assert editor._request_ref is first
        plain = FeatureEdit(FeatureEditParams(refine_steps=2))
        plain.erase_fact(small_model, cases[0])
        assert plain._request_ref is None
    finally:
        with torch.no_grad():
            for i, w in saved.items():
                small_model.adapter.down_proj_weight(i).copy_(w)
