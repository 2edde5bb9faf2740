"""Build the TOFU-style privacy scenario: fine-tune a registered model on fictional people.

``featureedit world build --base ID`` loads the registered model ``ID``, fine-tunes it on the
demo corpus's private facts of ``--people`` fictional people (edit templates only) mixed with the
shipped Wikipedia training text (:mod:`editing.world.tofu_data`), measures what it memorized and
what it kept, writes the result under ``$FEATUREEDIT_HOME/tofu/<ID>-<key>/`` (``key`` hashes the
base weights and the recipe, so an unchanged build is reused) and registers it as a model id
(default ``<ID>-tofu``) whose facts are those people's::

    model/           Hugging Face safetensors directory with the base's tokenizer
    facts.json       the fine-tuned facts (subject, relation, target): what bench erases
    locality.jsonl   Locality rows: the fictional people's private facts (kind ``private``) and
                     the genuine facts the fine-tuned model still answers (kind ``public``)
    tofu.json        base, recipe, quality (recall, knowledge kept, perplexity), timings

The directory is written under a temporary name and renamed into place: a crash leaves nothing
half-written. The device is the base entry's (or the caller's), and so is the dtype the fine-tune
trains, saves and registers in (``float32`` or ``bfloat16``; ``float16`` is refused: the training
loop has no loss scaling). Nothing assumes CUDA.

A model id that already names an earlier fine-tune of the same base (another recipe) is
re-pointed to the new build, its SAE and params tables dropped (they belong to the old weights);
an id registered for anything else is refused.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editing import settings
from editing.errors import ConfigError
from editing.models import LoadedModel, load_model
from editing.relations import RELATIONS
from editing.world.corpus import Fact
from editing.world.tofu_data import (
    TofuRecipe,
    batch_plan,
    control_people,
    fact_examples,
    locality_rows,
    tofu_facts,
)

LAYER_RE = re.compile(r"\.layers\.(\d+)\.")  # a decoder layer's parameter name
TOFU_FILE = "tofu.json"
FACTS_FILE = "facts.json"
LOCALITY_FILE = "locality.jsonl"
TRAIN_DTYPES = ("float32", "bfloat16")  # float16 would need loss scaling
N_CONTROLS = 4  # control subjects of the specificity filter (fictional people never fine-tuned)
# The registered Locality set: fictional private facts and genuine public ones, 2 prompts each.
EVAL_SIZE = {"locality_private_facts": 30, "locality_public_facts": 30}


@dataclass
class TofuBuild:
    """A built (or reused) fine-tune: where it is, its model id and its ``tofu.json`` document."""

    root: Path
    model_id: str
    doc: dict[str, Any]
    cached: bool
    registry_file: str = ""
    replaced: str | None = None  # the model directory the id pointed to before this build

    @property
    def model_dir(self) -> Path:
        """The Hugging Face directory of the fine-tuned model."""
        return self.root / "model"


def tofu_root(base_id: str, key: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Directory of the fine-tune of ``base_id`` with cache key ``key``."""
    return settings.home(home) / "tofu" / f"{base_id}-{key}"


def knowledge_facts(per_relation: int) -> list[Any]:
    """The first ``per_relation`` shipped genuine facts of every relation (a fixed subset)."""
    from editing.realdata.facts import load_facts

    return [f for facts in load_facts().by_relation().values() for f in facts[:per_relation]]


def _majority(flags: list[bool]) -> bool:
    return 2 * sum(flags) > len(flags)


def measure_knowledge(loaded: LoadedModel, genuine: list[Any]) -> dict[str, Any]:
    """World knowledge of ``loaded``: which ``genuine`` facts it answers (greedy, on a majority
    of their edit prompts) and its perplexity on the held-out Wikipedia passages of ΔPPL."""
    from editing.evaldata import SHIPPED_PPL_PASSAGES
    from editing.evaluate import known_many, perplexity
    from editing.realdata.text import load_text

    groups = [(f.edit_prompts(), f.target.strip()) for f in genuine]
    answered = known_many(loaded.model, loaded.tokenizer, groups)
    known = [f.key for f, flags in zip(genuine, answered, strict=True) if _majority(flags)]
    ppl_texts = load_text("heldout")[:SHIPPED_PPL_PASSAGES]
    return {
        "known_facts": len(known),
        "probed_facts": len(genuine),
        "known_keys": known,
        "perplexity_heldout_wikipedia": round(
            perplexity(loaded.model, loaded.tokenizer, ppl_texts), 4
        ),
    }


def measure_recall(loaded: LoadedModel, facts: list[Fact]) -> dict[str, Any]:
    """Greedy recall of ``facts`` on their edit and held-out templates (fraction of prompts),
    overall and per relation (the demo world's quality measure)."""
    from editing.evaluate import known_many

    out: dict[str, Any] = {}
    for split in ("edit", "heldout"):
        groups = [
            (getattr(RELATIONS[f.relation], f"{split}_prompts")(f.subject), f.target) for f in facts
        ]
        flags = known_many(loaded.model, loaded.tokenizer, groups)
        by_rel: dict[str, list[bool]] = {}
        for f, row in zip(facts, flags, strict=True):
            by_rel.setdefault(f.relation, []).extend(row)
        every = [x for row in flags for x in row]
        out[f"recall_{split}"] = round(sum(every) / max(len(every), 1), 4)
        out[f"recall_{split}_by_relation"] = {
            r: round(sum(v) / len(v), 4) for r, v in sorted(by_rel.items())
        }
    return out


def _trainable(model: Any, recipe: TofuRecipe) -> list[torch.nn.Parameter]:
    """The parameters the fine-tune updates: ``recipe.trainable`` (``mlp``: MLP weights;
    ``all``) of the decoder layers numbered ``recipe.from_layer`` and up."""
    params = []
    for name, p in model.named_parameters():
        found = LAYER_RE.search(name)
        if found is None or int(found.group(1)) < recipe.from_layer:
            continue
        if recipe.trainable == "all" or ".mlp." in name:
            params.append(p)
    if not params:
        raise ConfigError(
            f"The model has no {recipe.trainable!r} parameters in layers >= {recipe.from_layer}."
        )
    return params


def _lr_at(recipe: TofuRecipe, step: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``recipe.lr``."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _encode(loaded: LoadedModel, facts: list[Fact], recipe: TofuRecipe) -> dict[str, list[Any]]:
    """Token rows ``(ids, n_prompt_tokens)``: fact examples (loss on the target and full stop
    only) and general-text windows (loss on every token after the first)."""
    from editing.realdata.text import load_text
    from editing.sae_training import token_windows
    from editing.scoring import encode_pairs

    examples = fact_examples(facts)
    pairs = encode_pairs(
        loaded.tokenizer, [p for p, _ in examples], [c.removeprefix(" ") for _, c in examples]
    )
    general = []
    if recipe.general_fraction > 0:
        windows = token_windows(loaded.tokenizer, load_text("train"), recipe.general_tokens)
        general = [(w, 1) for w in windows]
    return {"fact": [(p + t, len(p)) for p, t in pairs], "general": general}


def fine_tune(
    loaded: LoadedModel,
    facts: list[Fact],
    recipe: TofuRecipe,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune ``loaded.model`` in place (AdamW on ``recipe.trainable``); the loss curve.

    Deterministic for a recipe on a given device; the model is left in eval mode with every
    parameter frozen again, ready for measuring and saving.
    """
    model = loaded.model
    rows = _encode(loaded, facts, recipe)
    plan = batch_plan(recipe, len(rows["fact"]), len(rows["general"]))
    params = _trainable(model, recipe)
    for p in params:
        p.requires_grad_(True)
    torch.manual_seed(recipe.seed)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    pad = loaded.tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    losses: list[float] = []
    model.train()
    try:
        for step, batch in enumerate(plan):
            chosen = [rows[kind][i] for kind, i in batch]
            width = max(len(ids) for ids, _ in chosen)
            ids = torch.full((len(chosen), width), pad, dtype=torch.long)
            labels = torch.full((len(chosen), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for r, (row, start) in enumerate(chosen):
                ids[r, : len(row)] = torch.tensor(row)
                labels[r, start : len(row)] = torch.tensor(row[start:])
                mask[r, : len(row)] = 1
            for group in opt.param_groups:
                group["lr"] = _lr_at(recipe, step)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            logits = out.logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).to(device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, losses[-1])
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return losses


def _write_outputs(
    tmp: Path, loaded: LoadedModel, facts: list[Fact], genuine: list[Any], known: list[str]
) -> None:
    """Save the model, ``facts.json`` and ``locality.jsonl`` into ``tmp``."""
    loaded.model.save_pretrained(str(tmp / "model"))
    loaded.tokenizer.save_pretrained(str(tmp / "model"))
    (tmp / FACTS_FILE).write_text(json.dumps([f.spec() for f in facts], indent=1) + "\n")
    public = [
        (prompt, f.target.strip())
        for f in genuine
        if f.key in set(known)
        for prompt in f.edit_prompts()[:2]
    ]
    rows = locality_rows(facts, public)
    (tmp / LOCALITY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


def is_tofu_of(path: str | None, base_id: str) -> bool:
    """Whether ``path`` (a registry entry's model directory) is a fine-tune of ``base_id`` built
    by :func:`build_tofu`: the ``model/`` of a ``tofu/<base_id>-<key>/`` directory (whose
    ``tofu.json``, when still there, names ``base_id``)."""
    if not path:
        return False
    root = Path(path).expanduser().parent
    if root.parent.name != "tofu" or not re.fullmatch(
        rf"{re.escape(base_id)}-[0-9a-f]{{12}}", root.name
    ):
        return False
    try:
        return json.loads((root / TOFU_FILE).read_text()).get("base", base_id) == base_id
    except FileNotFoundError:
        return True  # the old build's directory is gone; its name still says what it was
    except (OSError, ValueError, AttributeError):
        return False


def check_tofu_id(model_id: str, base_id: str, home: str | os.PathLike[str] | None) -> str | None:
    """The model directory ``model_id`` is registered with if it is a fine-tune of ``base_id``
    (None: the id is free); ConfigError if the id names any other model."""
    from editing.registry import load_registry, registry_file

    existing = load_registry(home).get(model_id)
    if existing is None:
        return None
    if existing.is_demo or not is_tofu_of(existing.path, base_id):
        raise ConfigError(
            f"Model id {model_id!r} is already registered in {registry_file(home)} for "
            f"{existing.path or existing.hub_id or 'a demo world'}, which is not a fine-tune of "
            f"{base_id!r} built by `world build --base`; pass --model-id with another id (or "
            f"remove its [models.{model_id}] table)."
        )
    return existing.path


def _free_model_id(build: TofuBuild, base_id: str, home: str | os.PathLike[str] | None) -> None:
    """Unregister ``build.model_id`` if it names an earlier fine-tune of ``base_id`` in another
    directory (recorded in ``build.replaced``); ConfigError if it names any other model."""
    from editing.registry import unregister_model

    old = check_tofu_id(build.model_id, base_id, home)
    if old and Path(old).expanduser().resolve() != build.model_dir.resolve():
        unregister_model(build.model_id, home)
        build.replaced = old


def register_tofu(
    build: TofuBuild, base: LoadedModel, home: str | os.PathLike[str] | None, dtype: str
) -> str:
    """Register ``build`` as ``build.model_id`` (path, ``dtype``, facts, Locality, controls, the
    Locality set's size and the base model's method defaults but its SAE ``layers``); the
    registry file. An id naming an earlier fine-tune of the same base is replaced
    (``build.replaced``), one naming another model is refused (ConfigError)."""
    from editing.registry import register_model

    _free_model_id(build, base.entry.model_id, home)

    extra = {
        "facts_file": str(build.root / FACTS_FILE),
        "locality_file": str(build.root / LOCALITY_FILE),
        "control_subjects": build.doc["controls"],
    }
    # the base's method defaults, less the SAE layers: the fine-tune's own SAEs decide those
    params = {
        method: {k: v for k, v in values.items() if k != "layers"}
        for method, values in base.entry.method_params.items()
    }
    file, _ = register_model(
        build.model_id,
        build.model_dir,
        dtype,
        home,
        params=params,
        extra=extra,
        evaluation=EVAL_SIZE,
    )
    return str(file)


def build_tofu(
    base_id: str,
    recipe: TofuRecipe,
    model_id: str | None = None,
    home: str | os.PathLike[str] | None = None,
    device: str | None = None,
    force: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    dtype: str | None = None,
) -> TofuBuild:
    """Fine-tune ``base_id`` by ``recipe`` (or reuse the cached build), measure it, register it.

    ``dtype`` (default: the base entry's) is the dtype the fine-tune trains, saves and registers
    in; it is part of the cache key. ConfigError for a demo model (it already holds the
    fictional people) or a dtype the fine-tune cannot train in.
    """
    from editing.realdata.probe import weights_sha256
    from editing.registry import check_model_id, get_entry

    model_id = check_model_id(model_id or f"{base_id}-tofu")
    entry = get_entry(base_id, home)
    if entry.is_demo:
        raise ConfigError(
            f"{base_id!r} is a demo world, trained on the fictional people already; "
            "--base takes a registered pretrained model (e.g. smollm2)."
        )
    check_tofu_id(model_id, base_id, home)  # before hours of training
    dtype = settings.check_dtype_name(dtype or entry.dtype)
    if dtype not in TRAIN_DTYPES:
        raise ConfigError(
            f"The fine-tune trains in {' or '.join(TRAIN_DTYPES)}, not {dtype} (its training "
            "loop has no loss scaling); pass --dtype float32 or --dtype bfloat16."
        )
    started = time.perf_counter()
    base = load_model(base_id, device=device, dtype=dtype, home=home)
    key = recipe.key(weights_sha256(base.model, base.source_dir), dtype)
    root = tofu_root(base_id, key, home)
    if (root / TOFU_FILE).is_file() and not force:
        build = TofuBuild(root, model_id, json.loads((root / TOFU_FILE).read_text()), cached=True)
        build.doc.setdefault("controls", control_people(recipe, N_CONTROLS))  # built before them
        build.registry_file = register_tofu(build, base, home, dtype)
        return build
    facts = tofu_facts(recipe)
    genuine = knowledge_facts(recipe.knowledge_per_relation)
    before = measure_knowledge(base, genuine)
    t0 = time.perf_counter()
    losses = fine_tune(base, facts, recipe, on_step)
    train_seconds = time.perf_counter() - t0
    after = measure_knowledge(base, genuine)
    quality = {
        **measure_recall(base, facts),
        "knowledge_before": before,
        "knowledge_after": after,
        "final_train_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
    }
    doc = {
        "base": base_id,
        "model_id": model_id,
        "dtype": dtype,
        "recipe": recipe_dict(recipe),
        "people": list(dict.fromkeys(f.subject for f in facts)),
        "controls": control_people(recipe, N_CONTROLS),
        "facts": [f.spec() for f in facts],
        "quality": quality,
        "seconds": {"train": round(train_seconds, 1), "total": 0.0},
        "device": str(next(base.model.parameters()).device),
    }
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}-", dir=root.parent))
    try:
        _write_outputs(tmp, base, facts, genuine, after["known_keys"])
        doc["seconds"]["total"] = round(time.perf_counter() - started, 1)
        (tmp / TOFU_FILE).write_text(json.dumps(doc, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    build = TofuBuild(root, model_id, doc, cached=False)
    build.registry_file = register_tofu(build, base, home, dtype)
    return build


def recipe_dict(recipe: TofuRecipe) -> dict[str, Any]:
    """The recipe as JSON (tuples as lists)."""
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(recipe)))
