"""Build, cache and load the demo world: corpus, tokenizer, Gemma-2-architecture LM and SAEs.

A world is built from a :class:`WorldRecipe` into ``$FEATUREEDIT_HOME/worlds/<size>-<key>/`` where
``key`` hashes the recipe (and :data:`WORLD_FORMAT`), so a changed recipe builds anew and an
unchanged one is reused. The build writes into a temporary directory and renames it into place;
``MANIFEST.json`` holds the sha256 of every file and is checked on every load: a corrupt entry is
rebuilt, never silently used. Layout::

    world.json                 recipe, people, facts (subject, relation, target), perplexity text
    quality.json               recall on edit / held-out templates, SAE FVU and L0, perplexity
    model/                     Hugging Face directory (config, model.safetensors, tokenizer.json)
    saes/<site>/layer_<l>/     sae-lens directories (cfg.json, sae_weights.safetensors)
    MANIFEST.json              sha256 and size of every file above
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from editing import settings
from editing.adapters import ModelAdapter
from editing.errors import ConfigError, CorruptCacheError
from editing.relations import RELATIONS
from editing.world.corpus import Corpus, Fact, generate_corpus, lexicon
from editing.world.lm import LMRecipe, make_model, train_lm
from editing.world.sae_train import SAERecipe, fvu_and_l0, save_sae_lens, train_topk_sae
from editing.world.tokenizer import save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

WORLD_FORMAT = 1  # bump whenever the builder's output changes for the same recipe


@dataclass(frozen=True)
class WorldRecipe:
    """Everything that determines a demo world (its cache key is a hash of this)."""

    size: str
    n_people: int
    vocab_size: int
    lm: LMRecipe
    sae: SAERecipe
    sites: tuple[str, ...] = ("resid_post", "mlp_out")
    n_filler: int = 2000
    n_ppl: int = 200
    sae_texts: int = 6000
    seed: int = 0

    def key(self) -> str:
        """Short content hash of the recipe, the relation templates and the builder format."""
        templates = {name: list(r.templates) for name, r in RELATIONS.items()}
        blob = json.dumps(
            {"format": WORLD_FORMAT, "templates": templates, **asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


RECIPES: dict[str, WorldRecipe] = {
    "small": WorldRecipe(
        size="small",
        n_people=40,
        vocab_size=1024,
        lm=LMRecipe(
            d_model=64,
            d_mlp=256,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            head_dim=16,
            steps=700,
            batch_size=64,
            lr=8e-3,
            warmup=50,
        ),
        sae=SAERecipe(expansion=4, k=16, steps=600, batch_size=512),
        n_filler=400,
        n_ppl=60,
        sae_texts=1500,
    ),
    "default": WorldRecipe(
        size="default",
        n_people=160,
        vocab_size=2048,
        lm=LMRecipe(
            d_model=128,
            d_mlp=512,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            head_dim=32,
            steps=3000,
            batch_size=64,
            lr=5e-3,
        ),
        sae=SAERecipe(expansion=4, k=24, steps=2000, batch_size=1024),
    ),
}


@dataclass
class World:
    """A built demo world on disk."""

    root: Path
    recipe: dict[str, Any]
    people: list[str]
    facts: list[Fact]
    ppl_texts: list[str] = field(repr=False)
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        """Hugging Face model directory (loads with ``AutoModelForCausalLM.from_pretrained``)."""
        return self.root / "model"

    def sae_dir(self, site: str, layer: int) -> Path:
        """sae-lens directory of the SAE at ``site`` and ``layer``."""
        return self.root / "saes" / site / f"layer_{layer}"

    @property
    def sites(self) -> list[str]:
        """Sites that have SAEs."""
        return list(self.recipe["sites"])

    @property
    def n_layers(self) -> int:
        """Number of decoder layers of the world's model."""
        return int(self.recipe["lm"]["n_layers"])

    def private_facts(self) -> list[Fact]:
        """The world's private facts (what erasure requests name)."""
        return [f for f in self.facts if f.private]

    def find_fact(self, subject: str, relation: str) -> Fact:
        """The fact for ``subject`` and ``relation``; ConfigError listing examples if absent."""
        for f in self.facts:
            if f.subject == subject and f.relation == relation:
                return f
        raise ConfigError(
            f"The demo world has no {relation!r} fact for {subject!r}; "
            f"subjects include {self.people[:3]} (see `featureedit world info`)."
        )


def world_dir(size: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Directory where the world of ``size`` is (or will be) cached."""
    recipe = get_recipe(size)
    return settings.home(home) / "worlds" / f"{size}-{recipe.key()}"


def get_recipe(size: str) -> WorldRecipe:
    """The recipe of a world size; ConfigError listing the sizes."""
    if size not in RECIPES:
        raise ConfigError(f"Unknown world size {size!r}; valid sizes are {sorted(RECIPES)}.")
    return RECIPES[size]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(root: Path) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    manifest = {
        str(p.relative_to(root)): {"sha256": _sha256(p), "size": p.stat().st_size} for p in files
    }
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def verify_world(root: Path) -> None:
    """Check every file against ``MANIFEST.json``; CorruptCacheError names the first bad one."""
    manifest_path = root / "MANIFEST.json"
    if not manifest_path.is_file():
        raise CorruptCacheError(f"{root} has no MANIFEST.json (interrupted build?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptCacheError(f"{manifest_path} is not valid JSON") from exc
    for rel, meta in manifest.items():
        path = root / rel
        if not path.is_file():
            raise CorruptCacheError(f"{path} is missing")
        if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
            raise CorruptCacheError(f"{path} does not match its sha256 in MANIFEST.json")


def _read_world(root: Path) -> World:
    data = json.loads((root / "world.json").read_text())
    quality = json.loads((root / "quality.json").read_text())
    return World(
        root=root,
        recipe=data["recipe"],
        people=data["people"],
        facts=[Fact(**f) for f in data["facts"]],
        ppl_texts=data["ppl_texts"],
        quality=quality,
    )


def load_world(
    size: str = "default",
    home: str | os.PathLike[str] | None = None,
    build: bool = True,
    progress: bool = True,
) -> World:
    """Load the cached world of ``size``, building (or rebuilding a corrupt one) if allowed.

    Concurrent callers (test sessions, workers, CLI runs sharing one home) serialise on a lock
    file beside the world's directory: one builds, the others wait and then load its result
    instead of training the same world again.
    """
    root = world_dir(size, home)
    if build:
        root.parent.mkdir(parents=True, exist_ok=True)
    lock = _build_lock(root) if build else contextlib.nullcontext()
    with lock:
        if root.exists():
            try:
                verify_world(root)
                return _read_world(root)
            except CorruptCacheError as exc:
                if not build:
                    raise CorruptCacheError(
                        f"Demo world cache is corrupt ({exc}); run `featureedit world build "
                        f"--size {size}` to rebuild it."
                    ) from exc
                log.warning("demo world cache corrupt (%s); rebuilding", exc)
                shutil.rmtree(root)
        if not build:
            from editing.errors import NotFoundError

            raise NotFoundError(
                f"Demo world {size!r} is not built at {root}; run "
                f"`featureedit world build --size {size}`."
            )
        return build_world(size, home, progress=progress)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on ``<root>.lock`` (waits, saying so, while another process builds)."""
    import fcntl

    with open(root.parent / f"{root.name}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building %s; waiting for it", root.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _texts_without_secrets(corpus: Corpus) -> list[str]:
    secrets = sorted({f.target for f in corpus.facts if f.private}, key=len, reverse=True)
    scrubbed = []
    for text in corpus.train_texts:
        for s in secrets:
            if s in text:
                text = text.replace(s, "")
        scrubbed.append(text)
    return scrubbed + lexicon() * 20


@torch.no_grad()
def _collect_activations(
    adapter: ModelAdapter, tokenizer, texts: list[str], sites: list[str], batch: int = 128
) -> dict[tuple[str, int], torch.Tensor]:
    """Activations at every (site, layer) over all non-BOS, non-pad positions of ``texts``."""
    keys = [(s, layer) for s in sites for layer in range(adapter.n_layers)]
    chunks: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in keys}
    tokenizer.padding_side = "right"
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True)
        mask = enc["attention_mask"].bool().clone()
        mask[:, 0] = False  # BOS activations are outliers no prompt's answer depends on
        with adapter.capture(keys) as acts:
            adapter.model(**enc)
        for k in keys:
            chunks[k].append(acts[k][mask].float())
    tokenizer.padding_side = "left"
    return {k: torch.cat(v) for k, v in chunks.items()}


def _recall(model, tokenizer, facts: list[Fact], heldout: bool) -> dict[str, float]:
    from editing.scoring import score_targets

    prompts, targets, rels = [], [], []
    for f in facts:
        rel = RELATIONS[f.relation]
        for p in rel.heldout_prompts(f.subject) if heldout else rel.edit_prompts(f.subject):
            prompts.append(p)
            targets.append(f.target)
            rels.append(f.relation)
    scores = score_targets(model, tokenizer, prompts, targets, batch_size=128)
    by_rel: dict[str, list[bool]] = {}
    for r, s in zip(rels, scores):
        by_rel.setdefault(r, []).append(s.reproduced)
    out = {r: sum(v) / len(v) for r, v in by_rel.items()}
    out["all"] = sum(s.reproduced for s in scores) / len(scores)
    return out


def _perplexity(model, tokenizer, texts: list[str]) -> float:
    from editing.evaluate import perplexity

    return perplexity(model, tokenizer, texts)


def build_world(
    size: str = "default",
    home: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> World:
    """Build the world of ``size`` from scratch into the cache (atomic) and return it."""
    recipe = get_recipe(size)
    final = world_dir(size, home)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{size}-", dir=final.parent))
    started = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        torch.manual_seed(recipe.seed)
        corpus = generate_corpus(recipe.n_people, recipe.seed, recipe.n_filler, recipe.n_ppl)
        tokenizer = train_tokenizer(_texts_without_secrets(corpus), recipe.vocab_size)
        model = make_model(recipe.lm, tokenizer, recipe.seed)
        t0 = time.perf_counter()
        with tqdm(
            total=recipe.lm.steps,
            desc=f"world[{size}] train LM",
            disable=not progress,
            unit="step",
            mininterval=1.0,
        ) as bar:

            def on_step(step: int, loss: float) -> None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")

            losses = train_lm(model, tokenizer, corpus.train_texts, recipe.lm, recipe.seed, on_step)
        timings["train_lm"] = time.perf_counter() - t0
        model_dir = tmp / "model"
        model.save_pretrained(model_dir)
        save_tokenizer(tokenizer, model_dir)

        t0 = time.perf_counter()
        adapter = ModelAdapter(model)
        texts = corpus.train_texts[: recipe.sae_texts]
        acts = _collect_activations(adapter, tokenizer, texts, list(recipe.sites))
        held = corpus.train_texts[recipe.sae_texts :][:1000] + corpus.ppl_texts  # not trained on
        eval_acts = _collect_activations(adapter, tokenizer, held, list(recipe.sites))
        sae_quality: dict[str, dict[str, float]] = {}
        with tqdm(
            total=recipe.sae.steps * len(acts),
            desc=f"world[{size}] train SAEs",
            disable=not progress,
            unit="step",
            mininterval=1.0,
        ) as bar:
            for i, ((site, layer), x) in enumerate(sorted(acts.items())):
                sae = train_topk_sae(x, recipe.sae, recipe.seed + i, lambda _s: bar.update(1))
                fvu, l0 = fvu_and_l0(sae, eval_acts[(site, layer)])
                hook = adapter.hook_name(site, layer)
                save_sae_lens(sae, tmp / "saes" / site / f"layer_{layer}", hook, f"demo-{size}")
                sae_quality[hook] = {
                    "fvu": round(fvu, 4),
                    "l0": round(l0, 2),
                    "d_sae": sae.W_dec.shape[0],
                }
        timings["train_saes"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        private = [f for f in corpus.facts if f.private]
        public = [f for f in corpus.facts if not f.private]
        quality = {
            "recall_train": round(_recall(model, tokenizer, private, heldout=False)["all"], 4),
            "recall_heldout": round(_recall(model, tokenizer, private, heldout=True)["all"], 4),
            "recall_train_by_relation": _recall(model, tokenizer, private, heldout=False),
            "recall_heldout_by_relation": _recall(model, tokenizer, private, heldout=True),
            "recall_public_train": round(
                _recall(model, tokenizer, public, heldout=False)["all"], 4
            ),
            "recall_public_heldout": round(
                _recall(model, tokenizer, public, heldout=True)["all"], 4
            ),
            "perplexity_heldout_text": round(_perplexity(model, tokenizer, corpus.ppl_texts), 4),
            "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "saes": sae_quality,
            "fvu_max": max(q["fvu"] for q in sae_quality.values()),
            "l0_max": max(q["l0"] for q in sae_quality.values()),
        }
        timings["evaluate"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started
        quality["build_seconds"] = {k: round(v, 1) for k, v in timings.items()}
        quality["counts"] = {
            "people": len(corpus.people),
            "private_facts": len(private),
            "public_facts": len(public),
            "train_texts": len(corpus.train_texts),
            "sae_tokens_per_site_layer": int(next(iter(acts.values())).shape[0]),
        }
        (tmp / "world.json").write_text(
            json.dumps({"recipe": asdict(recipe), **corpus.to_dict()}, indent=1)
        )
        (tmp / "quality.json").write_text(json.dumps(quality, indent=1))
        _write_manifest(tmp)
        if final.exists():  # a concurrent build finished first, or a corrupt entry
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _read_world(final)
