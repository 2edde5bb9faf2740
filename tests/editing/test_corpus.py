"""Tests of the demo world's corpus generator and of the relations' template splits."""

from __future__ import annotations

import pytest

from editing.relations import (
    HELDOUT_PER_RELATION,
    PRIVATE_RELATIONS,
    PUBLIC_RELATIONS,
    RELATIONS,
)
from editing.world.build import RECIPES
from editing.world.corpus import FIRST_NAMES, LAST_NAMES, fact_sentence, generate_corpus


@pytest.fixture(scope="module")
def corpus():
    """The default demo world's corpus (what `featureedit world build` trains on)."""
    r = RECIPES["default"]
    return generate_corpus(r.n_people, r.seed, r.n_filler, r.n_ppl)


def test_deterministic_for_a_seed() -> None:
    a = generate_corpus(20, seed=3, n_filler=50, n_ppl=10)
    b = generate_corpus(20, seed=3, n_filler=50, n_ppl=10)
    assert a.people == b.people
    assert a.facts == b.facts
    assert a.train_texts == b.train_texts
    assert a.ppl_texts == b.ppl_texts


def test_different_across_seeds() -> None:
    a = generate_corpus(20, seed=3, n_filler=50, n_ppl=10)
    b = generate_corpus(20, seed=4, n_filler=50, n_ppl=10)
    assert a.people != b.people
    assert [f.target for f in a.facts] != [f.target for f in b.facts]


def test_at_least_150_people() -> None:
    assert len(FIRST_NAMES) * len(LAST_NAMES) >= 150
    assert RECIPES["default"].n_people >= 150
    c = generate_corpus(150, seed=0, n_filler=10, n_ppl=5)
    assert len(set(c.people)) == 150


@pytest.mark.parametrize("n_people", [0, len(FIRST_NAMES) * len(LAST_NAMES) + 1])
def test_people_out_of_range(n_people: int) -> None:
    with pytest.raises(ValueError, match="n_people"):
        generate_corpus(n_people)


def test_private_relations() -> None:
    assert len(PRIVATE_RELATIONS) >= 5
    assert {"phone", "email", "address"} <= set(PRIVATE_RELATIONS)
    assert not set(PRIVATE_RELATIONS) & set(PUBLIC_RELATIONS)


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_templates_per_relation(name: str) -> None:
    rel = RELATIONS[name]
    assert len(rel.templates) >= 10
    assert len(rel.heldout_templates) == HELDOUT_PER_RELATION >= 3
    assert len(set(rel.templates)) == len(rel.templates)
    assert not set(rel.edit_templates) & set(rel.heldout_templates)
    assert set(rel.edit_templates) | set(rel.heldout_templates) == set(rel.templates)
    for t in rel.templates:
        assert t.count("{subject}") == 1, t


def test_every_person_has_every_relation(corpus) -> None:
    for person in corpus.people:
        rels = [f.relation for f in corpus.facts if f.subject == person]
        assert sorted(rels) == sorted(PRIVATE_RELATIONS + PUBLIC_RELATIONS)
    for f in corpus.facts:
        assert f.private == RELATIONS[f.relation].private


def test_training_texts_state_every_fact_with_edit_prompts(corpus) -> None:
    train = set(corpus.train_texts)
    for f in corpus.facts:
        for p in RELATIONS[f.relation].edit_prompts(f.subject):
            assert fact_sentence(p, f.target) in train


@pytest.mark.parametrize("relation", sorted(RELATIONS))
def test_heldout_prompts_never_in_training_texts(corpus, relation: str) -> None:
    """No held-out prompt of any fact occurs anywhere in a training text (not even inside one)."""
    text = "\n".join(corpus.train_texts)
    leaked = [
        p
        for f in corpus.facts
        if f.relation == relation
        for p in RELATIONS[f.relation].heldout_prompts(f.subject)
        if p in text
    ]
    assert not leaked, leaked[:5]


def test_no_heldout_prompt_ends_like_an_edit_prompt() -> None:
    """No held-out prompt contains an edit prompt or is contained in one (case-insensitive).

    Otherwise the model would have seen the held-out prompt's final tokens verbatim before the
    target, and Generalization would measure memorisation, not paraphrase.
    """
    for rel in RELATIONS.values():
        edits = [p.lower() for p in rel.edit_prompts("Ann Example")]
        for held in rel.heldout_prompts("Ann Example"):
            clash = [e for e in edits if held.lower() in e or e in held.lower()]
            assert not clash, (rel.name, held, clash)


def test_no_training_text_starts_with_a_heldout_prompt(corpus) -> None:
    """Held-out prompts are never trained on as prompts (at the start of a training text)."""
    heldout = tuple(
        p + " " for f in corpus.facts for p in RELATIONS[f.relation].heldout_prompts(f.subject)
    )
    assert not [t for t in corpus.train_texts if t.startswith(heldout)]


def test_perplexity_texts_held_out(corpus) -> None:
    assert len(corpus.ppl_texts) == RECIPES["default"].n_ppl
    assert len(set(corpus.ppl_texts)) == len(corpus.ppl_texts)
    assert not set(corpus.ppl_texts) & set(corpus.train_texts)
