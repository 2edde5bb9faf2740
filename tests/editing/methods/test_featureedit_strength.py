"""FeatureEdit's strength levers (issue #13): the sampling-probability stopping rule
(``leak_bound``) and the projection multiple (``strength``). Behaviour, not benchmark figures."""

from __future__ import annotations

import pytest
import torch

from editing.erase import run_erasure
from editing.methods.featureedit import edit_feature, leaking_prompts
from editing.methods.params import FeatureEditParams
from editing.relations import get_relation
from editing.request import ErasureRequest
from editing.scoring import TargetScore


def _request(fact, params: dict) -> ErasureRequest:
    """FeatureEdit's feature projection alone (``refine="none"``): these tests are about its
    stopping rule and strength, which the default refinement would follow and blur."""
    return ErasureRequest(
        model="demo-small",
        method="featureedit",
        facts=[{"subject": fact.subject, "relation": fact.relation, "target": fact.target}],
        params={"refine": "none", **params},
    )


def test_leaking_prompts_counts_greedy_hits_and_likely_samples() -> None:
    scores = [
        TargetScore(reproduced=True, logprob=-5.0, first_token_logprob=-0.1),  # greedy hit
        TargetScore(reproduced=False, logprob=-1.0, first_token_logprob=-0.5),  # P 0.37
        TargetScore(reproduced=False, logprob=-9.0, first_token_logprob=-3.0),  # P 1e-4
    ]
    assert leaking_prompts(scores, 1.0) == 1  # the old rule: greedy decoding only
    assert leaking_prompts(scores, 0.05) == 2
    assert leaking_prompts(scores, 1e-5) == 3


def test_leak_bound_and_strength_are_validated() -> None:
    assert FeatureEditParams().leak_bound <= 1.0
    for bad in ({"leak_bound": 0}, {"leak_bound": 1.5}, {"strength": 0}, {"strength": 9}):
        with pytest.raises(ValueError):
            FeatureEditParams(**bad)


def test_leak_bound_keeps_editing_until_sampling_is_unlikely(small_model, erasable_fact) -> None:
    """Greedy-only stopping leaves the secret's probability where it is once greedy decoding
    stops reproducing it; a bound keeps adding features until every edit prompt is below it (or
    the cap/candidates run out), and never uses fewer features."""
    loose = run_erasure(_request(erasable_fact, {"leak_bound": 1.0}), small_model)
    bound = 0.001
    tight = run_erasure(_request(erasable_fact, {"leak_bound": bound}), small_model)
    ev_loose, ev_tight = loose.facts[0].evidence, tight.facts[0].evidence
    assert len(tight.facts[0].units) >= len(loose.facts[0].units)
    assert ev_tight["edit_prompts_max_target_prob"] <= ev_loose["edit_prompts_max_target_prob"]
    if ev_tight["edit_prompts_still_leaking"] == 0:
        assert ev_tight["edit_prompts_max_target_prob"] <= bound
    else:  # stopped by the cap or by running out of candidates, and says so
        assert ev_tight["edit_prompts_max_target_prob"] > bound
    assert tight.metrics.delta_prob >= loose.metrics.delta_prob - 1e-6


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_strength_scales_the_removed_write(small_model, erasable_fact, strength: float) -> None:
    """``strength`` 1 leaves the edited columns writing nothing along the feature; 2 makes them
    write the opposite of what they wrote."""
    adapter = small_model.adapter
    layer = small_model.sae_layers("resid_post")[-1]
    direction = small_model.sae("resid_post", layer).W_dec[0].detach()
    weight = adapter.down_proj_weight(layer)
    saved = weight.detach().clone()
    v = adapter.write_direction(layer, direction)
    v = v / v.norm()
    mean = torch.ones(weight.shape[1])
    try:
        before = v @ weight.detach().float()
        touched = edit_feature(adapter, layer, direction, "project-cols", rho=1.0,
                               neuron_mean=mean, strength=strength)  # fmt: skip
        after = v @ adapter.down_proj_weight(layer).detach().float()
        cols = (before > 0).nonzero().squeeze(1)
        assert touched == cols.numel() * weight.shape[0]
        torch.testing.assert_close(after[cols], (1 - strength) * before[cols], atol=1e-5, rtol=0)
        rest = (before <= 0).nonzero().squeeze(1)
        torch.testing.assert_close(after[rest], before[rest])
    finally:
        adapter.set_down_proj_weight(layer, saved)


def test_every_token_reads_the_target_positions(small_model, erasable_fact) -> None:
    """``positions="target"`` reads every position that predicts a target token: a prompt's
    activation is the largest over its positions (so never below the last token's), and with
    the first-token objective (one position) it is the last-token evidence exactly."""
    from editing.locate import feature_evidence

    prompts = get_relation(erasable_fact.relation).edit_prompts(erasable_fact.subject)
    layers = small_model.sae_layers("resid_post")

    def evidence(objective: str, every_token: bool):
        return feature_evidence(small_model, prompts, erasable_fact.target, "resid_post", layers,
                                objective=objective, every_token=every_token)  # fmt: skip

    last, every = evidence("target", False), evidence("target", True)
    for layer in layers:
        assert (every.acts[layer] >= last.acts[layer] - 1e-6).all()
        assert not torch.equal(every.neuron_mean[layer], last.neuron_mean[layer])
    one, one_every = evidence("first_token", False), evidence("first_token", True)
    for layer in layers:
        torch.testing.assert_close(one_every.attrib[layer], one.attrib[layer])
        torch.testing.assert_close(one_every.acts[layer], one.acts[layer])
