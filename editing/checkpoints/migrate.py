"""Rewriting format-1 checkpoints, which carried their own undo, into format 2.

A format-1 checkpoint's ``delta/`` held the pre-edit values of every edited entry (``old``) and its
manifest named each fact's subject. :func:`migrate_checkpoint` writes a format-2 checkpoint from
it — the same weights and side files, a forward patch instead of the delta, facts named by keyed
fingerprints — under its new content-addressed id, and hands the pre-edit values and subject
names back to the caller, who keeps them in the operator's private record (the service's
``featureedit checkpoints migrate`` does). The old directory is left for the caller to delete once
the private data is safe.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editing.checkpoints.manifest import (
    DELTA_DIR,
    MANIFEST_FORMAT_VERSION,
    read_manifest,
)
from editing.checkpoints.patch import DELTA_JSON, read_patch_json, save_patch
from editing.checkpoints.publish import _forbidden_keys, edit_summary, finish_checkpoint
from editing.checkpoints.revert import load_legacy_delta
from editing.edits import Edit
from editing.errors import ConfigError
from editing.fingerprint import subject_fingerprint


@dataclass
class MigratedCheckpoint:
    """A migrated checkpoint and the private data the migration took out of it."""

    old_id: str
    new_id: str
    directory: Path
    revert: Edit  # the full edit, pre-edit values included: keep it private
    subjects: list[dict[str, Any]] = field(default_factory=list)  # {"subject", "relation"}


def is_legacy(directory: str | Path) -> bool:
    """Whether the checkpoint in ``directory`` is of a format older than this one writes."""
    doc = read_manifest(directory, legacy_ok=True)
    return int(doc.get("format_version", 1)) < MANIFEST_FORMAT_VERSION


def _scrub_facts(facts: Any, key: bytes | None) -> tuple[Any, list[dict[str, Any]]]:
    if not isinstance(facts, list):
        return facts, []
    scrubbed, subjects = [], []
    for fact in facts:
        if isinstance(fact, dict) and "subject" in fact:
            subjects.append({"subject": fact["subject"], "relation": fact.get("relation")})
            fact = {k: v for k, v in fact.items() if k != "subject"}
            fact["subject_fingerprint"] = subject_fingerprint(str(subjects[-1]["subject"]), key)
        scrubbed.append(fact)
    return scrubbed, subjects


def migrate_checkpoint(
    directory: str | Path,
    out_root: str | Path,
    *,
    parent_ids: Mapping[str, str] | None = None,
    key: bytes | None = None,
) -> MigratedCheckpoint:
    """Write the format-2 form of the format-1 checkpoint in ``directory`` under ``out_root``.

    ``parent_ids`` maps migrated parents' old ids to their new ones (lineage follows them);
    ``key`` is the fingerprint key (default: the service's). ConfigError if the checkpoint is
    not of format 1. Deterministic: migrating the same checkpoint twice gives the same id.
    """
    src = Path(directory)
    doc = read_manifest(src, legacy_ok=True)
    if int(doc.get("format_version", 1)) >= MANIFEST_FORMAT_VERSION:
        raise ConfigError(f"Checkpoint {src.name} is already in format {MANIFEST_FORMAT_VERSION}.")
    old_id = str(doc.get("checkpoint_id") or src.name)
    edit = load_legacy_delta(src)
    extra = read_patch_json(src, legacy_ok=True).get("extra") or {}
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".migrate-", dir=root))
    try:
        for entry in doc["files"]:
            name = entry["name"]
            if name.split("/", 1)[0] == DELTA_DIR:
                continue
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, target)
        save_patch(edit, tmp / DELTA_DIR, extra)
        facts, subjects = _scrub_facts(doc.get("facts"), key)
        new_doc = {k: v for k, v in doc.items() if k not in ("checkpoint_id", "files")}
        new_doc["format_version"] = MANIFEST_FORMAT_VERSION
        if "facts" in doc:
            new_doc["facts"] = facts
        parent = doc.get("parent_checkpoint_id")
        new_doc["parent_checkpoint_id"] = (parent_ids or {}).get(parent, parent)
        new_doc["edit"] = edit_summary(edit)
        new_doc["migrated_from"] = old_id
        left = _forbidden_keys(new_doc)
        if left:
            raise ConfigError(
                f"Checkpoint {old_id}: its manifest still carries {left} after scrubbing; "
                f"migrate it by hand (see {DELTA_DIR}/{DELTA_JSON} and manifest.json)."
            )
        final = finish_checkpoint(tmp, root, new_doc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MigratedCheckpoint(old_id, final.name, final, edit, subjects)
