"""Serving published checkpoints without torch: the manifest (from
:mod:`editing.checkpoints.manifest`) and lazy file verification.

A file is served only if it is listed in the manifest and its sha256 still matches; hashes are
computed on first request and cached per process by (inode, mtime, size).
"""

from __future__ import annotations

import threading
from pathlib import Path

from editing.checkpoints.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    LegacyCheckpointError,
    file_sha256,
    is_safe_name,
    manifest_entry,
    read_manifest,
)

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "FileVerifier",
    "LegacyCheckpointError",
    "file_sha256",
    "is_safe_name",
    "manifest_entry",
    "read_manifest",
]


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
