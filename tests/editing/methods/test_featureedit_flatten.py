"""FeatureEdit's flattening refinement (``refine="flatten"``, issue #13): behaviour on the small
world, not benchmark figures."""

from __future__ import annotations

import pytest
import torch

from editing.attacks.base import AttackCase, ModelStates
from editing.attacks.logit_lens import LogitLens
from editing.erase import run_erasure
from editing.methods.flatten import reference
from editing.methods.params import FeatureEditParams
from editing.relations import get_relation
from editing.request import ErasureRequest


def _erase(small_model, fact, params: dict):
    req = ErasureRequest(
        model="demo-small",
        method="featureedit",
        facts=[fact.spec()],
        params=params,
    )
    return run_erasure(req, small_model, leak_samples=1)


def _columns(edit) -> dict[int, set[int]]:
    """Per layer, the down-projection columns an edit changes."""
    out: dict[int, set[int]] = {}
    for d in edit.deltas:
        assert d.axis == "cols"
        changed = (d.old != d.new).any(0)
        out[d.layer] = {int(i) for i, c in zip(d.indices, changed) if c}
    return out


def test_refine_params_are_validated() -> None:
    assert FeatureEditParams(refine="flatten").refine == "flatten"
    for bad in (
        {"refine": "sharpen"},
        {"refine_steps": 0},
        {"refine_lr": 0},
        {"refine_rank": -1},
        {"refine_tokens": 0},
        {"refine_extra_columns": -1},
        {"refine_locality": -1},
    ):
        with pytest.raises(ValueError):
            FeatureEditParams(**bad)


def test_flatten_hides_the_secret_from_sampling_and_the_logit_lens(
    small_model, erasable_fact
) -> None:
    """On the edit prompts the refined edit meets the sampling bound and no logit-lens attack
    at B=20 finds every secret token (the unedited model's lens does); the refinement reports
    that it converged."""
    bound = 0.01
    flat = _erase(small_model, erasable_fact, {"refine": "flatten", "leak_bound": bound})
    ev = flat.facts[0].evidence
    assert ev["refine_converged"] is True
    assert ev["refine_columns"] > 0
    assert ev["edit_prompts_max_target_prob"] <= bound
    assert ev["edit_prompts_still_leaking"] == 0
    prompts = get_relation(erasable_fact.relation).edit_prompts(erasable_fact.subject)
    case = AttackCase(erasable_fact.subject, erasable_fact.relation, erasable_fact.target,
                      [p for p in prompts])  # fmt: skip
    result = LogitLens().run(ModelStates(small_model, flat.edit), case)
    assert result.before is not None and result.before.success["any@20"] is True  # unedited
    after = result.after
    assert after.success["any@20"] is False
    assert after.success["any@1"] is False


def test_flatten_trains_only_down_projection_columns_it_may(small_model, erasable_fact) -> None:
    """Without extra columns the refinement changes only columns the projection changed; with
    them, at most ``refine_extra_columns`` more per layer. Either way the edit is column deltas
    of the down-projections, and the same request gives the same edit (deterministic)."""
    base = _columns(_erase(small_model, erasable_fact, {"refine": "none"}).edit)
    only = _columns(
        _erase(small_model, erasable_fact, {"refine": "flatten", "refine_extra_columns": 0}).edit
    )
    for layer, cols in only.items():
        assert cols <= base.get(layer, set())
    extra = 4
    params = {"refine": "flatten", "refine_extra_columns": extra}
    first = _erase(small_model, erasable_fact, params).edit
    wider = _columns(first)
    for layer, cols in wider.items():
        assert len(cols - base.get(layer, set())) <= extra
    again = _erase(small_model, erasable_fact, params).edit
    assert [d.layer for d in again.deltas] == [d.layer for d in first.deltas]
    for a, b in zip(again.deltas, first.deltas):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.new, b.new)


def test_locality_reference_reads_the_controls_own_answers(
    small_world, small_model, erasable_fact
) -> None:
    """With ``own`` the locality term's reference adds, per control prompt, a row teacher-forced
    on the unedited model's own greedy answer: along it the reference's argmax is the next
    token of that row (what the model says about the other subject)."""
    others = [f.subject for f in small_world.private_facts() if f.subject != erasable_fact.subject]
    rel = get_relation(erasable_fact.relation)
    prompts = [p for s in dict.fromkeys(others[:2]) for p in rel.edit_prompts(s)[:2]]
    plain = reference(small_model, prompts, erasable_fact.target)
    own = reference(small_model, prompts, erasable_fact.target, own=True)
    assert plain is not None and own is not None
    assert own.ids.shape[0] > plain.ids.shape[0] == len(prompts)
    for row in range(len(prompts), own.ids.shape[0]):
        n_prompt = len(small_model.tokenizer(prompts[row - len(prompts)])["input_ids"])
        length = int(own.mask[row].sum())
        predicted = own.logprobs[row, n_prompt - 1 : length - 1].argmax(-1)
        assert torch.equal(predicted, own.ids[row, n_prompt:length])
