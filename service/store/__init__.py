"""Durable store of erasures, encrypted request blobs, reports and published checkpoints.

Redis is the queue, not the database: everything that must survive lives here.

* :mod:`service.store.base`: the :class:`Store` protocol and the helpers every backend shares
  (ids, tenants, :func:`record_event`, atomic writes, locks);
* :mod:`service.store.filesystem`: :class:`FilesystemStore`, the default backend, on the local
  filesystem under ``$FEATUREEDIT_HOME/store``;
* :mod:`service.store.s3`: :class:`~service.store.s3.S3Store`, on an S3-compatible bucket
  (imported only when chosen: it needs boto3);
* :mod:`service.store.transitions`: how a record ends (terminal status once, blob deleted,
  private-data retention) or goes back to the queue, for the API and the workers alike.

:func:`get_store` chooses a backend from ``Settings.store_backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.store.base import (
    PRIVATE_NAMES,
    TENANT_RE,
    Store,
    check_private_name,
    check_tenant,
    file_lock,
    new_erasure_id,
    page_of_records,
    record_event,
    store_ready,
    valid_id,
    valid_tenant,
    write_atomic,
)
from service.store.filesystem import FilesystemStore

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "PRIVATE_NAMES",
    "TENANT_RE",
    "FilesystemStore",
    "Store",
    "check_private_name",
    "check_tenant",
    "file_lock",
    "get_store",
    "new_erasure_id",
    "page_of_records",
    "record_event",
    "store_ready",
    "valid_id",
    "valid_tenant",
    "write_atomic",
]


def get_store(settings: Settings) -> Store:
    """The store ``settings.store_backend`` names: the filesystem store under
    ``settings.store_dir`` (default) or :class:`~service.store.s3.S3Store` (``"s3"``)."""
    if settings.store_backend == "s3":
        from service.store.s3 import S3Store  # boto3 only when used

        return S3Store.from_settings(settings)
    return FilesystemStore(settings.store_dir)
