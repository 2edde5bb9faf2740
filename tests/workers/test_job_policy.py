"""rq jobs are not a remote shell: a job enqueued by hand with a foreign function is refused.

Reproduces the High item of issue #15 (``subprocess.check_output(["id"])`` enqueued on the
callbacks queue ran as the worker): on every queue the workers listen to, foreign jobs, encoded
as JSON (what the queues use) or pickled (rq's default, never decoded now), are refused, logged
without their arguments, never run and marked failed, while the project's own jobs still run.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer

from service.config import Settings
from service.queueing import JOB_FUNC, JOB_SERIALIZER
from service.store import FilesystemStore
from workers.cache import ModelCache
from workers.callbacks import CALLBACK_FUNC
from workers.config import callback_queue_name
from workers.context import JobContext, reset_context
from workers.worker import CallbackWorker, ErasureWorker, FeatureeditWorker

ARGUMENT_MARK = "do-not-log-this-argument"


def _foreign_jobs(conn: redis.Redis, queue_name: str, marker: Path, own: str) -> list[str]:
    """Hand-enqueued attacks on ``queue_name`` (whose worker runs ``own``); each would create
    ``marker`` if it ran."""
    shell = f"touch {marker} # {ARGUMENT_MARK}"
    json_queue = Queue(queue_name, connection=conn, serializer=JOB_SERIALIZER)
    pickle_queue = Queue(queue_name, connection=conn, serializer=DefaultSerializer)
    jobs = [
        json_queue.enqueue("subprocess.check_output", ["sh", "-c", shell], retry=Retry(max=3)),
        json_queue.enqueue("os.system", shell),
        pickle_queue.enqueue("os.system", shell),
        # an allowed function name carrying an rq failure hook, or a second argument
        json_queue.enqueue(own, "er_x", on_failure=Callback("os.system")),
        json_queue.enqueue(own, "er_x", shell),
    ]
    return [job.id for job in jobs]


def _enqueue(conn: redis.Redis, queue_name: str, func: str) -> Job:
    """One of the project's own jobs, for an erasure that does not exist (it ends at once)."""
    queue = Queue(queue_name, connection=conn, serializer=JOB_SERIALIZER)
    return queue.enqueue(func, "er_000000000000unknown0000")


def _run(
    settings: Settings,
    store: FilesystemStore,
    conn: redis.Redis,
    *workers: tuple[type[FeatureeditWorker], str],
) -> None:
    """Run each ``(worker class, queue)`` in burst mode, in order."""
    context = JobContext(
        settings=settings, store=store, cache=ModelCache(1, home=settings.home), redis=conn
    )
    try:
        for worker_class, queue_name in workers:
            worker_class([queue_name], connection=conn, context=context).work(burst=True)
    finally:
        reset_context()


@pytest.mark.parametrize("worker_class", [ErasureWorker, CallbackWorker])
def test_foreign_jobs_are_refused_logged_and_not_run_while_own_jobs_run(
    worker_class: type[FeatureeditWorker],
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    is_callbacks = worker_class is CallbackWorker
    queue_name = (
        callback_queue_name(settings.queue_prefix)
        if is_callbacks
        else settings.queue_name("demo-small")
    )
    marker = tmp_path / "pwned"
    own_func = CALLBACK_FUNC if is_callbacks else JOB_FUNC
    foreign = _foreign_jobs(rconn, queue_name, marker, own_func)
    # the project's own job still runs (an unknown erasure: logged, nothing to do)
    own = _enqueue(rconn, queue_name, own_func)
    _run(settings, store, rconn, (worker_class, queue_name))

    assert not marker.exists(), "a foreign job ran"
    for job_id in foreign:
        job = Job.fetch(job_id, connection=rconn, serializer=JOB_SERIALIZER)
        assert job.get_status() == JobStatus.FAILED and not job.retries_left
        assert job.func_name == "<refused>" and not job.args  # stored inert
    assert Job.fetch(own.id, connection=rconn).get_status() == JobStatus.FINISHED
    refusals = [r.getMessage() for r in caplog.records if "refused, not run" in r.getMessage()]
    assert len(refusals) == len(foreign)
    assert any(
        "'subprocess.check_output' is not on this worker's allow-list" in m for m in refusals
    )
    assert any("not a JSON-encoded job" in m for m in refusals)  # the pickled one
    assert any("rq callbacks (failure_callback_name)" in m for m in refusals)
    assert any("takes exactly one erasure id" in m for m in refusals)
    # the refusal names the function, never the arguments (rq's own dequeue line shows the job's
    # description, a stored string the enqueuer chose: ours are "erasure <id>", "callback <id>")
    assert not [m for m in refusals if ARGUMENT_MARK in m or str(marker) in m]


def test_a_model_worker_refuses_callbacks_and_a_callback_worker_refuses_erasures(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, tmp_path: Path
) -> None:
    """Each worker class runs only its own functions: a callback job pushed onto a model queue
    (e.g. to run slow callbacks on a model worker) is refused there, and vice versa."""
    model_queue = settings.queue_name("demo-small")
    callbacks = callback_queue_name(settings.queue_prefix)
    on_model = _enqueue(rconn, model_queue, CALLBACK_FUNC)
    on_callbacks = _enqueue(rconn, callbacks, JOB_FUNC)
    _run(settings, store, rconn, (ErasureWorker, model_queue), (CallbackWorker, callbacks))
    for job in (on_model, on_callbacks):
        assert Job.fetch(job.id, connection=rconn).get_status() == JobStatus.FAILED


def test_queued_jobs_hold_json_not_pickle(settings: Settings, rconn: redis.Redis) -> None:
    from service.queueing import JobQueue

    assert JobQueue(rconn, settings).enqueue("er_000000000000abcdef123456", "demo-small")
    raw = rconn.hget("rq:job:er_000000000000abcdef123456", "data")
    assert raw is not None
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)
    job = Job.fetch("er_000000000000abcdef123456", connection=rconn, serializer=JOB_SERIALIZER)
    assert job.func_name == JOB_FUNC and list(job.args) == ["er_000000000000abcdef123456"]


@pytest.mark.parametrize(
    ("func", "args", "problem"),
    [
        ("workers.jobs.run_erasure_job", ["er_1"], None),
        ("workers.chunks.run_chunk_job", ["er_1", 0], None),
        ("workers.chunks.run_chunk_job", ["er_1", 9999], None),
        ("workers.chunks.merge_chunks_job", ["er_1"], None),
        ("workers.chunks.run_chunk_job", ["er_1"], "takes exactly one erasure id and one chunk"),
        ("workers.chunks.run_chunk_job", ["er_1", "0"], "not a chunk index"),
        ("workers.chunks.run_chunk_job", ["er_1", True], "not a chunk index"),
        ("workers.chunks.run_chunk_job", ["er_1", 1.0], "not a chunk index"),
        ("workers.chunks.run_chunk_job", ["er_1", -1], "not a chunk index"),
        ("workers.chunks.run_chunk_job", ["er_1", 10_000], "not a chunk index"),
        ("workers.chunks.run_chunk_job", ["../x", 0], "not an erasure id"),
        ("workers.chunks.merge_chunks_job", ["er_1", 0], "takes exactly one erasure id"),
    ],
)
def test_chunk_and_merge_jobs_have_their_argument_shapes(
    func: str, args: list, problem: str | None
) -> None:
    from workers.job_policy import ERASURE_FUNCTIONS, argument_problem

    assert func in ERASURE_FUNCTIONS
    found = argument_problem(func, args, {})
    assert found == problem if problem is None else problem in (found or "")
    assert argument_problem(func, args[:1], {"extra": 1}) is not None
