"""The job queues (rq on Redis) as the API uses them, and the per-tenant rate limiter.

One queue per model, ``<queue_prefix>-<model_id>`` (default ``featureedit-demo``), so a worker
keeps one model warm; within it jobs wait in round-robin order across tenants
(:mod:`service.fairness`). A job is ``workers.jobs.run_erasure_job(erasure_id)`` enqueued by dotted
path (the API never imports the worker code) with ``job_id = erasure_id`` and ``unique=True``: a
second enqueue of the same erasure raises ``DuplicateJobError`` instead of queueing it twice.
The job's only argument is the opaque erasure id; the request lives encrypted in the store.
Jobs are JSON-encoded (:data:`JOB_SERIALIZER`, never pickled): the workers decode nothing but
JSON and refuse any job function outside their allow-list (:mod:`workers.job_policy`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from service.config import Settings
from service.fairness import fair_tally_key, place_fairly

log = logging.getLogger(__name__)

JOB_FUNC = "workers.jobs.run_erasure_job"
JOB_SERIALIZER = JSONSerializer  # every featureedit queue, job and worker uses it


class QueueUnavailable(RuntimeError):
    """Redis could not be reached (or refused the command)."""


def connect_redis(url: str) -> Redis:
    """A Redis client for the API (bytes responses, as rq needs; short timeouts)."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


class JobQueue:
    """Enqueue, cancel and count erasure jobs."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def queue(self, model_id: str) -> Queue:
        """The rq queue of ``model_id``."""
        return Queue(
            self.settings.queue_name(model_id), connection=self.redis, serializer=JOB_SERIALIZER
        )

    def enqueue(self, erasure_id: str, model_id: str, tenant: str | None = None) -> bool:
        """Enqueue the erasure's job; False if a job with that id already exists.

        With ``tenant``, the job then takes its tenant's round in the queue
        (:func:`~service.fairness.place_fairly`: round-robin across tenants).
        Raises :class:`QueueUnavailable` when Redis fails.
        """
        s = self.settings
        queue = self.queue(model_id)
        try:
            queue.enqueue(
                JOB_FUNC,
                erasure_id,
                job_id=erasure_id,
                description=f"erasure {erasure_id}",
                unique=True,
                **self.job_options(),
            )
        except DuplicateJobError:
            return False
        except RedisError as exc:
            raise QueueUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if tenant is not None:
            try:
                tally = fair_tally_key(s.redis_prefix, queue.name)
                place_fairly(self.redis, queue.key, tally, erasure_id, tenant)
            except RedisError as exc:  # the job is queued all the same, at the end
                log.warning("could not place a job fairly", extra={"error": str(exc)})
        return True

    def job_options(self) -> dict[str, Any]:
        """The rq options of every erasure job (timeout, retries, result and failure TTLs)."""
        s = self.settings
        retry = Retry(max=s.job_retries, interval=s.job_retry_intervals) if s.job_retries else None
        return {
            "job_timeout": s.job_timeout,
            "retry": retry,
            "result_ttl": s.result_ttl,
            "failure_ttl": s.failure_ttl,
        }

    def job_exists(self, erasure_id: str) -> bool:
        """Whether rq still holds the erasure's job (QueueUnavailable when Redis fails)."""
        try:
            return Job.exists(erasure_id, connection=self.redis)
        except RedisError as exc:
            raise QueueUnavailable(str(exc)) from exc

    def cancel(self, erasure_id: str) -> bool:
        """Take a queued job out of its queue; False if a worker has already started it.

        A missing job counts as removed. Raises QueueUnavailable when Redis fails.
        """
        try:
            job = Job.fetch(erasure_id, connection=self.redis, serializer=JOB_SERIALIZER)
        except NoSuchJobError:
            return True
        except RedisError as exc:
            raise QueueUnavailable(str(exc)) from exc
        try:
            status = job.get_status(refresh=True)
            if status in (JobStatus.STARTED,):
                return False
            if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                job.cancel()
            return True
        except NoSuchJobError:
            return True
        except RedisError as exc:
            raise QueueUnavailable(str(exc)) from exc

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.redis.ping())
        except RedisError:
            return False

    def depths(self) -> dict[str, dict[str, int]]:
        """Per featureedit queue: queued, started, failed and scheduled job counts."""
        out: dict[str, dict[str, int]] = {}
        prefix = f"{self.settings.queue_prefix}-"
        for q in Queue.all(connection=self.redis, serializer=JOB_SERIALIZER):
            if not q.name.startswith(prefix):
                continue
            out[q.name] = {
                "queued": q.count,
                # cleanup=False: registry cleanup is the workers' job (it may run rq failure
                # callbacks needing the main thread); the API only reads
                "started": q.started_job_registry.get_job_count(cleanup=False),
                "failed": q.failed_job_registry.get_job_count(cleanup=False),
                "scheduled": q.scheduled_job_registry.get_job_count(cleanup=False),
            }
        return out


class RateLimiter:
    """Fixed-window request counters per tenant and bucket in Redis (INCR + EXPIRE).

    Fails open: when Redis is unreachable requests are allowed (and a warning logged), since the
    store, not Redis, serves reads, and writes fail at enqueue time anyway.
    """

    def __init__(self, redis: Redis, prefix: str, window: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window = window

    def hit(self, tenant: str, bucket: str, limit: int) -> int | None:
        """Count one request; None if allowed, else the seconds until the window resets."""
        now = time.time()
        index = int(now // self.window)
        key = f"{self.prefix}:ratelimit:{bucket}:{tenant}:{index}"
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, self.window * 2)
            count, _ = pipe.execute()
        except RedisError as exc:
            log.warning("rate limiter unavailable, allowing request", extra={"error": str(exc)})
            return None
        if int(count) <= limit:
            return None
        return max(1, math.ceil((index + 1) * self.window - now))
