"""Picking a genuine fact a model knows (``featureedit demo --model ID`` on a real model)."""

from __future__ import annotations

from typing import Any

import pytest

from editing.errors import NotFoundError
from editing.realdata.facts import load_facts
from editing.realdata.pick import fact_spec, first_known_fact
from editing.request import FactSpec


def test_fact_spec_is_a_valid_request_fact_with_its_own_prompts() -> None:
    fact = next(f for f in load_facts().facts if f.key == "capital_of:France")
    spec = FactSpec.model_validate(fact_spec(fact))
    assert spec.secret == "Paris" and spec.relation == "capital_of"
    assert spec.resolved_edit_prompts() == fact.edit_prompts()
    assert spec.resolved_heldout_prompts() == fact.heldout_prompts()


def test_a_model_that_knows_no_genuine_fact_is_told_so(small_model: Any) -> None:
    with pytest.raises(NotFoundError, match="first 2 shipped facts of relation 'capital_of'"):
        first_known_fact(small_model.model, small_model.tokenizer, "capital_of", limit=2)
