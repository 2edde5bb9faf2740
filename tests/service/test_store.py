"""FilesystemStore: atomic records, cross-process updates, concurrent idempotency, listing."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from service.records import ErasureRecord
from service.store import FilesystemStore, new_erasure_id, record_event


def _record(tenant: str = "acme", erasure_id: str | None = None) -> ErasureRecord:
    record = ErasureRecord(
        id=erasure_id or new_erasure_id(),
        tenant=tenant,
        model="demo-small",
        method="featureedit",
        request_public={"facts": []},
        fact_fingerprints=[],
    )
    record_event(record, "queued", stage="queued")
    return record


def test_create_get_update_and_blobs(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    record, created = store.create_erasure(_record(), b"blob")
    assert created and store.get_erasure(record.id) == record
    assert store.get_request_blob(record.id) == b"blob"
    assert (tmp_path / "requests" / f"{record.id}.bin").stat().st_mode & 0o777 == 0o600

    def advance(r: ErasureRecord) -> None:
        record_event(r, "running", stage="locate", progress=0.2)

    updated = store.update_erasure(record.id, advance)
    assert updated.status == "running" and [e.seq for e in updated.history] == [0, 1]
    assert store.get_erasure(record.id).progress == 0.2

    def broken(r: ErasureRecord) -> None:
        r.status = "failed"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.update_erasure(record.id, broken)
    assert store.get_erasure(record.id).status == "running"  # nothing written
    with pytest.raises(KeyError):
        store.update_erasure("er_missing", advance)

    store.delete_request_blob(record.id)
    store.delete_request_blob(record.id)
    assert store.get_request_blob(record.id) is None
    store.put_report(record.id, {"metrics": {"reliability": 1.0}})
    assert store.get_report(record.id) == {"metrics": {"reliability": 1.0}}
    assert not list((tmp_path / "erasures").glob(".*"))  # no temporary files left
    assert store.writable()


def test_bad_ids_and_tenants(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    assert store.get_erasure("../../etc/passwd") is None
    assert store.checkpoint_dir("../keys") is None and store.checkpoint_owner("..") is None
    with pytest.raises(ValueError):
        store.create_erasure(_record(tenant="../evil"), b"")
    with pytest.raises(ValueError):
        store.list_erasures("acme", cursor="../x")


def test_list_newest_first_paginated_and_per_tenant(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    ids = []
    for i in range(7):
        record = _record(erasure_id=f"er_{i:012x}{0:012x}")
        store.create_erasure(record, b"")
        ids.append(record.id)
    store.create_erasure(_record(tenant="globex"), b"")
    page, cursor = store.list_erasures("acme", limit=3)
    assert [r.id for r in page] == ids[::-1][:3] and cursor == ids[4]
    page, cursor = store.list_erasures("acme", limit=3, cursor=cursor)
    assert [r.id for r in page] == ids[::-1][3:6]
    page, cursor = store.list_erasures("acme", limit=3, cursor=cursor)
    assert [r.id for r in page] == ids[:1] and cursor is None
    assert store.list_erasures("nobody") == ([], None)
    assert store.count_by_status() == {"queued": 8}


def test_new_ids_sort_by_time():
    a = new_erasure_id()
    import time

    time.sleep(0.002)
    b = new_erasure_id()
    assert a < b and len(a) == len(b) == 27


def test_concurrent_creations_with_one_key_make_one_erasure(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    results: list[tuple[ErasureRecord, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def create() -> None:
        barrier.wait()
        out = store.create_erasure(_record(), b"blob", idempotency_key="k1")
        with lock:
            results.append(out)

    threads = [threading.Thread(target=create) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({r.id for r, _ in results}) == 1
    assert len(list((tmp_path / "erasures").glob("*.json"))) == 1


def _bump(root: str, erasure_id: str, n: int) -> None:
    store = FilesystemStore(root)

    def inc(r: ErasureRecord) -> None:
        r.attempts += 1

    for _ in range(n):
        store.update_erasure(erasure_id, inc)


def test_updates_are_serialised_across_processes(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    record, _ = store.create_erasure(_record(), b"")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), record.id, 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert store.get_erasure(record.id).attempts == 100


def test_checkpoint_ownership(tmp_path: Path):
    store = FilesystemStore(tmp_path)
    (store.checkpoint_root() / "abcdef0123456789").mkdir()
    store.register_checkpoint("abcdef0123456789", "acme", "er_x")
    assert store.checkpoint_owner("abcdef0123456789") == {"tenant": "acme", "erasure_id": "er_x"}
    assert store.checkpoint_dir("abcdef0123456789") == store.checkpoint_root() / "abcdef0123456789"
    assert store.checkpoint_dir("0000000000000000") is None
