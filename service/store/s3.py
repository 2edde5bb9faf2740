""":class:`S3Store`: the :class:`~service.store.Store` protocol on an S3-compatible object store.

For deployments whose API and workers share no filesystem (several hosts, Kubernetes). Objects
under ``s3://<bucket>/<prefix>/``::

    erasures/<id>.json                  ErasureRecord
    requests/<id>.bin                   the encrypted request body (deleted when the job ends)
    reports/<id>.json                   the compliance report (no secret)
    index/<tenant>/<inverted id>        empty; lists a tenant's erasures newest first (below)
    idempotency/<tenant>/<sha256(key)>  the erasure id an Idempotency-Key maps to
    locks/erasure-<id>                  short lease serialising updates of one record
    checkpoints/<checkpoint_id>/<file>  published checkpoint files, ``manifest.json`` last
    checkpoints/<checkpoint_id>.owner.json  {"tenant", "erasure_id"}, written after the manifest
                                        (with "moved_to" once a migration moved the checkpoint)
    private/<id>/<name>                 the operator's sealed private data (revert, subjects)

Concurrency uses S3 conditional writes (``If-None-Match: *`` and ``If-Match: <ETag>`` on
PutObject; AWS S3 since 2024, MinIO, moto; a 412 answers a failed condition):

* **Creations** put the record with ``If-None-Match: *`` (an id is never overwritten). With an
  idempotency key, blob and record are written first, then the key's mapping with
  ``If-None-Match: *``: exactly one concurrent creator wins; the losers delete what they wrote and
  return the winner's record. A tenant's index entry is written only by the winner, so a list never
  shows a loser.
* **Updates** (:meth:`S3Store.update_erasure`) take a lease on ``locks/erasure-<id>`` (created with
  ``If-None-Match: *``; a lease older than ``lock_ttl`` by the server's clock is taken over with
  ``If-Match`` on its ETag, so one taker wins), then read the record with its ETag, mutate it once
  and write it with ``If-Match``. The lease keeps ``mutate`` to one run per update (callers'
  closures count on it); the ETag check still refuses a lost update should a lease be taken over
  from a holder that stalled longer than ``lock_ttl``; then the update is retried on the fresh
  record.
* **Lists**: S3 lists keys in ascending order only, so index keys hold the erasure id with every
  hex digit ``d`` replaced by ``f - d``: ascending inverted ids are newest-first ids, and a cursor
  is a ``StartAfter``.
* **Checkpoints** are built locally: :meth:`S3Store.checkpoint_root` is a staging directory in
  the local cache where ``editing.checkpoints.publish_checkpoint`` writes a complete checkpoint;
  :meth:`S3Store.register_checkpoint` then uploads every file the manifest lists (checking size and
  sha256), ``manifest.json`` last, then the owner object. A checkpoint counts as published when
  its manifest object exists, so a half-uploaded one is never visible (a crashed upload is redone
  by the job's retry; content-addressed keys make re-uploads idempotent).
  :meth:`S3Store.checkpoint_dir` downloads a checkpoint into ``<cache>/checkpoints/<id>/`` (into a
  temporary directory first, every file verified against the manifest, then renamed into place)
  and reuses it afterwards: checkpoint ids are content hashes, so a cached copy never goes stale.

The building blocks live beside this module: :mod:`service.store.s3_objects` (conditional
writes, listing, the lease) and :mod:`service.store.s3_checkpoints` (verified upload and
download of checkpoint files).

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance or pod role); bucket, prefix, endpoint and region from
:class:`service.config.Settings` (``FEATUREEDIT_S3_*``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.checkpoint_files import MANIFEST
from service.records import ErasureRecord, utcnow
from service.store.base import (
    check_private_name,
    check_tenant,
    page_of_records,
    valid_id,
    valid_tenant,
)
from service.store.s3_checkpoints import checkpoint_key, download_checkpoint, upload_checkpoint
from service.store.s3_objects import S3Objects, S3StoreError, make_client

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["S3Store", "S3StoreError", "invert_id"]

log = logging.getLogger(__name__)

_HEX_INVERT = str.maketrans("0123456789abcdef", "fedcba9876543210")


def invert_id(erasure_id: str) -> str:
    """``erasure_id`` with each lowercase hex digit ``d`` replaced by ``f - d`` (an involution).

    Ids from :func:`service.store.new_erasure_id` sort by time, so inverted ids sort newest first.
    """
    return erasure_id.translate(_HEX_INVERT)


class S3Store:
    """:class:`~service.store.base.Store` on an S3-compatible bucket; see the module docstring."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "featureedit",
        cache_dir: str | os.PathLike[str],
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        lock_ttl: float = 30.0,
        lock_timeout: float = 60.0,
    ) -> None:
        self.objects = S3Objects(
            client if client is not None else make_client(endpoint_url, region), bucket, prefix
        )
        self.cache_dir = Path(cache_dir)
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        self._download_lock = threading.Lock()
        for sub in ("staging", "checkpoints"):
            (self.cache_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        """The store ``settings`` describe (``FEATUREEDIT_S3_*``)."""
        if not settings.s3_bucket:
            raise ValueError("FEATUREEDIT_S3_BUCKET must be set when FEATUREEDIT_STORE_BACKEND=s3")
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            cache_dir=settings.s3_cache_dir or settings.home / "s3-cache",
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )

    _check_tenant = staticmethod(check_tenant)

    # ------------------------------------------------------------------ erasures
    def _record_key(self, erasure_id: str) -> str:
        return self.objects.key("erasures", f"{erasure_id}.json")

    def _blob_key(self, erasure_id: str) -> str:
        return self.objects.key("requests", f"{erasure_id}.bin")

    def _index_key(self, tenant: str, erasure_id: str) -> str:
        return self.objects.key("index", tenant, invert_id(erasure_id))

    def create_erasure(
        self, record: ErasureRecord, encrypted_request: bytes, idempotency_key: str | None = None
    ) -> tuple[ErasureRecord, bool]:
        """Persist a new erasure; with a known idempotency key, the existing one (see Store)."""
        self._check_tenant(record.tenant)
        if not valid_id(record.id):
            raise ValueError(f"invalid erasure id {record.id!r}")
        mapping = None
        if idempotency_key is not None:
            digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
            mapping = self.objects.key("idempotency", record.tenant, digest)
            existing = self._existing_for_key(mapping)
            if existing is not None:
                return existing, False
        if not self.objects.put(self._blob_key(record.id), encrypted_request, if_none_match=True):
            raise FileExistsError(f"erasure id {record.id} already exists")
        if not self.objects.put(
            self._record_key(record.id), record.model_dump_json().encode(), if_none_match=True
        ):
            raise FileExistsError(f"erasure id {record.id} already exists")
        if mapping is not None and not self.objects.put(
            mapping, record.id.encode("ascii"), if_none_match=True
        ):
            existing = self._existing_for_key(mapping)
            self.objects.delete(self._record_key(record.id))
            self.objects.delete(self._blob_key(record.id))
            if existing is not None:
                return existing, False
            raise S3StoreError("idempotency mapping points to a missing erasure")
        self.objects.put(self._index_key(record.tenant, record.id), b"")
        return record, True

    def _existing_for_key(self, mapping: str) -> ErasureRecord | None:
        got = self.objects.get(mapping)
        if got is None:
            return None
        return self.get_erasure(got[0].decode("ascii").strip())

    def get_erasure(self, erasure_id: str) -> ErasureRecord | None:
        """The record, or None (also for malformed ids)."""
        if not valid_id(erasure_id):
            return None
        got = self.objects.get(self._record_key(erasure_id))
        return None if got is None else ErasureRecord.model_validate_json(got[0])

    def list_erasures(
        self, tenant: str, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[ErasureRecord], str | None]:
        """A tenant's erasures, newest first; the cursor is the last id returned.

        Raises ValueError for a malformed cursor.
        """
        if not valid_tenant(tenant):
            return [], None
        if cursor is not None and not valid_id(cursor):
            raise ValueError("invalid cursor")
        limit = max(1, limit)
        prefix = self.objects.key("index", tenant) + "/"
        start = prefix + invert_id(cursor) if cursor is not None else None
        keys = self.objects.keys(prefix, start_after=start)
        records = (self.get_erasure(invert_id(key[len(prefix) :])) for key in keys)
        return page_of_records(records, tenant, status, limit)

    def update_erasure(
        self, erasure_id: str, mutate: Callable[[ErasureRecord], None]
    ) -> ErasureRecord:
        """Load, mutate and save under the record's lease, written with ``If-Match``.

        KeyError if there is no such record; if ``mutate`` raises, nothing is written.
        ``mutate`` runs once, unless the lease was taken over from this process (it stalled for
        longer than ``lock_ttl``): then it runs again on the fresh record.
        """
        if not valid_id(erasure_id):
            raise KeyError(erasure_id)
        key = self._record_key(erasure_id)
        with self.objects.lease(f"erasure-{erasure_id}", self.lock_ttl, self.lock_timeout):
            for _ in range(10):
                got = self.objects.get(key)
                if got is None:
                    raise KeyError(erasure_id)
                record = ErasureRecord.model_validate_json(got[0])
                mutate(record)
                record.updated_at = utcnow()
                if self.objects.put(key, record.model_dump_json().encode(), if_match=got[1]):
                    return record
                log.warning("erasure %s changed under a stale lease; updating again", erasure_id)
        raise S3StoreError(f"erasure {erasure_id} keeps changing concurrently; try again")

    # ------------------------------------------------------------------ blobs and reports
    def get_request_blob(self, erasure_id: str) -> bytes | None:
        """The encrypted request, or None once deleted."""
        if not valid_id(erasure_id):
            return None
        got = self.objects.get(self._blob_key(erasure_id))
        return None if got is None else got[0]

    def delete_request_blob(self, erasure_id: str) -> None:
        """Forget the encrypted request (idempotent)."""
        if valid_id(erasure_id):
            self.objects.delete(self._blob_key(erasure_id))

    def put_report(self, erasure_id: str, report: dict[str, Any]) -> None:
        """Store the compliance report (JSON; must hold no secret)."""
        if not valid_id(erasure_id):
            raise ValueError(f"invalid erasure id {erasure_id!r}")
        data = json.dumps(report, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.objects.put(self.objects.key("reports", f"{erasure_id}.json"), data)

    def get_report(self, erasure_id: str) -> dict[str, Any] | None:
        """The report, or None."""
        if not valid_id(erasure_id):
            return None
        got = self.objects.get(self.objects.key("reports", f"{erasure_id}.json"))
        return None if got is None else json.loads(got[0])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_root(self) -> Path:
        """``<cache>/staging``: where checkpoints are built before :meth:`register_checkpoint`."""
        return self.cache_dir / "staging"

    def _owner_key(self, checkpoint_id: str) -> str:
        return self.objects.key("checkpoints", f"{checkpoint_id}.owner.json")

    def register_checkpoint(self, checkpoint_id: str, tenant: str, erasure_id: str) -> None:
        """Upload the staged checkpoint (files, then the manifest), then record its owner.

        The staged directory then moves into the local cache. ValueError if the checkpoint is
        neither staged nor already uploaded, or a staged file does not match its manifest.
        """
        if not valid_id(checkpoint_id):
            raise ValueError(f"invalid checkpoint id {checkpoint_id!r}")
        self._check_tenant(tenant)
        staged = self.checkpoint_root() / checkpoint_id
        manifest_key = checkpoint_key(self.objects, checkpoint_id, MANIFEST)
        if staged.is_dir():
            if not self.objects.exists(manifest_key):
                upload_checkpoint(self.objects, checkpoint_id, staged)
            self._adopt_into_cache(checkpoint_id, staged)
        elif not self.objects.exists(manifest_key):
            raise ValueError(
                f"checkpoint {checkpoint_id} is neither staged under {self.checkpoint_root()} "
                "nor uploaded; publish it there first"
            )
        doc = {"tenant": tenant, "erasure_id": erasure_id}
        self.objects.put(self._owner_key(checkpoint_id), json.dumps(doc).encode())

    def _adopt_into_cache(self, checkpoint_id: str, staged: Path) -> None:
        target = self.cache_dir / "checkpoints" / checkpoint_id
        try:
            staged.rename(target)
        except OSError:  # already cached (or a concurrent adoption won)
            shutil.rmtree(staged, ignore_errors=True)

    def checkpoint_owner(self, checkpoint_id: str) -> dict[str, str] | None:
        """``{"tenant", "erasure_id"}``, or None (also for malformed ids)."""
        if not valid_id(checkpoint_id):
            return None
        got = self.objects.get(self._owner_key(checkpoint_id))
        return None if got is None else json.loads(got[0])

    def checkpoint_dir(self, checkpoint_id: str) -> Path | None:
        """The checkpoint in the local cache, downloaded first if needed; None if unpublished."""
        if not valid_id(checkpoint_id):
            return None
        target = self.cache_dir / "checkpoints" / checkpoint_id
        if (target / MANIFEST).is_file():
            return target
        with self._download_lock:  # one download per process; others wait for it
            if (target / MANIFEST).is_file():
                return target
            got = self.objects.get(checkpoint_key(self.objects, checkpoint_id, MANIFEST))
            if got is None:
                return None
            download_checkpoint(self.objects, checkpoint_id, got[0], target)
        return target

    def list_checkpoints(self) -> list[str]:
        """Ids of every checkpoint whose manifest is in the bucket."""
        prefix = self.objects.key("checkpoints") + "/"
        ids = set()
        for key in self.objects.keys(prefix):
            rest = key[len(prefix) :]
            if rest.endswith("/" + MANIFEST) and rest.count("/") == 1:
                ids.add(rest.split("/", 1)[0])
        return sorted(i for i in ids if valid_id(i))

    def alias_checkpoint(self, old_id: str, new_id: str) -> None:
        """Point ``old_id``'s owner object at ``new_id`` (``moved_to``); KeyError if unowned."""
        owner = self.checkpoint_owner(old_id)
        if owner is None or not valid_id(new_id):
            raise KeyError(old_id)
        doc = {**owner, "moved_to": new_id}
        self.objects.put(self._owner_key(old_id), json.dumps(doc).encode())

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Delete a checkpoint's objects (manifest first, so it stops counting as published) and
        its cached copy."""
        if not valid_id(checkpoint_id):
            return
        self.objects.delete(checkpoint_key(self.objects, checkpoint_id, MANIFEST))
        for key in list(self.objects.keys(self.objects.key("checkpoints", checkpoint_id) + "/")):
            self.objects.delete(key)
        shutil.rmtree(self.cache_dir / "checkpoints" / checkpoint_id, ignore_errors=True)

    # ------------------------------------------------------------------ private erasure data
    def _private_key(self, erasure_id: str, name: str) -> str:
        check_private_name(name)
        if not valid_id(erasure_id):
            raise ValueError(f"invalid erasure id {erasure_id!r}")
        return self.objects.key("private", erasure_id, name)

    def put_private(self, erasure_id: str, name: str, sealed: bytes) -> None:
        """Keep a sealed private datum of an erasure."""
        self.objects.put(self._private_key(erasure_id, name), sealed)

    def get_private(self, erasure_id: str, name: str) -> bytes | None:
        """The sealed datum, or None."""
        try:
            got = self.objects.get(self._private_key(erasure_id, name))
        except ValueError:
            return None
        return None if got is None else got[0]

    def delete_private(self, erasure_id: str, name: str | None = None) -> None:
        """Delete one private datum of an erasure (``name``), or every one (idempotent)."""
        if name is not None:
            self.objects.delete(self._private_key(erasure_id, name))
        elif valid_id(erasure_id):
            for key in list(self.objects.keys(self.objects.key("private", erasure_id) + "/")):
                self.objects.delete(key)

    # ------------------------------------------------------------------ health and statistics
    def writable(self) -> bool:
        """Whether a probe object can be written and deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.objects.key("locks", f".probe-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            self.objects.put(key, b"ok")
            self.objects.delete(key)
        except (BotoCoreError, ClientError):
            return False
        return True

    def count_by_status(self) -> dict[str, int]:
        """Number of erasures per status (reads every record: for /metrics)."""
        counts: dict[str, int] = {}
        for key in self.objects.keys(self.objects.key("erasures") + "/"):
            got = self.objects.get(key)
            if got is None:
                continue
            try:
                status = json.loads(got[0]).get("status", "unknown")
            except ValueError:
                continue
            counts[status] = counts.get(status, 0) + 1
        return counts
