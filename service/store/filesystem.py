""":class:`FilesystemStore`: the :class:`~service.store.base.Store` protocol on a directory.

Layout under the root (by default ``$FEATUREEDIT_HOME/store``)::

    erasures/<id>.json          ErasureRecord (atomic writes: temp file + rename; per-id lock)
    requests/<id>.bin           the request body (with secrets), encrypted; deleted when the job
                                ends
    reports/<id>.json           the compliance report (no secret)
    checkpoints/<checkpoint_id>/  published checkpoints (content-addressed, see editing.checkpoints)
    checkpoints/<checkpoint_id>.owner.json  {"tenant", "erasure_id"}; a migrated checkpoint's old
                                id keeps one with "moved_to": its new id
    private/<id>/<name>.sealed  the operator's private erasure data, sealed with the service key:
                                ``revert`` (pre-edit values) and ``subjects`` (names); never
                                served by any route, deleted under ``Settings.private_retention``
    idempotency/<tenant>/<sha256(key)>   the erasure id an Idempotency-Key maps to

plus, private to the filesystem backend, ``locks/`` (flock files serialising updates of one record
and creations under one idempotency key, across processes) and ``index/<tenant>/<id>`` (empty
files listing a tenant's erasures; ids sort by creation time, see
:func:`~service.store.base.new_erasure_id`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editing.checkpoints.manifest import fsync_tree
from service.records import ErasureRecord, utcnow
from service.store.base import (
    check_private_name,
    check_tenant,
    file_lock,
    page_of_records,
    valid_id,
    valid_tenant,
    write_atomic,
)
from service.store.leftovers import Leftovers, sweep_leftovers

MIN_FREE_BYTES = 64 * 1024  # below this the store is not ready (a record write would fail)
SUBDIRS = (
    "erasures",
    "requests",
    "reports",
    "checkpoints",
    "idempotency",
    "locks",
    "index",
    "private",
)


class FilesystemStore:
    """:class:`Store` on a local (or NFS with working ``flock``) directory; see the module doc.

    Safe for concurrent use by threads and processes sharing ``root``: every file is written
    atomically (temporary file + ``os.replace``), records are updated under a per-id ``flock``,
    and creations with one idempotency key are serialised by a per-key ``flock``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for sub in SUBDIRS:
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- paths
    def _record_path(self, erasure_id: str) -> Path:
        return self.root / "erasures" / f"{erasure_id}.json"

    def _blob_path(self, erasure_id: str) -> Path:
        return self.root / "requests" / f"{erasure_id}.bin"

    def _report_path(self, erasure_id: str) -> Path:
        return self.root / "reports" / f"{erasure_id}.json"

    def _lock_path(self, name: str) -> Path:
        return self.root / "locks" / f"{name}.lock"

    _check_tenant = staticmethod(check_tenant)

    @staticmethod
    def _valid_id(value: str) -> bool:
        return valid_id(value)

    # -- erasures
    def _read_record(self, erasure_id: str) -> ErasureRecord | None:
        try:
            raw = self._record_path(erasure_id).read_bytes()
        except FileNotFoundError:
            return None
        return ErasureRecord.model_validate_json(raw)

    def _write_record(self, record: ErasureRecord) -> None:
        write_atomic(self._record_path(record.id), record.model_dump_json().encode())

    def create_erasure(
        self, record: ErasureRecord, encrypted_request: bytes, idempotency_key: str | None = None
    ) -> tuple[ErasureRecord, bool]:
        """Persist a new erasure; with a known idempotency key, the existing one (see Store).

        The blob is written before the record, and the record before the idempotency mapping,
        so a reader never sees a record without its request nor a mapping without its record.
        Creations with one (tenant, key) are serialised by a lock, so concurrent requests with
        the same key create exactly one erasure.
        """
        self._check_tenant(record.tenant)
        if not self._valid_id(record.id):
            raise ValueError(f"invalid erasure id {record.id!r}")
        if idempotency_key is None:
            self._create(record, encrypted_request)
            return record, True
        digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
        mapping = self.root / "idempotency" / record.tenant / digest
        with file_lock(self._lock_path(f"idem-{record.tenant}-{digest}")):
            try:
                existing_id = mapping.read_text(encoding="ascii").strip()
            except FileNotFoundError:
                existing_id = ""
            if existing_id:
                existing = self._read_record(existing_id)
                if existing is not None:
                    return existing, False
            self._create(record, encrypted_request)
            mapping.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(mapping, record.id.encode("ascii"))
        return record, True

    def _create(self, record: ErasureRecord, encrypted_request: bytes) -> None:
        path = self._record_path(record.id)
        if path.exists():
            raise FileExistsError(errno.EEXIST, "erasure id already exists", record.id)
        write_atomic(self._blob_path(record.id), encrypted_request)
        self._write_record(record)
        index = self.root / "index" / record.tenant
        index.mkdir(mode=0o700, parents=True, exist_ok=True)
        (index / record.id).touch()

    def get_erasure(self, erasure_id: str) -> ErasureRecord | None:
        """The record, or None (also for malformed ids)."""
        if not self._valid_id(erasure_id):
            return None
        return self._read_record(erasure_id)

    def list_erasures(
        self, tenant: str, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[ErasureRecord], str | None]:
        """A tenant's erasures, newest first (by id); the cursor is the last id returned.

        Raises ValueError for a malformed cursor.
        """
        if not valid_tenant(tenant):
            return [], None
        if cursor is not None and not self._valid_id(cursor):
            raise ValueError("invalid cursor")
        limit = max(1, limit)
        try:
            ids = sorted(os.listdir(self.root / "index" / tenant), reverse=True)
        except FileNotFoundError:
            return [], None
        newer = (i for i in ids if cursor is None or i < cursor)
        return page_of_records((self._read_record(i) for i in newer), tenant, status, limit)

    def update_erasure(
        self, erasure_id: str, mutate: Callable[[ErasureRecord], None]
    ) -> ErasureRecord:
        """Load, mutate and save under the record's lock; KeyError if there is no such record.

        ``updated_at`` is refreshed. If ``mutate`` raises, nothing is written.
        """
        if not self._valid_id(erasure_id):
            raise KeyError(erasure_id)
        with file_lock(self._lock_path(f"erasure-{erasure_id}")):
            record = self._read_record(erasure_id)
            if record is None:
                raise KeyError(erasure_id)
            mutate(record)
            record.updated_at = utcnow()
            self._write_record(record)
            return record

    # -- encrypted request blobs
    def get_request_blob(self, erasure_id: str) -> bytes | None:
        """The encrypted request, or None once deleted."""
        if not self._valid_id(erasure_id):
            return None
        try:
            return self._blob_path(erasure_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete_request_blob(self, erasure_id: str) -> None:
        """Forget the encrypted request (idempotent)."""
        if self._valid_id(erasure_id):
            self._blob_path(erasure_id).unlink(missing_ok=True)

    # -- reports
    def put_report(self, erasure_id: str, report: dict[str, Any]) -> None:
        """Store the compliance report (JSON; must hold no secret)."""
        if not self._valid_id(erasure_id):
            raise ValueError(f"invalid erasure id {erasure_id!r}")
        data = json.dumps(report, ensure_ascii=False, allow_nan=False).encode("utf-8")
        write_atomic(self._report_path(erasure_id), data)

    def get_report(self, erasure_id: str) -> dict[str, Any] | None:
        """The report, or None."""
        if not self._valid_id(erasure_id):
            return None
        try:
            return json.loads(self._report_path(erasure_id).read_bytes())
        except FileNotFoundError:
            return None

    # -- checkpoints
    def checkpoint_root(self) -> Path:
        """``<root>/checkpoints``: where ``publish_checkpoint`` writes."""
        return self.root / "checkpoints"

    def register_checkpoint(self, checkpoint_id: str, tenant: str, erasure_id: str) -> None:
        """Write ``checkpoints/<id>.owner.json``, after fsync'ing the checkpoint's files and
        directories: a checkpoint is served only once its bytes are durable."""
        if not self._valid_id(checkpoint_id):
            raise ValueError(f"invalid checkpoint id {checkpoint_id!r}")
        self._check_tenant(tenant)
        directory = self.checkpoint_root() / checkpoint_id
        if directory.is_dir():
            fsync_tree(directory)
        doc = {"tenant": tenant, "erasure_id": erasure_id}
        write_atomic(
            self.checkpoint_root() / f"{checkpoint_id}.owner.json", json.dumps(doc).encode()
        )

    def checkpoint_owner(self, checkpoint_id: str) -> dict[str, str] | None:
        """``{"tenant", "erasure_id"}``, or None (also for malformed ids)."""
        if not self._valid_id(checkpoint_id):
            return None
        try:
            raw = (self.checkpoint_root() / f"{checkpoint_id}.owner.json").read_bytes()
        except FileNotFoundError:
            return None
        return json.loads(raw)

    def checkpoint_dir(self, checkpoint_id: str) -> Path | None:
        """``checkpoints/<id>/`` if it exists."""
        if not self._valid_id(checkpoint_id):
            return None
        path = self.checkpoint_root() / checkpoint_id
        return path if path.is_dir() else None

    def list_checkpoints(self) -> list[str]:
        """Ids of every checkpoint directory under ``checkpoints/``."""
        root = self.checkpoint_root()
        return sorted(p.name for p in root.iterdir() if p.is_dir() and self._valid_id(p.name))

    def alias_checkpoint(self, old_id: str, new_id: str) -> None:
        """Point ``old_id``'s owner entry at ``new_id`` (``moved_to``); KeyError if unowned."""
        owner = self.checkpoint_owner(old_id)
        if owner is None or not self._valid_id(new_id):
            raise KeyError(old_id)
        doc = {**owner, "moved_to": new_id}
        write_atomic(self.checkpoint_root() / f"{old_id}.owner.json", json.dumps(doc).encode())

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Remove ``checkpoints/<id>/`` (idempotent)."""
        if self._valid_id(checkpoint_id):
            shutil.rmtree(self.checkpoint_root() / checkpoint_id, ignore_errors=True)

    # -- the operator's private erasure data (sealed)
    def _private_path(self, erasure_id: str, name: str) -> Path:
        check_private_name(name)
        if not self._valid_id(erasure_id):
            raise ValueError(f"invalid erasure id {erasure_id!r}")
        return self.root / "private" / erasure_id / f"{name}.sealed"

    def put_private(self, erasure_id: str, name: str, sealed: bytes) -> None:
        """Write ``private/<id>/<name>.sealed`` (mode 0600)."""
        path = self._private_path(erasure_id, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, sealed)

    def get_private(self, erasure_id: str, name: str) -> bytes | None:
        """The sealed datum, or None."""
        try:
            return self._private_path(erasure_id, name).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def delete_private(self, erasure_id: str, name: str | None = None) -> None:
        """Remove ``private/<id>/<name>.sealed``, or all of ``private/<id>/`` (idempotent)."""
        if name is not None:
            self._private_path(erasure_id, name).unlink(missing_ok=True)
        elif self._valid_id(erasure_id):
            shutil.rmtree(self.root / "private" / erasure_id, ignore_errors=True)

    # -- health and statistics
    def ready(self) -> bool:
        """Whether the store's directories exist and may be written here, and its filesystem
        has :data:`MIN_FREE_BYTES` free (a readiness probe: reads metadata, writes nothing)."""
        try:
            fs = os.statvfs(self.root)
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize >= MIN_FREE_BYTES and all(
            (self.root / sub).is_dir() and os.access(self.root / sub, os.W_OK | os.X_OK)
            for sub in SUBDIRS
        )

    def sweep_leftovers(self, stale_seconds: float) -> Leftovers:
        """Sweep what killed processes left (:func:`~service.store.leftovers.sweep_leftovers`)."""
        return sweep_leftovers(self, stale_seconds, record_root=self.root)

    def writable(self) -> bool:
        """Whether a probe file can be written and removed under the root."""
        probe = self.root / "locks" / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            write_atomic(probe, b"ok")
            probe.unlink()
        except OSError:
            return False
        return True

    def count_by_status(self) -> dict[str, int]:
        """Number of erasures per status, over all tenants (reads every record: for /metrics)."""
        counts: dict[str, int] = {}
        for path in (self.root / "erasures").glob("*.json"):
            try:
                status = json.loads(path.read_bytes()).get("status", "unknown")
            except (OSError, ValueError):
                continue
            counts[status] = counts.get(status, 0) + 1
        return counts
