"""Publishing an erasure: a content-addressed checkpoint directory that never leads back.

A *published checkpoint* is a directory ``<out_root>/<checkpoint_id>/`` that
``AutoModelForCausalLM.from_pretrained`` loads::

    config.json  generation_config.json
    model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json  tokenizer_config.json ...
    delta/delta.safetensors  delta/delta.json       (the forward patch, no pre-edit value)
    manifest.json

A checkpoint published with ``mode="delta"`` holds only ``delta/`` and ``manifest.json``
(``"publish": "delta"``): ``featureedit apply-delta BASE_DIR CHECKPOINT OUT`` rebuilds the full
model from the base model the manifest names.

What is published, and what is not: the edited weights, a patch that turns the named base into
them (:mod:`editing.checkpoints.patch`) and a manifest of keyed fingerprints. Nothing in it holds
a pre-edit value of an edited weight or the data subject's name, so the files alone cannot undo
the erasure nor say whom it concerns. The pre-edit values (:mod:`editing.checkpoints.revert`)
stay with the operator; the caller of :func:`publish_checkpoint` keeps them (the worker in the
private erasure record, sealed).

``manifest.json`` (see :mod:`editing.checkpoints.manifest`) lists every other file with its size
and sha256 and so fixes the checkpoint id. Its ``base_model.down_proj_sha256`` is
:func:`down_proj_sha256` of the unedited model: a hash over the down-projection weights of every
layer (the only weights an edit touches), in canonical orientation, so it is the same for a model
in memory and for its files whatever their key names or sharding.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from editing.adapters import ModelAdapter
from editing.checkpoints.apply import apply_delta_to_adapter
from editing.checkpoints.fit import check_fits, dtype_name
from editing.checkpoints.manifest import (
    DELTA_DIR,
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_FORMAT_VERSION,
    RESERVED_MANIFEST_KEYS,
    checkpoint_id,
    code_version,
    file_entries,
    fsync_dir,
    fsync_tree,
    json_dumps,
    write_text_atomic,
)
from editing.checkpoints.patch import save_patch
from editing.edits import Edit
from editing.errors import ConfigError
from editing.fingerprint import find_secrets_in_dir, find_secrets_in_files, redact
from editing.request import PUBLISH_MODES, PublishMode

# Keys a published manifest never carries, at any depth: they would name the data subject or
# hold pre-edit values (the caller passes keyed fingerprints instead).
FORBIDDEN_MANIFEST_KEYS = frozenset({"subject", "subjects", "old", "old_values", "target"})


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


def down_proj_sha256(adapter: ModelAdapter) -> str:
    """sha256 over every layer's canonical down-projection (layer index, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for layer in range(adapter.n_layers):
        w = adapter.down_proj_weight(layer).detach().cpu().contiguous()
        h.update(f"{layer}:{dtype_name(w.dtype)}:{list(w.shape)}\n".encode())
        if w.dtype == torch.bfloat16:  # numpy has no bfloat16
            w = w.view(torch.int16)
        h.update(w.numpy().data)
    return h.hexdigest()


def edit_summary(edit: Edit) -> dict[str, Any]:
    """What a manifest says about an edit: entries changed and, per layer, its footprint."""
    layers = []
    for entry in edit.footprint():
        entry = dict(entry)
        entry["n_indices"] = len(entry.pop("indices"))
        layers.append(entry)
    return {"entries_changed": edit.entries_changed, "layers": layers}


def assert_no_secrets(
    directory: str | os.PathLike[str],
    secrets: Iterable[str],
    files: Iterable[Path] | None = None,
) -> None:
    """Raise ConfigError if a file under ``directory`` contains one of ``secrets``.

    With ``files`` (what the erasure wrote of its own, see :func:`added_files`) only those are
    scanned, for the secret as a word (:func:`~editing.fingerprint.find_secrets_in_files`);
    without, every file under ``directory`` as bytes
    (:func:`~editing.fingerprint.find_secrets_in_dir`).
    The message names the files and the secrets' indices, never a secret.
    """
    secret_list = list(secrets)
    if files is None:
        hits = find_secrets_in_dir(directory, secret_list)
    else:
        hits = find_secrets_in_files(files, secret_list)
    if not hits:
        return
    root = Path(directory)
    names = sorted({redact(p.relative_to(root).as_posix(), secret_list) for p, _ in hits})
    indices = sorted({i for _, i in hits})
    raise ConfigError(
        f"Refusing to publish {root}: secret(s) #{', #'.join(map(str, indices))} of the "
        f"{len(secret_list)} given appear in {', '.join(names)}. Keep secrets out of the manifest "
        "and the patch metadata: pass keyed fingerprints (editing.fingerprint) instead."
    )


def added_files(directory: Path, base_files: set[Path]) -> list[Path]:
    """Files under ``directory`` other than ``base_files`` (the base model's, saved unchanged)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p not in base_files)


def _forbidden_keys(doc: Any, path: str = "") -> list[str]:
    """Dotted paths of :data:`FORBIDDEN_MANIFEST_KEYS` anywhere in ``doc``."""
    found: list[str] = []
    if isinstance(doc, Mapping):
        for key, value in doc.items():
            here = f"{path}.{key}" if path else str(key)
            if key in FORBIDDEN_MANIFEST_KEYS:
                found.append(here)
            found += _forbidden_keys(value, here)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _forbidden_keys(value, f"{path}[{i}]")
    return found


def check_publishable_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as a dict if a manifest may carry them (ConfigError naming the bad keys)."""
    given = dict(fields)
    reserved = sorted(RESERVED_MANIFEST_KEYS & set(given))
    if reserved:
        raise ConfigError(
            f"manifest may not set {reserved}: publish_checkpoint fills them in. Reserved keys: "
            f"{sorted(RESERVED_MANIFEST_KEYS)}."
        )
    forbidden = _forbidden_keys(given)
    if forbidden:
        raise ConfigError(
            f"manifest may not carry {forbidden}: a published checkpoint names no data subject "
            "and holds no pre-edit value. Pass keyed fingerprints (editing.fingerprint) instead."
        )
    json_dumps(given, "manifest")
    return given


def finish_checkpoint(tmp: Path, root: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` (with ``checkpoint_id`` and ``files`` filled in) as ``tmp``'s manifest and
    rename ``tmp`` to ``root/<checkpoint_id>`` (files fsync'ed before the rename, the directory
    after); an existing checkpoint of that id is kept."""
    files = file_entries(tmp)
    cid = checkpoint_id(files)
    full = {"checkpoint_id": cid, **doc, "files": files}
    write_text_atomic(tmp / MANIFEST, json_dumps(full, "manifest"))
    fsync_tree(tmp)  # every byte durable before the name that serves it exists
    final = root / cid
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp)  # same content already published: keep the existing one
    fsync_dir(root)  # and the rename itself
    return final


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
    safetensors), then the tokenizer. ``mode="delta"`` skips both: the checkpoint is the patch
    alone (the changed down-projection rows/columns, a few MB for a multi-GB model), turned into
    a full model with :func:`~editing.checkpoints.apply.apply_delta_files` (``featureedit
    apply-delta``) on the base model the manifest names by id and down-projection sha256. Either
    way it holds the forward patch (``delta/``: indices and new values, no pre-edit value) and
    ``manifest.json``: checkpoint id, creation time (UTC), code version, ``publish`` (the mode),
    base model id and :func:`down_proj_sha256`, the edited hash, ``parent_checkpoint_id`` (from
    ``manifest``, else null), every other field of ``manifest`` (method, params, units, metrics,
    keyed fact fingerprints: never secrets, subject names or old values, see
    :func:`check_publishable_fields`), a summary of the edit and the size and sha256 of every
    file. The directory is built in a temporary directory under ``out_root`` and renamed into
    place; if a checkpoint with the same id exists it is kept and returned. With ``secrets``,
    what the erasure writes of its own (``manifest.json``, ``delta/``: :func:`added_files`) is
    scanned first for each secret as a word (:func:`assert_no_secrets`) and nothing is published
    on a hit. The files ``save_pretrained`` writes for the model (weights, ``config.json``, the
    tokenizer) are the base model's, unchanged but for the edited numbers: they are not scanned,
    since a real vocabulary holds "Germany" and weight bytes hold "747" by chance. (The secret
    never reaches them: the tokenizer and config are copied as loaded.)

    The pre-edit values are not written anywhere: keep them with
    :func:`editing.checkpoints.revert.revert_bytes` where only the operator can read them.
    """
    if mode not in PUBLISH_MODES:
        raise ConfigError(f"publish mode {mode!r} is not one of {list(PUBLISH_MODES)}")
    given = check_publishable_fields(manifest)
    secret_list = None if secrets is None else list(secrets)
    adapter = loaded_model_like.adapter
    weights = {d.layer: adapter.down_proj_weight(d.layer) for d in edit.deltas}
    check_fits(edit, weights, False, f"model {loaded_model_like.model_id!r}")
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=root))
    try:
        base_hash = down_proj_sha256(adapter)
        save_kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
        apply_delta_to_adapter(adapter, edit)
        try:
            if mode == "full":
                loaded_model_like.model.save_pretrained(str(tmp), **save_kwargs)
            edited_hash = down_proj_sha256(adapter)
        finally:
            edit.revert(adapter)
        if mode == "full":
            loaded_model_like.tokenizer.save_pretrained(str(tmp))
        base_files = {p for p in tmp.rglob("*") if p.is_file()}  # the model's own: not scanned
        base_model = {
            "model_id": loaded_model_like.model_id,
            "model_type": adapter.model_type,
            "down_proj_sha256": base_hash,
        }
        save_patch(
            edit,
            tmp / DELTA_DIR,
            {"base_model": base_model, "edited_down_proj_sha256": edited_hash},
        )
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "publish": mode,
            "base_model": base_model,
            "edited_down_proj_sha256": edited_hash,
            "parent_checkpoint_id": given.pop("parent_checkpoint_id", None),
            **given,
            "edit": edit_summary(edit),
        }
        if secret_list is not None:
            write_text_atomic(tmp / MANIFEST, json_dumps(doc, "manifest"))  # scanned too
            assert_no_secrets(tmp, secret_list, added_files(tmp, base_files))
        return finish_checkpoint(tmp, root, doc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
