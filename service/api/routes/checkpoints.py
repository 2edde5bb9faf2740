"""``/v1/checkpoints``: a published checkpoint's manifest and its files (owner tenant only).

A file is served only if its name is in the manifest's ``files`` list (so no path can escape
the checkpoint directory) and its sha256 still matches the manifest (checked on first request
and whenever the file changes); ``ETag`` is the quoted sha256 and ``Range`` requests get 206.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse

from service.api.deps import ContextDep, ServiceContext, TenantDep
from service.api.schemas import CheckpointFile, CheckpointPublic, Problem
from service.checkpoint_files import (
    MANIFEST,
    LegacyCheckpointError,
    is_safe_name,
    manifest_entry,
    read_manifest,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])

_NOT_FOUND = {404: {"model": Problem, "description": "No such checkpoint (for this tenant)."}}


def _owned_dir(
    ctx: ServiceContext, tenant: str, checkpoint_id: str, request: Request
) -> tuple[Path, dict]:
    owner = ctx.store.checkpoint_owner(checkpoint_id)
    moved_to = None if owner is None else owner.get("moved_to")
    if moved_to and owner is not None and owner.get("tenant") == tenant:
        # migrated to format 2 under a new content address: follow it
        url = str(request.url).replace(
            f"/v1/checkpoints/{checkpoint_id}", f"/v1/checkpoints/{moved_to}", 1
        )
        raise HTTPException(
            status_code=308, detail=f"Checkpoint moved to {moved_to}", headers={"Location": url}
        )
    if owner is None or owner.get("tenant") != tenant:  # before checkpoint_dir: S3 downloads
        raise HTTPException(status_code=404, detail="Checkpoint not found")
    directory = ctx.store.checkpoint_dir(checkpoint_id)
    if directory is None:
        raise HTTPException(status_code=404, detail="Checkpoint not found")
    return directory, owner


def _manifest(directory: Path) -> dict[str, Any]:
    """The manifest; a format-1 checkpoint (it carried its own undo) is never served (409)."""
    try:
        return read_manifest(directory)
    except LegacyCheckpointError:
        raise HTTPException(
            status_code=409,
            detail="This checkpoint is in an old format that carried pre-edit values; it is not "
            "served. The operator must run `featureedit checkpoints migrate`.",
        ) from None


@router.get(
    "/{checkpoint_id}",
    response_model=CheckpointPublic,
    responses=_NOT_FOUND,
    summary="A checkpoint's manifest",
)
def get_checkpoint(
    checkpoint_id: str, request: Request, ctx: ContextDep, tenant: TenantDep
) -> CheckpointPublic:
    """The manifest and, per file, its name, size, sha256 and download URL."""
    directory, owner = _owned_dir(ctx, tenant, checkpoint_id, request)
    manifest = _manifest(directory)
    base = f"{ctx.base_url(request)}/v1/checkpoints/{checkpoint_id}/files"
    files = [
        CheckpointFile(
            name=f["name"], size=f["size"], sha256=f["sha256"], url=f"{base}/{f['name']}"
        )
        for f in manifest["files"]
    ]
    return CheckpointPublic(
        checkpoint_id=checkpoint_id,
        erasure_id=owner.get("erasure_id"),
        files=files,
        manifest=manifest,
    )


@router.head("/{checkpoint_id}/files/{name:path}", include_in_schema=False)
@router.get(
    "/{checkpoint_id}/files/{name:path}",
    response_class=FileResponse,
    summary="Download one file of a checkpoint (Range supported)",
    responses={
        **_NOT_FOUND,
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)."},
        304: {"description": "Not modified (If-None-Match)."},
        400: {"model": Problem, "description": "Invalid file name."},
        409: {"model": Problem, "description": "File no longer matches its manifest."},
        416: {"description": "Range not satisfiable."},
    },
)
def download_checkpoint_file(
    checkpoint_id: str,
    name: str,
    request: Request,
    ctx: ContextDep,
    tenant: TenantDep,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """The file, with ``ETag: "<sha256>"``; honours Range, If-Range and If-None-Match."""
    if not is_safe_name(name):
        raise HTTPException(status_code=400, detail="Invalid file name")
    directory, _ = _owned_dir(ctx, tenant, checkpoint_id, request)
    manifest = _manifest(directory)
    if name == MANIFEST:
        path = directory / MANIFEST
        sha = ctx.verifier.sha256(path)
    else:
        entry = manifest_entry(manifest, name)
        if entry is None:
            raise HTTPException(status_code=404, detail="File not in the checkpoint's manifest")
        path = directory / name
        if not path.is_file():
            log.error("checkpoint file missing", extra={"checkpoint": checkpoint_id})
            raise HTTPException(status_code=404, detail="File not found")
        if not ctx.verifier.matches(path, entry["size"], entry["sha256"]):
            log.error(
                "checkpoint file does not match its manifest",
                extra={"checkpoint": checkpoint_id, "file": name},
            )
            raise HTTPException(
                status_code=409,
                detail=f"Checksum mismatch: {name} no longer matches its sha256 in the "
                "checkpoint's manifest (the stored file is corrupt); it is not served. Contact "
                "the operator.",
            )
        sha = entry["sha256"]
    etag = f'"{sha}"'
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=Path(name).name,
        headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
    )
