"""FeatureEdit's ``refine_scope="request"``: every fact's projection first, then ONE refinement
of all the request's facts (:meth:`FeatureEdit.finish_request`), run by
:func:`editing.erase.run_erasure` and by :func:`editing.chunks.edit_chunk`. Behaviour, not
benchmark figures (docs/benchmarks.md, *Multi-fact requests*)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from editing.edits import WeightSession
from editing.erase import fact_cases, run_erasure
from editing.evaldata import eval_data_for
from editing.methods import FactCase, finish_request
from editing.methods.featureedit import FeatureEdit
from editing.methods.flatten import FlattenConfig, flatten_rows, reference, rows_reference, snapshot
from editing.methods.params import FeatureEditParams
from editing.models import LoadedModel
from editing.request import ErasureRequest
from tests.editing.methods.test_featureedit_request_controls import _facts

ACCEPT_ALL = {
    "min_reliability": 0.0,
    "min_generalization": 0.0,
    "min_locality": 0.0,
    "max_delta_ppl": 1e9,
}


def _cases(world, loaded: LoadedModel, n: int) -> list[FactCase]:
    """Cases of ``n`` private facts of distinct subjects and relations (the model answers)."""
    facts = _facts(world, n)
    data = eval_data_for(loaded, {f.subject for f in facts})
    return [c for c in fact_cases(loaded, facts, data) if c.edit_prompts]


def _weights(loaded: LoadedModel) -> dict[int, torch.Tensor]:
    return snapshot(loaded, list(range(loaded.adapter.n_layers)))


def _erased(loaded: LoadedModel, cases: list[FactCase], **params) -> dict[int, torch.Tensor]:
    """The down-projections after erasing ``cases`` in one FeatureEdit instance (and its
    request-wide step); the model restored afterwards."""
    editor = FeatureEdit(FeatureEditParams(**params))
    with WeightSession(loaded.adapter):
        outcomes = {c.index: editor.erase_fact(loaded, c) for c in cases}
        finish_request(editor, loaded, outcomes)
        return _weights(loaded)


def test_one_fact_refined_with_its_request_is_refined_alone(small_world, small_model) -> None:
    """With one fact the request's start is the fact's: the same edit, bit for bit."""
    cases = _cases(small_world, small_model, 1)
    alone = _erased(small_model, cases, refine_steps=8, refine_scope="fact")
    joint = _erased(small_model, cases, refine_steps=8, refine_scope="request")
    assert all(torch.equal(alone[i], joint[i]) for i in alone)


def test_the_joint_refinement_runs_once_after_every_projection(small_world, small_model) -> None:
    cases = _cases(small_world, small_model, 3)
    assert len(cases) >= 2
    start = _weights(small_model)
    projected = _erased(small_model, cases, refine="none")
    editor = FeatureEdit(FeatureEditParams(refine_scope="request", refine_steps=6))
    with WeightSession(small_model.adapter):
        outcomes = {c.index: editor.erase_fact(small_model, c) for c in cases}
        # before the request-wide step: the projections alone, no refinement yet
        now = _weights(small_model)
        assert all(torch.equal(now[i], projected[i]) for i in now)
        assert all("refine_steps" not in o.evidence for o in outcomes.values())
        seconds = finish_request(editor, small_model, outcomes)
        refined = _weights(small_model)
    assert seconds > 0
    runs = {(o.evidence["refine_steps"], o.evidence["refine_columns"]) for o in outcomes.values()}
    assert len(runs) == 1  # one refinement, reported on every fact
    assert all(o.evidence["refine_facts"] == len(cases) for o in outcomes.values())
    assert all("edit_prompts_still_leaking" in o.evidence for o in outcomes.values())
    extra = FeatureEditParams().refine_extra_columns
    for layer, w in refined.items():  # the projections' columns + at most `extra` more
        moved = (w != start[layer]).any(0)
        by_projection = (projected[layer] != start[layer]).any(0)
        assert int((moved & ~by_projection).sum()) <= extra
    assert any(not torch.equal(refined[i], projected[i]) for i in refined)
    assert finish_request(editor, small_model, {}) == 0.0  # the request's facts were consumed


def test_the_fact_scope_has_nothing_to_finish(small_world, small_model) -> None:
    cases = _cases(small_world, small_model, 1)
    editor = FeatureEdit(FeatureEditParams(refine_steps=2, refine_scope="fact"))
    with WeightSession(small_model.adapter):
        editor.erase_fact(small_model, cases[0])
        finished = editor.finish_request(small_model)
    assert finished.evidence == {} and finished.seconds == 0.0


def test_the_per_secret_terms_are_refused_in_the_request_scope() -> None:
    with pytest.raises(ValidationError, match="refine_scope"):
        FeatureEditParams(refine_scope="request", refine_exposure=1.0)
    with pytest.raises(ValidationError, match="refine_scope"):
        FeatureEditParams(refine_scope="request", refine_stranger=1.0)
    FeatureEditParams(refine_scope="request", refine_digit_rank=1.0)  # per token: allowed
    assert FeatureEditParams(refine_scope="request").joint_refinement()
    assert not FeatureEditParams().joint_refinement()  # the default: one fact at a time


def test_flatten_rows_refuses_the_exposure_term_on_two_secrets(small_world, small_model) -> None:
    cases = _cases(small_world, small_model, 2)
    rows = [(q, c.secret) for c in cases for q in c.edit_prompts]
    with pytest.raises(ValueError, match="one secret"):
        flatten_rows(small_model, rows, _weights(small_model), None, FlattenConfig(exposure=1.0))


def test_rows_reference_of_one_secret_is_the_fact_reference(small_world, small_model) -> None:
    case = _cases(small_world, small_model, 1)[0]
    for own in (False, True):
        one = reference(small_model, case.control_prompts, case.secret, own=own)
        rows = rows_reference(small_model, [(q, case.secret) for q in case.control_prompts], own)
        assert one is not None and rows is not None
        assert torch.equal(one.ids, rows.ids) and torch.equal(one.logprobs, rows.logprobs)


def test_run_erasure_and_one_chunk_make_the_same_joint_edit(small_world, small_model) -> None:
    """run_erasure runs the request-wide step; one chunk of every fact, merged, is the same
    edit bit for bit (the chunk ran the step too)."""
    from editing.chunks import MergedChunks, edit_chunk

    params = {"refine_scope": "request", "refine_steps": 6}
    request = ErasureRequest(
        model="demo-small", facts=_facts(small_world, 2), thresholds=ACCEPT_ALL, params=params
    )
    result = run_erasure(request, small_model, leak_samples=1)
    refined = [f.evidence for f in result.facts if "refine_steps" in f.evidence]
    assert len(refined) == 2 and all(e["refine_facts"] == 2 for e in refined)
    chunk = edit_chunk(request, small_model, 0, 0, 2)
    assert all(o["evidence"]["refine_facts"] == 2 for o in chunk.outcomes.values())
    merged = run_erasure(request, small_model, leak_samples=1, editor=MergedChunks([chunk]))
    assert result.edit is not None and merged.edit is not None
    assert merged.edit.footprint() == result.edit.footprint()


def test_the_request_locality_weight_applies_from_two_facts() -> None:
    editor = FeatureEdit(
        FeatureEditParams(refine_scope="request", refine_locality=2.0, refine_request_locality=50.0)
    )
    assert editor._joint_config(1).locality == 2.0  # one fact: refined as alone
    assert editor._joint_config(2).locality == 50.0
    bound = FeatureEdit(FeatureEditParams(refine_request_leak_bound=0.005))
    assert bound._joint_config(1).leak_bound == 0.01 and bound._joint_config(3).leak_bound == 0.005
    same = FeatureEdit(FeatureEditParams(refine_request_locality=None))
    assert same._joint_config(4).locality == FeatureEditParams().refine_locality
