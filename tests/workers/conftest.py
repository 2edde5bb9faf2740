"""Fixtures for the worker tests: real Redis (db 14, flushed), a filesystem store, the small world.

Redis: ``FEATUREEDIT_TEST_WORKER_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``); the tests
are skipped, saying so, only if it is unreachable. Erasures are submitted exactly as the API does
(public form via the API's helper, encrypted blob, ``service.queueing.JobQueue.enqueue``) and run
by a real :class:`~workers.worker.ErasureWorker` (an rq ``SimpleWorker``) in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from service.config import Settings
from service.store import FilesystemStore
from tests.conftest import flushed_redis, reachable_redis

REDIS_URL = os.environ.get("FEATUREEDIT_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/14")
MODEL = "demo-small"
UNKNOWN_TARGET = "nobody-at-all@nowhere.example"  # no demo-world model produces this


@pytest.fixture(scope="session")
def worker_redis_url() -> str:
    """The test Redis URL (skips the worker tests, saying why, if Redis is unreachable)."""
    return reachable_redis(REDIS_URL, "FEATUREEDIT_TEST_WORKER_REDIS_URL")


@pytest.fixture
def rconn(worker_redis_url: str) -> Iterator[redis.Redis]:
    """A connection to the test database, flushed before and after the test."""
    with flushed_redis(worker_redis_url) as conn:
        yield conn


@pytest.fixture
def settings(tmp_path: Path, fe_home: Path, worker_redis_url: str, rconn: redis.Redis) -> Settings:
    """Service settings: the session's home (world, keys), a fresh store, the test Redis."""
    return Settings(
        home=fe_home,
        store_root=tmp_path / "store",
        redis_url=worker_redis_url,
        job_timeout=600,
        job_retries=0,
    )


@pytest.fixture
def store(settings: Settings) -> FilesystemStore:
    """The store of the test."""
    return FilesystemStore(settings.store_dir)


@dataclass(frozen=True)
class Fact:
    """A demo-world fact (the target is a fictional secret)."""

    subject: str
    relation: str
    target: str

    def spec(self, target: str | None = None) -> dict[str, str]:
        """The fact as a request's ``facts`` entry."""
        return {"subject": self.subject, "relation": self.relation, "target": target or self.target}


@pytest.fixture(scope="session")
def erasable_fact(small_world: Any, small_model: Any) -> Fact:
    """A private fact of the small world that FeatureEdit erases with the default thresholds and
    the worker's default attacks and limits (so a worker publishes it).

    The small world's erasures are not all accepted: this tries e-mail facts first (they erase
    best), then the rest, and returns the first accepted one.
    """
    from tests.conftest import erased_as_published

    facts = sorted(small_world.private_facts(), key=lambda f: f.relation != "email")
    for f in facts[:12]:
        fact = Fact(f.subject, f.relation, f.target)
        if erased_as_published(small_model, fact.spec()):
            return fact
    pytest.fail("no fact of the small demo world is erased with the default thresholds")


@pytest.fixture(scope="session")
def four_facts(small_world: Any) -> list[dict[str, str]]:
    """The e-mail facts of four subjects of the small world (e-mail facts erase best): a request
    the chunk tests split into two chunks of two."""
    seen: list[dict[str, str]] = []
    for f in small_world.private_facts():
        if f.relation == "email" and all(s["subject"] != f.subject for s in seen):
            seen.append({"subject": f.subject, "relation": f.relation, "target": f.target})
        if len(seen) == 4:
            return seen
    pytest.fail("the small world has fewer than four subjects with an e-mail fact")


def submit(
    settings: Settings,
    store: FilesystemStore,
    conn: redis.Redis,
    facts: list[dict[str, Any]],
    *,
    tenant: str = "acme",
    callback_url: str | None = None,
    enqueue: bool = True,
    **request_fields: Any,
) -> str:
    """Create an erasure the way the API does (record, encrypted blob, job); return its id."""
    from editing.fingerprint import fingerprint_key
    from editing.request import ErasureRequest
    from service.api.intake import new_record
    from service.queueing import JobQueue
    from service.security import encrypt_request

    request = ErasureRequest(model=MODEL, facts=facts, **request_fields)
    key = fingerprint_key(settings.home)
    record = new_record(request, tenant, key, callback_url=callback_url)
    store.create_erasure(record, encrypt_request(request, home=settings.home))
    if enqueue:
        assert JobQueue(conn, settings).enqueue(record.id, record.model)
    return record.id


def redis_bytes(conn: redis.Redis) -> bytes:
    """Every key and value of the database (zlib-compressed values also decompressed)."""
    chunks: list[bytes] = []

    def add(value: bytes) -> None:
        chunks.append(value)
        with contextlib.suppress(zlib.error):
            chunks.append(zlib.decompress(value))

    for key in conn.scan_iter("*"):
        add(key)
        kind = conn.type(key)
        if kind == b"string":
            add(conn.get(key) or b"")
        elif kind == b"hash":
            for k, v in conn.hgetall(key).items():
                add(k)
                add(v)
        elif kind == b"list":
            for v in conn.lrange(key, 0, -1):
                add(v)
        elif kind == b"set":
            for v in conn.smembers(key):
                add(v)
        elif kind == b"zset":
            for v, _ in conn.zrange(key, 0, -1, withscores=True):
                add(v)
        elif kind == b"stream":
            for _, fields in conn.xrange(key):
                for k, v in fields.items():
                    add(k)
                    add(v)
    return b"\n".join(chunks)


def secret_forms(secret: str) -> list[bytes]:
    """How a secret may appear in bytes: raw UTF-8, JSON-escaped, repr-escaped."""
    return [secret.encode(), json.dumps(secret)[1:-1].encode(), repr(secret)[1:-1].encode()]


@dataclass
class LiveStack:
    """A real API (uvicorn in a thread) and an installed job context on one flushed Redis db."""

    settings: Settings
    store: FilesystemStore
    conn: redis.Redis
    context: Any  # workers.context.JobContext
    url: str
    keys: dict[str, str]  # tenant -> API key

    def run_jobs(self, logging_level: str = "WARNING") -> None:
        """Run every queued erasure of :data:`MODEL` with a real ErasureWorker (burst mode)."""
        from rq import Queue

        from workers.worker import ErasureWorker

        queue = Queue(self.settings.queue_name(MODEL), connection=self.conn)
        worker = ErasureWorker([queue], connection=self.conn, context=self.context)
        worker.work(burst=True, logging_level=logging_level)


@contextlib.contextmanager
def live_stack(
    root: Path, fe_home: Path, redis_url: str, tenants: tuple[str, ...], **settings: Any
) -> Iterator[LiveStack]:
    """A :class:`LiveStack` under ``root`` (its store), an API key per tenant; ``settings``
    override the service settings (``job_retries`` is 0). Redis is flushed before and after."""
    from service.security import KeyStore, keys_dir
    from tests.service.conftest import serve_in_thread
    from workers.cache import ModelCache
    from workers.context import JobContext, install_context, reset_context

    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    config = Settings(
        home=fe_home,
        store_root=root / "store",
        redis_url=redis_url,
        **({"job_retries": 0} | settings),
    )
    store = FilesystemStore(config.store_dir)
    ctx = JobContext(settings=config, store=store, cache=ModelCache(1, home=fe_home), redis=conn)
    install_context(ctx)
    try:
        keys = {t: KeyStore(keys_dir(config.home)).create_key(t)[1] for t in tenants}
        with serve_in_thread(config) as url:
            yield LiveStack(config, store, conn, ctx, url, keys)
    finally:
        reset_context()
        conn.flushdb()
        conn.close()
