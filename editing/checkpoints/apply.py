"""Applying a patch (or, with the operator's revert data, undoing it) in memory or on files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from editing.adapters import ModelAdapter, get_spec
from editing.checkpoints.fit import CanonicalWeights, check_fits
from editing.checkpoints.manifest import MANIFEST, SAFE_WEIGHTS, SAFE_WEIGHTS_INDEX
from editing.checkpoints.patch import Patch, load_patch
from editing.checkpoints.revert import MISSING_HINT, check_matches_patch, read_revert_file
from editing.edits import Edit
from editing.errors import ConfigError, CorruptCacheError, NotFoundError

# Files never copied from a base model by apply_delta_files: weights in any other format would
# carry the unedited values, and a published checkpoint's manifest no longer describes the output.
_NOT_COPIED_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".gguf",
    ".onnx",
    ".npz",
    ".pkl",
    ".index.json",
)


def _adapter_weights(adapter: ModelAdapter, params: Mapping[int, str]) -> dict[int, torch.Tensor]:
    """Canonical down-projections of the layers in ``params`` (layer -> the delta's param name),
    checking that each names this model's down-projection."""
    canonical: dict[int, torch.Tensor] = {}
    for layer, delta_param in params.items():
        param = adapter.down_proj_param_name(layer)  # validates the layer
        if delta_param != param:
            raise ConfigError(
                f"Edit does not fit this {adapter.model_type} model: its layer {layer} delta is "
                f"for {delta_param!r} but the model's down-projection is {param!r}. Apply it to "
                "a model of the architecture it was made on."
            )
        canonical[layer] = adapter.down_proj_weight(layer)
    return canonical


def bind_patch(adapter: ModelAdapter, patch: Patch) -> Edit:
    """The full edit of ``patch`` on the adapter's (base) model: old values read from it."""
    weights = _adapter_weights(adapter, {p.layer: p.param for p in patch.layers})
    return patch.bind(weights, f"this {adapter.model_type} model")


def apply_delta_to_adapter(
    adapter: ModelAdapter, delta: Patch | Edit, revert: bool = False
) -> Edit:
    """Apply a patch (or full edit) to the adapter's model in place; return the full edit.

    With ``revert``, ``delta`` must be the operator's revert data (a full :class:`Edit`): a
    published :class:`Patch` has no old values to write back. Every layer is checked before
    anything is written, so on ConfigError the model is unchanged.
    """
    if isinstance(delta, Patch):
        if revert:
            raise ConfigError(f"Cannot revert with a published patch. {MISSING_HINT}")
        edit = bind_patch(adapter, delta)
    else:
        edit = delta
    weights = _adapter_weights(adapter, {d.layer: d.param for d in edit.deltas})
    check_fits(edit, weights, revert, f"this {adapter.model_type} model")
    if revert:
        edit.revert(adapter)
    else:
        edit.apply(adapter, check=False)  # checked above, all layers at once
    return edit


def _read_model_type(model_dir: Path) -> str:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise NotFoundError(f"{model_dir} is not a model directory: config.json is missing.")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise CorruptCacheError(f"{config_path} is not a valid JSON config ({exc}).") from None
    if not isinstance(model_type, str):
        raise ConfigError(
            f"{config_path} has no model_type; it is not a transformers model config."
        )
    get_spec(model_type)  # UnsupportedArchitectureError lists the supported types
    return model_type


def _weight_map(model_dir: Path) -> dict[str, str]:
    """Tensor name -> safetensors file (relative) of a model directory."""
    index_path = model_dir / SAFE_WEIGHTS_INDEX
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptCacheError(
                f"{index_path} is not a valid safetensors index ({exc})."
            ) from None
        for name in sorted(set(weight_map.values())):
            if not (model_dir / name).is_file():
                raise NotFoundError(
                    f"{model_dir} is incomplete: shard {name} listed in {SAFE_WEIGHTS_INDEX} is "
                    "missing."
                )
        return {str(k): str(v) for k, v in weight_map.items()}
    single = model_dir / SAFE_WEIGHTS
    if single.is_file():
        with safe_open(str(single), "pt") as f:
            return dict.fromkeys(f.keys(), SAFE_WEIGHTS)
    present = sorted(p.name for p in model_dir.iterdir())
    raise NotFoundError(
        f"{model_dir} has no {SAFE_WEIGHTS} nor {SAFE_WEIGHTS_INDEX} (found: {present}). Only "
        "safetensors checkpoints are supported; convert other formats with save_pretrained."
    )


def _resolve_key(param: str, layer: int, weight_map: Mapping[str, str], model_dir: Path) -> str:
    """The key of ``param`` in a checkpoint, allowing for a dropped or extra base-model prefix
    (GPT-2 checkpoints on the Hub say ``h.0.mlp.c_proj.weight``)."""
    if param in weight_map:
        return param
    candidates = [k for k in weight_map if k.endswith("." + param)]
    if "." in param and param.split(".", 1)[1] in weight_map:
        candidates.append(param.split(".", 1)[1])
    if len(candidates) == 1:
        return candidates[0]
    raise ConfigError(
        f"{model_dir} holds no tensor {param!r} (layer {layer} of the edit)"
        + (f"; ambiguous candidates {candidates}" if candidates else "")
        + ". Apply the delta to a checkpoint of the model it was made on."
    )


def _copy_side_files(base: Path, out: Path) -> None:
    for path in sorted(base.iterdir()):
        name = path.name
        if not path.is_file() or name.startswith(".") or name == MANIFEST:
            continue
        if name.endswith(_NOT_COPIED_SUFFIXES):
            continue
        shutil.copyfile(path, out / name)


def apply_delta_files(
    base_model_dir: str | os.PathLike[str],
    delta_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    revert: bool = False,
    revert_data: Edit | str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``out_dir``: the checkpoint in ``base_model_dir`` with the patch applied (or reverted).

    Forward, ``delta_dir`` (a published checkpoint or its ``delta/``) turns the base model it
    was made on into the edited one; every edited region must hold the base values the patch
    records by hash. With ``revert``, ``base_model_dir`` is an edited model and ``revert_data``
    (the operator's private revert data: an :class:`Edit` or a revert file, sealed or plain)
    writes the pre-edit values back; it must belong to ``delta_dir``'s checkpoint. Without it,
    ConfigError says where to get it: a published checkpoint cannot revert itself.

    Works on the safetensors files without instantiating the model: shards holding an edited
    down-projection are loaded, patched (GPT-2's transposed Conv1D layout handled, ``model_type``
    read from ``config.json``) and rewritten; other shards, the index, config, generation config,
    tokenizer and other side files (README, LICENSE...) are copied. Weights in other formats
    (``*.bin``...), subdirectories and a published checkpoint's ``manifest.json`` and ``delta/``
    are not copied. ``out_dir`` must not exist or be empty; it appears complete or not at all.
    """
    base = Path(base_model_dir)
    out = Path(out_dir)
    patch = load_patch(delta_dir)
    edit: Edit | None = None
    if revert:
        if revert_data is None:
            raise ConfigError(f"Cannot revert {delta_dir}: no revert data given. {MISSING_HINT}")
        edit = revert_data if isinstance(revert_data, Edit) else read_revert_file(revert_data)[0]
        check_matches_patch(edit, patch)
    if not base.is_dir():
        raise NotFoundError(f"Base model directory {base} does not exist.")
    model_type = _read_model_type(base)
    weight_map = _weight_map(base)
    keys = {p.layer: _resolve_key(p.param, p.layer, weight_map, base) for p in patch.layers}
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"Output directory {out} already exists and is not empty; choose a new one."
        )
    if out.resolve() == base.resolve():
        raise ConfigError("The output directory must differ from the base model directory.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        patched: dict[str, dict[str, torch.Tensor]] = {}
        metadata: dict[str, dict[str, str] | None] = {}
        for fname in sorted({weight_map[k] for k in keys.values()}):
            try:
                with safe_open(str(base / fname), "pt") as f:
                    metadata[fname] = f.metadata()
                patched[fname] = load_file(str(base / fname))
            except (SafetensorError, OSError) as exc:
                raise CorruptCacheError(f"{base / fname} cannot be read ({exc}).") from None
        canonical = {
            layer: ModelAdapter.to_canonical(model_type, patched[weight_map[key]][key])
            for layer, key in keys.items()
        }
        if edit is None:
            edit = patch.bind(canonical, str(base))
        check_fits(edit, canonical, revert, str(base))
        view = cast(ModelAdapter, CanonicalWeights(canonical))  # writes go through the views
        if revert:
            edit.revert(view)
        else:
            edit.apply(view, check=False)  # checked above, all layers at once
        for fname in sorted(set(weight_map.values())):
            target = tmp / fname
            target.parent.mkdir(parents=True, exist_ok=True)
            if fname in patched:
                save_file(patched[fname], str(target), metadata=metadata[fname])
            else:
                shutil.copyfile(base / fname, target)
        if (base / SAFE_WEIGHTS_INDEX).is_file():
            shutil.copyfile(base / SAFE_WEIGHTS_INDEX, tmp / SAFE_WEIGHTS_INDEX)
        _copy_side_files(base, tmp)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
