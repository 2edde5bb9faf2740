"""What a killed worker leaves in the filesystem store (issue #15): checkpoint bytes are fsync'ed
before the owner entry names them, and the sweep removes stale ``.publish-*`` directories and
temporary files and settles checkpoints published but never owner-registered."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from service.records import ErasureRecord
from service.store import FilesystemStore
from service.store import filesystem as filesystem_module
from tests.service.conftest import new_record, stage_checkpoint


def _age(path: Path, seconds: float = 3600) -> None:
    """Make ``path`` and everything under it look untouched for ``seconds``."""
    old = time.time() - seconds
    for p in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(p, (old, old), follow_symlinks=False)


def _published_for(store: FilesystemStore, record: ErasureRecord, payload: bytes) -> str:
    """A checkpoint a job of ``record`` renamed into place (manifest names the erasure)."""
    checkpoint_id = stage_checkpoint(store, {"model.safetensors": payload})
    manifest = store.checkpoint_root() / checkpoint_id / "manifest.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "erasure_id": record.id}))
    return checkpoint_id


def test_checkpoint_files_are_fsynced_before_the_owner_entry(
    store: FilesystemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint_id = stage_checkpoint(store, {"model.safetensors": b"w" * 100, "a/b.json": b"{}"})
    owner = store.checkpoint_root() / f"{checkpoint_id}.owner.json"
    synced: dict[str, bool] = {}  # path fsync'ed -> whether the owner entry existed then
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.setdefault(os.readlink(f"/proc/self/fd/{fd}"), owner.exists())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.register_checkpoint(checkpoint_id, "acme", "er_x")
    directory = store.checkpoint_root() / checkpoint_id
    for path in ("model.safetensors", "a/b.json", "manifest.json", "a", ""):
        assert synced[str((directory / path).resolve())] is False, path  # before the owner
    assert owner.exists()


def test_sweep_removes_stale_publish_dirs_and_temp_files_but_not_live_ones(
    store: FilesystemStore,
) -> None:
    root = store.checkpoint_root()
    stale, live = root / ".publish-dead", root / ".publish-live"
    for d in (stale, live):
        (d / "model.safetensors").parent.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"partial")
    _age(stale)
    _age(live)
    (live / "model.safetensors").write_bytes(b"still writing")  # a live publish touches it
    tmp = store.root / "erasures" / ".er_1.json.123.abcd.tmp"
    tmp.write_bytes(b"{")
    _age(tmp)
    done = store.sweep_leftovers(300)
    assert done.publish_dirs == [".publish-dead"] and not stale.exists() and live.exists()
    assert done.temp_files == ["erasures/.er_1.json.123.abcd.tmp"] and not tmp.exists()


def test_sweep_settles_checkpoints_published_but_never_registered(
    store: FilesystemStore,
) -> None:
    failed, running, succeeded = new_record(), new_record(), new_record()
    ids = {}
    for record, payload in ((failed, b"f"), (running, b"r"), (succeeded, b"s")):
        ids[record.id] = _published_for(store, record, payload * 64)
    succeeded.checkpoint_id = ids[succeeded.id]
    failed.status, succeeded.status = "failed", "succeeded"
    for record in (failed, running, succeeded):
        store.create_erasure(record, b"blob")
    foreign = stage_checkpoint(store, {"other.bin": b"o"})  # no erasure in its manifest
    for checkpoint_id in [*ids.values(), foreign]:
        _age(store.checkpoint_root() / checkpoint_id)

    done = store.sweep_leftovers(300)

    assert done.removed_unowned == [ids[failed.id]]
    assert store.checkpoint_dir(ids[failed.id]) is None
    assert done.adopted == [ids[succeeded.id]]
    assert store.checkpoint_owner(ids[succeeded.id]) == {
        "tenant": succeeded.tenant,
        "erasure_id": succeeded.id,
    }
    assert store.checkpoint_dir(ids[running.id]) is not None  # its job registers it on retry
    assert store.checkpoint_owner(ids[running.id]) is None
    assert store.checkpoint_dir(foreign) is not None  # not a job's: left alone


def test_fresh_unowned_checkpoints_are_left_to_their_job(store: FilesystemStore) -> None:
    record = new_record()
    record.status = "failed"
    store.create_erasure(record, b"blob")
    checkpoint_id = _published_for(store, record, b"x" * 10)
    assert store.sweep_leftovers(300).removed() == []
    assert store.checkpoint_dir(checkpoint_id) is not None


def test_readiness_reads_metadata_only(
    store: FilesystemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.ready()
    monkeypatch.setattr(filesystem_module, "MIN_FREE_BYTES", 1 << 62)  # "the disk is full"
    assert not store.ready()
