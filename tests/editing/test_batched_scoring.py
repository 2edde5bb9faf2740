"""Batched scoring (issue #16): rows of many facts and prompts in one padded batch score as each
row alone (batch size 1, no padding), within float tolerance."""

from __future__ import annotations

import math

import pytest

from editing import evaluate as ev
from editing import settings
from editing.errors import ConfigError
from editing.relations import RELATIONS
from editing.scoring import default_batch_size, greedy_generate, score_targets
from tests.conftest import environment

TOL = 1e-4


@pytest.fixture(scope="module")
def groups(small_world) -> list[tuple[list[str], str]]:
    """(edit + held-out prompts, target) of 6 private facts of different relations and lengths."""
    out = []
    for f in small_world.private_facts()[:6]:
        rel = RELATIONS[f.relation]
        out.append((rel.edit_prompts(f.subject) + rel.heldout_prompts(f.subject), f.target))
    return out


def _flat(groups):
    return [p for g, _ in groups for p in g], [t for g, t in groups for _ in g]


def test_score_targets_batched_equals_one_row_at_a_time(small_model, groups) -> None:
    prompts, targets = _flat(groups)
    model, tok = small_model.model, small_model.tokenizer
    alone = score_targets(model, tok, prompts, targets, batch_size=1)
    batched = score_targets(model, tok, prompts, targets, batch_size=64)
    assert len(batched) == len(prompts) > 40
    for a, b in zip(alone, batched):
        assert a.reproduced == b.reproduced
        assert math.isclose(a.logprob, b.logprob, abs_tol=TOL)
        assert math.isclose(a.first_token_logprob, b.first_token_logprob, abs_tol=TOL)
    assert any(s.reproduced for s in batched) and not all(s.reproduced for s in batched)


def test_scores_match_a_full_forward_of_each_row(small_model, groups) -> None:
    """The head runs at the target positions only (``logits_to_keep``): same numbers as the
    full logits of the row alone."""
    import torch

    from editing.scoring import encode_pair

    model, tok = small_model.model, small_model.tokenizer
    prompts, targets = _flat(groups)
    scores = score_targets(model, tok, prompts, targets)
    for prompt, target, score in list(zip(prompts, targets, scores))[::7]:
        p_ids, t_ids = encode_pair(tok, prompt, target)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([p_ids + t_ids])).logits[0].float()
        pos = torch.arange(len(p_ids) - 1, len(p_ids) + len(t_ids) - 1)
        lp = logits.log_softmax(-1)[pos].gather(-1, torch.tensor(t_ids)[:, None]).squeeze(-1)
        assert math.isclose(score.logprob, float(lp.sum()), abs_tol=TOL)
        assert score.reproduced == bool((logits[pos].argmax(-1) == torch.tensor(t_ids)).all())


def test_greedy_generation_batched_equals_alone_with_per_row_lengths(small_model, groups) -> None:
    prompts, _ = _flat(groups)
    model, tok = small_model.model, small_model.tokenizer
    lengths = [3 + i % 5 for i in range(len(prompts))]
    alone = [greedy_generate(model, tok, [p], n, batch_size=1)[0] for p, n in zip(prompts, lengths)]
    assert greedy_generate(model, tok, prompts, lengths, batch_size=32) == alone


def test_per_fact_metrics_batched_across_facts_equal_one_fact_at_a_time(small_model, groups):
    model, tok = small_model.model, small_model.tokenizer
    leaks = ev.leaks_many(model, tok, groups)
    probs = ev.target_probs_many(model, tok, groups)
    known = ev.known_many(model, tok, groups)
    exposures = ev.exposures(model, tok, [(g[0], t) for g, t in groups], n_candidates=50)
    for i, (g, t) in enumerate(groups):
        assert leaks[i] == ev.leaks(model, tok, g, t)
        assert known[i] == ev.known(model, tok, g, [t] * len(g))
        for a, b in zip(probs[i], ev.target_prob(model, tok, g, t)):
            assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
        alone = ev.exposure(model, tok, g[0], t, n_candidates=50)
        assert (exposures[i] is None) == (alone is None)
        if alone is not None:
            assert math.isclose(exposures[i], alone, abs_tol=1e-6)
    assert any(x is not None for x in exposures)


def test_leak_rates_count_every_sample_of_every_fact(small_model, groups) -> None:
    rates = ev.leak_rates(small_model.model, small_model.tokenizer, groups, samples=2)
    assert [r.count for r in rates] == [2 * len(g) for g, _ in groups]
    assert all(0 <= r.hits <= r.count for r in rates)
    again = ev.leak_rates(small_model.model, small_model.tokenizer, groups, samples=2)
    assert again == rates  # seeded


def test_perplexity_batched_equals_one_passage_at_a_time(small_model, small_world) -> None:
    texts = list(small_world.ppl_texts)[:12]
    model, tok = small_model.model, small_model.tokenizer
    parts = ev.passage_nll(model, tok, texts, batch_size=8)
    for text, (nll, n) in zip(texts, parts):
        ((alone, m),) = ev.passage_nll(model, tok, [text], batch_size=1)
        assert n == m and math.isclose(nll, alone, rel_tol=1e-5)
    assert math.isclose(
        ev.perplexity(model, tok, texts, batch_size=1), ev.pooled_perplexity(parts), rel_tol=1e-5
    )


def test_batch_size_setting(small_model) -> None:
    from editing.scoring import MAX_BATCH

    # a 1,024-token vocabulary fits thousands of rows in the CPU budget: the CPU cap applies
    assert small_model.model.config.vocab_size == 1024
    assert default_batch_size(small_model.model) == MAX_BATCH["cpu"]
    with environment({settings.BATCH_SIZE_ENV: "3"}):
        assert default_batch_size(small_model.model) == 3
    for bad in ("0", "-2", "many"):
        with environment({settings.BATCH_SIZE_ENV: bad}), pytest.raises(ConfigError):
            settings.batch_size()


def test_integrated_gradients_in_chunks_equal_one_pass(small_model, groups) -> None:
    from editing.locate import neuron_attributions

    prompts, target = groups[0][0][:4], groups[0][1]
    with environment({settings.BATCH_SIZE_ENV: "7"}):  # 4 prompts x 5 steps: 3 chunks
        chunked, acts = neuron_attributions(small_model, prompts, target, [0, 1], steps=5)
    with environment({settings.BATCH_SIZE_ENV: "1000"}):
        whole, _ = neuron_attributions(small_model, prompts, target, [0, 1], steps=5)
    for layer in (0, 1):
        assert chunked[layer].shape == (4, acts[layer].shape[1])
        assert chunked[layer].abs().max() > 0
        assert (chunked[layer] - whole[layer]).abs().max() <= 1e-5 * whole[layer].abs().max()
