"""Load a registered model (demo world, local directory or local HF cache) and its SAEs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from editing import settings
from editing.adapters import ModelAdapter
from editing.errors import NotFoundError, SAEMismatchError
from editing.registry import ModelEntry, get_entry

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class LoadedModel:
    """A model ready for editing: weights, tokenizer, adapter, registry entry and loaded SAEs."""

    entry: ModelEntry
    model: PreTrainedModel
    tokenizer: Any
    adapter: ModelAdapter
    source_dir: Path | None  # the directory the weights came from (checkpoints copy its tokenizer)
    home: Path
    _saes: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    @property
    def model_id(self) -> str:
        """Registry id of the model."""
        return self.entry.model_id

    def sae(self, site: str, layer: int) -> Any:
        """The sae-lens SAE at ``site`` and ``layer`` (loaded once, then cached on this object)."""
        key = (site, layer)
        if key not in self._saes:
            self._saes[key] = load_sae(self, site, layer)
        return self._saes[key]

    def sae_layers(self, site: str) -> list[int]:
        """Layers that have an SAE at ``site``."""
        return list(self.entry.sae_source(site).layers)


def _demo_paths(entry: ModelEntry, home: Path) -> Path:
    from editing.world.build import load_world

    return load_world(entry.demo_size or "default", home).model_dir


def load_model(
    model_id: str,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    home: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load ``model_id`` from the registry (building the demo world on first use).

    Never downloads: hub ids resolve from the local Hugging Face cache only (and
    :func:`editing.settings.hub_defaults` makes the Hugging Face libraries offline unless the
    caller set ``HF_HUB_OFFLINE`` otherwise).
    """
    settings.hub_defaults()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = settings.home(home)
    entry = get_entry(model_id, root)
    dev = settings.device(device or entry.device)
    dt = settings.dtype(dtype or entry.dtype)
    if entry.is_demo:
        source: str = str(_demo_paths(entry, root))
    else:
        source = entry.path or entry.hub_id or ""
        if entry.path and not Path(entry.path).expanduser().is_dir():
            raise NotFoundError(
                f"Model {model_id!r}: directory {entry.path} does not exist; fix 'path' in the "
                "registry."
            )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dt, local_files_only=True, attn_implementation="eager"
        )
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise NotFoundError(
            f"Model {model_id!r} ({source}) is not available offline: {exc.__class__.__name__}. "
            "Put it in the local Hugging Face cache (HF_HOME) or register a local 'path'."
        ) from exc
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    src_dir = Path(source) if Path(source).is_dir() else None
    return LoadedModel(entry, model, tokenizer, ModelAdapter(model), src_dir, root)


def load_sae(loaded: LoadedModel, site: str, layer: int) -> Any:
    """Load the SAE at ``site``/``layer`` with sae-lens and check it fits the model."""
    settings.hub_defaults()
    from sae_lens import SAE

    entry = loaded.entry
    source = entry.sae_source(site)
    loaded.adapter.validate_layer(layer)
    if layer not in source.layers:
        raise NotFoundError(
            f"Model {entry.model_id!r} has no SAE at {site!r} layer {layer}; layers with SAEs: "
            f"{list(source.layers)}."
        )
    device = str(loaded.adapter.device)
    if entry.is_demo:
        from editing.world.build import world_dir

        path = (
            world_dir(entry.demo_size or "default", loaded.home) / "saes" / site / f"layer_{layer}"
        )
    elif source.path:
        path = Path(source.path.format(layer=layer)).expanduser()
    else:
        path = None
    try:
        if path is not None:
            if not (path / "cfg.json").is_file():
                raise NotFoundError(
                    f"SAE for {entry.model_id!r} at {site!r} layer {layer} not found: "
                    f"{path}/cfg.json is missing."
                )
            sae = SAE.load_from_disk(str(path), device=device)
        else:
            sae = SAE.from_pretrained(
                source.release, str(source.sae_id).format(layer=layer), device=device
            )
    except NotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise NotFoundError(
            f"SAE for {entry.model_id!r} at {site!r} layer {layer} ({source.describe(layer)}) "
            f"could not be loaded offline: {exc}"
        ) from exc
    expected = loaded.adapter.site_dim(site)
    if sae.cfg.d_in != expected:
        raise SAEMismatchError(
            f"SAE {source.describe(layer)} has d_in={sae.cfg.d_in} but {site!r} of "
            f"{entry.model_id!r} has dimension {expected}; use an SAE trained on this site."
        )
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae
