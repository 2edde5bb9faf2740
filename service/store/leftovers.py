"""What a killed process leaves in a store, and sweeping it: run by every worker at start and
then on its maintenance timer (:class:`workers.maintenance.Maintenance`).

In the checkpoint root (``Store.checkpoint_root()``), once idle for ``stale_seconds`` (nothing
under it modified for that long; a live publish keeps writing):

* ``.publish-*`` directories: a checkpoint being built, abandoned by a killed worker: removed;
* ``.*.tmp`` files (an atomic write cut short): removed;
* a checkpoint directory with no owner entry (a worker killed between the rename into place and
  the owner registration): its manifest names the erasure. If that erasure ended with this
  checkpoint it is registered to the erasure's tenant; if the erasure ended otherwise (or is
  gone) the checkpoint is removed (it was never served: unowned checkpoints are 404); while the
  erasure is queued or running it is left to the job, which registers it on its retry.

The filesystem store's record directories are swept of stale ``.*.tmp`` files too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.records import TERMINAL
from service.store.base import Store, valid_id

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RECORD_DIRS = ("erasures", "requests", "reports")


@dataclass
class Leftovers:
    """What one sweep did (names relative to the directory swept)."""

    publish_dirs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    removed_unowned: list[str] = field(default_factory=list)

    def removed(self) -> list[str]:
        """Every name removed."""
        return [*self.publish_dirs, *self.temp_files, *self.removed_unowned]


def idle_seconds(path: Path, now: float | None = None) -> float:
    """Seconds since anything at or under ``path`` was last modified."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in (*dirnames, *filenames):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return (time.time() if now is None else now) - newest


def _manifest_erasure(directory: Path) -> str | None:
    try:
        value = json.loads((directory / MANIFEST).read_bytes()).get("erasure_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and valid_id(value) else None


def _settle_unowned(store: Store, directory: Path, done: Leftovers) -> None:
    erasure_id = _manifest_erasure(directory)
    if erasure_id is None:
        return  # not published by a job: not ours to judge
    record = store.get_erasure(erasure_id)
    if record is not None and record.status not in TERMINAL:
        return  # the job (or its retry) registers it
    if record is not None and record.checkpoint_id == directory.name:
        store.register_checkpoint(directory.name, record.tenant, erasure_id)
        done.adopted.append(directory.name)
        return
    shutil.rmtree(directory)
    done.removed_unowned.append(directory.name)


def sweep_leftovers(
    store: Store, stale_seconds: float, record_root: Path | None = None
) -> Leftovers:
    """Sweep ``store``'s checkpoint root (and ``record_root``'s record directories, for the
    filesystem store) of what killed processes left (module doc). Never raises for one entry."""
    done = Leftovers()
    root = store.checkpoint_root()
    try:
        entries = list(root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        name = entry.name
        try:
            if idle_seconds(entry) <= stale_seconds:
                continue
            if name.startswith(".publish-") and entry.is_dir():
                shutil.rmtree(entry)
                done.publish_dirs.append(name)
            elif name.startswith(".") and name.endswith(".tmp"):
                entry.unlink()
                done.temp_files.append(name)
            elif entry.is_dir() and valid_id(name) and store.checkpoint_owner(name) is None:
                _settle_unowned(store, entry, done)
        except OSError:
            log.warning("cannot sweep %s", name, exc_info=True)
    for sub in RECORD_DIRS if record_root is not None else ():
        for tmp in (record_root / sub).glob(".*.tmp"):
            try:
                if idle_seconds(tmp) > stale_seconds:
                    tmp.unlink()
                    done.temp_files.append(f"{sub}/{tmp.name}")
            except OSError:
                continue
    if done.removed() or done.adopted:
        log.warning(
            "swept leftovers: publish dirs %s, temp files %s, unowned checkpoints removed %s, "
            "adopted %s",
            done.publish_dirs,
            done.temp_files,
            done.removed_unowned,
            done.adopted,
        )
    return done
