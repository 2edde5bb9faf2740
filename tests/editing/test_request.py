"""Validation of erasure requests: clear messages, and the secret never echoed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from editing.methods import FeatureEditParams
from editing.relations import HELDOUT_PER_RELATION, RELATIONS
from editing.request import ErasureRequest, validation_summary

SECRET = "415-555-0199"


def _request(**fact) -> ErasureRequest:
    base = {"subject": "Dana Berg", "relation": "phone", "target": SECRET}
    return ErasureRequest(facts=[{**base, **fact}])


def _error(**fact) -> str:
    with pytest.raises(ValidationError) as info:
        _request(**fact)
    message = validation_summary(info.value)
    assert SECRET not in message
    assert SECRET not in str(info.value.errors(include_input=False))
    return message


def test_defaults_generate_prompts_from_templates() -> None:
    fact = _request().facts[0]
    assert len(fact.resolved_edit_prompts()) == len(RELATIONS["phone"].edit_templates)
    assert len(fact.resolved_heldout_prompts()) == HELDOUT_PER_RELATION
    assert all("Dana Berg" in p for p in fact.resolved_edit_prompts())


def test_secret_hidden_in_repr_and_dump() -> None:
    req = _request()
    assert SECRET not in repr(req)
    assert SECRET not in str(req.model_dump())
    assert req.secrets() == [SECRET]


@pytest.mark.parametrize(
    ("fact", "expected"),
    [
        ({"target": "   "}, "target is empty"),
        ({"edit_prompts": [f"Call Dana on {SECRET}"]}, "already contains the target"),
        ({"relation": "shoe_size"}, "Unknown relation 'shoe_size'"),
        ({"edit_prompts": []}, "edit_prompts is empty"),
        ({"edit_prompts": ["  "]}, "edit_prompts[0] is empty"),
    ],
)
def test_bad_facts_are_explained(fact: dict, expected: str) -> None:
    assert expected in _error(**fact)


def test_unknown_relation_with_prompts_is_fine() -> None:
    req = _request(relation="shoe_size", edit_prompts=["Dana Berg wears shoes of size"])
    assert req.facts[0].resolved_heldout_prompts() == []


def test_bad_params_and_method_name_field() -> None:
    with pytest.raises(ValidationError) as info:
        ErasureRequest(method="rome", facts=[{"subject": "A", "relation": "phone", "target": "1"}])
    assert "method" in validation_summary(info.value)
    with pytest.raises(ValidationError) as info:
        FeatureEditParams(tau1=0)
    assert "tau1" in validation_summary(info.value)
    with pytest.raises(ValidationError):
        ErasureRequest(facts=[])
    with pytest.raises(ValidationError) as info:
        FeatureEditParams(variant="bogus")
    assert "variant" in validation_summary(info.value)
