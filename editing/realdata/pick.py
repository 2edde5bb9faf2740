"""Pick a genuine fact a model knows and turn it into an erasure request's fact.

Used by ``featureedit demo --model ID`` on a registered real model (the demo worlds have their own
fictional facts) and by the tests: the shipped facts' relations are not the built-in relations of
:mod:`editing.relations`, so the fact carries its own edit and held-out prompts.
"""

from __future__ import annotations

from typing import Any

from editing.errors import NotFoundError
from editing.realdata.facts import Fact, FactSet, load_facts


def fact_spec(fact: Fact) -> dict[str, Any]:
    """The request fact (``FactSpec`` fields) that erases ``fact``: its prompts included."""
    return {
        "subject": fact.subject,
        "relation": fact.relation.name,
        "target": fact.target.strip(),
        "edit_prompts": fact.edit_prompts(),
        "heldout_prompts": fact.heldout_prompts(),
    }


def first_known_fact(
    model: Any,
    tokenizer: Any,
    relation: str | None = None,
    fact_set: FactSet | None = None,
    limit: int = 40,
) -> Fact:
    """The first shipped fact (of ``relation`` when it is one of the set's, else of any) whose
    every edit prompt the model answers greedily; NotFoundError after ``limit`` facts."""
    from editing.evaluate import known

    facts = list((fact_set or load_facts()).facts)
    mine = [f for f in facts if f.relation.name == relation]
    for fact in (mine or facts)[:limit]:
        prompts = fact.edit_prompts()
        if all(known(model, tokenizer, prompts, [fact.target.strip()] * len(prompts))):
            return fact
    raise NotFoundError(
        f"the model answers none of the first {limit} shipped facts"
        + (f" of relation {relation!r}" if mine else "")
        + " on all their edit prompts; see `featureedit facts probe --model ID`."
    )
