"""FeatureEdit's ``locate_on`` (multi-fact requests): where a later fact's features are ranked.

With ``locate_on="request"`` every fact of a request is located on the down-projections as they
were when the request began, not on the weights its earlier facts left; edits and the stopping
rule still use the current weights. Behaviour, not benchmark figures (docs/benchmarks.md,
*Multi-fact requests*)."""

from __future__ import annotations

import torch

from editing.erase import run_erasure
from editing.evaldata import eval_data_for
from editing.methods.featureedit import FeatureEdit
from editing.methods.flatten import snapshot
from editing.methods.params import FeatureEditParams
from editing.request import ErasureRequest


def _two_facts(world) -> list[dict[str, str]]:
    """Two private facts of different subjects and relations."""
    first = world.private_facts()[0]
    second = next(
        f
        for f in world.private_facts()
        if f.subject != first.subject and f.relation != first.relation
    )
    return [
        {"subject": f.subject, "relation": f.relation, "target": f.target} for f in (first, second)
    ]


def _request(facts, params: dict) -> ErasureRequest:
    return ErasureRequest(model="demo-small", method="featureedit", facts=facts, params=params)


def test_locate_on_defaults_to_current_and_is_validated() -> None:
    assert FeatureEditParams().locate_on == "current"
    assert FeatureEditParams(locate_on="request").locate_on == "request"
    try:
        FeatureEditParams(locate_on="pristine")
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown locate_on was accepted")


def test_evidence_reads_the_start_weights_and_puts_the_current_back(small_model) -> None:
    """The request-start evidence equals evidence on the start weights, whatever was edited
    since; the edited weights are back in place afterwards."""
    layers = list(range(small_model.adapter.n_layers))
    prompts = ["Alex Morgan's phone number is"]
    editor = FeatureEdit(FeatureEditParams(locate_on="request"))
    start = snapshot(small_model, layers)
    editor._start = start
    weight = small_model.adapter.down_proj_weight(0)
    try:
        before = editor._evidence(small_model, prompts, " 555", "resid_post", [0, 1])
        with torch.no_grad():
            weight[:, :8] = 0.0
        edited = snapshot(small_model, layers)
        after = editor._evidence(small_model, prompts, " 555", "resid_post", [0, 1])
        for layer in layers:
            assert torch.equal(small_model.adapter.down_proj_weight(layer), edited[layer])
        for layer in (0, 1):
            assert torch.equal(before.attrib[layer], after.attrib[layer])
            assert torch.equal(before.neuron_mean[layer], after.neuron_mean[layer])
        current = FeatureEdit(FeatureEditParams())._evidence(
            small_model, prompts, " 555", "resid_post", [0, 1]
        )
        assert not torch.equal(current.attrib[1], after.attrib[1])  # the edit did change them
    finally:
        with torch.no_grad():
            for layer, w in start.items():
                small_model.adapter.down_proj_weight(layer).copy_(w)


def test_a_later_fact_is_ranked_as_if_erased_alone(small_world, small_model) -> None:
    """With ``locate_on="request"`` the second fact's first candidates are those it gets when
    erased alone (same controls); the weights are restored after each erasure."""
    facts = _two_facts(small_world)
    data = eval_data_for(small_model, {f["subject"] for f in facts})
    params = {"locate_on": "request", "refine": "none"}
    both = run_erasure(_request(facts, params), small_model, eval_data=data)
    alone = run_erasure(_request(facts[1:], params), small_model, eval_data=data)
    assert both.facts[1].evidence["candidates"] == alone.facts[0].evidence["candidates"]
    assert both.facts[1].evidence["candidates_top"] == alone.facts[0].evidence["candidates_top"]
