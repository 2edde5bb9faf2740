"""Chunked erasures across workers: split, one job per chunk, one merge job (rq dependencies).

A request of more than ``Settings.chunk_facts`` facts (``FEATUREEDIT_CHUNK_FACTS``, 0: never) whose
method edits weights is not run by the erasure job itself. :func:`split` (called by
:func:`workers.jobs.run_erasure_job` once the request is decrypted) records the plan on the
erasure record (``chunks``: total, done, chunk size, when) and enqueues, on the model's queue:

* one :func:`run_chunk_job` ``(erasure_id, index)`` per chunk (job id ``<id>-chunk-<index>``,
  the erasure jobs' timeout and rq ``Retry``): it locates and edits the chunk's facts on the base
  model (:func:`editing.chunks.edit_chunk`) and keeps the resulting patch sealed in the erasure's
  private record (``chunk-<index>``; never published), then counts itself done on the record;
* one :func:`merge_chunks_job` ``(erasure_id)`` (job id ``<id>-merge``) that *depends on* every
  chunk job, with ``allow_failure``: rq enqueues it once every chunk job has ended, successfully
  or with its retries used up. It adds the chunks' patches into one **merged edit**
  (:func:`editing.chunks.merge_chunk_edits`, with the worker's attack plan), keeps it sealed
  (``merged``), deletes the chunks' patches and fans the merged edit's per-fact evaluation out
  (:func:`fan_out`), over the same fact ranges as the chunks:
* one :func:`workers.chunk_eval.evaluate_chunk_job` ``(erasure_id, index)`` per range (job id
  ``<id>-eval-<index>``): any worker loads the merged edit onto its base model, measures the
  range's facts on it (before/after figures, Reliability, Generalization, the attack suite:
  :func:`editing.chunk_eval.evaluate_fact_range`), restores the model and keeps the figures
  sealed (``eval-<index>``);
* one :func:`workers.chunk_eval.finish_chunks_job` ``(erasure_id)`` (job id ``<id>-finish``)
  depending on every evaluation job (``allow_failure``): Locality and perplexity of the merged
  edit, the ranges' figures gathered, acceptance, one checkpoint whose manifest lists the chunks
  (``chunks``), report, terminal status, callback (:func:`editing.chunk_eval.finish_chunked`).

A chunk or range that did not finish fails the erasure ("nothing was published"); the security
claim (attacks, acceptance) is always the merged edit's. What is kept privately is deleted when
the erasure ends, whatever the outcome.

Jobs carry ids only (the request stays encrypted in the store), are JSON-encoded and on the
erasure workers' allow-list (:mod:`workers.job_policy`, with their argument shapes). Cancelling a
running chunked erasure sets ``cancel_requested``: chunk jobs stop (or do not start) and the merge
job ends the erasure ``cancelled``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from rq.job import Dependency, Job

from service.private_records import forget_chunks, keep_chunk, load_chunk
from service.queueing import JobQueue
from service.records import TERMINAL, ErasureRecord
from service.store import record_event
from workers.context import JobContext, get_context
from workers.failures import JobFailure, RetryableJobError, classify
from workers.jobs import PROGRESS_SHARES, _ErasureRun
from workers.redaction import redact

log = logging.getLogger(__name__)

CHUNK_FUNC = "workers.chunks.run_chunk_job"
MERGE_FUNC = "workers.chunks.merge_chunks_job"
EVAL_FUNC = "workers.chunk_eval.evaluate_chunk_job"
FINISH_FUNC = "workers.chunk_eval.finish_chunks_job"
MAX_CHUNKS = 10_000  # chunk indices are 0 .. MAX_CHUNKS - 1 (MAX_FACTS facts of one each)
CHUNKS_START, CHUNKS_END = PROGRESS_SHARES["chunks"]
EVAL_START, EVAL_END = 0.76, 0.95  # the evaluation jobs' share, by ranges evaluated
MERGE_SHARES: dict[str, tuple[float, float]] = {
    "merge": (CHUNKS_END, EVAL_START),
    "loading model": (CHUNKS_END, CHUNKS_END),
}


def chunk_job_id(erasure_id: str, index: int) -> str:
    """The rq job id of chunk ``index`` of ``erasure_id``."""
    return f"{erasure_id}-chunk-{index}"


def merge_job_id(erasure_id: str) -> str:
    """The rq job id of ``erasure_id``'s merge job."""
    return f"{erasure_id}-merge"


def eval_job_id(erasure_id: str, index: int) -> str:
    """The rq job id of the evaluation of fact range ``index`` of ``erasure_id``."""
    return f"{erasure_id}-eval-{index}"


def finish_job_id(erasure_id: str) -> str:
    """The rq job id of ``erasure_id``'s finishing job."""
    return f"{erasure_id}-finish"


def erasure_of_job(job_id: str) -> str:
    """The erasure id of an erasure, chunk, merge, evaluation or finishing job id (an erasure
    job's id is its own)."""
    for infix in ("-chunk-", "-eval-"):
        stem, sep, index = job_id.rpartition(infix)
        if sep and index.isdigit():
            return stem
    for suffix in ("-merge", "-finish"):
        if job_id.endswith(suffix):
            return job_id.removesuffix(suffix)
    return job_id


def split(ctx: JobContext, request: Any, record: ErasureRecord) -> bool:
    """Split ``request`` into chunk jobs and a merge job if it is large enough; whether it was.

    Idempotent: a retried erasure job whose record already holds the plan enqueues nothing more
    (jobs that already exist are left alone).
    """
    from editing.chunks import chunk_ranges, chunkable

    ranges = chunk_ranges(len(request.facts), ctx.settings.chunk_facts)
    if len(ranges) < 2 or not chunkable(request):
        return False
    count = len(ranges)
    size = max(stop - start for start, stop in ranges)

    def plan(r: ErasureRecord) -> None:
        if r.chunks is None:
            r.chunks = {"total": count, "done": 0, "facts": ctx.settings.chunk_facts}
            r.chunks["split_at"] = time.time()
            record_event(
                r,
                "running",
                stage="chunks",
                progress=CHUNKS_START,
                detail=f"split into {count} chunks of at most {size} facts",
            )

    ctx.store.update_erasure(record.id, plan)
    _enqueue_parts(
        ctx,
        record,
        count,
        (CHUNK_FUNC, chunk_job_id, "chunk"),
        (MERGE_FUNC, merge_job_id(record.id), f"merge of {count} chunks"),
    )
    log.info("erasure %s: split into %d chunks", record.id, count, extra={"chunks": count})
    return True


# ----------------------------------------------------------------------------- chunk job
def run_chunk_job(erasure_id: str, index: int) -> str:
    """Locate and edit chunk ``index`` of the erasure; keep its patch. Returns what happened.

    ``"done"``; ``"skipped"`` (no chunk plan, the erasure ended or cancellation was requested:
    the merge job ends it); ``"failed"`` (a failure that retrying cannot fix: the erasure is
    failed at once). Raises :class:`RetryableJobError` (redacted) while rq has retries left.
    """
    from service.logs import log_context

    job = get_current_job()
    with log_context(erasure_id=erasure_id, job_id=job.id if job is not None else None):
        return _ChunkRun(get_context(), erasure_id, index).run()


class _ChunkRun(_ErasureRun):
    """One attempt at one chunk of a chunked erasure (:mod:`workers.chunk_eval` subclasses it
    for a fact range's evaluation: what it counts, at which stage and progress)."""

    counter = "done"  # the record's chunks[...] this job counts when it ends
    count_stage = "chunks"
    count_range = (CHUNKS_START, CHUNKS_END)
    label = "chunk"
    did = "located and edited"

    def __init__(self, ctx: JobContext, erasure_id: str, index: int) -> None:
        super().__init__(ctx, erasure_id)
        self.index = index
        self.stage = "chunks"

    def _run_record(self, record: ErasureRecord, t0: float) -> str:
        if record.status in TERMINAL or record.chunks is None or record.cancel_requested:
            return "skipped"
        if not 0 <= self.index < int(record.chunks["total"]):
            raise JobFailure(f"the erasure has no chunk {self.index}")
        self.attempt = record.attempts
        try:
            return self._chunk(record)
        except Exception as exc:
            return self._chunk_error(exc)
        finally:
            if self.loaded is not None:
                self.ctx.cache.verify(self.loaded)

    def _chunk(self, record: ErasureRecord) -> str:
        from editing.chunks import chunk_ranges, edit_chunk
        from editing.errors import CancelledError

        assert record.chunks is not None
        request = self._request(record)
        ranges = chunk_ranges(len(request.facts), int(record.chunks["facts"]))
        start, stop = ranges[self.index]
        loaded, _, _ = self.ctx.cache.get(request.model)
        self.loaded = loaded
        base_edit = self._base_edit(request.base_checkpoint, record, loaded)
        try:
            chunk = edit_chunk(
                request,
                loaded,
                self.index,
                start,
                stop,
                base_edit=base_edit,
                eval_size=self.ctx.tuning.eval_size(loaded.entry),
                should_cancel=self.should_cancel,
            )
        except CancelledError:
            return "skipped"
        keep_chunk(self.store, self.id, self.index, chunk.to_bytes(), self.ctx.settings)
        self._count_done(chunk.timings)
        return "done"

    def _count_done(self, timings: dict[str, float]) -> None:
        """Count this job done on the record (progress: the share of its kind done)."""
        lo, hi = self.count_range

        def mutate(r: ErasureRecord) -> None:
            if r.status != "running" or r.chunks is None:
                return
            done = r.chunks[self.counter] = int(r.chunks.get(self.counter, 0)) + 1
            total = int(r.chunks["total"])
            record_event(
                r,
                "running",
                stage=self.count_stage,
                progress=round(lo + (hi - lo) * min(1.0, done / total), 4),
                detail=f"{self.label} {self.index + 1} of {total} {self.did} by "
                f"{self.ctx.name()} ({timings.get('total', 0.0):.1f} s); "
                f"{done} of {total} done",
            )

        self.store.update_erasure(self.id, mutate)

    def _chunk_error(self, exc: Exception) -> str:
        """Retry an unexpected error while rq can; otherwise fail the erasure (redacted)."""
        failure = classify(
            exc, erasure_id=self.id, secrets=self.secrets, settings=self.ctx.settings
        )
        if failure.kind == "cancelled":
            return "skipped"
        summary = redact(f"{type(exc).__name__}: {exc}", self.secrets)
        log.error("erasure %s: %s %d failed: %s", self.id, self.label, self.index, summary)
        if failure.unexpected and self._retries_left() > 0:
            raise RetryableJobError(
                f"erasure {self.id} {self.label} {self.index}: {summary}"
            ) from None
        self._fail(f"{self.label} {self.index + 1}: {failure.reason}", failure.kind)
        return "failed"


# ----------------------------------------------------------------------------- merge job
def merge_chunks_job(erasure_id: str) -> str:
    """Merge the chunks of the erasure, evaluate, publish, end it; return its final status."""
    from service.logs import log_context

    job = get_current_job()
    with log_context(erasure_id=erasure_id, job_id=job.id if job is not None else None):
        return _MergeRun(get_context(), erasure_id).run()


class _MergeRun(_ErasureRun):
    """The merge of a chunked erasure: the chunks' patches into one edit, its evaluation fanned
    out (the erasure job's steps up to the hand-over, :meth:`_split`)."""

    shares = MERGE_SHARES
    start_stage = "merge"
    start_progress = CHUNKS_END

    def run(self) -> str:
        status = super().run()  # a retry (RetryableJobError) keeps everything for the next try
        record = self.store.get_erasure(self.id)
        if record is not None and record.chunks is not None:
            total = int(record.chunks["total"])
            merged = load_chunk(self.store, self.id, 0, self.ctx.settings, "merged") is not None
            if record.status in TERMINAL:
                forget_chunks(self.store, self.id, total)
            elif merged:  # the merged edit holds the chunks' patches now
                forget_chunks(self.store, self.id, total, ("chunk",))
        return status

    def _split(self, request: Any, record: ErasureRecord) -> bool:
        """Merge the chunks (unless a previous attempt did) and fan the evaluation out; this
        job's part then ends (the finishing job ends the erasure)."""
        if record.chunks is None:
            raise JobFailure("the erasure was not split into chunks; nothing to merge")
        total = int(record.chunks["total"])
        if load_chunk(self.store, self.id, 0, self.ctx.settings, "merged") is None:
            merged = self._merge(request, record, total)
            keep_chunk(self.store, self.id, 0, merged.to_bytes(), self.ctx.settings, "merged")
            seconds, overlaps = merged.timings["merge"], merged.extra["overlapping_entries"]
            log.info(
                "erasure %s: merged %d chunks in %.3f s (%d entries changed by more than one)",
                self.id,
                total,
                seconds,
                overlaps,
            )
        self._check_cancel(force=True)
        fan_out(self.ctx, record, total)
        return True

    def _merge(self, request: Any, record: ErasureRecord, total: int) -> Any:
        """The chunks' merged edit (:func:`editing.chunks.merge_chunk_edits`), with the worker's
        attack plan and when the chunks and the merge ended."""
        from editing.chunk_eval import plan_to_json
        from editing.chunks import ChunkEdit, merge_chunk_edits
        from editing.request import with_model_params

        assert record.chunks is not None
        self._progress("merge", 0.0, force=True)
        chunks = []
        for index in range(total):
            data = load_chunk(self.store, self.id, index, self.ctx.settings)
            if data is None:
                raise JobFailure(
                    f"chunk {index + 1} of {total} did not finish (its attempts are used up); "
                    "nothing was published"
                )
            chunks.append(ChunkEdit.from_bytes(data))
        chunks_seconds = round(time.time() - float(record.chunks["split_at"]), 4)
        loaded, _, _ = self.ctx.cache.get(request.model)
        self.loaded = loaded
        merged = merge_chunk_edits(
            loaded,
            chunks,
            method=request.method,
            rule=with_model_params(
                request, loaded.entry.method_defaults(request.method)
            ).params.chunk_merge(),
            base_edit=self._base_edit(request.base_checkpoint, record, loaded),
            extra={"plan": plan_to_json(self.ctx.tuning.attack_plan())},
        )
        merged.timings["chunks"] = chunks_seconds
        merged.extra["merged_at"] = time.time()
        return merged


def fan_out(ctx: JobContext, record: ErasureRecord, total: int) -> None:
    """Enqueue the merged edit's evaluation: one job per fact range and the finishing job that
    depends on them all (``allow_failure``: it ends the erasure whatever they did). Idempotent
    (jobs that already exist are left alone)."""

    def plan(r: ErasureRecord) -> None:
        if r.chunks is not None and "evaluated" not in r.chunks:
            r.chunks["evaluated"] = 0
            record_event(
                r,
                "running",
                stage="merge",
                progress=EVAL_START,
                detail=f"merged {total} chunks; their facts are evaluated on the merged edit "
                f"in {total} parts",
            )

    ctx.store.update_erasure(record.id, plan)
    _enqueue_parts(
        ctx,
        record,
        total,
        (EVAL_FUNC, eval_job_id, "evaluation"),
        (FINISH_FUNC, finish_job_id(record.id), f"finish of {total} evaluations"),
    )


def _enqueue_parts(
    ctx: JobContext,
    record: ErasureRecord,
    count: int,
    part: tuple[str, Callable[[str, int], str], str],
    gather: tuple[str, str, str],
) -> None:
    """Enqueue ``count`` part jobs (``part``: function, job id of (erasure id, index), noun) on
    the record's model queue, and the job that gathers them (``gather``: function, job id,
    description), which depends on them all with ``allow_failure`` (it ends the erasure whatever
    they did). Job arguments are the erasure id (and the part's index) only. Idempotent: jobs
    that already exist are left alone."""
    part_func, part_id, noun = part
    gather_func, gather_id, gather_what = gather
    jobs = JobQueue(ctx.connection(), ctx.settings)
    queue, options = jobs.queue(record.model), jobs.job_options()
    ids = [part_id(record.id, i) for i in range(count)]
    for index, job_id in enumerate(ids):
        if not Job.exists(job_id, connection=queue.connection):
            queue.enqueue(
                part_func,
                record.id,
                index,
                job_id=job_id,
                description=f"erasure {record.id} {noun} {index + 1} of {count}",
                **options,
            )
    if not Job.exists(gather_id, connection=queue.connection):
        queue.enqueue(
            gather_func,
            record.id,
            job_id=gather_id,
            description=f"erasure {record.id} {gather_what}",
            depends_on=Dependency(jobs=ids, allow_failure=True),
            **options,
        )
