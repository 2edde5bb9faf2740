"""The Store contract, on both backends (filesystem and S3 via a real S3 server on loopback):
atomic records, cross-process updates, concurrent idempotency, listing, checkpoint ownership."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from service.records import ErasureRecord
from service.store import FilesystemStore, Store, new_erasure_id, record_event
from service.store.s3 import S3Store
from tests.service.conftest import new_record, stage_checkpoint


def open_store(spec: dict[str, Any]) -> Store:
    """A store instance on the storage ``spec`` describes (picklable, for child processes)."""
    if spec["backend"] == "filesystem":
        return FilesystemStore(spec["root"])
    return S3Store(
        spec["bucket"], cache_dir=spec["cache_dir"], endpoint_url=spec["endpoint"], prefix="t"
    )


@pytest.fixture(params=["filesystem", "s3"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where a test's store lives, on each backend."""
    if request.param == "filesystem":
        return {"backend": "filesystem", "root": str(tmp_path / "store")}
    from tests.s3_server import new_bucket

    endpoint = request.getfixturevalue("s3_endpoint")
    return {
        "backend": "s3",
        "bucket": new_bucket(endpoint),
        "endpoint": endpoint,
        "cache_dir": str(tmp_path / "s3-cache"),
    }


@pytest.fixture
def store(spec: dict[str, Any]) -> Store:
    """The test's store."""
    return open_store(spec)


def test_create_get_update_and_blobs(store: Store, spec: dict[str, Any]):
    record, created = store.create_erasure(new_record(), b"blob")
    assert created and store.get_erasure(record.id) == record
    assert store.get_request_blob(record.id) == b"blob"
    with pytest.raises(FileExistsError):  # an id is never overwritten
        store.create_erasure(new_record(erasure_id=record.id), b"other")
    assert store.get_request_blob(record.id) == b"blob"
    if spec["backend"] == "filesystem":
        root = Path(spec["root"])
        assert (root / "requests" / f"{record.id}.bin").stat().st_mode & 0o777 == 0o600

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
    if spec["backend"] == "filesystem":  # no temporary files left
        assert not list((Path(spec["root"]) / "erasures").glob(".*"))
    assert store.writable()


def test_bad_ids_and_tenants(store: Store):
    assert store.get_erasure("../../etc/passwd") is None
    assert store.checkpoint_dir("../keys") is None and store.checkpoint_owner("..") is None
    with pytest.raises(ValueError):
        store.create_erasure(new_record(tenant="../evil"), b"")
    with pytest.raises(ValueError):
        store.list_erasures("acme", cursor="../x")


def test_list_newest_first_paginated_and_per_tenant(store: Store):
    ids = []
    for i in range(7):
        record = new_record(erasure_id=f"er_{i:012x}{0:012x}")
        store.create_erasure(record, b"")
        ids.append(record.id)
    store.create_erasure(new_record(tenant="globex"), b"")
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


def test_concurrent_creations_with_one_key_make_one_erasure(store: Store):
    results: list[tuple[ErasureRecord, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(30)

    def create() -> None:
        barrier.wait()
        out = store.create_erasure(new_record(), b"blob", idempotency_key="k1")
        with lock:
            results.append(out)

    threads = [threading.Thread(target=create) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({r.id for r, _ in results}) == 1
    assert store.count_by_status() == {"queued": 1}  # the losers left no record behind
    assert store.get_request_blob(results[0][0].id) == b"blob"
    assert store.list_erasures("acme")[0] == [results[0][0]]


def _bump(spec: dict[str, Any], erasure_id: str, n: int) -> None:
    store = open_store(spec)

    def inc(r: ErasureRecord) -> None:
        r.attempts += 1

    for _ in range(n):
        store.update_erasure(erasure_id, inc)


def test_updates_are_serialised_across_processes(store: Store, spec: dict[str, Any]):
    record, _ = store.create_erasure(new_record(), b"")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bump, args=(spec, record.id, 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert store.get_erasure(record.id).attempts == 100


def test_checkpoint_ownership(store: Store):
    files = {"model.safetensors": b"weights", "delta/delta.json": b"{}"}
    checkpoint_id = stage_checkpoint(store, files)
    store.register_checkpoint(checkpoint_id, "acme", "er_x")
    assert store.checkpoint_owner(checkpoint_id) == {"tenant": "acme", "erasure_id": "er_x"}
    directory = store.checkpoint_dir(checkpoint_id)
    assert directory is not None and directory.name == checkpoint_id
    assert {n: (directory / n).read_bytes() for n in files} == files
    assert store.checkpoint_dir("0000000000000000") is None
    assert store.checkpoint_owner("0000000000000000") is None


def test_private_data_is_kept_apart_and_forgotten(store: Store):
    record = new_record()
    store.create_erasure(record, b"blob")
    assert store.get_private(record.id, "revert") is None
    store.put_private(record.id, "revert", b"gAAAAA-sealed-revert")
    store.put_private(record.id, "subjects", b"gAAAAA-sealed-names")
    assert store.get_private(record.id, "revert") == b"gAAAAA-sealed-revert"
    assert store.get_private(record.id, "subjects") == b"gAAAAA-sealed-names"
    with pytest.raises(ValueError, match="private data name"):
        store.put_private(record.id, "../erasures/x", b"x")
    with pytest.raises(ValueError, match="invalid erasure id"):
        store.put_private("../x", "revert", b"x")
    assert store.get_private("../x", "revert") is None
    # a chunked erasure's chunk patches: chunk-<n>, deleted one by one
    store.put_private(record.id, "chunk-0", b"gAAAAA-sealed-patch")
    with pytest.raises(ValueError, match="private data name"):
        store.put_private(record.id, "chunk-x", b"x")
    store.delete_private(record.id, "chunk-0")
    store.delete_private(record.id, "chunk-0")  # idempotent
    assert store.get_private(record.id, "chunk-0") is None
    assert store.get_private(record.id, "revert") == b"gAAAAA-sealed-revert"
    store.delete_private(record.id)
    store.delete_private(record.id)  # idempotent
    assert store.get_private(record.id, "revert") is None
    assert store.get_private(record.id, "subjects") is None
    assert store.get_erasure(record.id) is not None  # the public record stays


def test_checkpoint_listing_alias_and_deletion(store: Store):
    first = stage_checkpoint(store, {"model.safetensors": b"one"})
    second = stage_checkpoint(store, {"model.safetensors": b"two"})
    store.register_checkpoint(first, "acme", "er_x")
    store.register_checkpoint(second, "acme", "er_x")
    assert set(store.list_checkpoints()) >= {first, second}
    store.alias_checkpoint(first, second)
    assert store.checkpoint_owner(first) == {
        "tenant": "acme",
        "erasure_id": "er_x",
        "moved_to": second,
    }
    store.delete_checkpoint(first)
    assert store.checkpoint_dir(first) is None and first not in store.list_checkpoints()
    assert store.checkpoint_dir(second) is not None
    with pytest.raises(KeyError):
        store.alias_checkpoint("0000000000000000", second)
