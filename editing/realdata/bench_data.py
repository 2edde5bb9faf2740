"""Benchmark data for a registered (non-demo) model, from the shipped genuine-knowledge facts.

* Erasure targets: facts the model knows (:mod:`editing.realdata.probe`, cached; probed on first
  use), spread over the relations, each with its own edit and held-out prompts.
* Locality (unless the registry names a ``locality_file``): the other known facts, two edit prompts
  each, written once to ``$FEATUREEDIT_HOME/bench/`` as a registry-format JSONL file.

Targets lose the fact set's leading space (``" Paris"`` -> ``"Paris"``): requests, locality files
and :func:`editing.scoring.encode_pair` put the space back themselves.
* ΔPPL (unless the registry names a ``ppl_file``): what every erasure of a real model scores, the
  first :data:`~editing.evaldata.SHIPPED_PPL_PASSAGES` passages of the held-out Wikipedia text
  (~2k tokens; the whole file is ~18k tokens, and one pass over it at Gemma 3's 262k-token
  vocabulary computes 4.6 G logits, twice per erasure).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from editing.models import LoadedModel
from editing.realdata.facts import Fact, load_facts
from editing.realdata.probe import probe_model, weights_sha256
from editing.world.corpus import round_robin

LOCALITY_PROMPTS_PER_FACT = 2


def known_facts(loaded: LoadedModel, rule: str = "majority") -> list[Fact]:
    """Facts of the shipped set that ``loaded`` knows under ``rule`` (probe cached per weights;
    a probe that runs shows its progress on stderr, like a demo world's build)."""
    fact_set = load_facts()
    weights = weights_sha256(loaded.model, loaded.source_dir)
    result, _ = probe_model(
        loaded.model_id,
        loaded.model,
        loaded.tokenizer,
        fact_set,
        weights,
        home=loaded.home,
        progress=True,
    )
    known = {f["key"] for f in result.known(rule)}
    return [f for f in fact_set.facts if f.key in known]


def fact_request(fact: Fact) -> dict[str, Any]:
    """The request fields of ``fact`` (relation name, its own edit and held-out prompts)."""
    return {
        "subject": fact.subject,
        "relation": fact.relation.name,
        "target": fact.target.strip(),  # requests and scoring add the space themselves
        "edit_prompts": fact.edit_prompts(),
        "heldout_prompts": fact.heldout_prompts(),
    }


def requestable(fact: Fact) -> bool:
    """Whether a request may name ``fact``: no prompt contains its target (``"German"`` is in
    "The official language of Germany is", so that fact can only serve Locality)."""
    target = fact.target.strip()
    return not any(target in p for p in fact.edit_prompts() + fact.heldout_prompts())


def write_locality_file(facts: list[Fact], home: Path, seed: int = 0) -> Path:
    """A locality JSONL of ``facts`` (kind ``public``), named by its content; reused if present."""
    rng = random.Random(seed)
    rows = []
    for f in facts:
        prompts = f.edit_prompts()
        for prompt in rng.sample(prompts, min(LOCALITY_PROMPTS_PER_FACT, len(prompts))):
            rows.append({"prompt": prompt, "target": f.target.strip(), "kind": "public"})
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path = home / "bench" / f"locality-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def real_bench_facts(loaded: LoadedModel, n_facts: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_facts`` known facts as request facts; fills in ``loaded``'s missing Locality file.

    The Locality file holds the known facts that are not benchmarked, so no erasure is judged on
    the fact it erases.
    """
    known = known_facts(loaded)
    order = round_robin(known, len(known), random.Random(seed), lambda f: f.relation.name)
    picked = [f for f in order if requestable(f)][:n_facts]
    entry = loaded.entry
    if not entry.locality_file:
        keys = {f.key for f in picked}
        others = [f for f in known if f.key not in keys]
        entry = replace(entry, locality_file=str(write_locality_file(others, loaded.home, seed)))
    loaded.entry = entry
    return [fact_request(f) for f in picked]
