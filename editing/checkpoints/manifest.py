"""A published checkpoint's ``manifest.json``: constants, hashes, reading and verifying (no torch).

The API serves checkpoints with this module alone, so it never imports torch. The manifest lists
every other file with its size and sha256; the ``checkpoint_id`` is the first 16 hex digits of
the sha256 of those entries (``"<sha256>  <name>\\n"`` lines sorted by name), so a checkpoint is
content-addressed.

Format versions
    1. (before 0.2) ``delta/`` held the *pre-edit* values of every edited entry and the manifest
       named each fact's subject: a download could be reverted to the secret. Such checkpoints
       are refused everywhere with :class:`LegacyCheckpointError`, which says to run
       ``featureedit checkpoints migrate``.
    2. ``delta/`` is a forward patch (indices and new values only); facts are keyed fingerprints.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from editing.errors import ConfigError, CorruptCacheError, EditingError, NotFoundError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "featureedit-checkpoint"
MANIFEST_FORMAT_VERSION = 2
DELTA_DIR = "delta"
SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
MIGRATE_HINT = (
    "Run `featureedit checkpoints migrate` (as the operator, against the store) to rewrite it: "
    "pre-edit values move to the operator's private record and the manifest is scrubbed."
)

# Manifest keys publish_checkpoint sets itself; the caller's manifest may not contain them.
RESERVED_MANIFEST_KEYS = frozenset(
    {"format", "format_version", "checkpoint_id", "created_at", "code_version", "base_model"}
    | {"edited_down_proj_sha256", "edit", "files", "publish"}
)


class LegacyCheckpointError(ConfigError):
    """A checkpoint (or delta) of format version 1, which carries its own undo: never served."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_dumps(doc: Any, what: str) -> str:
    """Pretty, strict JSON (ConfigError naming ``what`` if it does not serialise)."""
    try:
        return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} must be JSON-serialisable (str, int, float, bool, None, lists and dicts with "
            f"str keys; no NaN or infinity, use null): {exc}"
        ) from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync'ed, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (and ``path``'s parent directory), so what
    was written there survives a crash before anything names it."""
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory (its entries: renames and creations in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_entries(root: Path) -> list[dict[str, Any]]:
    """``{"name", "size", "sha256"}`` of every file under ``root`` but the manifest, by name."""
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            entries.append({"name": rel, "size": path.stat().st_size, "sha256": file_sha256(path)})
    return sorted(entries, key=lambda e: e["name"])


def checkpoint_id(files: Iterable[Mapping[str, Any]]) -> str:
    """The content address of a checkpoint listing ``files``."""
    lines = "".join(f"{e['sha256']}  {e['name']}\n" for e in sorted(files, key=lambda e: e["name"]))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _git_state(directory: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def code_version() -> dict[str, Any]:
    """The featureedit version and, when run from a git checkout, its commit and dirty flag."""
    try:
        version: str | None = importlib.metadata.version("featureedit")
    except importlib.metadata.PackageNotFoundError:
        version = None
    commit, dirty = _git_state(Path(__file__).resolve().parent)
    return {"package": "featureedit", "version": version, "git_commit": commit, "git_dirty": dirty}


def read_manifest(directory: str | os.PathLike[str], *, legacy_ok: bool = False) -> dict[str, Any]:
    """The ``manifest.json`` of a published checkpoint.

    NotFoundError if missing, CorruptCacheError if malformed, LegacyCheckpointError for a
    format-1 checkpoint (unless ``legacy_ok``: the migration reads those), ConfigError for a
    newer format than this featureedit reads.
    """
    root = Path(directory)
    path = root / MANIFEST
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(
            f"{root} is not a published checkpoint: {MANIFEST} is missing."
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCacheError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise CorruptCacheError(
            f"{path} is not a featureedit checkpoint manifest (format {MANIFEST_FORMAT!r})."
        )
    files = doc.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("name"), str)
        and isinstance(f.get("size"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise CorruptCacheError(f"{path} has a malformed 'files' list.")
    version = doc.get("format_version", 1)
    if not isinstance(version, int) or version > MANIFEST_FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format_version {version!r}; this featureedit reads versions up to "
            f"{MANIFEST_FORMAT_VERSION}. Upgrade featureedit."
        )
    if version < MANIFEST_FORMAT_VERSION and not legacy_ok:
        raise LegacyCheckpointError(
            f"Checkpoint {root.name} is in format version {version}, which carries the pre-edit "
            f"values of the edited weights (its download could be reverted to the erased fact). "
            f"It is not served or applied. {MIGRATE_HINT}"
        )
    return doc


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is a relative POSIX path inside the checkpoint (no ``..``, no root)."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return False
    return not any(part in ("..", ".", "") for part in name.split("/"))


def manifest_entry(manifest: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The manifest's entry for ``name``, or None."""
    return next((f for f in manifest["files"] if f["name"] == name), None)


def verify_checkpoint(directory: str | os.PathLike[str]) -> list[str]:
    """Problems with a published checkpoint (empty if intact).

    Reports a missing, unreadable or legacy manifest, files missing or differing in size or
    sha256, files not listed in the manifest and a checkpoint id that does not match the files.
    """
    root = Path(directory)
    try:
        doc = read_manifest(root)
    except EditingError as exc:
        return [str(exc)]
    problems: list[str] = []
    listed: set[str] = set()
    for entry in doc["files"]:
        name, size, sha = entry["name"], entry["size"], entry["sha256"]
        rel = PurePosixPath(name)
        if not is_safe_name(name) or name == MANIFEST:
            problems.append(f"{name}: not a valid file name inside the checkpoint")
            continue
        listed.add(name)
        path = root / rel
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual_size = path.stat().st_size
        if actual_size != size:
            problems.append(f"{name}: size is {actual_size} bytes, manifest says {size}")
            continue
        actual = file_sha256(path)
        if actual != sha:
            problems.append(f"{name}: sha256 is {actual[:16]}..., manifest says {sha[:16]}...")
    for path in sorted(root.rglob("*")):
        rel_name = path.relative_to(root).as_posix()
        if path.is_file() and rel_name != MANIFEST and rel_name not in listed:
            problems.append(f"{rel_name}: not listed in {MANIFEST}")
    expected_id = checkpoint_id(doc["files"])
    if doc.get("checkpoint_id") != expected_id:
        problems.append(
            f"checkpoint_id {doc.get('checkpoint_id')!r} does not match the listed files "
            f"({expected_id})"
        )
    return problems


def checkpoint_summary(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What a report says about a published checkpoint: lineage, hashes, file sizes.

    Read back from its ``manifest.json`` (the source of truth), so the report states exactly
    what was published: id, creation time, base model and its down-projection hash, parent,
    the edited hash, every file with size and sha256, and the on-disk size of ``delta/``.
    """
    manifest = read_manifest(directory)
    files = [
        {"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in manifest["files"]
    ]
    return {
        "checkpoint_id": manifest.get("checkpoint_id"),
        "created_at": manifest.get("created_at"),
        "publish": manifest.get("publish", "full"),
        "format_version": manifest.get("format_version"),
        "base_model": manifest.get("base_model"),
        "parent_checkpoint_id": manifest.get("parent_checkpoint_id"),
        "edited_down_proj_sha256": manifest.get("edited_down_proj_sha256"),
        "files": files,
        "total_bytes": sum(f["size"] for f in files),
        "delta_bytes_on_disk": sum(f["size"] for f in files if f["name"].startswith("delta/")),
    }


def base_model_problem(directory: str | os.PathLike[str], model_id: str) -> str | None:
    """Why the checkpoint in ``directory`` cannot be the base of an erasure on ``model_id``
    (it was made from another model), or None. Raises like :func:`read_manifest`."""
    made_from = (read_manifest(directory).get("base_model") or {}).get("model_id")
    if made_from is not None and made_from != model_id:
        return (
            f"base checkpoint {Path(directory).name} was made from model '{made_from}', "
            f"not '{model_id}'"
        )
    return None
