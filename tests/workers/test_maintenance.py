"""Lost workers: heartbeats keep a running job registered; a dead worker's job is retried or failed.

The real SIGKILL drill (separate processes) is in ``tests/e2e``; here a dead worker is simulated
by registering a job as started with an already expired heartbeat, exactly what rq's registry
holds after its worker died.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from service.config import Settings
from service.records import ErasureRecord
from service.store import FilesystemStore, record_event
from tests.workers.conftest import MODEL, UNKNOWN_TARGET, submit
from workers.cache import ModelCache
from workers.config import WorkerSettings
from workers.context import JobContext, install_context, reset_context
from workers.maintenance import Maintenance
from workers.worker import ErasureWorker

NOT_PRODUCED = {"subject": "Brigid Draycott", "relation": "email", "target": UNKNOWN_TARGET}


@pytest.fixture
def context(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, fe_home: Path
) -> Iterator[JobContext]:
    """The jobs' context (short heartbeats), installed for the test."""
    tuning = WorkerSettings(
        heartbeat_ttl=4, heartbeat_interval=1, cleanup_interval=1, scheduler_interval=0.5
    )
    ctx = JobContext(
        settings=settings,
        store=store,
        cache=ModelCache(1, home=fe_home),
        tuning=tuning,
        redis=rconn,
    )
    install_context(ctx)
    yield ctx
    reset_context()


def _queue(settings: Settings, conn: redis.Redis) -> Queue:
    return Queue(settings.queue_name(MODEL), connection=conn)


def _die_while_running(
    conn: redis.Redis, queue: Queue, store: FilesystemStore, erasure_id: str
) -> None:
    """Leave the job as a SIGKILLed worker would: started, heartbeat expired, record running."""
    job = Job.fetch(erasure_id, connection=conn)
    conn.lrem(queue.key, 0, erasure_id)
    with conn.pipeline() as pipe:
        Execution.create(job, ttl=1, pipeline=pipe, worker_name="ghost")
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        pipe.execute()

    def running(r: ErasureRecord) -> None:
        r.attempts += 1
        r.worker = "ghost"
        record_event(r, "running", stage="baseline", progress=0.05)

    store.update_erasure(erasure_id, running)
    deadline = time.time() + 5
    while StartedJobRegistry(queue=queue).get_expired_job_ids() != [erasure_id]:
        assert time.time() < deadline, "the fake registration never expired"
        time.sleep(0.2)


def test_dead_workers_job_is_retried_then_runs(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, context: JobContext
) -> None:
    settings.job_retries, settings.job_retry_intervals = 2, [1]
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    queue = _queue(settings, rconn)
    _die_while_running(rconn, queue, store, erasure_id)
    maintenance = Maintenance([queue], context, name="test")

    done = maintenance.run_once(force_cleanup=True)
    assert done["abandoned"] == [erasure_id] and done["reconciled"] == [erasure_id]
    record = store.get_erasure(erasure_id)
    assert record.status == "queued" and record.stage == "retrying"
    assert Job.fetch(erasure_id, connection=rconn).get_status() == JobStatus.SCHEDULED

    time.sleep(1.2)  # the retry interval
    assert maintenance.run_once()["promoted"] == [erasure_id]
    assert maintenance.run_once()["promoted"] == []  # promoted once
    assert queue.job_ids == [erasure_id]

    worker = ErasureWorker([queue], connection=rconn, context=context)
    worker.work(burst=True)
    record = store.get_erasure(erasure_id)
    assert record.status == "nothing_to_erase" and record.attempts == 2
    assert [e.status for e in record.history] == [
        "queued",
        "running",
        "queued",
        "running",
        "running",
        "running",
        "nothing_to_erase",
    ]


def test_dead_workers_job_without_retries_fails_the_record(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, context: JobContext
) -> None:
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])  # job_retries=0
    queue = _queue(settings, rconn)
    _die_while_running(rconn, queue, store, erasure_id)

    done = Maintenance([queue], context, name="test").run_once(force_cleanup=True)
    assert done["abandoned"] == [erasure_id]
    record = store.get_erasure(erasure_id)
    assert record.status == "failed"
    assert "stopped before it finished" in record.error
    assert store.get_request_blob(erasure_id) is None
    assert Job.fetch(erasure_id, connection=rconn).get_status() == JobStatus.FAILED
    # idempotent: another round (or an rq failure callback) changes nothing
    history = record.history
    Maintenance([queue], context, name="other").run_once(force_cleanup=True)
    assert store.get_erasure(erasure_id).history == history


def test_failed_registry_reconciles_records_left_running(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, context: JobContext
) -> None:
    """A job that failed outside the job function (here: cleaned up by someone else)."""
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    queue = _queue(settings, rconn)
    _die_while_running(rconn, queue, store, erasure_id)
    StartedJobRegistry(queue=queue).cleanup()  # e.g. rq's own maintenance in another process
    assert store.get_erasure(erasure_id).status == "running"

    Maintenance([queue], context, name="test").run_once(force_cleanup=True)
    assert store.get_erasure(erasure_id).status == "failed"


def test_heartbeats_keep_a_long_job_registered(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    context: JobContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job running longer than heartbeat_ttl is never taken for abandoned."""
    import editing.pipeline as pipeline  # erase_and_publish calls run_erasure from there

    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    queue = _queue(settings, rconn)
    real = pipeline.run_erasure
    during: dict[str, Any] = {}

    def slow(request: Any, loaded: Any, **kw: Any) -> Any:
        time.sleep(context.tuning.heartbeat_ttl + 2)  # longer than one registration lives
        during["abandoned"] = Maintenance([queue], context, name="x").run_once(True)["abandoned"]
        during["registered"] = erasure_id in StartedJobRegistry(queue=queue)
        return real(request, loaded, **kw)

    monkeypatch.setattr(pipeline, "run_erasure", slow)
    ErasureWorker([queue], connection=rconn, context=context).work(burst=True)

    assert during == {"abandoned": [], "registered": True}
    record = store.get_erasure(erasure_id)
    assert record.status == "nothing_to_erase" and record.attempts == 1
    assert erasure_id not in StartedJobRegistry(queue=queue)


def test_publish_leftovers_of_dead_workers_are_swept(
    store: FilesystemStore, context: JobContext, settings: Settings, rconn: redis.Redis
) -> None:
    import os

    root = store.checkpoint_root()
    old, fresh, real = root / ".publish-old", root / ".publish-new", root / "0123456789abcdef"
    for d in (old, fresh, real):
        d.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(real, (time.time() - 7200, time.time() - 7200))
    maintenance = Maintenance([_queue(settings, rconn)], context, name="test")
    assert maintenance.sweep_publish_leftovers() == [".publish-old"]
    assert not old.exists() and fresh.exists() and real.exists()


def test_cleanup_waits_a_heartbeat_after_a_redis_outage(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, context: JobContext
) -> None:
    """A job whose heartbeats failed while Redis was down looks expired when Redis is back: the
    cleanups within the grace after the outage leave it alone, forced ones (rq's periodic
    maintenance) too: its worker renews it first."""
    settings.job_retries, settings.job_retry_intervals = 2, [1]
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    queue = _queue(settings, rconn)
    _die_while_running(rconn, queue, store, erasure_id)
    maintenance = Maintenance([queue], context, name="test")
    maintenance._redis_failed_at = time.monotonic()  # what _loop records on a RedisError

    assert maintenance.after_outage()
    assert maintenance.run_once()["abandoned"] == []
    assert maintenance.run_once(force_cleanup=True)["abandoned"] == []
    assert store.get_erasure(erasure_id).status == "running"
    maintenance._redis_failed_at = time.monotonic() - 10  # heartbeat_ttl 4 + interval 1 ago
    assert not maintenance.after_outage()
    assert maintenance.run_once()["abandoned"] == [erasure_id]


def test_a_redis_that_just_restarted_counts_as_an_outage(context: JobContext) -> None:
    from workers.embedded_redis import EmbeddedRedis, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install featureedit[embedded-redis])")
    with EmbeddedRedis() as server:
        conn = redis.Redis.from_url(server.url)
        maintenance = Maintenance([Queue("fresh", connection=conn)], context, name="test")
        assert maintenance.after_outage()  # uptime 0 s < heartbeat_ttl + interval
        conn.close()
