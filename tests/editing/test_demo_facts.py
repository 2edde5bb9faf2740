"""Picking demo-world facts for a run (:mod:`editing.world.demo_facts`): whole subjects with the
e-mail fact first, request-shaped facts, and a clear error for a model without a demo world."""

from __future__ import annotations

import pytest

from editing.errors import ConfigError
from editing.registry import ModelEntry
from editing.world.corpus import Fact
from editing.world.demo_facts import by_whole_subjects, demo_world_of, request_facts

FACTS = [
    Fact(subject, relation, f"{subject}-{relation}", True)
    for subject in ("Ada", "Ben", "Cy")
    for relation in ("phone", "address", "email")
]


def test_whole_subjects_email_first_and_shuffled_by_seed() -> None:
    picked = by_whole_subjects(FACTS, seed=0)
    assert sorted(picked, key=str) == sorted(FACTS, key=str)
    for i in range(0, len(picked), 3):  # one subject after another, e-mail first
        group = picked[i : i + 3]
        assert len({f.subject for f in group}) == 1
        assert [f.relation for f in group] == ["email", "address", "phone"]
    assert by_whole_subjects(FACTS, seed=0) == picked  # deterministic
    orders = {tuple(f.subject for f in by_whole_subjects(FACTS, seed=s)[::3]) for s in range(8)}
    assert len(orders) > 1


def test_request_facts_hold_subject_relation_target_only() -> None:
    assert request_facts(FACTS[:1]) == [
        {"subject": "Ada", "relation": "phone", "target": "Ada-phone"}
    ]


def test_a_model_without_a_demo_world_is_refused_by_purpose() -> None:
    entry = ModelEntry(model_id="some-hub-model", path="/nonexistent")
    with pytest.raises(ConfigError, match="bench picks facts from a demo world; model 'some-hub"):
        demo_world_of(entry, None, purpose="bench")
