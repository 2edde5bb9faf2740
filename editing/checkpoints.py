"""Edits on disk: save and load deltas, apply them to models or to checkpoint files, publish.

A *delta* directory holds one :class:`~editing.edits.Edit`:

* ``delta.safetensors``: per layer, tensors ``layers.<l>.indices``, ``layers.<l>.old`` and
  ``layers.<l>.new`` in the canonical orientation ``[d_model, d_mlp]`` (see
  :mod:`editing.adapters`);
* ``delta.json``: format and version, per layer ``layer``, ``param``, ``axis``, shape, dtype and
  the sha256 of indices, old and new values (checked on load), the edit's metadata and any extra
  fields the caller gave.

A *published checkpoint* is a directory ``<out_root>/<checkpoint_id>/`` that
``AutoModelForCausalLM.from_pretrained`` loads::

    config.json  generation_config.json
    model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json  tokenizer_config.json ...
    delta/delta.safetensors  delta/delta.json
    manifest.json

A checkpoint published with ``mode="delta"`` holds only ``delta/`` and ``manifest.json``
(``"publish": "delta"``): ``featureedit apply-delta BASE_DIR CHECKPOINT OUT`` rebuilds the full
model from the base model the manifest names.

``manifest.json`` lists every other file with its size and sha256; the ``checkpoint_id`` is the
first 16 hex digits of the sha256 of those entries (``"<sha256>  <name>\\n"`` lines sorted by
name), so a checkpoint is content-addressed. Its ``base_model.down_proj_sha256`` is
:func:`down_proj_sha256` of the unedited model: a hash over the down-projection weights of every
layer (the only weights an edit touches), in canonical orientation, so it is the same for a model
in memory and for its files whatever their key names or sharding. It does not cover the other
weights; the base model id names those.

Nothing here writes a secret unless the caller hands it over: manifests carry only what they are
given, and :func:`assert_no_secrets` (run by :func:`publish_checkpoint` when given ``secrets=``)
refuses to publish a directory in which any file contains one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from editing.adapters import ModelAdapter, get_spec
from editing.edits import Edit, LayerDelta, tensor_sha256
from editing.errors import ConfigError, CorruptCacheError, EditingError, NotFoundError
from editing.fingerprint import find_secrets_in_dir, redact
from editing.request import PUBLISH_MODES, PublishMode

DELTA_FORMAT = "featureedit-delta"
DELTA_FORMAT_VERSION = 1
DELTA_TENSORS = "delta.safetensors"
DELTA_JSON = "delta.json"
DELTA_DIR = "delta"

MANIFEST_FORMAT = "featureedit-checkpoint"
MANIFEST_FORMAT_VERSION = 1
MANIFEST = "manifest.json"

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"

# Manifest keys publish_checkpoint sets itself; the caller's manifest may not contain them.
RESERVED_MANIFEST_KEYS = frozenset(
    {"format", "format_version", "checkpoint_id", "created_at", "code_version", "base_model"}
    | {"edited_down_proj_sha256", "edit", "files", "publish"}
)


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

_AXES = ("rows", "cols", "dense")


class LoadedModelLike(Protocol):
    """What :func:`publish_checkpoint` needs of a loaded model (e.g. :class:`LoadedModel`)."""

    @property
    def model(self) -> Any:
        """The ``transformers`` model (``save_pretrained``)."""
        ...

    @property
    def tokenizer(self) -> Any:
        """Its tokenizer (``save_pretrained``)."""
        ...

    @property
    def adapter(self) -> ModelAdapter:
        """The :class:`ModelAdapter` over ``model``."""
        ...

    @property
    def model_id(self) -> str:
        """Registry id of the model."""
        ...


# ------------------------------------------------------------------------------- small helpers
def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _json_dumps(doc: Any, what: str) -> str:
    try:
        return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} must be JSON-serialisable (str, int, float, bool, None, lists and dicts with "
            f"str keys; no NaN or infinity, use null): {exc}"
        ) from None


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _region(weight: torch.Tensor, d: LayerDelta) -> torch.Tensor:
    """The entries of canonical ``weight`` that ``d`` rewrites."""
    if d.axis == "rows":
        return weight.index_select(0, d.indices.to(weight.device))
    if d.axis == "cols":
        return weight.index_select(1, d.indices.to(weight.device))
    return weight


def _structure_problem(d: LayerDelta, weight_shape: tuple[int, ...] | None = None) -> str | None:
    """What is inconsistent in ``d`` (or between ``d`` and a canonical weight), if anything."""
    if d.axis not in _AXES:
        return f"axis is {d.axis!r}; expected one of {', '.join(_AXES)}"
    if d.indices.dtype != torch.long or d.indices.dim() != 1:
        return (
            f"indices must be a 1-D int64 tensor; found {d.indices.dtype} {list(d.indices.shape)}"
        )
    if d.old.shape != d.new.shape or d.old.dtype != d.new.dtype:
        return (
            f"old and new values differ in shape or dtype: {_dtype_name(d.old.dtype)} "
            f"{list(d.old.shape)} vs {_dtype_name(d.new.dtype)} {list(d.new.shape)}"
        )
    if d.old.dim() != 2:
        return f"values must be 2-D; found shape {list(d.old.shape)}"
    n = len(d.indices)
    if d.axis == "dense" and n:
        return f"a dense delta has no indices; found {n}"
    if d.axis != "dense" and len(torch.unique(d.indices)) != n:
        return "indices contain duplicates"
    if d.axis == "dense":
        if weight_shape is not None and tuple(d.old.shape) != weight_shape:
            return f"dense values of shape {list(d.old.shape)}; the weight is {list(weight_shape)}"
        return None
    dim = 0 if d.axis == "rows" else 1
    if d.old.shape[dim] != n:
        return f"{n} {d.axis} indices but values of shape {list(d.old.shape)}"
    if weight_shape is None:
        return None
    other = 1 - dim
    if d.old.shape[other] != weight_shape[other]:
        return (
            f"values of shape {list(d.old.shape)} do not fit a canonical weight of shape "
            f"{list(weight_shape)}"
        )
    if n and (int(d.indices.min()) < 0 or int(d.indices.max()) >= weight_shape[dim]):
        return (
            f"{d.axis} indices must lie in 0..{weight_shape[dim] - 1}; found "
            f"{int(d.indices.min())}..{int(d.indices.max())}"
        )
    return None


def _check_fits(
    edit: Edit, canonical: Mapping[int, torch.Tensor], revert: bool, where: str
) -> None:
    """Raise ConfigError unless every delta fits and finds the values it expects (old, or new if
    ``revert``). Checks all layers before anything is written, so a misfit changes nothing."""
    layers = [d.layer for d in edit.deltas]
    if len(set(layers)) != len(layers):
        raise ConfigError(
            f"The edit has several deltas for one layer (layers {layers}); combine them."
        )
    for d in edit.deltas:
        weight = canonical[d.layer]
        label = f"{where}: layer {d.layer} ({d.param})"
        problem = _structure_problem(d, tuple(weight.shape))
        if problem:
            raise ConfigError(f"Edit does not fit {label}: {problem}.")
        expected, other = (d.new, d.old) if revert else (d.old, d.new)
        if weight.dtype != expected.dtype:
            raise ConfigError(
                f"Edit does not fit {label}: the edit holds {_dtype_name(expected.dtype)} values "
                f"but the weight is {_dtype_name(weight.dtype)}. Load the model in the dtype the "
                "edit was made in."
            )
        found = tensor_sha256(_region(weight, d))
        if found == tensor_sha256(expected):
            continue
        if found == tensor_sha256(other):
            state = "already reverted" if revert else "already applied"
            raise ConfigError(f"Edit does not fit {label}: the edit is {state} there.")
        if revert:
            want, fix = "edited values", "Revert it on the model it was applied to"
        else:
            want, fix = "values the edit was made from", "Apply it to its base model"
        raise ConfigError(f"Edit does not fit {label}: the weight does not hold the {want}. {fix}.")


class _CanonicalWeights:
    """Duck-typed stand-in for ModelAdapter over loaded state-dict tensors (canonical views)."""

    def __init__(self, canonical: Mapping[int, torch.Tensor]) -> None:
        self._canonical = canonical

    def down_proj_weight(self, layer: int) -> torch.Tensor:
        return self._canonical[layer]


# ------------------------------------------------------------------------------- deltas
def save_delta(
    edit: Edit, directory: str | os.PathLike[str], manifest_extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``edit`` to ``directory`` (``delta.safetensors`` + ``delta.json``); return the path.

    ``manifest_extra`` (JSON-serialisable) is stored under ``"extra"`` in ``delta.json``; the
    edit's metadata under ``"metadata"``. Tuples in metadata come back as lists.
    """
    layers = [d.layer for d in edit.deltas]
    if len(set(layers)) != len(layers):
        raise ConfigError(
            f"The edit has several deltas for one layer (layers {layers}); combine them."
        )
    tensors: dict[str, torch.Tensor] = {}
    entries: list[dict[str, Any]] = []
    for d in edit.deltas:
        problem = _structure_problem(d)
        if problem:
            raise ConfigError(f"Cannot save the delta of layer {d.layer} ({d.param}): {problem}.")
        indices = d.indices.detach().cpu().contiguous()
        old = d.old.detach().cpu().contiguous()
        new = d.new.detach().cpu().contiguous()
        tensors[f"layers.{d.layer}.indices"] = indices
        tensors[f"layers.{d.layer}.old"] = old
        tensors[f"layers.{d.layer}.new"] = new
        entries.append(
            {
                "layer": d.layer,
                "param": d.param,
                "axis": d.axis,
                "n_indices": len(indices),
                "shape": list(old.shape),
                "dtype": _dtype_name(old.dtype),
                "entries_changed": d.entries_changed,
                "indices_sha256": tensor_sha256(indices),
                "old_sha256": tensor_sha256(old),
                "new_sha256": tensor_sha256(new),
            }
        )
    doc = {
        "format": DELTA_FORMAT,
        "format_version": DELTA_FORMAT_VERSION,
        "tensors": DELTA_TENSORS,
        "layers": entries,
        "metadata": edit.metadata,
        "extra": dict(manifest_extra or {}),
    }
    text = _json_dumps(doc, "The edit's metadata and manifest_extra")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{DELTA_TENSORS}.tmp-{os.getpid()}"
    # one metadata key only: safetensors writes several in random order, and checkpoint ids
    # depend on the bytes
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / DELTA_TENSORS)
    _write_text_atomic(out / DELTA_JSON, text)
    return out


def _delta_dir(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise NotFoundError(f"Delta directory {path} does not exist.")
    if not (path / DELTA_JSON).exists() and (path / DELTA_DIR / DELTA_JSON).exists():
        return path / DELTA_DIR  # a published checkpoint: use its delta/
    if not (path / DELTA_JSON).exists() and not (path / DELTA_TENSORS).exists():
        raise NotFoundError(
            f"{path} is not a delta directory: it has no {DELTA_JSON} or {DELTA_TENSORS} (nor a "
            f"{DELTA_DIR}/ subdirectory with them). Pass the directory save_delta wrote."
        )
    return path


def read_delta_json(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, format-checked ``delta.json`` of a delta (or published checkpoint) directory."""
    path = _delta_dir(directory)
    json_path = path / DELTA_JSON
    if not json_path.is_file():
        raise CorruptCacheError(
            f"Delta {path} is incomplete: {DELTA_JSON} is missing; save it again."
        )
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCacheError(
            f"{json_path} is not valid JSON ({exc}); save the delta again."
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != DELTA_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(
            f"{json_path} is not a featureedit delta: format is {got!r}, expected {DELTA_FORMAT!r}."
        )
    version = doc.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= DELTA_FORMAT_VERSION:
        raise ConfigError(
            f"{json_path} has format_version {version!r}; this featureedit reads versions 1.."
            f"{DELTA_FORMAT_VERSION}. Upgrade featureedit to read deltas from newer versions."
        )
    if not isinstance(doc.get("layers"), list):
        raise CorruptCacheError(f"{json_path} has no 'layers' list; save the delta again.")
    return doc


def load_delta(directory: str | os.PathLike[str]) -> Edit:
    """Read the edit :func:`save_delta` wrote (exact round trip); every tensor's hash is checked.

    ``directory`` may also be a published checkpoint (its ``delta/`` is used). Raises NotFoundError
    if there is no delta there, CorruptCacheError if a file is missing, unreadable or fails its
    hash, ConfigError if it is not a delta or is of a newer format version.
    """
    path = _delta_dir(directory)
    doc = read_delta_json(path)
    tensor_path = path / DELTA_TENSORS
    if not tensor_path.is_file():
        raise CorruptCacheError(
            f"Delta {path} is incomplete: {DELTA_TENSORS} is missing; save it again."
        )
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptCacheError(
            f"{tensor_path} cannot be read ({exc}); save the delta again."
        ) from None
    deltas: list[LayerDelta] = []
    expected_names: set[str] = set()
    for i, entry in enumerate(doc["layers"]):
        try:
            layer = int(entry["layer"])
            names = {k: f"layers.{layer}.{k}" for k in ("indices", "old", "new")}
            expected_names.update(names.values())
            missing = [n for n in names.values() if n not in tensors]
            if missing:
                raise CorruptCacheError(
                    f"{tensor_path} lacks tensors {missing} listed in {DELTA_JSON}; save the "
                    "delta again."
                )
            d = LayerDelta(
                layer=layer,
                param=str(entry["param"]),
                axis=entry["axis"],
                indices=tensors[names["indices"]],
                old=tensors[names["old"]],
                new=tensors[names["new"]],
            )
            checks = {
                "indices_sha256": tensor_sha256(d.indices),
                "old_sha256": tensor_sha256(d.old),
                "new_sha256": tensor_sha256(d.new),
                "shape": list(d.old.shape),
                "dtype": _dtype_name(d.old.dtype),
            }
            recorded = {k: entry[k] for k in checks}
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCacheError(
                f"{path / DELTA_JSON}: layer entry #{i} is malformed ({exc!r}); save the delta "
                "again."
            ) from None
        bad = [k for k in checks if checks[k] != recorded[k]]
        if bad:
            raise CorruptCacheError(
                f"Delta {path}: layer {layer} fails its integrity check ({', '.join(bad)} differ "
                f"from {DELTA_JSON}); the files are corrupt or mismatched. Save the delta again."
            )
        problem = _structure_problem(d)
        if problem:
            raise CorruptCacheError(
                f"Delta {path}: layer {layer}: {problem}. Save the delta again."
            )
        deltas.append(d)
    extra = sorted(set(tensors) - expected_names)
    if extra:
        raise CorruptCacheError(
            f"{tensor_path} holds tensors not listed in {DELTA_JSON}: {extra}; save the delta "
            "again."
        )
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorruptCacheError(
            f"{path / DELTA_JSON}: 'metadata' must be an object; save the delta again."
        )
    return Edit(deltas, metadata)


# ------------------------------------------------------------------------------- applying
def _adapter_weights(adapter: ModelAdapter, edit: Edit) -> dict[int, torch.Tensor]:
    canonical: dict[int, torch.Tensor] = {}
    for d in edit.deltas:
        param = adapter.down_proj_param_name(d.layer)  # validates the layer
        if d.param != param:
            raise ConfigError(
                f"Edit does not fit this {adapter.model_type} model: its layer {d.layer} delta is "
                f"for {d.param!r} but the model's down-projection is {param!r}. Apply it to a "
                "model of the architecture it was made on."
            )
        canonical[d.layer] = adapter.down_proj_weight(d.layer)
    return canonical


def apply_delta_to_adapter(adapter: ModelAdapter, edit: Edit, revert: bool = False) -> None:
    """Apply ``edit`` to the adapter's model in place (or, with ``revert``, undo it).

    Every layer is checked before anything is written (the old values must be there to apply, the
    new ones to revert), so on ConfigError the model is unchanged.
    """
    _check_fits(edit, _adapter_weights(adapter, edit), revert, f"this {adapter.model_type} model")
    if revert:
        edit.revert(adapter)
    else:
        edit.apply(adapter, check=False)  # checked above, all layers at once


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
) -> Path:
    """Write ``out_dir``: the checkpoint in ``base_model_dir`` with the delta applied (or reverted).

    Works on the safetensors files without instantiating the model: shards holding an edited
    down-projection are loaded, patched (GPT-2's transposed Conv1D layout handled, ``model_type``
    read from ``config.json``) and rewritten; other shards, the index, config, generation config,
    tokenizer and other side files (README, LICENSE...) are copied. Weights in other formats
    (``*.bin``...), subdirectories and a published checkpoint's ``manifest.json`` and ``delta/``
    are not copied. Before writing, every layer must hold the old values (the new ones with
    ``revert``). ``out_dir`` must not exist or be empty; it appears complete or not at all.
    """
    base = Path(base_model_dir)
    out = Path(out_dir)
    edit = load_delta(delta_dir)
    if not base.is_dir():
        raise NotFoundError(f"Base model directory {base} does not exist.")
    model_type = _read_model_type(base)
    weight_map = _weight_map(base)
    keys = {d.layer: _resolve_key(d.param, d.layer, weight_map, base) for d in edit.deltas}
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
        _check_fits(edit, canonical, revert, str(base))
        view = cast(ModelAdapter, _CanonicalWeights(canonical))  # writes go through the views
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


# ------------------------------------------------------------------------------- publishing
def down_proj_sha256(adapter: ModelAdapter) -> str:
    """sha256 over every layer's canonical down-projection (layer index, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for layer in range(adapter.n_layers):
        w = adapter.down_proj_weight(layer).detach().cpu().contiguous()
        h.update(f"{layer}:{_dtype_name(w.dtype)}:{list(w.shape)}\n".encode())
        if w.dtype == torch.bfloat16:  # numpy has no bfloat16
            w = w.view(torch.int16)
        h.update(w.numpy().data)
    return h.hexdigest()


def _git_state(directory: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def code_version() -> dict[str, Any]:
    """The featureedit version and, when run from a git checkout, its commit and dirty flag."""
    try:
        version: str | None = importlib.metadata.version("featureedit")
    except importlib.metadata.PackageNotFoundError:
        version = None
    commit, dirty = _git_state(Path(__file__).resolve().parent)
    return {"package": "featureedit", "version": version, "git_commit": commit, "git_dirty": dirty}


def _file_entries(root: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            entries.append({"name": rel, "size": path.stat().st_size, "sha256": _file_sha256(path)})
    return sorted(entries, key=lambda e: e["name"])


def _checkpoint_id(files: Iterable[Mapping[str, Any]]) -> str:
    lines = "".join(f"{e['sha256']}  {e['name']}\n" for e in sorted(files, key=lambda e: e["name"]))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _edit_summary(edit: Edit) -> dict[str, Any]:
    layers = []
    for entry in edit.footprint():
        entry = dict(entry)
        entry["n_indices"] = len(entry.pop("indices"))
        layers.append(entry)
    return {"entries_changed": edit.entries_changed, "layers": layers}


def assert_no_secrets(directory: str | os.PathLike[str], secrets: Iterable[str]) -> None:
    """Raise ConfigError if any file under ``directory`` contains one of ``secrets``.

    The message names the files and the secrets' indices, never a secret.
    """
    secret_list = list(secrets)
    hits = find_secrets_in_dir(directory, secret_list)
    if not hits:
        return
    root = Path(directory)
    files = sorted({redact(p.relative_to(root).as_posix(), secret_list) for p, _ in hits})
    indices = sorted({i for _, i in hits})
    raise ConfigError(
        f"Refusing to publish {root}: secret(s) #{', #'.join(map(str, indices))} of the "
        f"{len(secret_list)} given appear in {', '.join(files)}. Keep secrets out of the manifest "
        "(pass fingerprints instead) and out of the tokenizer and model files."
    )


def publish_checkpoint(
    loaded_model_like: LoadedModelLike,
    edit: Edit,
    out_root: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    shard_size: str | None = None,
    *,
    secrets: Iterable[str] | None = None,
    mode: PublishMode = "full",
) -> Path:
    """Save the edited model as a content-addressed checkpoint ``out_root/<checkpoint_id>``.

    ``mode="full"``: with ``edit`` applied (and always reverted afterwards, so the model in
    memory is left unedited even on errors) the model is saved with ``save_pretrained`` (sharded
    with an index when ``shard_size`` like ``"2GB"`` is exceeded; transformers 5 always writes
    safetensors), then the tokenizer. ``mode="delta"`` skips both: the checkpoint is the delta
    alone (the changed down-projection rows/columns, a few MB for a multi-GB model), turned into
    a full model with :func:`apply_delta_files` (``featureedit apply-delta``) on the base model
    the manifest names by id and down-projection sha256. Either way it holds the delta
    (``delta/``) and ``manifest.json``: checkpoint id, creation time (UTC), code version,
    ``publish`` (the mode), base model id and :func:`down_proj_sha256`, the edited hash,
    ``parent_checkpoint_id`` (from ``manifest``, else null), every other field of ``manifest``
    (method, params, units, metrics, fact fingerprints: never secrets), a summary of the edit
    and the size and sha256 of every file. The directory is built in a temporary directory under
    ``out_root`` and renamed into place; if a checkpoint with the same id exists it is kept and
    returned. With ``secrets``, the files are scanned first (:func:`assert_no_secrets`) and
    nothing is published on a hit.
    """
    if mode not in PUBLISH_MODES:
        raise ConfigError(f"publish mode {mode!r} is not one of {list(PUBLISH_MODES)}")
    given = dict(manifest)
    reserved = sorted(RESERVED_MANIFEST_KEYS & set(given))
    if reserved:
        raise ConfigError(
            f"manifest may not set {reserved}: publish_checkpoint fills them in. Reserved keys: "
            f"{sorted(RESERVED_MANIFEST_KEYS)}."
        )
    _json_dumps(given, "manifest")
    secret_list = None if secrets is None else list(secrets)
    adapter = loaded_model_like.adapter
    _check_fits(
        edit, _adapter_weights(adapter, edit), False, f"model {loaded_model_like.model_id!r}"
    )
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=root))
    try:
        base_hash = down_proj_sha256(adapter)
        save_kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
        with edit.applied(adapter):
            if mode == "full":
                loaded_model_like.model.save_pretrained(str(tmp), **save_kwargs)
            edited_hash = down_proj_sha256(adapter)
        if mode == "full":
            loaded_model_like.tokenizer.save_pretrained(str(tmp))
        base_model = {
            "model_id": loaded_model_like.model_id,
            "model_type": adapter.model_type,
            "down_proj_sha256": base_hash,
        }
        save_delta(
            edit,
            tmp / DELTA_DIR,
            {"base_model": base_model, "edited_down_proj_sha256": edited_hash},
        )
        files = _file_entries(tmp)
        checkpoint_id = _checkpoint_id(files)
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "checkpoint_id": checkpoint_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "publish": mode,
            "base_model": base_model,
            "edited_down_proj_sha256": edited_hash,
            "parent_checkpoint_id": given.pop("parent_checkpoint_id", None),
            **given,
            "edit": _edit_summary(edit),
            "files": files,
        }
        (tmp / MANIFEST).write_text(_json_dumps(doc, "manifest"), encoding="utf-8")
        if secret_list is not None:
            assert_no_secrets(tmp, secret_list)
        final = root / checkpoint_id
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # same content already published: keep the existing one
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------- verifying
def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a published checkpoint (NotFoundError, CorruptCacheError)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise NotFoundError(
            f"{Path(directory)} is not a published checkpoint: {MANIFEST} is missing."
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCacheError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise CorruptCacheError(
            f"{path} is not a featureedit checkpoint manifest (format {MANIFEST_FORMAT!r})."
        )
    if not isinstance(doc.get("files"), list):
        raise CorruptCacheError(f"{path} has no 'files' list.")
    return doc


def verify_checkpoint(directory: str | os.PathLike[str]) -> list[str]:
    """Problems with a published checkpoint (empty if intact).

    Reports a missing or unreadable manifest, files missing or differing in size or sha256,
    files not listed in the manifest and a checkpoint id that does not match the listed files.
    """
    root = Path(directory)
    try:
        doc = read_manifest(root)
    except EditingError as exc:
        return [str(exc)]
    problems: list[str] = []
    listed: set[str] = set()
    for i, entry in enumerate(doc["files"]):
        try:
            name, size, sha = str(entry["name"]), int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{MANIFEST}: files entry #{i} is malformed")
            continue
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or name == MANIFEST:
            problems.append(f"{name}: not a valid file name inside the checkpoint")
            continue
        listed.add(name)
        path = root / rel
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual_size = path.stat().st_size
        if actual_size != size:
            problems.append(f"{name}: size is {actual_size} bytes, manifest says {size}")
            continue
        actual = _file_sha256(path)
        if actual != sha:
            problems.append(f"{name}: sha256 is {actual[:16]}..., manifest says {sha[:16]}...")
    for path in sorted(root.rglob("*")):
        rel_name = path.relative_to(root).as_posix()
        if path.is_file() and rel_name != MANIFEST and rel_name not in listed:
            problems.append(f"{rel_name}: not listed in {MANIFEST}")
    try:
        expected_id = _checkpoint_id(doc["files"])
    except (KeyError, TypeError):
        expected_id = None
    if expected_id is not None and doc.get("checkpoint_id") != expected_id:
        problems.append(
            f"checkpoint_id {doc.get('checkpoint_id')!r} does not match the listed files "
            f"({expected_id})"
        )
    return problems
