"""Serving published checkpoints without torch: manifest reading and lazy file verification.

``editing.checkpoints`` imports torch, so the API reads ``manifest.json`` itself (same format:
``{"format": "featureedit-checkpoint", "files": [{"name", "size", "sha256"}, ...], ...}``). A file
is served only if it is listed in the manifest and its sha256 still matches; hashes are computed
on first request and cached per process by (inode, mtime, size).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from editing.errors import CorruptCacheError, NotFoundError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "featureedit-checkpoint"


def read_manifest(directory: Path) -> dict[str, Any]:
    """The checkpoint's manifest (NotFoundError if missing, CorruptCacheError if malformed)."""
    path = directory / MANIFEST
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{directory.name}: {MANIFEST} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptCacheError(f"{directory.name}: {MANIFEST} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise CorruptCacheError(f"{directory.name}: {MANIFEST} is not a checkpoint manifest")
    files = doc.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("name"), str)
        and isinstance(f.get("size"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise CorruptCacheError(f"{directory.name}: {MANIFEST} has a malformed 'files' list")
    return doc


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is a relative POSIX path inside the checkpoint (no ``..``, no root)."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return False
    return not any(part in ("..", ".", "") for part in name.split("/"))


def manifest_entry(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The manifest's entry for ``name``, or None."""
    return next((f for f in manifest["files"] if f["name"] == name), None)


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FileVerifier:
    """Per-process cache of file hashes keyed by path and (inode, mtime_ns, size).

    A file rewritten in place (new mtime or size) or replaced (new inode) is hashed again.
    Concurrent first requests for one file hash it once.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int, int], str]] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def sha256(self, path: Path) -> str:
        """The file's sha256 (cached while the file is unchanged)."""
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            st = path.stat()
            ident = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == ident:
                return cached[1]
            digest = file_sha256(path)
            self._cache[path] = (ident, digest)
            return digest

    def matches(self, path: Path, size: int, sha256: str) -> bool:
        """Whether the file still has the manifest's size and sha256."""
        try:
            if path.stat().st_size != size:
                return False
            return self.sha256(path) == sha256
        except OSError:
            return False
