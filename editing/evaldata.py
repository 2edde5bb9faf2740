"""Evaluation data of a model: the Locality set, perplexity text and control subjects.

The demo worlds supply all three from their own facts. A registered real model names files in its
registry entry (``locality_file``: JSONL of ``{"prompt", "target"}``; ``ppl_file``: one passage per
line; ``control_subjects``: names for the specificity filter).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from editing.errors import ConfigError, NotFoundError
from editing.models import LoadedModel
from editing.relations import RELATIONS

DEFAULT_CONTROL_SUBJECTS = ("Alex Morgan", "Jamie Rivera", "Sam Taylor", "Jordan Lee")


@dataclass
class EvalData:
    """Locality prompts (with the answer and whether the fact is private), perplexity texts."""

    locality: list[tuple[str, str, str]]  # (prompt, target, "private" | "public")
    ppl_texts: list[str]
    control_subjects: list[str]


def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"{what} {p} does not exist; fix the model's registry entry.")
    return [line for line in p.read_text().splitlines() if line.strip()]


def eval_data_for(
    loaded: LoadedModel,
    exclude_subjects: set[str],
    n_private: int = 60,
    n_public: int = 40,
    prompts_per_fact: int = 2,
    n_controls: int = 4,
    seed: int = 0,
) -> EvalData:
    """Evaluation data for ``loaded``, leaving out facts about ``exclude_subjects``."""
    entry = loaded.entry
    rng = random.Random(seed)
    if entry.is_demo:
        from editing.world.build import load_world

        world = load_world(entry.demo_size or "default", loaded.home)
        others = [f for f in world.facts if f.subject not in exclude_subjects]
        private = [f for f in others if f.private]
        public = [f for f in others if not f.private]
        chosen = rng.sample(private, min(n_private, len(private))) + rng.sample(
            public, min(n_public, len(public))
        )
        locality = []
        for f in chosen:
            templates = RELATIONS[f.relation].edit_prompts(f.subject)
            for prompt in rng.sample(templates, min(prompts_per_fact, len(templates))):
                locality.append((prompt, f.target, "private" if f.private else "public"))
        people = [p for p in world.people if p not in exclude_subjects]
        controls = rng.sample(people, min(n_controls, len(people)))
        return EvalData(locality, list(world.ppl_texts), controls)
    locality = []
    if entry.locality_file:
        for i, line in enumerate(_read_lines(entry.locality_file, "locality_file")):
            try:
                row = json.loads(line)
                locality.append((row["prompt"], row["target"], row.get("kind", "public")))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{entry.locality_file} line {i + 1}: expected JSON with 'prompt' and 'target'"
                ) from exc
    ppl = _read_lines(entry.ppl_file, "ppl_file") if entry.ppl_file else []
    controls = list(entry.control_subjects or DEFAULT_CONTROL_SUBJECTS)
    controls = [c for c in controls if c not in exclude_subjects][:n_controls]
    return EvalData(locality, ppl, controls)


def control_prompts(prompts: list[str], subject: str, controls: list[str]) -> list[str]:
    """The same prompts with other subjects in place of ``subject`` (where it appears)."""
    return [p.replace(subject, c) for c in controls for p in prompts if subject in p]
