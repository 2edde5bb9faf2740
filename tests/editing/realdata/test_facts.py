"""The shipped world-knowledge fact set: enough facts and relations, well-formed, unique."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editing.errors import ConfigError
from editing.realdata.facts import FACTS_FILE, load_facts


def test_shipped_fact_set_meets_the_issue() -> None:
    fs = load_facts()
    assert len(fs.facts) >= 300
    assert len(fs.relations) >= 10
    for name, relation in fs.relations.items():
        assert len(relation.edit_templates) + len(relation.heldout_templates) >= 5, name
        assert len(relation.heldout_templates) >= 2, name
        assert len(fs.by_relation()[name]) >= 20, name
    assert len({f.key for f in fs.facts}) == len(fs.facts)
    assert fs.license.startswith("CC0")


def test_prompts_and_targets_are_well_formed() -> None:
    fs = load_facts()
    for fact in fs.facts:
        prompts = fact.edit_prompts() + fact.heldout_prompts()
        assert all(fact.subject in p and "{" not in p for p in prompts), fact.key
        assert all(not p.endswith(" ") for p in prompts), fact.key
        assert fact.target.startswith(" ") and fact.target.strip() == fact.target[1:], fact.key
        assert len(set(prompts)) == len(prompts), fact.key


def test_example_fact() -> None:
    fs = load_facts()
    france = next(f for f in fs.facts if f.key == "capital_of:France")
    assert france.target == " Paris"
    assert "The capital of France is" in france.edit_prompts()


def _write(tmp_path: Path, relation: dict) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"name": "t", "relations": {"r": relation}}))
    return path


GOOD = {
    "edit_templates": ["A {subject} is"],
    "heldout_templates": ["B {subject} is"],
    "facts": [["x", " y"]],
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"edit_templates": ["no subject"]}, "subject"),
        ({"heldout_templates": []}, "heldout_templates"),
        ({"facts": [["x", "y"]]}, "leading space"),
        ({"facts": [["x", " "]]}, "leading space"),
        ({"facts": [["x", " y"], ["x", " z"]]}, "duplicate"),
        ({"facts": []}, "no facts"),
        ({"heldout_templates": ["A {subject} is"]}, "both"),
    ],
)
def test_invalid_fact_files_are_refused(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_facts(_write(tmp_path, GOOD | change))


def test_hash_follows_content(tmp_path: Path) -> None:
    a = load_facts(_write(tmp_path, GOOD)).sha256
    b = load_facts(_write(tmp_path, GOOD | {"facts": [["x", " z"]]})).sha256
    assert a != b and load_facts(FACTS_FILE).sha256 == load_facts().sha256
