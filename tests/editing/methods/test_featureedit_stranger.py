"""FeatureEdit's flatten refinement with the stranger term (``refine_stranger``, issue #13):
behaviour on the small world, not benchmark figures."""

from __future__ import annotations

import contextlib

import pytest
import torch

from editing.methods.flatten import (
    STRANGERS,
    _Forward,
    _targets,
    _teacher_forced,
    digit_rank_loss,
    stranger_kl,
    stranger_target,
)
from editing.methods.params import FeatureEditParams
from editing.relations import get_relation
from editing.scoring import encode_pair, score_targets
from tests.editing.methods.test_featureedit_flatten import _erase


def _logits_at_secret(small_model, prompts: list[str], secret: str) -> torch.Tensor:
    """The model's output logits at every secret position of ``prompts`` (teacher-forced),
    ``[prompts × secret tokens, vocab]`` in the stranger target's order."""
    pairs = [encode_pair(small_model.tokenizer, p, secret) for p in prompts]
    ids, mask = _teacher_forced(small_model, [(p, secret) for p in prompts])
    row, pos, _ = _targets(pairs, small_model.adapter.device)
    with torch.no_grad():
        return _Forward(small_model, {}).logits(ids, mask)[row, pos]


def _secret_logprobs(small_model, fact, edit=None) -> torch.Tensor:
    """Per edit prompt, the secret's teacher-forced log-probability (``edit`` applied if given)."""
    prompts = get_relation(fact.relation).edit_prompts(fact.subject)
    with edit.applied(small_model.adapter) if edit is not None else contextlib.nullcontext():
        scores = score_targets(
            small_model.model, small_model.tokenizer, prompts, [fact.target] * len(prompts)
        )
    return torch.tensor([s.logprob for s in scores])


def test_stranger_params_default_off_and_are_validated() -> None:
    p = FeatureEditParams()
    assert p.refine_stranger == 0.0
    for bad in (
        {"refine_stranger": -1},
        {"refine_stranger_subjects": 0},
        {"refine_stranger_subjects": 9},
        {"refine_stranger_margin": -0.5},
    ):
        with pytest.raises(ValueError):
            FeatureEditParams(**bad)


def test_stranger_kl_is_zero_on_the_stranger_and_positive_on_the_known_subject(
    small_model, erasable_digit_fact
) -> None:
    """The term's target is what the unedited model says about a never-seen subject: the model
    asked about that stranger has KL 0 to it; asked about the fact's own subject (whose secret
    it knows) the KL is clearly positive, and the secret is far less likely under the target."""
    fact = erasable_digit_fact
    prompts = get_relation(fact.relation).edit_prompts(fact.subject)
    target = stranger_target(_Forward(small_model, {}), prompts, fact.subject, fact.target, 1)
    assert target is not None and bool(target.valid.all())
    on_stranger = [p.replace(fact.subject, STRANGERS[0]) for p in prompts]
    zero = stranger_kl(target, _logits_at_secret(small_model, on_stranger, fact.target))
    assert abs(float(zero)) < 1e-5
    known = stranger_kl(target, _logits_at_secret(small_model, prompts, fact.target))
    assert float(known) > 0.1
    assert (target.secret < _secret_logprobs(small_model, fact) - 1.0).all()


def test_stranger_target_skips_prompts_without_the_subject(small_model) -> None:
    """A prompt that does not name the subject has no stranger version: it is not constrained;
    without any such prompt there is no target."""
    fwd = _Forward(small_model, {})
    mixed = stranger_target(fwd, ["Dana Berg's phone is", "The phone is"], "Dana Berg", "123", 2)
    assert mixed is not None
    n_tok = int(mixed.valid.numel()) // 2
    assert bool(mixed.valid[:n_tok].all()) and not bool(mixed.valid[n_tok:].any())
    assert stranger_target(fwd, ["The phone is"], "Dana Berg", "123", 2) is None


def test_stranger_term_brings_the_secret_down_to_the_strangers(
    small_model, erasable_digit_fact
) -> None:
    """With the term on, the refinement converges with a zero stranger loss: on every edit
    prompt the secret is no more likely than under the strangers' distribution, and the edited
    model is closer (KL) to that distribution than after the flatten refinement without the
    term (the KL pulls both ways: the secret may end up above where flatten alone left it)."""
    fact = erasable_digit_fact
    # 500 steps: with the controls drawn apart from the Locality set (2026-12-07) this fact's
    # refinement needs more than 300 to converge with the term
    params = {"refine": "flatten", "refine_steps": 500}
    with_term = _erase(small_model, fact, {**params, "refine_stranger": 1.0})
    without = _erase(small_model, fact, params)
    ev = with_term.facts[0].evidence
    assert ev["refine_converged"] is True
    assert ev["refine_stranger_loss"] == 0.0
    assert "refine_stranger_loss" not in without.facts[0].evidence
    prompts = get_relation(fact.relation).edit_prompts(fact.subject)
    target = stranger_target(_Forward(small_model, {}), prompts, fact.subject, fact.target, 4)
    after = _secret_logprobs(small_model, fact, with_term.edit)
    assert (after <= target.secret + 1e-2).all()
    kl = {}
    for name, out in (("with", with_term), ("without", without)):
        with out.edit.applied(small_model.adapter):
            kl[name] = float(
                stranger_kl(target, _logits_at_secret(small_model, prompts, fact.target))
            )
    assert kl["with"] < kl["without"]


def test_digit_rank_loss_counts_only_digits_above_the_median_digit() -> None:
    """The digit-rank hinge is zero when the secret's digit is at or below the median digit at
    its position (or the secret has no digit), positive by the log-probability gap when it is
    the argmax, and unchanged when every digit is lowered alike (a ranking, not a push)."""
    digits = list(range(10))
    logits = torch.zeros(3, 16)
    tok = torch.tensor([4, 12, 7])  # a digit, a non-digit, a digit
    assert float(digit_rank_loss(logits, tok, digits)) == 0.0
    logits[0, 4] = 2.0  # the secret's first digit is now the argmax among the digits
    assert float(digit_rank_loss(logits, tok, digits)) == pytest.approx(1.0)  # (2 + 0) / 2
    lowered = logits.clone()
    lowered[:, :10] -= 5.0
    assert float(digit_rank_loss(lowered, tok, digits)) == pytest.approx(1.0)
    assert float(digit_rank_loss(logits, torch.tensor([12, 13, 14]), digits)) == 0.0


def test_digit_rank_term_lowers_the_secret_on_the_small_world(
    small_model, erasable_digit_fact
) -> None:
    """With the digit-rank term on, the refinement converges with a zero digit loss and the
    secret's log-probability on the edit prompts is lower than after flatten alone."""
    fact = erasable_digit_fact
    params = {"refine": "flatten", "refine_steps": 300}
    with_term = _erase(small_model, fact, {**params, "refine_digit_rank": 1.0})
    without = _erase(small_model, fact, params)
    ev = with_term.facts[0].evidence
    assert ev["refine_converged"] is True
    assert ev["refine_digit_loss"] == 0.0
    assert "refine_digit_loss" not in without.facts[0].evidence
    after = _secret_logprobs(small_model, fact, with_term.edit)
    assert after.mean() < _secret_logprobs(small_model, fact, without.edit).mean()
