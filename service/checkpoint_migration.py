"""Migrating a store's format-1 checkpoints (which carried their own undo) to format 2.

For every format-1 checkpoint, parents before children: the checkpoint is rewritten under its new
content address (:func:`editing.checkpoints.migrate.migrate_checkpoint`); its pre-edit values and
subject names go to the owning erasure's private record (sealed); the new id is registered to
the same owner and the old id becomes an alias (``moved_to``: the API redirects to the new id);
the erasure record and its report are scrubbed (subject names become keyed fingerprints, the
checkpoint id and summary are the new ones); only then is the old checkpoint deleted. A crash
part way leaves the old checkpoint in place, and running the migration again finishes it (the
new id is deterministic). ``featureedit checkpoints migrate`` runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from editing.checkpoints.manifest import MANIFEST_FORMAT_VERSION, checkpoint_summary, read_manifest
from editing.errors import EditingError
from editing.fingerprint import fingerprint_key, subject_fingerprint
from service.private_records import keep_revert_data, keep_subjects
from service.records import ErasureRecord
from service.store import Store

if TYPE_CHECKING:
    from service.config import Settings


@dataclass
class MigrationRow:
    """What happened to one checkpoint."""

    checkpoint_id: str
    status: str  # "current" | "migrated" | "would_migrate" | "error"
    new_id: str | None = None
    erasure_id: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def _scrub_facts(facts: Any, key: bytes) -> Any:
    if not isinstance(facts, list):
        return facts
    out = []
    for fact in facts:
        if isinstance(fact, dict) and "subject" in fact:
            fact = {k: v for k, v in fact.items() if k != "subject"} | {
                "subject_fingerprint": subject_fingerprint(str(fact["subject"]), key)
            }
        out.append(fact)
    return out


def _scrub_record(record: ErasureRecord, old_id: str, new_id: str, key: bytes) -> None:
    if record.checkpoint_id == old_id:
        record.checkpoint_id = new_id
    public = dict(record.request_public)
    public["facts"] = _scrub_facts(public.get("facts"), key)
    record.request_public = public


def _scrub_report(report: dict[str, Any], old_id: str, summary: dict[str, Any], key: bytes) -> None:
    new_id = summary["checkpoint_id"]
    if report.get("checkpoint_id") == old_id:
        report["checkpoint_id"] = new_id
        report["checkpoint"] = summary
    report["facts"] = _scrub_facts(report.get("facts"), key)
    request = report.get("request")
    if isinstance(request, dict):
        report["request"] = {**request, "facts": _scrub_facts(request.get("facts"), key)}
    for layer in (report.get("edit") or {}).get("layers") or []:
        if isinstance(layer, dict) and "old_sha256" in layer:
            layer["base_sha256"] = layer.pop("old_sha256")


def _legacy_checkpoints(store: Store, rows: list[MigrationRow]) -> list[tuple[str, str]]:
    """``(created_at, id)`` of the format-1 checkpoints, oldest (parents) first."""
    legacy = []
    for cid in store.list_checkpoints():
        directory = store.checkpoint_dir(cid)
        if directory is None:
            continue
        try:
            doc = read_manifest(directory, legacy_ok=True)
        except EditingError as exc:
            rows.append(MigrationRow(cid, "error", detail=str(exc)))
            continue
        if int(doc.get("format_version", 1)) >= MANIFEST_FORMAT_VERSION:
            rows.append(MigrationRow(cid, "current"))
        else:
            legacy.append((str(doc.get("created_at") or ""), cid))
    return sorted(legacy)


def migrate_store(
    store: Store,
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[MigrationRow]:
    """Migrate every format-1 checkpoint of ``store`` (see the module doc); one row each."""
    from editing.checkpoints.migrate import migrate_checkpoint
    from editing.checkpoints.revert import local_revert_path, write_revert_file

    rows: list[MigrationRow] = []
    legacy = _legacy_checkpoints(store, rows)
    key = fingerprint_key(settings.home)
    parent_ids: dict[str, str] = {}
    for n, (_, cid) in enumerate(legacy):
        if progress is not None:
            progress(n, len(legacy))
        owner = store.checkpoint_owner(cid) or {}
        erasure_id = owner.get("erasure_id")
        if dry_run:
            rows.append(MigrationRow(cid, "would_migrate", erasure_id=erasure_id))
            continue
        directory = store.checkpoint_dir(cid)
        if directory is None:
            continue
        try:
            done = migrate_checkpoint(
                directory, store.checkpoint_root(), parent_ids=parent_ids, key=key
            )
        except EditingError as exc:
            rows.append(MigrationRow(cid, "error", erasure_id=erasure_id, detail=str(exc)))
            continue
        parent_ids[cid] = done.new_id
        if erasure_id and owner.get("tenant"):
            keep_revert_data(store, erasure_id, done.revert, done.new_id, settings)
            if done.subjects:
                keep_subjects(store, erasure_id, done.subjects, settings)
            store.register_checkpoint(done.new_id, owner["tenant"], erasure_id)
            store.alias_checkpoint(cid, done.new_id)
            summary = checkpoint_summary(store.checkpoint_dir(done.new_id) or done.directory)
            with contextlib.suppress(KeyError):  # a vanished record: checkpoint and alias stay
                store.update_erasure(
                    erasure_id, lambda r, c=cid, i=done.new_id: _scrub_record(r, c, i, key)
                )
            report = store.get_report(erasure_id)
            if report is not None:
                _scrub_report(report, cid, summary, key)
                store.put_report(erasure_id, report)
        else:  # published into the store without an owner: keep its revert data by id
            write_revert_file(
                done.revert, local_revert_path(settings.home, done.new_id), done.new_id
            )
        store.delete_checkpoint(cid)
        rows.append(MigrationRow(cid, "migrated", new_id=done.new_id, erasure_id=erasure_id))
    if progress is not None:
        progress(len(legacy), len(legacy))
    return rows
