"""The operator's private revert data: the pre-edit values of an erasure, never published.

Revert data is one safetensors blob: per layer ``layers.<l>.indices``, ``layers.<l>.old`` and
``layers.<l>.new`` (canonical orientation), and in its header metadata a ``featureedit`` JSON
document (format ``featureedit-revert`` version 1: the checkpoint id it reverts, per layer
``layer``, ``param``, ``axis`` and the sha256 of indices, old and new values, the edit's metadata).
It round-trips the full :class:`~editing.edits.Edit` exactly.

Whoever holds it can undo an erasure, so it is *toxic*: the service keeps it only sealed with the
service's key (:mod:`editing.sealing`) in the operator's private erasure record, the command line
under ``$FEATUREEDIT_HOME/private/`` (sealed too), and never beside a published checkpoint.
``featureedit apply-delta EDITED CHECKPOINT OUT --revert --revert-data FILE`` takes it explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from editing import sealing
from editing.checkpoints.fit import check_unique_layers, delta_problem
from editing.checkpoints.patch import (
    DELTA_JSON,
    DELTA_TENSORS,
    Patch,
    load_tensors,
    patch_dir,
    read_patch_json,
)
from editing.edits import Edit, LayerDelta, tensor_sha256
from editing.errors import ConfigError, CorruptCacheError, NotFoundError

REVERT_FORMAT = "featureedit-revert"
REVERT_FORMAT_VERSION = 1
REVERT_FILE = "revert.safetensors"
_META_KEY = "featureedit"

MISSING_HINT = (
    "A published checkpoint carries no pre-edit values, so it cannot be reverted from its own "
    "files. Reverting needs the operator's private revert data: `featureedit private export "
    "ERASURE_ID --out FILE` on the service, or the sealed file the command line printed when "
    "it published (under $FEATUREEDIT_HOME/private/), passed as --revert-data FILE."
)


def _tensors(edit: Edit) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for d in edit.deltas:
        for name in ("indices", "old", "new"):
            out[f"layers.{d.layer}.{name}"] = getattr(d, name).detach().cpu().contiguous()
    return out


def revert_bytes(edit: Edit, checkpoint_id: str | None = None) -> bytes:
    """``edit`` (with its old values) as revert data (plain bytes: seal them before storing)."""
    check_unique_layers(edit.layers)
    for d in edit.deltas:
        problem = delta_problem(d)
        if problem:
            raise ConfigError(f"Cannot save the revert data of layer {d.layer}: {problem}.")
    doc = {
        "format": REVERT_FORMAT,
        "format_version": REVERT_FORMAT_VERSION,
        "checkpoint_id": checkpoint_id,
        "layers": [
            {
                "layer": d.layer,
                "param": d.param,
                "axis": d.axis,
                "indices_sha256": tensor_sha256(d.indices),
                "old_sha256": tensor_sha256(d.old),
                "new_sha256": tensor_sha256(d.new),
            }
            for d in edit.deltas
        ],
        "metadata": edit.metadata,
    }
    meta = json.dumps(doc, ensure_ascii=False, allow_nan=False, sort_keys=True)
    return save_bytes(_tensors(edit), metadata={_META_KEY: meta})


def _header_metadata(data: bytes) -> dict[str, str]:
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        return dict(header.get("__metadata__") or {})
    except (ValueError, TypeError, AttributeError):
        return {}


def edit_from_revert_bytes(data: bytes) -> tuple[Edit, dict[str, Any]]:
    """``(edit, info)`` from revert data (sealed data is refused: unseal it first)."""
    if sealing.is_sealed(data):
        raise ConfigError("The revert data is sealed; open it with the service's key first.")
    raw = _header_metadata(data).get(_META_KEY)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != REVERT_FORMAT:
        raise ConfigError(
            f"This is not featureedit revert data (format {REVERT_FORMAT!r}). {MISSING_HINT}"
        )
    try:
        tensors = load_bytes(data)
    except Exception as exc:  # safetensors raises its own error types for truncated data
        raise CorruptCacheError(f"The revert data cannot be read ({exc}).") from None
    deltas = []
    for entry in doc.get("layers", []):
        layer = int(entry["layer"])
        try:
            d = LayerDelta(
                layer=layer,
                param=str(entry["param"]),
                axis=entry["axis"],
                indices=tensors[f"layers.{layer}.indices"],
                old=tensors[f"layers.{layer}.old"],
                new=tensors[f"layers.{layer}.new"],
            )
        except KeyError as exc:
            raise CorruptCacheError(f"The revert data lacks tensor {exc}.") from None
        sums = (tensor_sha256(d.indices), tensor_sha256(d.old), tensor_sha256(d.new))
        if sums != (entry["indices_sha256"], entry["old_sha256"], entry["new_sha256"]):
            raise CorruptCacheError(f"The revert data of layer {layer} fails its integrity check.")
        problem = delta_problem(d)
        if problem:
            raise CorruptCacheError(f"The revert data of layer {layer}: {problem}.")
        deltas.append(d)
    info = {"checkpoint_id": doc.get("checkpoint_id")}
    return Edit(deltas, dict(doc.get("metadata") or {})), info


def write_revert_file(
    edit: Edit,
    path: str | os.PathLike[str],
    checkpoint_id: str | None = None,
    *,
    sealed: bool = True,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Write revert data to ``path`` (mode 0600), sealed with the service's key unless told not."""
    data = revert_bytes(edit, checkpoint_id)
    if sealed:
        data = sealing.seal(data, home=home)
    out = Path(path)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def read_revert_file(
    path: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None
) -> tuple[Edit, dict[str, Any]]:
    """``(edit, info)`` from a revert file, sealed (opened with the service's key) or plain."""
    p = Path(path)
    if p.is_dir():
        p = p / REVERT_FILE
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"Revert data {p} does not exist. {MISSING_HINT}") from None
    if sealing.is_sealed(data):
        data = sealing.unseal(data, home=home, what=f"The revert data {p}")
    return edit_from_revert_bytes(data)


def local_revert_path(home: str | os.PathLike[str] | None, checkpoint_id: str) -> Path:
    """Where the command line keeps a checkpoint's sealed revert data:
    ``$FEATUREEDIT_HOME/private/checkpoints/<checkpoint_id>.revert`` (outside any checkpoint)."""
    from editing import settings

    return settings.home(home) / "private" / "checkpoints" / f"{checkpoint_id}.revert"


def check_matches_patch(edit: Edit, patch: Patch) -> None:
    """ConfigError unless ``edit`` is the full form of ``patch`` (same layers, indices, values)."""
    ours = {d.layer: (d.axis, tensor_sha256(d.indices), tensor_sha256(d.new)) for d in edit.deltas}
    theirs = {
        p.layer: (p.axis, tensor_sha256(p.indices), tensor_sha256(p.new)) for p in patch.layers
    }
    if ours != theirs:
        raise ConfigError(
            "The revert data does not belong to this checkpoint (its layers, indices or new "
            "values differ from the checkpoint's patch). Export the revert data of the erasure "
            "that published it."
        )


def load_legacy_delta(directory: str | os.PathLike[str]) -> Edit:
    """The full edit of a version-1 delta (with old values): what the migration moves away."""
    path = patch_dir(directory)
    doc = read_patch_json(path, legacy_ok=True)
    if doc.get("format_version") != 1:
        raise ConfigError(f"{path / DELTA_JSON} is not a version-1 delta; nothing to migrate.")
    tensors = load_tensors(path / DELTA_TENSORS)
    deltas = []
    for entry in doc["layers"]:
        layer = int(entry["layer"])
        try:
            d = LayerDelta(
                layer,
                str(entry["param"]),
                entry["axis"],
                tensors[f"layers.{layer}.indices"],
                tensors[f"layers.{layer}.old"],
                tensors[f"layers.{layer}.new"],
            )
        except KeyError as exc:
            raise CorruptCacheError(f"{path}: the delta lacks tensor {exc}.") from None
        if (tensor_sha256(d.old), tensor_sha256(d.new)) != (
            entry["old_sha256"],
            entry["new_sha256"],
        ):
            raise CorruptCacheError(f"{path}: layer {layer} fails its integrity check.")
        deltas.append(d)
    return Edit(deltas, dict(doc.get("metadata") or {}))
