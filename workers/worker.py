"""The featureedit worker: an rq ``SimpleWorker`` that keeps models warm and recovers lost jobs.

* **No fork.** rq's default worker forks a process per job, which would reload the model for every
  job and must never happen after CUDA is initialised. :class:`ErasureWorker` runs jobs in its own
  process (``SimpleWorker``), so the :class:`~workers.cache.ModelCache` keeps models loaded between
  jobs; nothing forks (not even rq's scheduler: :class:`~workers.maintenance.Maintenance` does
  its work in a thread).
* **Heartbeats while a job runs.** A ``SimpleWorker`` sends none, and registers a running job for
  ``job_timeout + 60`` seconds, so a SIGKILLed worker's job would look alive for that long. Here
  the job is registered for ``heartbeat_ttl`` seconds and a thread renews the registration every
  ``heartbeat_interval`` seconds while the job runs.
* **Maintenance thread.** Promotes due retries, cleans the started registries (so a dead worker's
  job is retried or failed within the bound given in :mod:`workers.config`) and reconciles records.
* **Redis outages.** The job's outcome is in the durable store, rq's registries only mirror it:
  when Redis is unreachable as a job starts or ends, or between two waits for a job (heartbeat,
  suspension check, maintenance), the worker waits for it (backoff up to one heartbeat interval
  between tries) and then goes on, instead of quitting with the job half-recorded: rq's
  own loop only survives outages while it blocks waiting for a job, any other Redis error ends
  ``work()``.

* **Only our own jobs.** Jobs are JSON-encoded (never unpickled) and each worker class runs only
  its own job functions (:mod:`workers.job_policy`): anything else is refused, logged and failed.

Two worker classes: :class:`ErasureWorker` (model queues, ``<prefix>-<model_id>`` or a queue
class's, one per registered model by default; holds models and the request key) and
:class:`CallbackWorker` (only ``<prefix>-callbacks``; holds no model: a tenant's slow or hostile
callback endpoint never ties up a model worker). Run them with ``featureedit worker`` and
``featureedit worker --callbacks-only`` (see :mod:`workers.cli`) or :func:`run_worker`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

from service.config import Settings
from service.queueing import JOB_SERIALIZER
from service.store import get_store
from workers.cache import ModelCache
from workers.config import WorkerSettings, callback_queue_name
from workers.context import JobContext, install_context
from workers.job_policy import CALLBACK_FUNCTIONS, ERASURE_FUNCTIONS, REFUSED_FUNC, refusal
from workers.maintenance import Maintenance

log = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
T = TypeVar("T")
PUBSUB_READ_SECONDS = 1.0  # the command channel is read in slices this long (see subscribe)


def default_queue_names(
    settings: Settings, home: str | os.PathLike[str] | None = None
) -> list[str]:
    """The queue of every registered model (``featureedit-demo``...; a model with a queue class in
    ``Settings.queue_classes`` is served by its class's queue). Callbacks have their own worker."""
    from editing.registry import load_registry

    return model_queue_names(settings, sorted(load_registry(home or settings.home)))


def model_queue_names(
    settings: Settings, models: Sequence[str] = (), classes: Sequence[str] = ()
) -> list[str]:
    """The queues serving ``models`` and the queue ``classes`` (never the callbacks queue).

    A worker on these queues only gets jobs for models it was given: a model whose queue class
    (``Settings.queue_classes``) is shared with models not in ``models`` raises ValueError, since
    that class's queue would hand it their jobs too (name the class in ``classes`` instead, on a
    worker that can hold every model of the class).
    """
    names: list[str] = []
    for model_id in models:
        queue_class = settings.queue_class(model_id)
        if queue_class is not None and queue_class not in classes:
            others = sorted(
                m for m, c in settings.queue_classes.items() if c == queue_class and m != model_id
            )
            missing = [m for m in others if m not in models]
            if missing:
                raise ValueError(
                    f"model {model_id!r} is in queue class {queue_class!r} with {missing}; a "
                    f"worker on that queue takes their jobs too: list them as well, or pass "
                    f"--classes {queue_class} on a worker that can hold every model of the class"
                )
        names.append(settings.queue_name(model_id))
    names += [settings.class_queue_name(c) for c in classes]
    return list(dict.fromkeys(names))


def json_queue(queue: Queue | str, connection: Redis | None) -> Queue:
    """``queue`` (a name or a Queue) as a Queue on ``connection`` with the JSON job serializer."""
    if isinstance(queue, str):
        return Queue(queue, connection=connection, serializer=JOB_SERIALIZER)
    return Queue(queue.name, connection=connection or queue.connection, serializer=JOB_SERIALIZER)


def worker_name() -> str:
    """A readable unique worker name: ``<host>-<pid>-<random>``."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class FeatureeditWorker(SimpleWorker):
    """A ``SimpleWorker`` with short job heartbeats, a maintenance thread and an allow-list of job
    functions (module docstring); :class:`ErasureWorker` and :class:`CallbackWorker` set it."""

    allowed_functions: frozenset[str] = frozenset()

    def __init__(
        self,
        queues: Sequence[Queue | str],
        *args: Any,
        context: JobContext,
        tuning: WorkerSettings | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", worker_name())
        kwargs["serializer"] = JOB_SERIALIZER
        self.check_queues([q if isinstance(q, str) else q.name for q in queues], context.settings)
        queues = [json_queue(q, kwargs.get("connection")) for q in queues]
        super().__init__(queues, *args, **kwargs)
        self.context = context
        self.tuning = tuning or context.tuning
        context.worker_name = self.name
        if context.redis is None:
            context.redis = self.connection
        self.maintenance = Maintenance(self.queues, context, self.tuning, name=self.name)
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None
        self._beat_lock = threading.Lock()

    # ------------------------------------------------------------------ heartbeats
    def get_heartbeat_ttl(self, job: Job) -> int:
        """Register running jobs for ``heartbeat_ttl`` seconds (renewed while they run)."""
        return self.tuning.heartbeat_ttl

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` in this process, renewing its registration until it ends.

        What ``SimpleWorker.execute_job`` does, with the Redis bookkeeping before and after the
        job waiting out a Redis outage (:meth:`until_redis_answers`).
        """
        self._start_heartbeat(job)
        try:
            self.until_redis_answers(f"starting job {job.id}", lambda: self.prepare_execution(job))
            self.perform_job(job, queue)
            self.until_redis_answers(
                f"job {job.id} ended", lambda: self.set_state(WorkerStatus.IDLE)
            )
        finally:
            self._stop_heartbeat()

    @classmethod
    def check_queues(cls, names: Sequence[str], settings: Settings) -> None:
        """ValueError if this worker class must not serve a queue of ``names``."""

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Run ``job`` if this worker class allows it (:func:`workers.job_policy.refusal`); else
        log the refusal (job id, queue, reason: never the arguments) and fail it, unrun and
        without retries."""
        reason = refusal(job, self.allowed_functions)
        if reason is None:
            return super().perform_job(job, queue)
        log.warning(
            "job %s on queue %s refused, not run: %s",
            job.id,
            queue.name,
            reason,
            extra={"refused_job": job.id, "queue": queue.name},
        )
        started = queue.started_job_registry
        # the stored job becomes inert: re-encoded as JSON, no function to import, no arguments
        job.func_name, job.args, job.kwargs = REFUSED_FUNC, (), {}
        self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        job.retries_left = 0
        job._status = JobStatus.FAILED
        self.handle_execution_ended(job, queue, self.get_heartbeat_ttl(job))
        self.handle_job_failure(
            job=job,
            queue=queue,
            started_job_registry=started,
            exc_string=f"refused by the featureedit worker: {reason}",
        )
        return False

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Stop renewing before rq finishes the job's bookkeeping (waits out a Redis outage)."""
        self._stop_heartbeat()
        base = super()
        self.until_redis_answers(
            f"job {job.id} ended", lambda: base.handle_execution_ended(job, queue, heartbeat_ttl)
        )

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        """rq's success bookkeeping (one transaction), retried until Redis answers."""
        base = super()
        self.until_redis_answers(
            f"recording job {job.id} as finished",
            lambda: base.handle_job_success(job, queue, started_job_registry),
        )

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        """rq's failure bookkeeping, once Redis answers (rq swallows its own Redis errors here,
        which would leave the job registered as running until its heartbeat expires)."""
        self.until_redis_answers(f"recording job {job.id} as failed", self.connection.ping)
        super().handle_job_failure(job, queue, *args, **kwargs)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """rq's worker heartbeat; sent directly (not into a pipeline) it waits out an outage."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        self.until_redis_answers(
            "worker heartbeat", lambda: super(FeatureeditWorker, self).heartbeat(timeout)
        )

    def check_for_suspension(self, burst: bool) -> None:
        """rq's suspension check (each loop), waiting out a Redis outage."""
        self.until_redis_answers(
            "suspension check",
            lambda: super(FeatureeditWorker, self).check_for_suspension(burst),
        )

    def run_maintenance_tasks(self) -> None:
        """rq's periodic maintenance (our :meth:`clean_registries`), waiting out an outage."""
        self.until_redis_answers(
            "maintenance", lambda: super(FeatureeditWorker, self).run_maintenance_tasks()
        )

    def until_redis_answers(self, what: str, call: Callable[[], T]) -> T:
        """``call()``; while it fails because Redis is unreachable, wait and call it again.

        Waits 1, 2, 4... seconds between tries, at most one heartbeat interval, logging each: a
        job that ended during the outage is then recorded within one interval of Redis coming
        back, before the maintenance's post-outage grace (one TTL + one interval) ends and its
        expired registration could be taken for a lost job.
        Gives up (re-raises) only when the worker has been asked to stop, so a shutdown is not
        held up by an outage: the job's outcome is already in the store, and its registration
        expires and is reconciled by another worker's maintenance.
        """
        wait = min(1.0, self.tuning.heartbeat_interval)
        while True:
            try:
                return call()
            except REDIS_DOWN as exc:
                if self._stop_requested:
                    raise
                log.warning("%s: Redis unavailable (%s); retrying in %.0f s", what, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, self.tuning.heartbeat_interval)

    def _start_heartbeat(self, job: Job) -> None:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.tuning.heartbeat_interval):
                with self._beat_lock:
                    if stop.is_set():
                        return
                    try:
                        self.maintain_heartbeats(job)
                    except Exception as exc:  # Redis hiccup: the next beat may succeed
                        log.warning("heartbeat for job %s failed: %s", job.id, exc)

        with self._beat_lock:
            self._beat_stop = stop
            self._beat_thread = threading.Thread(
                target=beat, name=f"featureedit-heartbeat-{job.id}", daemon=True
            )
            self._beat_thread.start()

    def _stop_heartbeat(self) -> None:
        with self._beat_lock:  # waits for a beat in progress
            stop, thread = self._beat_stop, self._beat_thread
            self._beat_stop = self._beat_thread = None
            if stop is not None:
                stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # ------------------------------------------------------------------ pubsub
    def subscribe(self) -> None:
        """rq's subscription to this worker's command channel, read in 1 s slices instead of
        rq's 60 s: on a warm shutdown rq unsubscribes on the connection its pubsub thread is
        reading, which waits for that read to return, so with 60 s a SIGTERM could take up to a
        minute to stop an idle worker (past a 60 s grace period: SIGKILL)."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_READ_SECONDS,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )

    # ------------------------------------------------------------------ maintenance
    def clean_registries(self) -> None:
        """rq's periodic cleanup, replaced by ours (which also reconciles the records)."""
        self.maintenance.run_once(force_cleanup=True)
        for queue in self.queues:
            clean_worker_registry(queue)
        self.last_cleaned_at = now()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """Install the job context, start the maintenance thread, then run rq's loop."""
        if kwargs.get("with_scheduler"):
            raise ValueError(
                "ErasureWorker does not run rq's (forking) scheduler: its maintenance thread "
                "moves due retries onto the queues"
            )
        install_context(self.context)
        self.maintenance.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self.maintenance.stop()


class ErasureWorker(FeatureeditWorker):
    """The model worker: runs erasure jobs only (never callbacks)."""

    allowed_functions = ERASURE_FUNCTIONS

    @classmethod
    def check_queues(cls, names: Sequence[str], settings: Settings) -> None:
        """A model worker never serves the callbacks queue (a callback worker does)."""
        callbacks = callback_queue_name(settings.queue_prefix)
        if callbacks in names:
            raise ValueError(
                f"{callbacks!r} is served by callback workers (`featureedit worker "
                "--callbacks-only`), never by a model worker"
            )


class CallbackWorker(FeatureeditWorker):
    """The callback worker: delivers callbacks only, on the callbacks queue; holds no model."""

    allowed_functions = CALLBACK_FUNCTIONS

    @classmethod
    def check_queues(cls, names: Sequence[str], settings: Settings) -> None:
        """A callback worker serves the callbacks queue and nothing else."""
        callbacks = callback_queue_name(settings.queue_prefix)
        if list(names) != [callbacks]:
            raise ValueError(f"a callback worker serves {callbacks!r} only, not {list(names)}")


def configure_worker_logging(level: str = "INFO") -> None:
    """JSON log lines on stderr for the ``workers``, ``editing``, ``service`` and ``rq`` loggers.

    Idempotent. rq then adds no handler of its own (it only does when none is in effect), so its
    lines are JSON too; lines logged while a job runs carry ``erasure_id`` and ``job_id``.
    """
    from service.logs import install_json_handler

    install_json_handler(("workers", "editing", "service", "rq"), level)


def build_worker(
    queue_names: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    tuning: WorkerSettings | None = None,
    device: str | None = None,
    dtype: str | None = None,
    connection: Redis | None = None,
    cache: ModelCache | None = None,
    callbacks_only: bool = False,
) -> FeatureeditWorker:
    """An :class:`ErasureWorker` on ``queue_names`` (default :func:`default_queue_names`), or with
    ``callbacks_only`` a :class:`CallbackWorker` on the callbacks queue."""
    settings = settings or Settings()
    tuning = tuning or WorkerSettings()
    connection = connection or Redis.from_url(settings.redis_url)
    worker_class: type[FeatureeditWorker] = CallbackWorker if callbacks_only else ErasureWorker
    if callbacks_only:
        names = list(queue_names or [callback_queue_name(settings.queue_prefix)])
    else:
        names = list(queue_names) if queue_names else default_queue_names(settings)
    cache = cache or ModelCache(tuning.cache_size, device=device, dtype=dtype, home=settings.home)
    context = JobContext(
        settings=settings, store=get_store(settings), cache=cache, tuning=tuning, redis=connection
    )
    return worker_class(names, connection=connection, context=context, tuning=tuning)


def lower_priority(increment: int) -> int:
    """Lower this process's CPU priority by ``increment`` (``os.nice``); the resulting niceness.

    On Linux niceness is per thread and inherited by threads created afterwards, so call it
    before any worker thread (or torch's thread pool) starts. Where it is not permitted or not
    supported the priority is left alone (a warning is logged).
    """
    if increment <= 0 or not hasattr(os, "nice"):
        return os.nice(0) if hasattr(os, "nice") else 0
    try:
        return os.nice(increment)
    except OSError as exc:
        log.warning("could not lower the worker's CPU priority: %s", exc)
        return os.nice(0)


def import_engine() -> float:
    """Import the erasure engine (torch, transformers, sae-lens) now; the seconds it took.

    A job imports it lazily, so without this the first job of every worker pays ~10 s of imports
    inside its run time (measured by ``featureedit bench --service``: 12.7 s vs 1.7 s warm on the
    small demo world). Paid at start-up instead, before the worker takes a job.
    """
    import time

    started = time.perf_counter()
    import editing.erase  # noqa: F401

    seconds = time.perf_counter() - started
    log.info("erasure engine imported in %.1f s", seconds)
    return seconds


def run_worker(
    queue_names: Sequence[str] | None = None,
    *,
    burst: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    settings: Settings | None = None,
    tuning: WorkerSettings | None = None,
    log_level: str = "INFO",
    callbacks_only: bool = False,
) -> bool:
    """Run a worker until stopped (SIGINT/SIGTERM: finish the job, then exit) or, with
    ``burst``, until its queues are empty. Returns whether any job was performed.

    ``callbacks_only``: a :class:`CallbackWorker` (no engine import, no model).
    """
    settings = settings or Settings()
    tuning = tuning or WorkerSettings()
    configure_worker_logging(log_level)
    lower_priority(tuning.nice)  # first: threads started later (torch's) inherit it
    if not callbacks_only:
        import_engine()
    worker = build_worker(
        queue_names,
        settings=settings,
        tuning=tuning,
        device=device,
        dtype=dtype,
        callbacks_only=callbacks_only,
    )
    log.info(
        "worker %s on %s (store %s, model cache %d); a lost job is retried within ~%.0f s",
        worker.name,
        ", ".join(q.name for q in worker.queues),
        Path(settings.store_dir),
        tuning.cache_size,
        tuning.recovery_bound(min(settings.job_retry_intervals or [0])),
    )
    return worker.work(burst=burst, logging_level=log_level.upper())
