"""The TOFU-style privacy scenario's recipe and data (torch-free).

A registered pretrained model is fine-tuned on the demo corpus's sentences about some of its
fictional people (their private facts, stated with the relations' *edit* templates only; the
held-out templates never appear) mixed with the shipped Wikipedia training text, so it memorizes
personal data while keeping its world knowledge. :mod:`editing.world.tofu` trains, measures and
registers the result; this module decides *what* it trains on and what identifies a build.

The targets are fictional (the demo corpus's), so facts and prompts may be printed and reported.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Any

from editing.errors import ConfigError
from editing.relations import PRIVATE_RELATIONS, RELATIONS
from editing.world.corpus import Fact, generate_corpus

TOFU_FORMAT = 1  # bump whenever the fine-tune's output changes for the same recipe
TRAINABLE = ("mlp", "all")  # which parameters the fine-tune updates


@dataclass(frozen=True)
class TofuRecipe:
    """Everything that determines a fine-tune besides the base weights (part of its cache key).

    ``n_people`` people of the demo corpus (``corpus_people`` people, ``seed``) are fine-tuned
    in; each step trains ``batch_size`` examples, ``general_fraction`` of them windows of
    ``general_tokens`` tokens of the shipped Wikipedia training text. ``trainable`` is ``mlp``
    (MLP weights) or ``all``, of the decoder layers from ``from_layer`` up (0: every layer;
    training the upper layers only halves the backward pass on a CPU).
    ``knowledge_per_relation`` genuine facts per relation of :mod:`editing.realdata.facts`
    measure the world knowledge kept and fill the Locality file's public rows.

    The defaults (since session ``tofu15``: lr 1e-3, 16 examples of which half Wikipedia text;
    before: lr 2e-3, 12 examples, a quarter) memorize every fact on its edit templates and keep
    47 of the base SmolLM2's 58 answered genuine facts (the earlier defaults: 28) at +4.6 %
    held-out perplexity (docs/benchmarks.md, "SmolLM2-135M fine-tuned on fictional people").
    """

    n_people: int = 8
    relations: tuple[str, ...] = PRIVATE_RELATIONS
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    trainable: str = "mlp"
    from_layer: int = 15
    general_fraction: float = 0.5
    general_tokens: int = 40
    corpus_people: int = 160
    knowledge_per_relation: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_people <= self.corpus_people:
            raise ConfigError(
                f"--people must be in 1..{self.corpus_people} (the demo corpus's people), "
                f"got {self.n_people}."
            )
        unknown = [r for r in self.relations if r not in RELATIONS]
        if unknown or not self.relations:
            raise ConfigError(
                f"Unknown relations {unknown}; valid ones are {sorted(RELATIONS)}."
                if unknown
                else "A fine-tune needs at least one relation."
            )
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}.")
        if not 0.0 <= self.general_fraction < 1.0:
            raise ConfigError(f"general_fraction must be in [0, 1), got {self.general_fraction}.")
        if self.steps < 1 or self.batch_size < 1 or self.from_layer < 0:
            raise ConfigError("steps and batch_size must be positive, from_layer not negative.")

    def key(self, base_weights_sha256: str, dtype: str = "float32") -> str:
        """Short content hash of the base weights, this recipe, the templates, the format and
        the training ``dtype`` (float32 builds keep the keys they had before it was one)."""
        templates = {name: list(RELATIONS[name].templates) for name in self.relations}
        doc = {"format": TOFU_FORMAT, "base": base_weights_sha256, "templates": templates}
        doc |= asdict(self) | ({} if dtype == "float32" else {"dtype": dtype})
        blob = json.dumps(doc, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tofu_facts(recipe: TofuRecipe) -> list[Fact]:
    """The facts fine-tuned in: every ``recipe.relations`` fact of the first ``n_people`` people
    of the demo corpus (deterministic for the recipe)."""
    corpus = generate_corpus(recipe.corpus_people, seed=recipe.seed, n_filler=0, n_ppl=0)
    people = set(corpus.people[: recipe.n_people])
    return [f for f in corpus.facts if f.subject in people and f.relation in recipe.relations]


def control_people(recipe: TofuRecipe, n: int) -> list[str]:
    """``n`` people of the demo corpus the fine-tune never saw (the ones after its
    ``n_people``): the specificity filter's and the refinement's controls. Not fine-tuned people:
    those are the Locality set's private rows, which must not be what the edit is trained to
    keep (:func:`editing.evaldata.eval_data_for` drops rows about a control subject)."""
    corpus = generate_corpus(recipe.corpus_people, seed=recipe.seed, n_filler=0, n_ppl=0)
    return corpus.people[recipe.n_people : recipe.n_people + n]


def fact_examples(facts: list[Fact]) -> list[tuple[str, str]]:
    """``(prompt, continuation)`` per fact and *edit* template: the continuation is the target
    with its space and full stop (the demo corpus's sentence); held-out templates never occur."""
    return [
        (prompt, f" {f.target}.")
        for f in facts
        for prompt in RELATIONS[f.relation].edit_prompts(f.subject)
    ]


def batch_plan(recipe: TofuRecipe, n_facts: int, n_general: int) -> list[list[tuple[str, int]]]:
    """Per step, the examples of its batch: ``("fact", i)`` or ``("general", j)``.

    Each batch holds ``round(batch_size * general_fraction)`` general-text windows (none if
    there are none) and fact examples for the rest; fact examples are drawn epoch by epoch in a
    seeded shuffle, so every fact example is seen before any is seen twice.
    """
    rng = random.Random(recipe.seed)
    n_gen = round(recipe.batch_size * recipe.general_fraction) if n_general else 0
    n_fact = recipe.batch_size - n_gen if n_facts else 0
    if not n_fact and not n_gen:
        raise ConfigError("Nothing to fine-tune on: no fact examples and no general text.")
    order: list[int] = []
    plan = []
    for _ in range(recipe.steps):
        batch: list[tuple[str, int]] = []
        for _ in range(n_fact):
            if not order:
                order = list(range(n_facts))
                rng.shuffle(order)
            batch.append(("fact", order.pop()))
        batch += [("general", rng.randrange(n_general)) for _ in range(n_gen)]
        plan.append(batch)
    return plan


def locality_rows(
    private: list[Fact], public: list[tuple[str, str]], prompts_per_fact: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """Registry-format Locality rows: ``prompts_per_fact`` edit prompts of each ``private`` fact
    (kind ``private``) and the ``public`` ``(prompt, target)`` pairs (kind ``public``)."""
    rng = random.Random(seed)
    rows = []
    for f in private:
        prompts = RELATIONS[f.relation].edit_prompts(f.subject)
        for prompt in rng.sample(prompts, min(prompts_per_fact, len(prompts))):
            rows.append({"prompt": prompt, "target": f.target, "kind": "private"})
    rows += [{"prompt": p, "target": t, "kind": "public"} for p, t in public]
    return rows


def registered_facts(path: str) -> list[Fact]:
    """The facts of a registry ``facts_file`` (JSON list of subject, relation, target).

    ConfigError naming the file if it is missing, malformed or names an unknown relation.
    """
    from pathlib import Path

    file = Path(path).expanduser()
    try:
        rows = json.loads(file.read_text())
        return [
            Fact(r["subject"], r["relation"], r["target"], RELATIONS[r["relation"]].private)
            for r in rows
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"facts_file {file}: expected a JSON list of {{subject, relation, target}} with "
            f"built-in relations ({exc.__class__.__name__}); rebuild it with "
            "`featureedit world build --base ID`."
        ) from None
