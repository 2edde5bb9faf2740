"""Checkpoint files between a local directory and the bucket, every file checked against the
manifest: the upload of a staged checkpoint (files first, ``manifest.json`` last, so a
half-uploaded checkpoint is never visible) and the verified download into a local cache.

Objects: ``checkpoints/<checkpoint_id>/<file>`` (see :mod:`service.store.s3`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from service.checkpoint_files import MANIFEST, file_sha256, is_safe_name, read_manifest
from service.store.s3_objects import S3Objects, S3StoreError

log = logging.getLogger(__name__)


def checkpoint_key(objects: S3Objects, checkpoint_id: str, name: str) -> str:
    """The object key of a checkpoint's file ``name``."""
    return objects.key("checkpoints", checkpoint_id, name)


def _matches(path: Path, entry: dict) -> bool:
    return path.stat().st_size == entry["size"] and file_sha256(path) == entry["sha256"]


def upload_checkpoint(objects: S3Objects, checkpoint_id: str, staged: Path) -> None:
    """Upload every file the staged checkpoint's manifest lists, then the manifest.

    ValueError (nothing more uploaded) if a listed file is missing, unsafe or does not match.
    """
    manifest = read_manifest(staged)
    for entry in manifest["files"]:
        name = entry["name"]
        path = staged / name
        if not is_safe_name(name) or not path.is_file():
            raise ValueError(f"checkpoint {checkpoint_id}: {name!r} is listed but not staged")
        if not _matches(path, entry):
            raise ValueError(f"checkpoint {checkpoint_id}: {name} does not match its manifest")
        objects.upload_file(path, checkpoint_key(objects, checkpoint_id, name))
    objects.upload_file(staged / MANIFEST, checkpoint_key(objects, checkpoint_id, MANIFEST))
    log.info("uploaded checkpoint %s (%d files)", checkpoint_id, len(manifest["files"]) + 1)


def download_checkpoint(
    objects: S3Objects, checkpoint_id: str, manifest_bytes: bytes, target: Path
) -> None:
    """Download the checkpoint ``manifest_bytes`` describes into ``target``.

    Into a temporary directory beside ``target`` first, every file verified, then renamed into
    place (a copy another process cached meanwhile is kept); S3StoreError if a file in the
    bucket does not match, and nothing is left behind.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{checkpoint_id}-", dir=target.parent))
    try:
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        manifest = read_manifest(tmp, legacy_ok=True)  # the migration reads old ones
        for entry in manifest["files"]:
            name = entry["name"]
            if not is_safe_name(name):
                raise S3StoreError(f"checkpoint {checkpoint_id}: unsafe file name in manifest")
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            objects.download_file(checkpoint_key(objects, checkpoint_id, name), path)
            if not _matches(path, entry):
                raise S3StoreError(
                    f"checkpoint {checkpoint_id}: {name} in the bucket does not match its manifest"
                )
        try:
            tmp.rename(target)
        except OSError:  # another process cached it meanwhile
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
