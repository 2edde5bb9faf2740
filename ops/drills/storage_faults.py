"""Drills that break the store: a full disk, and a corrupted published checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

from ops.drills.base import DrillContext, Observations, drill
from ops.drills.process_faults import JOB_TIMEOUT
from ops.stack import leftover_temp_files, partial_checkpoints

# Left free while the job runs: room for records and the report, not for a checkpoint (the
# small demo model alone is ~0.8 MB).
RESERVE_BYTES = 320 * 1024
FILLER = "drill-filler"


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(path: Path, size: int) -> None:
    """Create ``path`` of ``size`` bytes of real (allocated) space."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _fill_to_the_brim(path: Path) -> None:
    """Append to ``path`` until the file system refuses (ENOSPC), unbuffered."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1):
            chunk = b"\0" * size
            try:
                while os.write(fd, chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


@drill(
    "disk-full",
    """The store's disk fills up while an erasure runs (a real ENOSPC: the store is its own small
    tmpfs, filled until only room for records is left): the job fails cleanly with a clear reason
    (no retry loop), no partial checkpoint or temporary file is left, and /readyz reports the
    store not writable while the disk is full, then ready again once space is freed.""",
)
def disk_full(ctx: DrillContext, obs: Observations) -> None:
    """Fill the store's tmpfs, run an erasure, fill it completely, probe /readyz, free it."""
    if ctx.store_mount_error is not None:
        obs.check(False, f"cannot simulate a full disk: {ctx.store_mount_error}")
        return
    ctx.ensure_worker()
    root = ctx.s.store_root
    filler, brim = root / f"{FILLER}-1", root / f"{FILLER}-2"
    try:
        _fill(filler, max(0, _free_bytes(root) - RESERVE_BYTES))
        obs.note(f"store filled: {_free_bytes(root) // 1024} KiB left")
        with ctx.http() as http:
            response = ctx.submit(http, ctx.facts(1))
            if not obs.check(response.status_code == 202, f"submitted: {response.status_code}"):
                return
            doc = ctx.s.wait_terminal(http, response.json()["id"], timeout=JOB_TIMEOUT)
            error = doc.get("error") or ""
            obs.check(
                doc["status"] == "failed" and "space" in error,
                f"the erasure {doc['status']} after {doc['attempts']} attempt(s): {error!r}",
            )
            obs.check(doc.get("checkpoint_id") is None, "no checkpoint registered")
            partial = partial_checkpoints(root)
            obs.check(not partial, f"no partial checkpoint directory ({partial})")
            leftovers = leftover_temp_files(root)
            obs.check(not leftovers, f"no temporary files left in the store ({leftovers[:5]})")
            _fill_to_the_brim(brim)
            full = http.get("/readyz")
            checks = full.json().get("checks", {})
            obs.check(
                full.status_code == 503 and checks.get("store") is False,
                f"/readyz with the disk full: {full.status_code} {checks}",
            )
            filler.unlink()
            brim.unlink()
            freed = http.get("/readyz")
            obs.check(freed.status_code == 200, f"/readyz once space is freed: {freed.status_code}")
    finally:
        for path in (filler, brim):
            path.unlink(missing_ok=True)


@drill(
    "corrupt-checkpoint",
    """Bytes flipped in a published checkpoint's weights file (size unchanged): the download is
    refused with 409 naming the file and saying its sha256 no longer matches the manifest, for
    plain and Range requests alike; nothing of the corrupt file is served; once the file is
    repaired it is served again.""",
)
def corrupt_checkpoint(ctx: DrillContext, obs: Observations) -> None:
    """Download once (verified), flip bytes in place, download again, repair, download."""
    with ctx.http() as http:
        checkpoint_id = ctx.checkpoint(http)
        listing = http.get(f"/v1/checkpoints/{checkpoint_id}").json()
        entry = max(listing["files"], key=lambda f: f["size"])
        url, name = entry["url"], entry["name"]
        before = http.get(url)
        obs.check(
            before.status_code == 200 and before.headers.get("etag") == f'"{entry["sha256"]}"',
            f"{name} ({entry['size']} bytes) served intact first: {before.status_code}",
        )
        path = ctx.s.store_root / "checkpoints" / checkpoint_id / name
        offset = entry["size"] // 2
        with path.open("r+b") as f:
            f.seek(offset)
            original = f.read(16)
            f.seek(offset)
            f.write(bytes(b ^ 0xFF for b in original))
        obs.note(f"flipped 16 bytes of {name} at offset {offset}")
        try:
            for label, headers in (("plain", {}), ("Range", {"Range": "bytes=0-1023"})):
                refused = http.get(url, headers=headers)
                detail = str(refused.json().get("detail", "")) if refused.content else ""
                served_bytes = len(refused.content)
                obs.check(
                    refused.status_code == 409
                    and name in detail
                    and "sha256" in detail
                    and "application/json" in refused.headers.get("content-type", ""),
                    f"{label} download: HTTP {refused.status_code} {detail[:110]!r}",
                )
                obs.check(served_bytes < 2048, f"{label}: no file bytes served ({served_bytes} B)")
        finally:
            with path.open("r+b") as f:
                f.seek(offset)
                f.write(original)
        after = http.get(url)
        obs.check(after.status_code == 200, f"repaired file served again: {after.status_code}")
