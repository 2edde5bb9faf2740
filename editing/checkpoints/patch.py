"""The published, forward-only form of an edit: a *patch* (indices and new values, no old ones).

A patch directory (``delta/`` of a published checkpoint) holds

* ``delta.safetensors``: per layer ``layers.<l>.indices`` and ``layers.<l>.new``, in the canonical
  orientation ``[d_model, d_mlp]`` (see :mod:`editing.adapters`);
* ``delta.json``: format ``featureedit-delta`` version 2, per layer ``layer``, ``param``,
  ``axis``, shape, dtype, ``entries_changed`` and the sha256 of the indices, of the new values
  and of the *base* values it replaces (``base_sha256``: checked before applying; a hash cannot
  be turned back into values), the edit's metadata and any extra fields the caller gave.

It turns the named base model into the edited one and nothing else: it carries no pre-edit value,
so whoever holds only a published checkpoint cannot revert it. :meth:`Patch.bind` reads the old
values from the base weights it is applied to (checking ``base_sha256``) and returns a full
:class:`~editing.edits.Edit`. Pre-edit values live only in the operator's private revert data
(:mod:`editing.checkpoints.revert`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from editing.checkpoints.fit import (
    check_unique_layers,
    delta_problem,
    dtype_name,
    region,
    structure_problem,
)
from editing.checkpoints.manifest import (
    DELTA_DIR,
    MIGRATE_HINT,
    LegacyCheckpointError,
    json_dumps,
    write_text_atomic,
)
from editing.edits import Axis, Edit, LayerDelta, tensor_sha256
from editing.errors import ConfigError, CorruptCacheError, NotFoundError

DELTA_FORMAT = "featureedit-delta"
DELTA_FORMAT_VERSION = 2
DELTA_TENSORS = "delta.safetensors"
DELTA_JSON = "delta.json"


@dataclass
class LayerPatch:
    """New values of one layer's changed down-projection rows/columns (or the whole matrix)."""

    layer: int
    param: str
    axis: Axis
    indices: torch.Tensor
    new: torch.Tensor
    base_sha256: str  # sha256 of the base values the patch replaces (checked before applying)
    entries_changed: int


@dataclass
class Patch:
    """A forward-only edit: what :func:`save_patch` publishes and :func:`load_patch` reads."""

    layers: list[LayerPatch]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_edit(cls, edit: Edit) -> Patch:
        """The patch of ``edit`` (its old values reduced to their hash)."""
        check_unique_layers(edit.layers)
        layers = []
        for d in edit.deltas:
            problem = delta_problem(d)
            if problem:
                raise ConfigError(f"Cannot publish the delta of layer {d.layer}: {problem}.")
            layers.append(
                LayerPatch(
                    layer=d.layer,
                    param=d.param,
                    axis=d.axis,
                    indices=d.indices.detach().cpu().contiguous(),
                    new=d.new.detach().cpu().contiguous(),
                    base_sha256=d.old_sha256(),
                    entries_changed=d.entries_changed,
                )
            )
        return cls(layers, dict(edit.metadata))

    @property
    def layer_ids(self) -> list[int]:
        """Layers this patch touches."""
        return [p.layer for p in self.layers]

    def bind(self, canonical: Mapping[int, torch.Tensor], where: str) -> Edit:
        """The full edit on the base weights ``canonical`` (layer -> canonical W).

        Every layer must hold the base values (``base_sha256``); ConfigError otherwise, saying
        whether the patch is already applied there. Nothing is written.
        """
        deltas = []
        for p in self.layers:
            label = f"{where}: layer {p.layer} ({p.param})"
            if p.layer not in canonical:
                raise ConfigError(f"Patch does not fit {label}: the model has no such layer.")
            weight = canonical[p.layer]
            problem = structure_problem(p.axis, p.indices, p.new, tuple(weight.shape))
            if problem:
                raise ConfigError(f"Patch does not fit {label}: {problem}.")
            if weight.dtype != p.new.dtype:
                raise ConfigError(
                    f"Patch does not fit {label}: it holds {dtype_name(p.new.dtype)} values but "
                    f"the weight is {dtype_name(weight.dtype)}. Load the model in the dtype the "
                    "edit was made in."
                )
            old = region(weight, p.axis, p.indices).detach().cpu().clone()
            found = tensor_sha256(old)
            if found != p.base_sha256:
                if found == tensor_sha256(p.new):
                    raise ConfigError(f"Patch does not fit {label}: it is already applied there.")
                raise ConfigError(
                    f"Patch does not fit {label}: the weight does not hold the values the edit "
                    "was made from. Apply it to its base model."
                )
            deltas.append(LayerDelta(p.layer, p.param, p.axis, p.indices, old, p.new.clone()))
        return Edit(deltas, dict(self.metadata))


def save_patch(
    edit: Edit | Patch,
    directory: str | os.PathLike[str],
    manifest_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the patch of ``edit`` to ``directory`` (``delta.safetensors`` + ``delta.json``).

    ``manifest_extra`` (JSON-serialisable) is stored under ``"extra"``; the edit's metadata under
    ``"metadata"``. No pre-edit value is written.
    """
    patch = edit if isinstance(edit, Patch) else Patch.from_edit(edit)
    tensors: dict[str, torch.Tensor] = {}
    entries: list[dict[str, Any]] = []
    for p in patch.layers:
        tensors[f"layers.{p.layer}.indices"] = p.indices
        tensors[f"layers.{p.layer}.new"] = p.new
        entries.append(
            {
                "layer": p.layer,
                "param": p.param,
                "axis": p.axis,
                "n_indices": len(p.indices),
                "shape": list(p.new.shape),
                "dtype": dtype_name(p.new.dtype),
                "entries_changed": p.entries_changed,
                "indices_sha256": tensor_sha256(p.indices),
                "new_sha256": tensor_sha256(p.new),
                "base_sha256": p.base_sha256,
            }
        )
    doc = {
        "format": DELTA_FORMAT,
        "format_version": DELTA_FORMAT_VERSION,
        "tensors": DELTA_TENSORS,
        "layers": entries,
        "metadata": patch.metadata,
        "extra": dict(manifest_extra or {}),
    }
    text = json_dumps(doc, "The edit's metadata and manifest_extra")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{DELTA_TENSORS}.tmp-{os.getpid()}"
    # one metadata key only: safetensors writes several in random order, and checkpoint ids
    # depend on the bytes
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / DELTA_TENSORS)
    write_text_atomic(out / DELTA_JSON, text)
    return out


def patch_dir(directory: str | os.PathLike[str]) -> Path:
    """The patch directory of ``directory`` (itself, or a published checkpoint's ``delta/``)."""
    path = Path(directory)
    if not path.is_dir():
        raise NotFoundError(f"Delta directory {path} does not exist.")
    if not (path / DELTA_JSON).exists() and (path / DELTA_DIR / DELTA_JSON).exists():
        return path / DELTA_DIR
    if not (path / DELTA_JSON).exists() and not (path / DELTA_TENSORS).exists():
        raise NotFoundError(
            f"{path} is not a delta directory: it has no {DELTA_JSON} or {DELTA_TENSORS} (nor a "
            f"{DELTA_DIR}/ subdirectory with them). Pass a published checkpoint or its delta/."
        )
    return path


def read_patch_json(directory: str | os.PathLike[str], *, legacy_ok: bool = False) -> dict:
    """The parsed, format-checked ``delta.json`` of a patch (or published checkpoint) directory.

    A version-1 delta (which held pre-edit values) raises LegacyCheckpointError unless
    ``legacy_ok`` (the migration reads it).
    """
    path = patch_dir(directory)
    json_path = path / DELTA_JSON
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptCacheError(f"Delta {path} is incomplete: {DELTA_JSON} is missing.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCacheError(f"{json_path} is not valid JSON ({exc}).") from None
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
    if version < DELTA_FORMAT_VERSION and not legacy_ok:
        raise LegacyCheckpointError(
            f"{json_path} is a version-{version} delta, which holds the pre-edit values of the "
            f"edited weights (it can undo the erasure). It is not applied. {MIGRATE_HINT}"
        )
    if not isinstance(doc.get("layers"), list):
        raise CorruptCacheError(f"{json_path} has no 'layers' list.")
    return doc


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (CorruptCacheError if it cannot be read)."""
    if not path.is_file():
        raise CorruptCacheError(f"{path} is missing.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptCacheError(f"{path} cannot be read ({exc}).") from None


def load_patch(directory: str | os.PathLike[str]) -> Patch:
    """Read the patch :func:`save_patch` wrote; every tensor's hash is checked.

    ``directory`` may be a published checkpoint (its ``delta/`` is used). NotFoundError if there
    is no delta, CorruptCacheError if a file is missing, unreadable or fails its hash,
    LegacyCheckpointError for a version-1 delta, ConfigError if it is not a delta.
    """
    path = patch_dir(directory)
    doc = read_patch_json(path)
    tensors = load_tensors(path / DELTA_TENSORS)
    layers: list[LayerPatch] = []
    expected: set[str] = set()
    for i, entry in enumerate(doc["layers"]):
        try:
            layer = int(entry["layer"])
            names = {k: f"layers.{layer}.{k}" for k in ("indices", "new")}
            expected.update(names.values())
            missing = [n for n in names.values() if n not in tensors]
            if missing:
                raise CorruptCacheError(f"{path / DELTA_TENSORS} lacks tensors {missing}.")
            p = LayerPatch(
                layer=layer,
                param=str(entry["param"]),
                axis=entry["axis"],
                indices=tensors[names["indices"]],
                new=tensors[names["new"]],
                base_sha256=str(entry["base_sha256"]),
                entries_changed=int(entry["entries_changed"]),
            )
            checks = {
                "indices_sha256": tensor_sha256(p.indices),
                "new_sha256": tensor_sha256(p.new),
                "shape": list(p.new.shape),
                "dtype": dtype_name(p.new.dtype),
            }
            bad = [k for k in checks if checks[k] != entry[k]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCacheError(
                f"{path / DELTA_JSON}: layer entry #{i} is malformed ({exc!r})."
            ) from None
        if bad:
            raise CorruptCacheError(
                f"Delta {path}: layer {layer} fails its integrity check ({', '.join(bad)} differ "
                f"from {DELTA_JSON}); the files are corrupt or mismatched."
            )
        problem = structure_problem(p.axis, p.indices, p.new)
        if problem:
            raise CorruptCacheError(f"Delta {path}: layer {layer}: {problem}.")
        layers.append(p)
    extra = sorted(set(tensors) - expected)
    if extra:
        raise CorruptCacheError(
            f"{path / DELTA_TENSORS} holds tensors not listed in {DELTA_JSON}: {extra}."
        )
    check_unique_layers([p.layer for p in layers])
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorruptCacheError(f"{path / DELTA_JSON}: 'metadata' must be an object.")
    return Patch(layers, metadata)
