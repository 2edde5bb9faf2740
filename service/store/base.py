"""The :class:`Store` protocol and the helpers every backend shares.

Redis is the queue, not the database: everything that must survive lives in a store. Backends:
:class:`~service.store.filesystem.FilesystemStore` (the local filesystem under
``$FEATUREEDIT_HOME/store``, the default) and :class:`~service.store.s3.S3Store` (an
S3-compatible bucket); :func:`service.store.get_store` chooses one from
``Settings.store_backend``.

Conventions shared by the API and the workers (see also :func:`record_event` and
:mod:`service.store.transitions`):

* ``history`` holds every status change; ``seq`` counts from 0 (the "queued" event written at
  creation) and grows by one per event. SSE streams resume from a ``seq``.
* Change a record only through :meth:`Store.update_erasure` (read-modify-write under a lock);
  a worker starting a job must check inside its mutation that the status is still "queued" (the
  API may have cancelled it meanwhile), and stop when ``cancel_requested`` becomes true.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from editing.checkpoints.manifest import fsync_dir
from service.records import ErasureRecord, Status, StatusEvent


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

    def delete_private(self, erasure_id: str, name: str | None = None) -> None:
        """Forget one private datum of an erasure (``name``), or every one (idempotent)."""
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
# while a chunked erasure runs (service.private_records.keep_chunk): a chunk's edit, the
# merged edit, a fact range's evaluation of it
CHUNK_NAME_RE = re.compile(r"(?:chunk|eval)-[0-9]{1,5}|merged")


def check_private_name(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`PRIVATE_NAMES` or a chunked erasure's part
    (``chunk-<n>``, ``merged``, ``eval-<n>``)."""
    if name not in PRIVATE_NAMES and not CHUNK_NAME_RE.fullmatch(name):
        raise ValueError(
            f"private data name {name!r} is not one of {sorted(PRIVATE_NAMES)} nor chunk-<n>, "
            "merged, eval-<n>"
        )


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


READY_PROBE_ID = "er_readiness_probe"  # never a real id (new_erasure_id makes others)


def store_ready(store: Store) -> bool:
    """Whether ``store`` answers, without writing: its own ``ready()`` if it has one, else a
    read of a record that does not exist."""
    ready = getattr(store, "ready", None)
    try:
        if callable(ready):
            return bool(ready())
        store.get_erasure(READY_PROBE_ID)
    except Exception:  # any backend error (OSError, botocore...) means "not ready"
        return False
    return True


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
        fsync_dir(path.parent)
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
