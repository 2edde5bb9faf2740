"""The shipped fact set of genuine world knowledge (``facts.json``) and its loader.

Each relation has edit templates (used to locate and edit) and held-out templates (paraphrases used
only to measure generalization); every template holds ``{subject}`` once and ends right before the
answer. A fact's target is the text that follows a prompt, with its leading space (``" Paris"``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editing.errors import ConfigError

FACTS_FILE = Path(__file__).with_name("facts.json")


@dataclass(frozen=True)
class Relation:
    """A relation and its prompt templates."""

    name: str
    description: str
    edit_templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, target) triple with its prompts."""

    subject: str
    relation: Relation
    target: str

    @property
    def key(self) -> str:
        """``relation:subject``, unique in a fact set."""
        return f"{self.relation.name}:{self.subject}"

    def edit_prompts(self) -> list[str]:
        """The prompts used to locate and edit this fact."""
        return [t.format(subject=self.subject) for t in self.relation.edit_templates]

    def heldout_prompts(self) -> list[str]:
        """Paraphrases never used to locate (Generalization)."""
        return [t.format(subject=self.subject) for t in self.relation.heldout_templates]


@dataclass(frozen=True)
class FactSet:
    """A loaded, validated fact set; ``sha256`` identifies its content (probe cache key)."""

    name: str
    version: int
    license: str
    relations: dict[str, Relation]
    facts: tuple[Fact, ...]
    sha256: str

    def by_relation(self) -> dict[str, list[Fact]]:
        """Facts grouped by relation name, in file order."""
        groups: dict[str, list[Fact]] = {name: [] for name in self.relations}
        for fact in self.facts:
            groups[fact.relation.name].append(fact)
        return groups


def _check_template(origin: str, template: Any) -> str:
    if not isinstance(template, str) or template.count("{subject}") != 1:
        raise ConfigError(f"{origin}: template {template!r} must contain '{{subject}}' once.")
    if template != template.strip():
        raise ConfigError(f"{origin}: template {template!r} has surrounding whitespace.")
    return template


def _check_target(origin: str, target: Any) -> str:
    if not (
        isinstance(target, str)
        and target.startswith(" ")
        and target[1:].strip() == target[1:]
        and target.strip()
    ):
        raise ConfigError(
            f"{origin}: target {target!r} must be one leading space and a non-empty answer "
            "(e.g. ' Paris')."
        )
    return target


def _relation(name: str, raw: dict[str, Any], origin: str) -> Relation:
    where = f"{origin}: relation {name!r}"
    edit = tuple(_check_template(where, t) for t in raw.get("edit_templates", ()))
    heldout = tuple(_check_template(where, t) for t in raw.get("heldout_templates", ()))
    if not edit or not heldout:
        raise ConfigError(f"{where} needs edit_templates and heldout_templates.")
    if set(edit) & set(heldout):
        raise ConfigError(f"{where}: a template is both an edit and a held-out template.")
    return Relation(name, str(raw.get("description", "")), edit, heldout)


def load_facts(path: str | Path | None = None) -> FactSet:
    """Load and validate a fact set (default: the shipped ``facts.json``).

    ConfigError naming the file for a template without ``{subject}``, a target without its
    leading space, an empty relation or a duplicate (relation, subject).
    """
    file = Path(path) if path else FACTS_FILE
    raw_bytes = file.read_bytes()
    try:
        doc = json.loads(raw_bytes)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
    relations: dict[str, Relation] = {}
    facts: list[Fact] = []
    seen: set[tuple[str, str]] = set()
    for name, raw in doc.get("relations", {}).items():
        relation = relations[name] = _relation(name, raw, str(file))
        if not raw.get("facts"):
            raise ConfigError(f"{file}: relation {name!r} has no facts.")
        for subject, target in raw["facts"]:
            if (name, subject) in seen:
                raise ConfigError(f"{file}: duplicate fact {name}:{subject}.")
            seen.add((name, subject))
            facts.append(
                Fact(subject, relation, _check_target(f"{file}: {name}:{subject}", target))
            )
    if not facts:
        raise ConfigError(f"{file} holds no relations with facts.")
    return FactSet(
        name=str(doc.get("name", file.stem)),
        version=int(doc.get("version", 1)),
        license=str(doc.get("license", "")),
        relations=relations,
        facts=tuple(facts),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
    )
