"""S3Store specifics against a real S3 server (moto_server over HTTP): the API on an S3 store,
checkpoints invisible until their manifest is uploaded, verified downloads, lease takeover.

The Store contract itself runs on both backends in test_store.py.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.records import ErasureRecord
from service.store import get_store
from service.store.s3 import S3Store, S3StoreError, invert_id
from tests.s3_server import new_bucket, s3_client
from tests.service.conftest import SECRET, auth, body, make_checkpoint, new_record, stage_checkpoint


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str, tmp_path: Path) -> Settings:
    """The service settings on a fresh bucket of the test S3 server."""
    return settings.model_copy(
        update={
            "store_backend": "s3",
            "s3_bucket": new_bucket(s3_endpoint),
            "s3_endpoint_url": s3_endpoint,
            "s3_region": "us-east-1",
            "s3_cache_dir": tmp_path / "api-cache",
        }
    )


def _objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_settings_choose_the_backend_and_say_what_is_missing(s3_settings: Settings):
    assert isinstance(get_store(s3_settings), S3Store)
    with pytest.raises(ValueError, match="FEATUREEDIT_S3_BUCKET"):
        Settings(store_backend="s3")


def test_api_on_s3_store_accepts_erasures_and_serves_checkpoints(
    s3_settings: Settings,
    make_client: Callable[..., TestClient],
    keys: dict[str, str],
    s3_endpoint: str,
    tmp_path: Path,
):
    client = make_client(
        store_backend="s3",
        s3_bucket=s3_settings.s3_bucket,
        s3_endpoint_url=s3_endpoint,
        s3_cache_dir=tmp_path / "api-cache",
    )
    assert client.get("/readyz").json() == {
        "status": "ready",
        "checks": {"redis": True, "store": True},
    }
    created = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    assert created.status_code == 202, created.text
    erasure_id = created.json()["id"]
    assert client.get(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"])).status_code == 200
    listed = client.get("/v1/erasures", headers=auth(keys["acme"])).json()
    assert [e["id"] for e in listed["items"]] == [erasure_id]

    # a checkpoint published by a "worker" with its own cache, served by the API from S3
    worker_store = S3Store(
        s3_settings.s3_bucket,
        cache_dir=tmp_path / "worker-cache",
        endpoint_url=s3_endpoint,
        prefix=s3_settings.s3_prefix,
    )
    weights = bytes(range(256)) * 64
    checkpoint_id = make_checkpoint(worker_store, "acme", {"model.safetensors": weights})
    got = client.get(f"/v1/checkpoints/{checkpoint_id}", headers=auth(keys["acme"]))
    assert got.status_code == 200, got.text
    assert [f["name"] for f in got.json()["files"]] == ["model.safetensors"]
    url = f"/v1/checkpoints/{checkpoint_id}/files/model.safetensors"
    full = client.get(url, headers=auth(keys["acme"]))
    assert full.status_code == 200 and full.content == weights
    assert full.headers["etag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    part = client.get(url, headers={**auth(keys["acme"]), "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == weights[10:20]
    other = client.get(f"/v1/checkpoints/{checkpoint_id}", headers=auth(keys["globex"]))
    assert other.status_code == 404

    # the secret is nowhere in the bucket (the request blob is encrypted)
    objects = _objects(s3_endpoint, s3_settings.s3_bucket)
    assert any(k.endswith(f"{erasure_id}.json") for k in objects)
    assert all(SECRET.encode() not in v and SECRET not in k for k, v in objects.items())


@pytest.fixture
def two_stores(s3_endpoint: str, tmp_path: Path) -> tuple[S3Store, S3Store]:
    """Two S3Stores on one bucket with separate local caches (a worker and an API host)."""
    bucket = new_bucket(s3_endpoint)
    return tuple(  # type: ignore[return-value]
        S3Store(bucket, cache_dir=tmp_path / name, endpoint_url=s3_endpoint, lock_ttl=1.0)
        for name in ("worker", "api")
    )


def test_a_checkpoint_is_invisible_until_its_manifest_is_uploaded(
    two_stores: tuple[S3Store, S3Store], monkeypatch: pytest.MonkeyPatch
):
    worker, api = two_stores
    files = {"model.safetensors": b"w" * 1000, "delta/delta.json": b"{}"}
    checkpoint_id = stage_checkpoint(worker, files)
    uploads: list[str] = []
    real_upload = worker.objects.client.upload_file

    def upload_then_die(path: str, bucket: str, key: str, **kw: Any) -> None:
        if key.endswith("/manifest.json"):
            raise ConnectionError("worker died before the manifest")
        uploads.append(key.rsplit("/", 1)[-1])
        real_upload(path, bucket, key, **kw)

    monkeypatch.setattr(worker.objects.client, "upload_file", upload_then_die)
    with pytest.raises(ConnectionError):
        worker.register_checkpoint(checkpoint_id, "acme", "er_x")
    assert sorted(uploads) == ["delta.json", "model.safetensors"]  # files went up first
    assert api.checkpoint_dir(checkpoint_id) is None
    assert api.checkpoint_owner(checkpoint_id) is None

    monkeypatch.setattr(worker.objects.client, "upload_file", real_upload)
    worker.register_checkpoint(checkpoint_id, "acme", "er_x")  # the job's retry
    directory = api.checkpoint_dir(checkpoint_id)
    assert directory is not None and (directory / "model.safetensors").read_bytes() == b"w" * 1000
    assert not (worker.checkpoint_root() / checkpoint_id).exists()  # moved into the cache
    assert worker.checkpoint_dir(checkpoint_id) == worker.cache_dir / "checkpoints" / checkpoint_id


def test_a_corrupted_object_is_never_cached(two_stores: tuple[S3Store, S3Store]):
    worker, api = two_stores
    checkpoint_id = stage_checkpoint(worker, {"model.safetensors": b"good weights"})
    worker.register_checkpoint(checkpoint_id, "acme", "er_x")
    key = worker.objects.key("checkpoints", checkpoint_id, "model.safetensors")
    worker.objects.client.put_object(Bucket=worker.objects.bucket, Key=key, Body=b"evil weights")
    with pytest.raises(S3StoreError, match="does not match its manifest"):
        api.checkpoint_dir(checkpoint_id)
    assert list((api.cache_dir / "checkpoints").iterdir()) == []  # no partial copy left


def test_a_staged_file_that_does_not_match_its_manifest_is_not_uploaded(
    two_stores: tuple[S3Store, S3Store],
):
    worker, api = two_stores
    checkpoint_id = stage_checkpoint(worker, {"model.safetensors": b"weights"})
    (worker.checkpoint_root() / checkpoint_id / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="does not match"):
        worker.register_checkpoint(checkpoint_id, "acme", "er_x")
    assert api.checkpoint_dir(checkpoint_id) is None
    with pytest.raises(ValueError, match="neither staged"):
        worker.register_checkpoint("ffffffffffffffff", "acme", "er_x")


def test_a_stale_lease_is_taken_over_and_a_live_one_waited_for(
    two_stores: tuple[S3Store, S3Store],
):
    worker, api = two_stores
    record, _ = worker.create_erasure(new_record(), b"")
    lease = worker.objects.key("locks", f"erasure-{record.id}")
    # a holder that died: its lease object stays; after lock_ttl (1 s) it is taken over
    worker.objects.client.put_object(Bucket=worker.objects.bucket, Key=lease, Body=b"dead holder")
    updated = api.update_erasure(record.id, lambda r: setattr(r, "attempts", 5))
    assert updated.attempts == 5 and api.get_erasure(record.id).attempts == 5
    assert not worker.objects.exists(lease)  # released

    # a live holder: the other process waits, and its mutation sees the holder's write
    entered, release = threading.Event(), threading.Event()

    def slow(r: ErasureRecord) -> None:
        entered.set()
        release.wait(5)
        r.attempts += 1

    holder = threading.Thread(target=worker.update_erasure, args=(record.id, slow))
    holder.start()
    assert entered.wait(5)
    seen: list[int] = []

    def bump(r: ErasureRecord) -> None:
        seen.append(r.attempts)
        r.attempts += 10

    timer = threading.Timer(0.3, release.set)
    timer.start()
    api.update_erasure(record.id, bump)
    holder.join(5)
    assert seen == [6] and api.get_erasure(record.id).attempts == 16  # mutate ran once


def test_index_keys_list_newest_first():
    ids = [f"er_{i:012x}{7:012x}" for i in (1, 2, 300)]
    assert sorted(invert_id(i) for i in ids) == [invert_id(i) for i in reversed(ids)]
    assert all(invert_id(invert_id(i)) == i for i in ids)
