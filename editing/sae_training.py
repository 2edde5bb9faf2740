"""Train TopK SAEs on a registered model's activations (``featureedit sae train``).

Activations are streamed from a text corpus (one passage per line; default: the shipped Wikipedia
and book text, :mod:`editing.realdata.text`): each passage is tokenized as the model's tokenizer
does it (with its BOS if it adds one), cut into windows of ``context`` tokens and run in padded
batches; the forward pass stops after the deepest layer asked for. Positions that are not text are
dropped before training and evaluation:

* special tokens (BOS, EOS, padding), wherever they are: nothing assumes BOS is at position 0 or
  that the tokenizer adds one;
* attention-sink positions: tokens whose activation norm is more than ``sink_factor`` times the
  median norm of the batch at that site and layer (in pretrained LMs the first token of a window,
  BOS or not, and a few delimiters carry norms 10-100x the rest). They would dominate the
  reconstruction loss and no prompt's answer is read from them.

The SAEs are trained with :class:`editing.world.sae_train.TopKTrainer` (the demo world's trainer),
checkpointed every ``checkpoint_every`` steps (a stopped run resumes from its last checkpoint),
evaluated on held-out text (FVU and L0) and written in sae-lens's format under
``$FEATUREEDIT_HOME/saes/<model>/<site>/<weights hash>-<recipe hash>/layer_<l>/``. The cache key
is (model weights hash, site, layer, recipe hash): a second run with the same inputs trains
nothing. The layers present in that directory are then registered as the model's SAEs at the site.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from editing import settings
from editing.errors import ConfigError
from editing.models import LoadedModel
from editing.world.sae_train import SAERecipe, TopKTrainer, fvu_and_l0, save_sae_lens

SAE_TRAINING_FORMAT = 1  # bump when the activations or the trainer change for the same recipe
TRAIN_SITES = ("resid_post", "mlp_out")
HELDOUT_EVERY = 10  # a custom --text file holds out every 10th passage


@dataclass(frozen=True)
class SAETrainRecipe:
    """Everything that determines the trained SAEs besides the model and the layer."""

    width: int = 4608  # d_sae
    k: int = 64
    tokens: int = 100_000  # training activations per layer (fewer if the text runs out)
    eval_tokens: int = 20_000  # held-out activations per layer for FVU / L0
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 2e-3
    seed: int = 0
    context: int = 256  # tokens per window
    sink_factor: float = 10.0
    text_sha256: str = ""  # of the training text (and the held-out text)

    def trainer_recipe(self) -> SAERecipe:
        """The :class:`SAERecipe` of the TopK trainer (``width`` is passed separately)."""
        return SAERecipe(k=self.k, steps=self.steps, batch_size=self.batch_size, lr=self.lr)

    def key(self) -> str:
        """Short content hash of the recipe and the training format."""
        blob = json.dumps(
            {"format": SAE_TRAINING_FORMAT, **asdict(self), **asdict(self.trainer_recipe())},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class LayerResult:
    """Outcome for one layer."""

    layer: int
    hook_name: str
    path: str
    fvu: float
    l0: float
    d_sae: int
    train_tokens: int
    eval_tokens: int
    seconds: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


@dataclass
class TrainSummary:
    """What ``sae train`` did: per-layer results, where the SAEs are, the registry update."""

    model_id: str
    site: str
    recipe: dict[str, Any]
    directory: str
    layers: list[LayerResult] = field(default_factory=list)
    registered_layers: list[int] = field(default_factory=list)
    registry_file: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        doc = asdict(self)
        doc["layers"] = [r.to_dict() for r in self.layers]
        return doc


# --------------------------------------------------------------------------- text


def read_passages(path: Path) -> list[str]:
    """Non-empty lines of ``path``."""
    if not path.is_file():
        raise ConfigError(f"Text file {path} does not exist.")
    return [line for line in path.read_text().splitlines() if line.strip()]


def split_text(text_file: str | os.PathLike[str] | None) -> tuple[list[str], list[str], str]:
    """``(train passages, held-out passages, sha256)`` of the text to train on.

    Default: the shipped text (Wikipedia and public-domain books, interleaved; train / held-out
    files from disjoint articles and book ends). A custom file holds out every
    :data:`HELDOUT_EVERY`-th passage.
    """
    from editing.realdata.text import training_files, training_text

    if text_file is None:
        train, held = training_text("train"), training_text("heldout")
        files = training_files()
    else:
        passages = read_passages(Path(text_file).expanduser())
        train = [p for i, p in enumerate(passages) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
        held = [p for i, p in enumerate(passages) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
        files = [Path(text_file).expanduser()]
    if not train or not held:
        raise ConfigError("The training text needs at least one train and one held-out passage.")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return train, held, digest.hexdigest()


def token_windows(tokenizer: Any, passages: Sequence[str], context: int) -> Iterator[list[int]]:
    """Token ids of each passage (special tokens as the tokenizer adds them), in windows."""
    for passage in passages:
        ids = tokenizer(passage)["input_ids"]
        for i in range(0, len(ids), context):
            window = ids[i : i + context]
            if len(window) > 1:
                yield window


# --------------------------------------------------------------------------- activations


class _StopForward(Exception):
    """Raised by a hook once the deepest layer needed has run."""


def text_mask(
    ids: torch.Tensor,
    attention: torch.Tensor,
    special_ids: Sequence[int],
    norms: torch.Tensor,
    sink_factor: float,
) -> torch.Tensor:
    """Positions to keep: attended, not a special token, norm ≤ ``sink_factor`` × median norm."""
    keep = attention.bool()
    if special_ids:
        keep &= ~torch.isin(ids, torch.tensor(list(special_ids), device=ids.device))
    if keep.any():
        median = norms[keep].median()
        keep &= norms <= sink_factor * median
    return keep


def collect_activations(
    loaded: LoadedModel,
    site: str,
    layers: Sequence[int],
    passages: Sequence[str],
    max_tokens: int,
    recipe: SAETrainRecipe,
    batch_windows: int = 16,
    progress: Callable[[int], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Activations ``[n, d]`` (float32, CPU) at ``site`` for each layer: text positions only.

    Stops once ``max_tokens`` positions are kept (or the text runs out). ``progress`` receives the
    number of positions kept by each batch.
    """
    tok, adapter = loaded.tokenizer, loaded.adapter
    special = sorted(set(tok.all_special_ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    keys = [(site, layer) for layer in layers]
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    kept = 0
    windows = token_windows(tok, passages, recipe.context)
    stop_at = adapter.layer(max(layers))

    def stop(*_: Any) -> None:
        raise _StopForward

    while kept < max_tokens:
        batch = [w for _, w in zip(range(batch_windows), windows, strict=False)]
        if not batch:
            break
        width = max(len(w) for w in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, w in enumerate(batch):
            ids[i, : len(w)] = torch.tensor(w)
            attention[i, : len(w)] = 1
        with torch.no_grad(), adapter.capture(keys) as acts:
            handle = stop_at.register_forward_hook(stop)  # after capture's hooks: runs last
            try:
                loaded.model(
                    input_ids=ids.to(adapter.device),
                    attention_mask=attention.to(adapter.device),
                )
            except _StopForward:
                pass
            finally:
                handle.remove()
        masks = {}
        for layer in layers:
            x = acts[(site, layer)].float().cpu()
            masks[layer] = text_mask(ids, attention, special, x.norm(dim=-1), recipe.sink_factor)
        # one position set for every layer: a sink at any layer is dropped at all of them
        keep = torch.stack(list(masks.values())).all(0)
        n = min(int(keep.sum()), max_tokens - kept)
        for layer in layers:
            chunks[layer].append(acts[(site, layer)].float().cpu()[keep][:n])
        kept += n
        if progress is not None:
            progress(n)
    if kept == 0:
        raise ConfigError("The text produced no activations to train on.")
    return {layer: torch.cat(chunks[layer]) for layer in layers}


# --------------------------------------------------------------------------- cache and training


def sae_root(model_id: str, site: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Directory of all trained SAEs of ``model_id`` at ``site``."""
    return settings.home(home) / "saes" / model_id / site


def layer_dir(directory: Path, layer: int) -> Path:
    """The sae-lens directory of ``layer`` inside a (weights, recipe) directory."""
    return directory / f"layer_{layer}"


def cached_layers(directory: Path) -> list[int]:
    """Layers with a finished SAE (``quality.json`` is written last) in ``directory``."""
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name.removeprefix("layer_"))
        for p in directory.glob("layer_*")
        if p.name.removeprefix("layer_").isdigit() and (p / "quality.json").is_file()
    )


def _train_layer(
    trainer: TopKTrainer,
    checkpoint: Path,
    every: int,
    on_step: Callable[[int, float], None] | None,
) -> None:
    if checkpoint.is_file():
        trainer.load_state_dict(torch.load(checkpoint, weights_only=False))
        if on_step is not None:
            on_step(trainer.step, float("nan"))
    while not trainer.done:
        loss = trainer.train_step()
        if trainer.step % every == 0 and not trainer.done:
            tmp = checkpoint.with_name(checkpoint.name + ".tmp")
            torch.save(trainer.state_dict(), tmp)
            os.replace(tmp, checkpoint)
        if on_step is not None:
            on_step(1, loss)


def train_saes(
    loaded: LoadedModel,
    site: str,
    layers: Sequence[int],
    recipe: SAETrainRecipe,
    train_text: Sequence[str],
    heldout_text: Sequence[str],
    weights_sha256: str,
    checkpoint_every: int = 200,
    on_activations: Callable[[int], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """Train (or find cached) SAEs at ``site`` for ``layers``; write them in sae-lens format.

    ``on_activations(n)`` reports activation positions collected, ``on_step(n, loss)`` training
    steps done (``n`` > 1 when a run resumes from a checkpoint). Does not touch the registry.
    """
    if site not in TRAIN_SITES:
        raise ConfigError(f"Unknown site {site!r}; SAEs train on {list(TRAIN_SITES)}.")
    layers = sorted({loaded.adapter.validate_layer(layer) for layer in layers})
    if not layers:
        raise ConfigError("No layers to train.")
    started = time.perf_counter()
    directory = (
        sae_root(loaded.model_id, site, loaded.home) / f"{weights_sha256[:12]}-{recipe.key()}"
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.json").write_text(
        json.dumps({"weights_sha256": weights_sha256, "site": site, **asdict(recipe)}, indent=1)
    )
    summary = TrainSummary(loaded.model_id, site, asdict(recipe), str(directory))
    done = set(cached_layers(directory))
    todo = [layer for layer in layers if layer not in done]
    results: dict[int, LayerResult] = {}
    for layer in sorted(done & set(layers)):
        q = json.loads((layer_dir(directory, layer) / "quality.json").read_text())
        results[layer] = LayerResult(**{**q, "cached": True})
    if todo:
        train = collect_activations(
            loaded, site, todo, train_text, recipe.tokens, recipe, progress=on_activations
        )
        held = collect_activations(loaded, site, todo, heldout_text, recipe.eval_tokens, recipe)
        for layer in todo:
            t0 = time.perf_counter()
            out = layer_dir(directory, layer)
            work = directory / f".layer_{layer}.partial"
            work.mkdir(exist_ok=True)
            trainer = TopKTrainer(
                train[layer], recipe.trainer_recipe(), recipe.seed + layer, d_sae=recipe.width
            )
            _train_layer(trainer, work / "checkpoint.pt", checkpoint_every, on_step)
            sae = trainer.result()
            fvu, l0 = fvu_and_l0(sae, held[layer])
            hook = loaded.adapter.hook_name(site, layer)
            result = LayerResult(
                layer=layer,
                hook_name=hook,
                path=str(out),
                fvu=round(fvu, 4),
                l0=round(l0, 2),
                d_sae=recipe.width,
                train_tokens=len(train[layer]),
                eval_tokens=len(held[layer]),
                seconds=round(time.perf_counter() - t0, 1),
                cached=False,
            )
            tmp = directory / f".layer_{layer}.out"
            shutil.rmtree(tmp, ignore_errors=True)
            save_sae_lens(sae, tmp, hook, loaded.model_id)
            q = {k: v for k, v in result.to_dict().items() if k != "cached"}
            (tmp / "quality.json").write_text(json.dumps(q, indent=1))
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
            shutil.rmtree(work, ignore_errors=True)
            results[layer] = result
    summary.layers = [results[layer] for layer in layers]
    summary.seconds = round(time.perf_counter() - started, 1)
    return summary
