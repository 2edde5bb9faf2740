"""Which facts of a fact set a model actually knows (``featureedit facts probe``).

Each fact's edit prompts (and held-out prompts, reported alongside) are decoded greedily; a prompt
is *answered* when the continuation starts with the target and the target ends at a word boundary
(:func:`answers`: ``" Au"`` is not answered by ``" August"``). A fact is *known* under the rule
``majority`` (the default: more than half of its edit prompts answered) or ``all`` (every edit
prompt). Erasing a fact the model does not know proves nothing, so experiments on real models
draw their facts from the known ones.

Results are cached under ``$FEATUREEDIT_HOME/probes/`` keyed by the sha256 of the model's weights
and of the fact-set file: the per-prompt continuations are stored, so both rules are read from
one decoding run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editing import settings
from editing.errors import ConfigError
from editing.realdata.facts import Fact, FactSet

RULES = ("majority", "all")
PROBE_VERSION = 1  # bump when the decoding or the cached document changes

Generate = Callable[[Sequence[str], int], list[str]]


def answers(continuation: str, target: str) -> bool:
    """Whether ``continuation`` starts with ``target`` ending at a word boundary."""
    if not continuation.startswith(target):
        return False
    rest = continuation[len(target) :]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


def knows(answered: Sequence[bool], rule: str) -> bool:
    """Whether a fact with these per-edit-prompt results counts as known under ``rule``."""
    if rule not in RULES:
        raise ConfigError(f"Unknown probe rule {rule!r}; valid rules: {list(RULES)}.")
    if rule == "all":
        return bool(answered) and all(answered)
    return sum(answered) * 2 > len(answered)


def greedy_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuation text of every prompt (batched, left-padded); ``on_batch(n)`` after
    each batch of ``n`` prompts (a progress bar)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                list(prompts[start : start + batch_size]), return_tensors="pt", padding=True
            )
            batch = batch.to(model.device)
            with torch.inference_mode():
                ids = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, batch["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
            if on_batch:
                on_batch(len(batch["input_ids"]))
    finally:
        tokenizer.padding_side = side
    return out


@dataclass(frozen=True)
class ProbeResult:
    """Per-fact continuations of one model on one fact set, and the counts they give."""

    model_id: str
    weights_sha256: str
    facts_sha256: str
    facts: list[dict[str, Any]]  # key, relation, subject, target, edit/heldout continuations

    def known(self, rule: str = "majority") -> list[dict[str, Any]]:
        """The facts the model knows under ``rule``."""
        return [f for f in self.facts if knows(f["edit_answered"], rule)]

    def counts(self, rule: str = "majority") -> dict[str, dict[str, int]]:
        """Per relation: facts, known under ``rule``, known under ``all``, held-out answered."""
        table: dict[str, dict[str, int]] = {}
        for f in self.facts:
            row = table.setdefault(
                f["relation"], {"facts": 0, "known": 0, "known_all": 0, "heldout_majority": 0}
            )
            row["facts"] += 1
            row["known"] += knows(f["edit_answered"], rule)
            row["known_all"] += knows(f["edit_answered"], "all")
            row["heldout_majority"] += knows(f["heldout_answered"], "majority")
        return table

    def to_dict(self, rule: str = "majority") -> dict[str, Any]:
        """The JSON document of ``featureedit facts probe --json``."""
        counts = self.counts(rule)
        return {
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "facts_sha256": self.facts_sha256,
            "rule": rule,
            "total": {k: sum(r[k] for r in counts.values()) for k in next(iter(counts.values()))},
            "relations": counts,
            "known": [f["key"] for f in self.known(rule)],
            "facts": self.facts,
        }


def _max_new_tokens(tokenizer: Any, facts: Sequence[Fact]) -> int:
    """Enough tokens for the longest target plus one, to see where the answer ends."""
    longest = max(len(tokenizer(f.target, add_special_tokens=False)["input_ids"]) for f in facts)
    return longest + 1


def run_probe(
    facts: Sequence[Fact], generate: Generate, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Decode every fact's edit and held-out prompts with ``generate``; per-fact records."""
    prompts: list[str] = []
    for f in facts:
        prompts += f.edit_prompts() + f.heldout_prompts()
    texts = iter(generate(prompts, max_new_tokens))
    records = []
    for f in facts:
        edit = [next(texts) for _ in f.edit_prompts()]
        heldout = [next(texts) for _ in f.heldout_prompts()]
        records.append(
            {
                "key": f.key,
                "relation": f.relation.name,
                "subject": f.subject,
                "target": f.target,
                "edit": edit,
                "heldout": heldout,
                "edit_answered": [answers(t, f.target) for t in edit],
                "heldout_answered": [answers(t, f.target) for t in heldout],
            }
        )
    return records


def weights_sha256(model: Any, source_dir: Path | None) -> str:
    """sha256 of the model's safetensors files in ``source_dir``, else of its parameters."""
    files = sorted(source_dir.glob("*.safetensors")) if source_dir else []
    digest = hashlib.sha256()
    if files:
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
        return digest.hexdigest()
    import torch

    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_path(weights: str, fact_set: FactSet, home: str | os.PathLike[str] | None) -> Path:
    """Where the probe of these weights on ``fact_set`` is cached."""
    return settings.home(home) / "probes" / f"{weights[:16]}-{fact_set.sha256[:16]}.json"


def probe_model(
    model_id: str,
    model: Any,
    tokenizer: Any,
    fact_set: FactSet,
    weights: str,
    home: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = False,
) -> tuple[ProbeResult, bool]:
    """Probe (or read the cached probe of) ``model`` on ``fact_set``; ``(result, from_cache)``.

    With ``progress`` a probe that runs shows a progress bar of its prompts on stderr."""
    path = cache_path(weights, fact_set, home)
    if path.is_file() and not force:
        doc = json.loads(path.read_text())
        if doc.get("version") == PROBE_VERSION:
            return ProbeResult(model_id, weights, fact_set.sha256, doc["facts"]), True

    def generate(prompts: Sequence[str], n: int) -> list[str]:
        from tqdm.auto import tqdm

        with tqdm(
            total=len(prompts),
            desc=f"probe {model_id} on {len(fact_set.facts)} facts",
            unit="prompt",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            return greedy_continuations(model, tokenizer, prompts, n, on_batch=bar.update)

    records = run_probe(fact_set.facts, generate, _max_new_tokens(tokenizer, fact_set.facts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"version": PROBE_VERSION, "facts": records}, ensure_ascii=False))
    os.replace(tmp, path)
    return ProbeResult(model_id, weights, fact_set.sha256, records), False
