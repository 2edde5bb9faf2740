"""Sampling with one stream per row (issue #16): exact (the softmax's distribution, the nucleus of
``transformers``' top-p), and a prompt's samples do not depend on what it is batched with."""

from __future__ import annotations

import pytest
import torch
from transformers import TopPLogitsWarper

from editing import evaluate as ev
from editing.relations import RELATIONS
from editing.sampling import RowSampler, nucleus, row_seed


@pytest.fixture(scope="module")
def groups(small_world) -> list[tuple[list[str], str]]:
    """(edit + held-out prompts, target) of 4 private facts."""
    out = []
    for f in small_world.private_facts()[:4]:
        rel = RELATIONS[f.relation]
        out.append((rel.edit_prompts(f.subject) + rel.heldout_prompts(f.subject), f.target))
    return out


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_nucleus_keeps_what_transformers_top_p_keeps(top_p: float) -> None:
    gen = torch.Generator().manual_seed(1)
    peaked = torch.randn(40, 300, generator=gen) * 6  # the top 64 tokens hold top_p
    flat = torch.randn(40, 300, generator=gen) * 0.1  # they do not: the full sort
    logits = torch.cat([peaked, flat])
    ours = nucleus(logits, top_p)
    theirs = TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.isinf(ours[:40]).sum() > 0 and torch.isinf(ours[40:]).sum() > 0
    assert torch.equal(ours[~torch.isinf(ours)], logits[~torch.isinf(ours)])


def test_draws_follow_the_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5, -3.0])
    rows = 40_000
    sampler = RowSampler(range(rows))
    picked = sampler.pick(logits.expand(rows, -1), 0)
    freq = torch.bincount(picked, minlength=len(logits)).double() / rows
    assert torch.allclose(freq, logits.double().softmax(-1), atol=0.01)
    # nucleus at 0.7: only the tokens whose preceding mass is below 0.7 (here the top two)
    nucleus_sampler = RowSampler(range(rows), top_p=0.7)
    kept = set(nucleus_sampler.pick(logits.expand(rows, -1), 0).tolist())
    assert kept == {0, 1}


def test_a_row_draws_from_its_own_stream() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    seeds = [row_seed(0, "p", k) for k in range(3)]
    together = RowSampler(seeds).pick(logits, 5)
    alone = [RowSampler([s]).pick(logits[i : i + 1], 5).item() for i, s in enumerate(seeds)]
    assert together.tolist() == alone
    assert row_seed(0, "p", 0) != row_seed(1, "p", 0) != row_seed(0, "q", 0)


def test_a_prompts_samples_do_not_depend_on_its_batch(small_model, groups) -> None:
    model, tok = small_model.model, small_model.tokenizer
    prompts = [p for g, _ in groups for p in g]
    mixed = ev.sample_continuations(model, tok, prompts, 8, samples=6, batch_size=7)
    for i in (3, len(prompts) - 1):
        assert ev.sample_continuations(model, tok, [prompts[i]], 8, samples=6)[0] == mixed[i]
    assert any(len(set(texts)) > 1 for texts in mixed)  # really sampled, not greedy copies
    other_seed = ev.sample_continuations(model, tok, prompts, 8, samples=6, seed=1)
    assert other_seed != mixed


def test_leak_rates_of_many_facts_equal_each_fact_alone(small_model, groups) -> None:
    model, tok = small_model.model, small_model.tokenizer
    together = ev.leak_rates(model, tok, groups, samples=4)
    alone = [ev.leak_rates(model, tok, [g], samples=4)[0] for g in groups]
    assert together == alone
    assert sum(r.hits for r in together) > 0
