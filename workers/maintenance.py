"""Queue maintenance run by every worker in a background thread: lost jobs, retries, records.

rq leaves the job of a SIGKILLed worker STARTED until its StartedJobRegistry entry expires *and*
someone runs ``StartedJobRegistry.cleanup()``; a ``Retry`` with intervals then waits in the
ScheduledJobRegistry until a scheduler moves it back onto its queue. rq's own scheduler forks a
process (not something to do next to a CUDA model, and it survives a SIGKILLed parent), so each
worker's :class:`Maintenance` thread does both, for the worker's queues:

* every ``scheduler_interval``: move due scheduled jobs (retries) onto their queue. Each job is
  claimed with a short Redis lock first, so two workers never queue it twice;
* every ``cleanup_interval``, under rq's per-queue maintenance lock: ``cleanup()`` the
  StartedJobRegistry (expired entries are retried by rq or failed with ``AbandonedJobError``),
  clean the other registries, then :func:`~workers.reconcile.reconcile_erasure` the records of
  the jobs just cleaned and of recent entries of the FailedJobRegistry (so a final failure outside
  the job function still shows on the record as ``failed``; a retry shows as
  ``queued``/``retrying``).

After a Redis outage (this thread saw Redis unreachable, or the server restarted) the cleanup
waits one heartbeat TTL: the heartbeats of running jobs failed meanwhile, so their registrations
look expired until the next beat renews them, and cleaning then would retry (or fail) jobs that
are still running. The bound on how long a dead worker's job stays "running" is in
:mod:`workers.config` (an outage adds its own length plus one TTL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.timeouts import BaseDeathPenalty
from rq.utils import current_timestamp
from rq.worker_registration import clean_worker_registry

from workers.config import WorkerSettings
from workers.context import JobContext
from workers.reconcile import reconcile_erasure

log = logging.getLogger(__name__)

FAILED_SCAN = 50  # newest FailedJobRegistry entries checked per queue and cleanup
CLAIM_SECONDS = 60


class NoDeathPenalty(BaseDeathPenalty):
    """No timeout for rq failure callbacks run from this (non-main) thread.

    rq's default (``UnixSignalDeathPenalty``) installs a SIGALRM handler, which only the main
    thread may do: from a thread it raises and aborts the registry cleanup half-way.
    """

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class Maintenance:
    """Promote due retries, clean the started registries and reconcile records, on a timer."""

    def __init__(
        self,
        queues: Sequence[Queue],
        context: JobContext,
        tuning: WorkerSettings | None = None,
        name: str = "worker",
    ) -> None:
        self.queues = list(queues)
        self.context = context
        self.tuning = tuning or context.tuning
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cleanup = -float("inf")
        self._redis_failed_at = -float("inf")  # monotonic time of the last Redis error seen
        self._settled: set[str] = set()  # ids whose record is known terminal

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"featureedit-maintenance-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        try:
            self.sweep_publish_leftovers()  # at start: what a killed worker left
        except Exception:
            log.exception("maintenance: startup sweep failed; continuing")
        while not self._stop.is_set():
            try:
                self.run_once()
            except RedisError as exc:
                self._redis_failed_at = time.monotonic()
                log.warning("maintenance: Redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("maintenance: unexpected error; continuing")
            self._stop.wait(self.tuning.scheduler_interval)

    # ------------------------------------------------------------------ one round
    def run_once(self, force_cleanup: bool = False) -> dict[str, list[str]]:
        """One round: promote due jobs; clean up and reconcile when due (or forced), unless
        Redis was down or restarted within the post-outage grace (:meth:`after_outage`).

        Returns what was done: ``{"promoted": [...], "abandoned": [...], "reconciled": [...]}``.
        """
        done: dict[str, list[str]] = {"promoted": [], "abandoned": [], "reconciled": []}
        for queue in self.queues:
            done["promoted"] += self.promote_scheduled(queue)
        now = time.monotonic()
        due = force_cleanup or now - self._last_cleanup >= self.tuning.cleanup_interval
        if due and not self.after_outage():  # forced or not: never right after an outage
            self._last_cleanup = now
            for queue in self.queues:
                abandoned = self.clean_started(queue)
                done["abandoned"] += abandoned
                done["reconciled"] += self.reconcile(queue, abandoned)
            self.sweep_publish_leftovers()
        return done

    def after_outage(self) -> bool:
        """Whether Redis was unreachable here, or restarted, less than a heartbeat TTL (plus one
        heartbeat interval) ago: running jobs' registrations may not be renewed yet."""
        grace = self.tuning.heartbeat_ttl + self.tuning.heartbeat_interval
        if time.monotonic() - self._redis_failed_at < grace:
            return True
        uptime = (
            self.queues[0].connection.info("server").get("uptime_in_seconds")
            if self.queues
            else None
        )
        if uptime is not None and float(uptime) < grace:
            log.info("maintenance: Redis restarted %s s ago; lost-job cleanup waits", uptime)
            return True
        return False

    def sweep_publish_leftovers(self, older_than: float | None = None) -> list[str]:
        """Sweep what dead workers left in the store: ``.publish-*`` directories, temporary
        files, unowned checkpoints (:mod:`service.store.leftovers`); the names removed.

        Anything untouched for ``older_than`` seconds (default ``publish_stale_seconds``) belongs
        to no running job: a live publish keeps writing under its directory.
        """
        from service.store.leftovers import sweep_leftovers

        limit = (
            older_than if older_than is not None else self.context.settings.publish_stale_seconds
        )
        store = self.context.store
        sweep = getattr(store, "sweep_leftovers", None)
        done = sweep(limit) if callable(sweep) else sweep_leftovers(store, limit)
        return done.removed()

    def promote_scheduled(self, queue: Queue) -> list[str]:
        """Move ``queue``'s due scheduled jobs (retries) onto the queue; their ids."""
        conn = queue.connection
        registry = ScheduledJobRegistry(queue=queue)
        promoted = []
        for job_id in registry.get_jobs_to_schedule(current_timestamp()):
            claim = f"{self.context.settings.redis_prefix}:promote:{job_id}"
            if not conn.set(claim, self.name, nx=True, ex=CLAIM_SECONDS):
                continue  # another worker is on it
            try:
                try:
                    job = Job.fetch(job_id, connection=conn, serializer=queue.serializer)
                except NoSuchJobError:
                    registry.remove(job_id)
                    continue
                if job.get_status(refresh=True) == JobStatus.SCHEDULED:
                    # what rq's RQScheduler.enqueue_scheduled_jobs does for each due job
                    queue._enqueue_job(job, at_front=job.should_enqueue_at_front())
                    promoted.append(job_id)
                registry.remove(job_id)
            finally:
                conn.delete(claim)
        if promoted:
            log.info("maintenance: queued due retries %s on %s", promoted, queue.name)
        return promoted

    def clean_started(self, queue: Queue) -> list[str]:
        """``cleanup()`` ``queue``'s registries under rq's maintenance lock; abandoned job ids."""
        if not queue.acquire_maintenance_lock():
            return []
        try:
            registry = StartedJobRegistry(queue=queue, death_penalty_class=NoDeathPenalty)
            expired = registry.get_expired_job_ids()
            if expired:
                log.warning(
                    "maintenance: jobs %s on %s lost their worker; retrying or failing them",
                    expired,
                    queue.name,
                )
            registry.cleanup()
            for other in (FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry):
                other(queue=queue).cleanup()  # expired entries (what rq's clean_registries does)
            clean_worker_registry(queue)
            return expired
        finally:
            queue.release_maintenance_lock()

    def reconcile(self, queue: Queue, job_ids: Sequence[str] = ()) -> list[str]:
        """Reconcile the records of ``job_ids`` and of the newest failed jobs; ids changed."""
        failed = FailedJobRegistry(queue=queue).get_job_ids(
            0, FAILED_SCAN - 1, desc=True, cleanup=False
        )
        changed = []
        for job_id in dict.fromkeys([*job_ids, *failed]):
            if job_id in self._settled:
                continue
            outcome = reconcile_erasure(self.context, job_id, queue.connection)
            if outcome is not None:
                changed.append(job_id)
                log.info("maintenance: erasure %s reconciled: %s", job_id, outcome)
            record = self.context.store.get_erasure(job_id)
            if record is None or record.status in _terminal():
                self._settled.add(job_id)
        if len(self._settled) > 100_000:
            self._settled.clear()
        return changed


def _terminal() -> frozenset[str]:
    from service.records import TERMINAL

    return TERMINAL
