"""Fixtures for the service tests: real Redis (db 15, flushed per test), an app per test, API keys
for two tenants, request bodies and a fake published checkpoint (no torch anywhere).

Redis: ``FEATUREEDIT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``). The tests are
skipped, saying so, only if that Redis is unreachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.records import ErasureRecord
from service.security import KeyStore, keys_dir
from service.store import FilesystemStore, Store, new_erasure_id, record_event
from tests.conftest import flushed_redis, reachable_redis

REDIS_URL = os.environ.get("FEATUREEDIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SECRET = "555-0199-7731"  # the target used in the tests; must never come back


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL (skips the service tests, saying why, if Redis is unreachable)."""
    return reachable_redis(REDIS_URL, "FEATUREEDIT_TEST_REDIS_URL")


@pytest.fixture
def rconn(redis_url: str) -> Iterator[redis.Redis]:
    """A connection to the test database, flushed before and after the test."""
    with flushed_redis(redis_url) as conn:
        yield conn


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, rconn: redis.Redis) -> Settings:
    """Settings with a fresh home under tmp_path and the test Redis."""
    return Settings(home=tmp_path / "home", redis_url=redis_url, sse_poll_interval=0.05)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**overrides)``: a TestClient on an app with the settings (plus overrides),
    calling from 127.0.0.1 (so /metrics answers without a token)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(settings.model_copy(update=overrides))
        client = TestClient(app, client=("127.0.0.1", 50000))  # a local client, as curl on the host
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A TestClient on the default test app."""
    return make_client()


@pytest.fixture
def store(settings: Settings) -> FilesystemStore:
    """The store the app uses."""
    return FilesystemStore(settings.store_dir)


@pytest.fixture
def keys(settings: Settings) -> dict[str, str]:
    """API keys of tenants ``acme`` and ``globex``."""
    ks = KeyStore(keys_dir(settings.home))
    return {"acme": ks.create_key("acme")[1], "globex": ks.create_key("globex")[1]}


def auth(key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


def fact(**overrides: Any) -> dict[str, Any]:
    """A valid fact about a fictional person (target :data:`SECRET`)."""
    return {"subject": "Alice Example", "relation": "phone", "target": SECRET, **overrides}


def body(**overrides: Any) -> dict[str, Any]:
    """A valid request body for the ``demo-small`` model."""
    return {"model": "demo-small", "method": "featureedit", "facts": [fact()], **overrides}


def new_record(tenant: str = "acme", erasure_id: str | None = None) -> ErasureRecord:
    """A just-queued erasure record of ``tenant`` (a new id unless ``erasure_id``), not stored."""
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


def stage_checkpoint(store: Store, files: dict[str, bytes], model_id: str = "demo-small") -> str:
    """Write a fake checkpoint (files + manifest.json) under the store's checkpoint_root, as a
    worker does before publishing it; return its id (not registered yet)."""
    entries = [
        {"name": n, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for n, data in sorted(files.items())
    ]
    lines = "".join(f"{e['sha256']}  {e['name']}\n" for e in entries)
    checkpoint_id = hashlib.sha256(lines.encode()).hexdigest()[:16]
    root = store.checkpoint_root() / checkpoint_id
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    manifest = {
        "format": "featureedit-checkpoint",
        "format_version": 2,
        "checkpoint_id": checkpoint_id,
        "base_model": {"model_id": model_id, "model_type": "gemma2"},
        "files": entries,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return checkpoint_id


def make_checkpoint(
    store: Store, tenant: str, files: dict[str, bytes], model_id: str = "demo-small"
) -> str:
    """Publish a fake checkpoint (files + manifest.json) owned by ``tenant``; return its id."""
    checkpoint_id = stage_checkpoint(store, files, model_id)
    store.register_checkpoint(checkpoint_id, tenant, "er_000000000000000000000000")
    return checkpoint_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    """The app of ``settings`` served by uvicorn on a free local port (in a thread): its URL."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a free local port (in a thread); yields its base URL."""
    with serve_in_thread(settings) as url:
        yield url
