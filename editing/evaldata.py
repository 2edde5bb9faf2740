"""Evaluation data of a model: the Locality set, perplexity text and control subjects.

The demo worlds supply all three from their own facts. A registered real model names files in its
registry entry (``locality_file``: JSONL of ``{"prompt", "target"}``; ``ppl_file``: one passage per
line; ``control_subjects``: names for the specificity filter). Without them it gets the data that
ships with featureedit (:mod:`editing.realdata`): Locality prompts from the genuine world-knowledge
facts (those ``featureedit facts probe`` found the model knows, when its probe is cached; else all
of them, and the erasure keeps the prompts the unedited model answers) and ΔPPL on the first
:data:`SHIPPED_PPL_PASSAGES` passages of the held-out Wikipedia text.

The Locality set's size is an operator setting (:class:`~editing.registry.EvalSize`: the
registry's ``[models.<id>.evaluation]`` table, or the workers' ``FEATUREEDIT_WORKER_LOCALITY_*``
override), never a request field: the set decides acceptance.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from editing.errors import ConfigError, NotFoundError
from editing.models import LoadedModel
from editing.realdata.facts import FactSet
from editing.registry import DEFAULT_EVAL_SIZE, EvalSize
from editing.relations import RELATIONS

DEFAULT_CONTROL_SUBJECTS = ("Alex Morgan", "Jamie Rivera", "Sam Taylor", "Jordan Lee")
# Held-out Wikipedia passages scored for ΔPPL when the registry names no ppl_file: ~2k tokens.
# The perplexity pass scores them in one batch (logits of passages × tokens × vocabulary: ~0.5 GB
# at SmolLM2's 49k vocabulary), and twice per erasure (before and after).
SHIPPED_PPL_PASSAGES = 16


@dataclass
class EvalData:
    """Locality prompts (with the answer and whether the fact is private), perplexity texts and
    control subjects (all relations', and per relation name where the relation has its own)."""

    locality: list[tuple[str, str, str]]  # (prompt, target, "private" | "public")
    ppl_texts: list[str]
    control_subjects: list[str]
    relation_controls: dict[str, list[str]] = field(default_factory=dict)

    def controls_for(self, relation: str) -> list[str]:
        """The control subjects of a fact of ``relation``."""
        return self.relation_controls.get(relation) or self.control_subjects


def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"{what} {p} does not exist; fix the model's registry entry.")
    return [line for line in p.read_text().splitlines() if line.strip()]


def eval_data_for(
    loaded: LoadedModel,
    exclude_subjects: set[str],
    size: EvalSize | None = None,
    n_controls: int = 4,
    seed: int = 0,
) -> EvalData:
    """Evaluation data for ``loaded``, leaving out facts about ``exclude_subjects`` (a
    ``locality_file`` row whose prompt names one of them is skipped).

    The Locality set also leaves out the control subjects (the specificity filter's and the
    refinement's locality term's prompts): it measures answers the edit was not trained to keep.

    ``size`` (default: the registry entry's ``evaluation``, else :data:`DEFAULT_EVAL_SIZE` on a
    demo world and the whole ``locality_file`` otherwise) bounds the Locality set.
    """
    entry = loaded.entry
    size = size or entry.evaluation
    rng = random.Random(seed)
    if entry.is_demo:
        from editing.world.build import load_world

        size = size or DEFAULT_EVAL_SIZE
        world = load_world(entry.demo_size or "default", loaded.home)
        # the controls first, and no Locality row about them: the refinement's locality term
        # reads the controls' prompts, so a Locality row among them would be scored on what the
        # edit was trained to keep (the shipped genuine facts' controls skip them the same way)
        people = [p for p in world.people if p not in exclude_subjects]
        controls = rng.sample(people, min(n_controls, len(people)))
        left_out = exclude_subjects | set(controls)
        others = [f for f in world.facts if f.subject not in left_out]
        private = [f for f in others if f.private]
        public = [f for f in others if not f.private]
        chosen = rng.sample(private, min(size.private_facts, len(private))) + rng.sample(
            public, min(size.public_facts, len(public))
        )
        locality = []
        for f in chosen:
            templates = RELATIONS[f.relation].edit_prompts(f.subject)
            for prompt in rng.sample(templates, min(size.prompts_per_fact, len(templates))):
                locality.append((prompt, f.target, "private" if f.private else "public"))
        return EvalData(locality, list(world.ppl_texts), controls)
    controls = list(entry.control_subjects or DEFAULT_CONTROL_SUBJECTS)
    controls = [c for c in controls if c not in exclude_subjects][:n_controls]
    # no Locality row about the request's subjects, nor (as on a demo world) about a control
    # subject: the edit is trained to keep the controls' answers
    left_out = exclude_subjects | set(controls)
    locality = []
    if entry.locality_file:
        for i, line in enumerate(_read_lines(entry.locality_file, "locality_file")):
            try:
                row = json.loads(line)
                if not any(subject in row["prompt"] for subject in left_out):
                    locality.append((row["prompt"], row["target"], row.get("kind", "public")))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{entry.locality_file} line {i + 1}: expected JSON with 'prompt' and 'target'"
                ) from exc
        if size is not None:
            locality = _sample_rows(locality, size, rng)
    else:
        locality = genuine_locality(loaded, left_out, size or DEFAULT_EVAL_SIZE, rng)
    if entry.ppl_file:
        ppl = _read_lines(entry.ppl_file, "ppl_file")
    else:
        from editing.realdata.text import load_text

        ppl = load_text("heldout")[:SHIPPED_PPL_PASSAGES]
    by_relation = {}
    if not entry.control_subjects:
        by_relation = genuine_controls(locality, exclude_subjects, n_controls)
    return EvalData(locality, ppl, controls, by_relation)


def genuine_controls(
    locality: list[tuple[str, str, str]], exclude_subjects: set[str], n_controls: int
) -> dict[str, list[str]]:
    """Per relation of the shipped genuine facts, its first ``n_controls`` other subjects (file
    order) that the request does not name and no Locality prompt names.

    A fact's controls are its edit prompts with other subjects in place of its own: the
    specificity filter drops the features that fire for them too, and ``refine=flatten`` keeps
    the model's answers on them. For a genuine relation they must be subjects of that relation
    (other countries for a capital, not people's names); leaving out the ones the Locality set
    asks about keeps the metric's prompts out of what the edit is fitted to.
    """
    from editing.realdata.facts import load_facts

    asked = " \n ".join(row[0] for row in locality)
    out: dict[str, list[str]] = {}
    for name, facts in load_facts().by_relation().items():
        subjects = [
            f.subject for f in facts if f.subject not in exclude_subjects and f.subject not in asked
        ]
        if subjects:
            out[name] = subjects[:n_controls]
    return out


def genuine_locality(
    loaded: LoadedModel, exclude_subjects: set[str], size: EvalSize, rng: random.Random
) -> list[tuple[str, str, str]]:
    """Locality rows from the shipped genuine facts: ``size.public_facts`` facts (the model's
    known ones if probed) about subjects not in ``exclude_subjects``, ``size.prompts_per_fact``
    edit prompts each (all public knowledge: ``size.private_facts`` does not apply)."""
    from editing.realdata.facts import load_facts

    fact_set = load_facts()
    known = probed_known_keys(loaded, fact_set)
    facts = [
        f
        for f in fact_set.facts
        if f.subject not in exclude_subjects and (known is None or f.key in known)
    ]
    rows = []
    for f in rng.sample(facts, min(size.public_facts, len(facts))):
        prompts = f.edit_prompts()
        for prompt in rng.sample(prompts, min(size.prompts_per_fact, len(prompts))):
            rows.append((prompt, f.target.strip(), "public"))
    return rows


def probed_known_keys(loaded: LoadedModel, fact_set: FactSet) -> set[str] | None:
    """Keys of the facts ``featureedit facts probe`` found ``loaded`` knows (None: not probed).

    Reads the probe cache only (probing takes minutes on a CPU); the weights' sha256 that keys
    the cache is computed once per model directory and file state.
    """
    from editing.realdata.probe import PROBE_VERSION, cache_path, knows

    weights = model_weights_sha256(loaded)
    path = cache_path(weights, fact_set, loaded.home)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if doc.get("version") != PROBE_VERSION:
        return None
    return {f["key"] for f in doc["facts"] if knows(f["edit_answered"], "majority")}


def model_weights_sha256(loaded: LoadedModel) -> str:
    """:func:`~editing.realdata.probe.weights_sha256` of ``loaded`` (cached per file state)."""
    from editing.realdata.probe import weights_sha256

    source = loaded.source_dir
    if source is None:
        return weights_sha256(loaded.model, None)
    files = sorted(source.glob("*.safetensors"))
    state = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(source.resolve()), state)
    if key not in _WEIGHTS_SHA256:
        _WEIGHTS_SHA256[key] = weights_sha256(loaded.model, source)
    return _WEIGHTS_SHA256[key]


_WEIGHTS_SHA256: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _sample_rows(
    rows: list[tuple[str, str, str]], size: EvalSize, rng: random.Random
) -> list[tuple[str, str, str]]:
    """At most facts × prompts_per_fact rows of each kind (a seeded sample; file order kept)."""
    caps = {
        "private": size.private_facts * size.prompts_per_fact,
        "public": size.public_facts * size.prompts_per_fact,
    }
    keep: set[int] = set()
    kinds = ["private" if row[2] == "private" else "public" for row in rows]  # other kinds: public
    for kind, cap in caps.items():
        idx = [i for i, k in enumerate(kinds) if k == kind]
        keep.update(rng.sample(idx, min(cap, len(idx))))
    return [row for i, row in enumerate(rows) if i in keep]


def control_prompts(prompts: list[str], subject: str, controls: list[str]) -> list[str]:
    """The same prompts with other subjects in place of ``subject`` (where it appears)."""
    return [p.replace(subject, c) for c in controls for p in prompts if subject in p]
