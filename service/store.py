"""Durable store of erasures, encrypted request blobs, reports and published checkpoints.

Redis is the queue, not the database: everything that must survive lives here. The default backend
is the local filesystem under ``$FEATUREEDIT_HOME/store``; an S3-compatible backend implements the
same :class:`Store` protocol.

Layout of :class:`FilesystemStore`::

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
files listing a tenant's erasures; ids sort by creation time, see :func:`new_erasure_id`).

Backends: :class:`FilesystemStore` (here) and :class:`service.store_s3.S3Store` (records and
blobs as objects with conditional writes, checkpoints uploaded after a complete local build and
fetched to a local cache by ``checkpoint_dir``); :func:`get_store` chooses one from
``Settings.store_backend``.

Conventions shared by the API and the workers (see also :func:`record_event`):

* ``history`` holds every status change; ``seq`` counts from 0 (the "queued" event written at
  creation) and grows by one per event. SSE streams resume from a ``seq``.
* Change a record only through :meth:`Store.update_erasure` (read-modify-write under a lock);
  a worker starting a job must check inside its mutation that the status is still "queued" (the
  API may have cancelled it meanwhile), and stop when ``cancel_requested`` becomes true.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from service.records import ErasureRecord, Status, StatusEvent, utcnow

if TYPE_CHECKING:
    from service.config import Settings


class Store(Protocol):
    """What the API and the workers need from durable storage."""

    def create_erasure(
        self, record: ErasureRecord, encrypted_request: bytes, idempotency_key: str | None = None
    ) -> tuple[ErasureRecord, bool]:
        """Persist a new erasure (record + encrypted request) atomically.

        With an idempotency key already used by this tenant, returns the existing record and
        False instead (nothing written); otherwise the new record and True.
        """
        ...

    def get_erasure(self, erasure_id: str) -> ErasureRecord | None:
        """The record, or None."""
        ...

    def list_erasures(
        self, tenant: str, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[ErasureRecord], str | None]:
        """A tenant's erasures, newest first, with an opaque cursor for the next page."""
        ...

    def update_erasure(
        self, erasure_id: str, mutate: Callable[[ErasureRecord], None]
    ) -> ErasureRecord:
        """Atomically load, mutate and save a record (serialised per id, across processes)."""
        ...

    def get_request_blob(self, erasure_id: str) -> bytes | None:
        """The encrypted request, or None once deleted."""
        ...

    def delete_request_blob(self, erasure_id: str) -> None:
        """Forget the encrypted request (the secret is no longer needed)."""
        ...

    def put_report(self, erasure_id: str, report: dict[str, Any]) -> None:
        """Store the compliance report (must hold no secret)."""
        ...

    def get_report(self, erasure_id: str) -> dict[str, Any] | None:
        """The report, or None."""
        ...

    def checkpoint_root(self) -> Path:
        """Directory under which ``editing.checkpoints.publish_checkpoint`` writes (staging)."""
        ...

    def register_checkpoint(self, checkpoint_id: str, tenant: str, erasure_id: str) -> None:
        """Record who owns a published checkpoint."""
        ...

    def checkpoint_owner(self, checkpoint_id: str) -> dict[str, str] | None:
        """``{"tenant", "erasure_id"}`` of a checkpoint, or None."""
        ...

    def checkpoint_dir(self, checkpoint_id: str) -> Path | None:
        """Local directory of a published checkpoint (fetched first for remote backends)."""
        ...

    def put_private(self, erasure_id: str, name: str, sealed: bytes) -> None:
        """Keep sealed private data of an erasure (``name``: ``revert`` or ``subjects``)."""
        ...

    def get_private(self, erasure_id: str, name: str) -> bytes | None:
        """Sealed private data of an erasure, or None."""
        ...

    def delete_private(self, erasure_id: str) -> None:
        """Forget every private datum of an erasure (idempotent)."""
        ...

    def list_checkpoints(self) -> list[str]:
        """Ids of every published checkpoint (for operator tooling: the migration)."""
        ...

    def alias_checkpoint(self, old_id: str, new_id: str) -> None:
        """Record that ``old_id`` moved to ``new_id`` (its owner entry says ``moved_to``)."""
        ...

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Remove a checkpoint's files (its owner entry stays, e.g. as an alias)."""
        ...

    def writable(self) -> bool:
        """Whether the store accepts writes now (for /readyz)."""
        ...

    def count_by_status(self) -> dict[str, int]:
        """Number of erasures per status, over all tenants (for /metrics)."""
        ...


# ----------------------------------------------------------------------------- shared helpers
_SAFE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
PRIVATE_NAMES = frozenset({"revert", "subjects"})


def check_private_name(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`PRIVATE_NAMES`."""
    if name not in PRIVATE_NAMES:
        raise ValueError(f"private data name {name!r} is not one of {sorted(PRIVATE_NAMES)}")


TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def valid_id(value: str) -> bool:
    """Whether ``value`` is a safe erasure or checkpoint id (letters, digits, ``_-``; ≤ 128)."""
    return isinstance(value, str) and _SAFE_ID_RE.fullmatch(value) is not None


def new_erasure_id() -> str:
    """A new erasure id, ``er_<12 hex: ms since epoch><12 hex: random>``.

    Ids sort by creation time (to the millisecond), which is what "newest first" lists rely on;
    they are also valid rq job ids (the job id is the erasure id).
    """
    return f"er_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def record_event(
    record: ErasureRecord,
    status: Status,
    *,
    stage: str | None = None,
    progress: float | None = None,
    detail: str | None = None,
) -> StatusEvent:
    """Set ``record``'s status (and stage/progress) and append the matching history event.

    Meant to be called inside an :meth:`Store.update_erasure` mutation. ``seq`` is the previous
    event's plus one (0 for the first). ``detail`` must be user-facing and hold no secret.
    """
    seq = record.history[-1].seq + 1 if record.history else 0
    event = StatusEvent(seq=seq, status=status, stage=stage, progress=progress, detail=detail)
    record.status = status
    record.stage = stage
    if progress is not None:
        record.progress = progress
    record.updated_at = event.at
    record.history.append(event)
    return event


def page_of_records(
    records: Iterable[ErasureRecord | None], tenant: str, status: str | None, limit: int
) -> tuple[list[ErasureRecord], str | None]:
    """The first ``limit`` of ``records`` (newest first) that belong to ``tenant`` and have
    ``status`` (any if None), and the cursor of the next page (None on the last page)."""
    items: list[ErasureRecord] = []
    for record in records:
        if record is None or record.tenant != tenant:
            continue
        if status is not None and record.status != status:
            continue
        if len(items) == limit:
            return items, items[-1].id
        items.append(record)
    return items, None


def valid_tenant(tenant: str) -> bool:
    """Whether ``tenant`` is a valid tenant name (letters, digits, ``._-``; at most 64)."""
    return isinstance(tenant, str) and TENANT_RE.fullmatch(tenant) is not None


def check_tenant(tenant: str) -> None:
    """ValueError saying what a tenant name may contain, unless :func:`valid_tenant`."""
    if not valid_tenant(tenant):
        raise ValueError(
            "tenant names use letters, digits, '.', '_' and '-' (at most 64 characters)"
        )


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if needed): serialises processes *and* threads.

    Each call opens its own file description, so two threads of one process exclude each other
    too (unlike POSIX ``lockf`` locks).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- filesystem store
class FilesystemStore:
    """:class:`Store` on a local (or NFS with working ``flock``) directory; see the module doc.

    Safe for concurrent use by threads and processes sharing ``root``: every file is written
    atomically (temporary file + ``os.replace``), records are updated under a per-id ``flock``,
    and creations with one idempotency key are serialised by a per-key ``flock``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for sub in (
            "erasures",
            "requests",
            "reports",
            "checkpoints",
            "idempotency",
            "locks",
            "index",
            "private",
        ):
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
        """Write ``checkpoints/<id>.owner.json``."""
        if not self._valid_id(checkpoint_id):
            raise ValueError(f"invalid checkpoint id {checkpoint_id!r}")
        self._check_tenant(tenant)
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

    def delete_private(self, erasure_id: str) -> None:
        """Remove ``private/<id>/`` (idempotent)."""
        if self._valid_id(erasure_id):
            shutil.rmtree(self.root / "private" / erasure_id, ignore_errors=True)

    # -- health and statistics
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


def get_store(settings: Settings) -> Store:
    """The store ``settings.store_backend`` names: the filesystem store under
    ``settings.store_dir`` (default) or :class:`~service.store_s3.S3Store` (``"s3"``)."""
    if settings.store_backend == "s3":
        from service.store_s3 import S3Store  # boto3 only when used

        return S3Store.from_settings(settings)
    return FilesystemStore(settings.store_dir)
