"""Reconciliation: make a record reflect an rq job that ended outside the job function.

A worker that dies mid-job leaves its record ``running``; rq then retries the job or moves it to
the failed registry. The workers' maintenance (:mod:`workers.maintenance`) finds such jobs and
calls :func:`reconcile_erasure` on their records.
"""

from __future__ import annotations

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from service.private_records import forget_chunks
from service.queueing import JOB_SERIALIZER
from service.records import TERMINAL
from service.store import transitions
from workers.callbacks import CALLBACK_JOB_SUFFIX
from workers.chunks import erasure_of_job
from workers.context import JobContext
from workers.jobs import finish_erasure


def reconcile_erasure(ctx: JobContext, job_id: str, connection: Redis) -> str | None:
    """Make the record of an erasure whose rq job ended outside the job function reflect it.

    Called by the workers' maintenance for jobs found abandoned (their worker died) and for jobs
    in the failed registry. The rq job FAILED while the record is not terminal: the record
    becomes ``failed`` (blob deleted, callback queued). The job is queued or scheduled again
    (a retry) while the record says running: it shows ``queued`` (stage ``retrying``). Returns
    what was done (``"failed"``, ``"retrying"``) or None. Idempotent.

    ``job_id`` is the erasure's job (its id is the erasure id) or a chunked erasure's chunk,
    merge, evaluation or finishing job (:mod:`workers.chunks`): one that FAILED fails the erasure
    (and deletes what the erasure kept privately for its chunks); one queued again leaves the
    record as it is (still running).
    """
    if job_id.endswith(CALLBACK_JOB_SUFFIX):
        return None
    erasure_id = erasure_of_job(job_id)
    part_of_chunked = erasure_id != job_id
    record = ctx.store.get_erasure(erasure_id)
    if record is None:
        return None
    if record.status in TERMINAL:
        ctx.store.delete_request_blob(erasure_id)
        return None
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JOB_SERIALIZER)
        status = job.get_status(refresh=True)
    except NoSuchJobError:
        return None
    if status == JobStatus.FAILED:
        abandoned = "AbandonedJobError" in str(_exc_text(job))
        reason = (
            "the worker running this erasure stopped before it finished and the retries are "
            "used up; nothing was published"
            if abandoned
            else f"the erasure job failed; nothing was published. Contact the operator with "
            f"the erasure id {erasure_id}"
        )
        _, moved = finish_erasure(
            ctx,
            erasure_id,
            "failed",
            error=reason,
            detail=reason,
            failure_reason="worker_lost" if abandoned else "job_failed",
        )
        if part_of_chunked and record.chunks is not None:
            forget_chunks(ctx.store, erasure_id, int(record.chunks["total"]))
        return "failed" if moved else None
    if part_of_chunked:  # a part of a chunked run queued again: the erasure is still running
        return None
    if status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and record.status == "running":
        moved = transitions.mark_retrying(
            ctx.store,
            erasure_id,
            "the worker running this erasure stopped; retrying on another worker",
        )
        return "retrying" if moved else None
    return None


def _exc_text(job: Job) -> str:
    try:
        result = job.latest_result()
        if result is not None and result.exc_string:
            return result.exc_string
    except Exception:  # an older job layout: fall back to the job hash
        pass
    try:
        return job.exc_info or ""
    except Exception:
        return ""
