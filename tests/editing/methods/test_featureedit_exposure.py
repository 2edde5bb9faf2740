"""FeatureEdit's flatten refinement with the exposure term (``refine_exposure``, issue #13):
behaviour on the small world, not benchmark figures."""

from __future__ import annotations

import contextlib

import pytest
import torch

from editing.attacks.exposure import Exposure, candidates, format_space
from editing.methods.flatten import FlattenConfig, exposure_candidates
from editing.methods.params import FeatureEditParams
from editing.relations import get_relation
from editing.scoring import score_targets
from tests.editing.methods.test_featureedit_flatten import _erase


def _candidate_logprobs(small_model, fact, edit=None) -> torch.Tensor:
    """``[edit prompts, 1 + candidates]`` log-probabilities of the secret (column 0) and of its
    exposure candidates, teacher-forced, scored independently (with ``edit`` applied if given)."""
    cands = exposure_candidates(fact.target, FlattenConfig(exposure=1.0))
    assert cands
    targets = [fact.target, *cands]
    out = []
    with edit.applied(small_model.adapter) if edit is not None else contextlib.nullcontext():
        for prompt in get_relation(fact.relation).edit_prompts(fact.subject):
            scores = score_targets(
                small_model.model, small_model.tokenizer, [prompt] * len(targets), targets
            )
            out.append(torch.tensor([s.logprob for s in scores]))
    return torch.stack(out)


def _over_quantile(small_model, fact, edit, quantile: float) -> torch.Tensor:
    """Per edit prompt, the secret's log-probability with ``edit`` applied minus the
    ``quantile`` quantile of its exposure candidates' log-probabilities under the unedited
    model (the term's fixed target)."""
    before = _candidate_logprobs(small_model, fact)
    after = _candidate_logprobs(small_model, fact, edit)
    return after[:, 0] - before[:, 1:].quantile(quantile, dim=1)


def _candidates_drift(small_model, fact, edit) -> float:
    """Mean absolute change of the candidates' log-probabilities under ``edit``."""
    before = _candidate_logprobs(small_model, fact)
    after = _candidate_logprobs(small_model, fact, edit)
    return float((after[:, 1:] - before[:, 1:]).abs().mean())


def test_exposure_params_default_off_and_are_validated() -> None:
    p = FeatureEditParams()
    assert p.refine_exposure == 0.0
    for bad in (
        {"refine_exposure": -1},
        {"refine_exposure_candidates": 1},
        {"refine_exposure_quantile": 1.5},
        {"refine_exposure_anchor": -1},
    ):
        with pytest.raises(ValueError):
            FeatureEditParams(**bad)


def test_exposure_candidates_share_the_format_and_never_equal_the_secret() -> None:
    secret = "1987-04-12"
    cfg = FlattenConfig(exposure=1.0, exposure_candidates=200)
    cands = exposure_candidates(secret, cfg)
    positions, _ = format_space(secret)
    assert secret not in cands
    assert 190 <= len(cands) <= 200
    for c in cands:
        assert len(c) == len(secret) and c[4] == "-" and c[7] == "-"
        assert all(c[i].isdigit() for i in positions)
    assert cands == exposure_candidates(secret, cfg)  # seeded
    attack_pool, _ = candidates(secret, 0, 200, Exposure.defaults["seed"])
    assert len(set(cands) & set(attack_pool)) < 10  # not the exposure attack's own draws
    assert exposure_candidates(secret, FlattenConfig()) == []  # term off
    assert exposure_candidates("ab-7", cfg) == []  # too few digits: no format space


def test_exposure_term_brings_the_secret_down_to_the_candidates_quantile(
    small_model, erasable_digit_fact
) -> None:
    """With the term on, after the edit the secret's log-probability on every edit prompt is at
    most the chosen quantile of its random same-format candidates' under the unedited model
    (a fixed target), and the refinement reports convergence with a zero exposure loss."""
    fact = erasable_digit_fact
    quantile = 0.5
    params = {
        "refine": "flatten",
        "refine_exposure": 1.0,
        "refine_exposure_quantile": quantile,
        "refine_steps": 300,
    }
    out = _erase(small_model, fact, params)
    ev = out.facts[0].evidence
    assert ev["refine_converged"] is True
    assert ev["refine_exposure_loss"] == 0.0
    assert (_over_quantile(small_model, fact, out.edit, quantile) <= 1e-3).all()


def test_exposure_anchor_keeps_the_format_space_in_place(small_model, erasable_digit_fact) -> None:
    """The anchor holds the candidates' log-probabilities near their pre-edit values: they move
    less with it than without it, while the secret still goes down into them."""
    fact = erasable_digit_fact
    params = {"refine": "flatten", "refine_exposure": 1.0, "refine_steps": 300}
    anchored = _erase(small_model, fact, {**params, "refine_exposure_anchor": 1.0})
    loose = _erase(small_model, fact, {**params, "refine_exposure_anchor": 0.0})
    assert anchored.facts[0].evidence["refine_exposure_loss"] == 0.0
    assert _candidates_drift(small_model, fact, anchored.edit) < _candidates_drift(
        small_model, fact, loose.edit
    )


def test_exposure_term_off_changes_nothing(small_model, erasable_digit_fact) -> None:
    """``refine_exposure=0`` (the default) gives the same edit whatever the exposure term's
    other knobs, and reports no exposure loss; that edit leaves the secret above the
    candidates' median on some edit prompt (what the term is for)."""
    default = _erase(small_model, erasable_digit_fact, {"refine": "flatten"})
    off = _erase(
        small_model,
        erasable_digit_fact,
        {
            "refine": "flatten",
            "refine_exposure": 0.0,
            "refine_exposure_candidates": 7,
            "refine_exposure_quantile": 0.9,
        },
    )
    assert "refine_exposure_loss" not in default.facts[0].evidence
    assert (_over_quantile(small_model, erasable_digit_fact, default.edit, 0.5) > 0).any()
    assert [d.layer for d in off.edit.deltas] == [d.layer for d in default.edit.deltas]
    for a, b in zip(off.edit.deltas, default.edit.deltas):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.new, b.new)
