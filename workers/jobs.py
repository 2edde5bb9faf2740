"""The erasure job: run one erasure, and end its record (:func:`finish_erasure`).

The API enqueues ``workers.jobs.run_erasure_job`` by dotted path with a single argument, the
erasure id (job id = erasure id, description ``"erasure <id>"``). Everything else comes from the
store: the record and the encrypted request (the only place the secret lives). A job:

1. loads the record (missing: logged, nothing done; terminal: nothing done, so a duplicate or a
   late retry is harmless; cancel requested: ``cancelled``);
2. marks it ``running`` (``attempts`` + 1, worker name), decrypts the request and keeps its
   subject names in the operator's private record (sealed; see :mod:`service.private_records`);
   a request of more than ``Settings.chunk_facts`` facts is split here into chunk jobs and a
   merge job (:mod:`workers.chunks`), and this job ends, leaving the record running;
3. takes the model from the worker's :class:`~workers.cache.ModelCache` (``timings.model_load``
   and ``timings.model_cached`` say whether it had to be loaded);
4. runs :func:`editing.erase.run_erasure` with progress written to the record (a history event on
   every stage change and at most every 10 %), cancellation read from the record and the
   operator's Locality set size (:meth:`~workers.config.WorkerSettings.eval_size`);
5. if accepted, publishes the checkpoint (atomically: a temporary directory renamed into place;
   it holds a forward patch, never pre-edit values), keeps the revert data in the private record
   and registers the checkpoint's owner; stores the report; writes the terminal status; deletes
   the request blob (and, with ``private_retention="none"``, the private record); enqueues the
   callback if the record has a ``callback_url``.

Errors (classified by :func:`workers.failures.classify`): :class:`~editing.errors.EditingError`
fails the erasure with its (redacted) message; any other exception is re-raised (redacted) while
the rq job has retries left, so rq retries it, and fails the erasure with a generic reason on the
last attempt. The stored report is :func:`workers.report.stored_report`. Secrets never reach
logs, Redis or the store: messages are redacted, the report is scrubbed, rq sees only the id.

The job finds the store, settings and model cache on the worker's
:class:`~workers.context.JobContext`. Callbacks are :mod:`workers.callbacks` (run by the
callback worker class only); records of jobs lost with their worker are reconciled by
:mod:`workers.reconcile`. This module imports no torch: the API (or an rq dashboard) may import it.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job
from rq.job import Job

from service.private_records import (
    REVERT,
    keep_revert_data,
    keep_subjects,
    subjects_of,
)
from service.records import TERMINAL, ErasureRecord, Status
from service.store import record_event, transitions
from workers.callbacks import enqueue_callback
from workers.context import JobContext, get_context, job_metrics
from workers.failures import STORE_FULL as STORE_FULL
from workers.failures import Cancelled, JobFailure, RetryableJobError, classify
from workers.failures import out_of_space as out_of_space
from workers.redaction import redact
from workers.report import stored_report

log = logging.getLogger(__name__)

ERASURE_FUNC = "workers.jobs.run_erasure_job"

# Share of the overall progress each stage covers (run_erasure reports a fraction per stage).
PROGRESS_SHARES: dict[str, tuple[float, float]] = {
    "starting": (0.0, 0.0),
    "loading model": (0.0, 0.05),
    "chunks": (0.05, 0.75),  # a chunked request: its chunks located and edited (workers.chunks)
    "baseline": (0.05, 0.15),
    "locate+edit": (0.15, 0.75),
    "evaluate": (0.75, 0.9),
    "attacks": (0.9, 0.97),  # the operator's attack suite (WorkerSettings.attacks)
    "publish": (0.97, 1.0),
}
PROGRESS_STEP = 0.1  # a history event at most every 10 % within a stage


def _queue_wait(job: Job | None) -> float | None:
    """Seconds the job waited in its queue (since its last enqueue), if rq knows."""
    enqueued = getattr(job, "enqueued_at", None) if job is not None else None
    if enqueued is None:
        return None
    if enqueued.tzinfo is None:
        enqueued = enqueued.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - enqueued).total_seconds())


def finish_erasure(
    ctx: JobContext,
    erasure_id: str,
    status: Status,
    *,
    detail: str | None = None,
    error: str | None = None,
    stage: str | None = None,
    update: dict[str, Any] | None = None,
    failure_reason: str | None = None,
) -> tuple[ErasureRecord | None, bool]:
    """End the erasure (:func:`service.store.transitions.finish`), count it, enqueue the callback.

    The record moves to the terminal ``status`` once; the blob is deleted and the private-data
    retention applied either way. A transition this call made is counted in the job metrics (a
    failure under ``failure_reason``, one of :data:`service.job_metrics.FAILURE_REASONS`) and,
    with a ``callback_url``, its callback queued. Returns the record (None if it vanished) and
    whether this call made the transition.
    """
    record, moved = transitions.finish(
        ctx.store,
        erasure_id,
        status,
        settings=ctx.settings,
        detail=detail,
        error=error,
        stage=stage,
        update=update,
    )
    if record is None:
        log.warning("erasure %s: record vanished before it could be marked %s", erasure_id, status)
    if moved:
        job_metrics(ctx).count_finished(status, failure_reason if status == "failed" else None)
    if moved and record is not None:
        log.info("erasure %s: %s", erasure_id, status, extra={"status": status})
        if record.callback_url:
            enqueue_callback(ctx, erasure_id)
    return record, moved


# ----------------------------------------------------------------------------- the erasure job
def run_erasure_job(erasure_id: str) -> str:
    """Run the erasure ``erasure_id`` (the only job the API enqueues); return its final status
    (``"running"`` when it split a large request into chunks: the merge job ends it).

    See the module docstring. Returns ``"missing"`` when there is no such record; raises
    :class:`RetryableJobError` (redacted) when an unexpected error leaves rq retries to use.
    """
    from service.logs import log_context

    job = get_current_job()
    with log_context(erasure_id=erasure_id, job_id=job.id if job is not None else None):
        return _ErasureRun(get_context(), erasure_id).run()


class _ErasureRun:
    """One attempt at one erasure (state shared by the steps of :func:`run_erasure_job`).

    :mod:`workers.chunks` subclasses it for a chunked request's chunk and merge jobs (the hooks
    :meth:`_split`, :meth:`_erasure` and the start stage and progress).
    """

    shares: dict[str, tuple[float, float]] = PROGRESS_SHARES
    start_stage = "starting"
    start_progress = 0.0

    def __init__(self, ctx: JobContext, erasure_id: str) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.id = erasure_id
        self.job: Job | None = get_current_job()
        self.secrets: list[str] = []
        self.timings: dict[str, float] = {}
        self.stage = self.start_stage
        self.written_progress = self.start_progress
        self.loaded: Any = None
        self.attempt = 0
        self._cancel_checked_at = -math.inf
        self._cancelled = False

    # -- entry point
    def run(self) -> str:
        from service.logs import log_context

        t0 = time.perf_counter()
        record = self.store.get_erasure(self.id)
        if record is None:
            log.warning("erasure %s: no such record; nothing to do", self.id)
            return "missing"
        with log_context(request_id=record.request_id):  # the submission's: one trace id
            return self._run_record(record, t0)

    def _run_record(self, record: ErasureRecord, t0: float) -> str:
        if record.status in TERMINAL:
            log.info("erasure %s: already %s; nothing to do", self.id, record.status)
            self.store.delete_request_blob(self.id)
            return record.status
        if record.cancel_requested:
            return self._finish("cancelled", detail="cancelled before it started")
        record = self._mark_running()
        if record is None:  # became terminal or cancelled meanwhile
            current = self.store.get_erasure(self.id)
            if current is not None and current.status not in TERMINAL:
                return self._finish("cancelled", detail="cancelled before it started")
            return current.status if current is not None else "missing"
        try:
            return self._run(record, t0)
        except Exception as exc:
            return self._handle_error(exc)
        except BaseException:  # the worker is being stopped (cold shutdown): rq may retry
            if self._retries_left() > 0:
                transitions.mark_retrying(self.store, self.id, "the worker was stopped; retrying")
            raise
        finally:
            if self.loaded is not None:
                self.ctx.cache.verify(self.loaded)

    def _handle_error(self, exc: Exception) -> str:
        """End the attempt as :func:`workers.failures.classify` says ``exc`` means."""
        failure = classify(
            exc, erasure_id=self.id, secrets=self.secrets, settings=self.ctx.settings
        )
        if failure.kind == "cancelled":
            return self._finish("cancelled", detail="cancelled while running; nothing published")
        if failure.unexpected:
            return self._unexpected(exc, failure.reason or "", failure.kind)
        return self._fail(failure.reason or "", failure.kind)

    # -- the steps
    def _request(self, record: ErasureRecord) -> Any:
        """The erasure's request, decrypted (its secrets noted for redaction)."""
        from service.security import decrypt_request

        blob = self.store.get_request_blob(self.id)
        if blob is None:
            raise JobFailure(
                "the request is no longer stored (it is deleted when an erasure ends); "
                "submit it again"
            )
        key = self.ctx.settings.secret_key
        request = decrypt_request(
            blob,
            home=self.ctx.settings.home,
            key=key.get_secret_value() if key is not None else None,
        )
        self.secrets = request.secrets()
        if request.model != record.model:
            raise JobFailure("the stored request does not match the erasure record")
        return request

    def _split(self, request: Any, record: ErasureRecord) -> bool:
        """Split a large request into chunks for several workers (:func:`workers.chunks.split`);
        whether it was (this job's part then ends: the merge job ends the erasure)."""
        from workers.chunks import split

        return split(self.ctx, request, record)

    def _lineage(self) -> dict[str, Any]:
        """What the manifest records of how the edit was made, besides the erasure id."""
        return {}

    def _erasure(self, request: Any, record: ErasureRecord, loaded: Any, base_edit: Any) -> Any:
        """Erase and publish (:func:`editing.pipeline.erase_and_publish`); the
        :class:`~editing.pipeline.Erasure` (a chunked request's finishing job gathers instead)."""
        from editing.pipeline import erase_and_publish

        # the erasure id in the patch's metadata makes the (content-addressed) checkpoint id
        # unique per erasure: two tenants never share one, a retry of this erasure does
        return erase_and_publish(
            request,
            loaded,
            checkpoint_root=self.store.checkpoint_root(),
            keep_revert=self._keep_revert,
            base_edit=base_edit,
            publish_mode=self.ctx.settings.publish_mode,
            progress=self._on_progress,
            should_cancel=self.should_cancel,
            eval_size=self.ctx.tuning.eval_size(loaded.entry),
            edit_metadata={"erasure_id": self.id},
            manifest_extra={"erasure_id": self.id, **self._lineage()},
            attacks=self.ctx.tuning.attack_plan(),
        )

    def _keep_revert(self, edit: Any, checkpoint_id: str) -> None:
        """Keep a published checkpoint's revert data in the erasure's private record."""
        keep_revert_data(self.store, self.id, edit, checkpoint_id, self.ctx.settings)

    def _run(self, record: ErasureRecord, t0: float) -> str:
        request = self._request(record)
        keep_subjects(self.store, self.id, subjects_of(request), self.ctx.settings)
        if self._split(request, record):
            return "running"

        self._progress("loading model", 0.0, force=True)
        loaded, load_seconds, cached = self.ctx.cache.get(request.model)
        self.loaded = loaded
        self.timings["model_load"] = round(load_seconds, 4)
        self.timings["model_cached"] = 1.0 if cached else 0.0
        base_edit = self._base_edit(request.base_checkpoint, record, loaded)
        self._check_cancel(force=True)

        erasure = self._erasure(request, record, loaded, base_edit)
        result = erasure.result
        self.timings.update({k: round(v, 4) for k, v in result.timings.items()})
        self.timings.update(erasure.timings)
        checkpoint_id = None
        if erasure.checkpoint is not None:
            checkpoint_id = erasure.checkpoint.name
            if self._check_cancel_quietly():  # ended while publishing: take the checkpoint back
                self.store.delete_checkpoint(checkpoint_id)
                self.store.delete_private(self.id, REVERT)  # and the revert data sealed for it
                raise Cancelled()
            self.store.register_checkpoint(checkpoint_id, record.tenant, self.id)
            log.info("erasure %s: published checkpoint %s", self.id, checkpoint_id)
        self.timings["total"] = round(time.perf_counter() - t0, 4)
        self._observe_stages(cached)
        report = stored_report(
            erasure,
            record,
            attempt=self.attempt,
            worker=self.ctx.name(),
            cached=cached,
            load_seconds=load_seconds,
            timings=self.timings,
            secrets=self.secrets,
        )
        self.store.put_report(self.id, report)
        metrics, acceptance = report["metrics"], report["acceptance"]
        detail = {
            "succeeded": "accepted" + ("; checkpoint published" if checkpoint_id else ""),
            "rejected": "not accepted: " + "; ".join(acceptance["reasons"]),
            "nothing_to_erase": "the model does not produce the target(s); nothing to erase",
        }.get(result.status)
        return self._finish(
            result.status,
            detail=detail,
            update={"metrics": metrics, "acceptance": acceptance, "checkpoint_id": checkpoint_id},
        )

    def _mark_running(self) -> ErasureRecord | None:
        started = False

        def mutate(r: ErasureRecord) -> None:
            nonlocal started
            if r.status in TERMINAL or r.cancel_requested:
                return
            r.attempts += 1
            r.worker = self.ctx.name()
            r.error = None
            r.progress = self.start_progress
            record_event(
                r,
                "running",
                stage=self.start_stage,
                progress=self.start_progress,
                detail=f"attempt {r.attempts}",
            )
            started = True

        try:
            record = self.store.update_erasure(self.id, mutate)
        except KeyError:
            return None
        if not started:
            return None
        self.attempt = record.attempts
        log.info("erasure %s: running (attempt %d)", self.id, record.attempts)
        wait = _queue_wait(self.job)
        if wait is not None:
            job_metrics(self.ctx).observe_stages({"queue_wait": wait})
        return record

    def _base_edit(self, checkpoint_id: str | None, record: ErasureRecord, loaded: Any) -> Any:
        """The parent checkpoint's full edit (see :func:`editing.pipeline.load_base_edit`), once
        the checkpoint is known to be one of the tenant's."""
        if not checkpoint_id:
            return None
        from editing.errors import EditingError
        from editing.pipeline import BaseCheckpointMismatch, load_base_edit

        owner = self.store.checkpoint_owner(checkpoint_id)
        directory = self.store.checkpoint_dir(checkpoint_id)
        if directory is None or owner is None or owner.get("tenant") != record.tenant:
            raise JobFailure(
                f"base checkpoint {checkpoint_id} is not available: it is not one of your "
                "published checkpoints (or it was deleted)"
            )
        try:
            return load_base_edit(loaded, directory)
        except BaseCheckpointMismatch as exc:
            raise JobFailure(str(exc)) from None
        except EditingError as exc:
            log.error(
                "erasure %s: base checkpoint %s unreadable: %s",
                self.id,
                checkpoint_id,
                redact(str(exc), self.secrets),
            )
            raise JobFailure(
                f"base checkpoint {checkpoint_id} cannot be read ({type(exc).__name__}); "
                "contact the operator"
            ) from None

    def _observe_stages(self, cached: bool) -> None:
        """Record this run's stage durations (model_load only if the model had to be loaded)."""
        stages = ("baseline", "locate", "edit", "evaluate", "attacks", "publish", "total")
        seconds = {k: self.timings[k] for k in stages if k in self.timings}
        if not cached and "model_load" in self.timings:
            seconds["model_load"] = self.timings["model_load"]
        job_metrics(self.ctx).observe_stages(seconds)

    # -- progress and cancellation
    def _on_progress(self, stage: str, fraction: float) -> None:
        self._progress(stage, fraction)

    def _progress(self, stage: str, fraction: float, force: bool = False) -> None:
        lo, hi = self.shares.get(stage, (self.written_progress, self.written_progress))
        overall = round(min(1.0, max(0.0, lo + (hi - lo) * max(0.0, min(1.0, fraction)))), 4)
        stage_changed = stage != self.stage
        if not (force or stage_changed or overall - self.written_progress >= PROGRESS_STEP):
            return
        self.stage = stage
        self.written_progress = overall
        timings = dict(self.timings)

        def mutate(r: ErasureRecord) -> None:
            if r.status != "running":
                return
            r.timings.update(timings)
            record_event(r, "running", stage=stage, progress=overall)

        try:
            record = self.store.update_erasure(self.id, mutate)
        except KeyError:
            self._cancelled = True
            return
        if record.cancel_requested:
            self._cancelled = True

    def should_cancel(self) -> bool:
        """Whether the erasure was cancelled (reads the record at most every poll interval)."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._cancel_checked_at < self.ctx.tuning.cancel_poll_interval:
            return False
        self._cancel_checked_at = now
        record = self.store.get_erasure(self.id)
        # ended meanwhile (reconcile failed it: a chunk's job failed): stop, publish nothing
        self._cancelled = record is None or record.cancel_requested or record.status in TERMINAL
        return self._cancelled

    def _check_cancel(self, force: bool = False) -> None:
        if force:
            self._cancel_checked_at = -math.inf
        if self.should_cancel():
            raise Cancelled()

    # -- outcomes
    def _finish(self, status: Status, **kwargs: Any) -> str:
        update = dict(kwargs.pop("update", None) or {})
        update["timings"] = dict(self.timings)
        record, _ = finish_erasure(
            self.ctx, self.id, status, stage=self.stage, update=update, **kwargs
        )
        return record.status if record is not None else status

    def _fail(self, reason: str, kind: str) -> str:
        """Fail the erasure: ``reason`` for the user, ``kind`` (one of
        :data:`service.job_metrics.FAILURE_REASONS`) for the metrics."""
        log.warning(
            "erasure %s: failed (%s): %s", self.id, kind, reason, extra={"failure_reason": kind}
        )
        return self._finish("failed", error=reason, detail=reason, failure_reason=kind)

    def _retries_left(self) -> int:
        if self.job is None:
            return 0
        return int(self.job.retries_left or 0)

    def _unexpected(self, exc: Exception, reason: str, kind: str) -> str:
        summary = redact(f"{type(exc).__name__}: {exc}", self.secrets)
        trace = redact("".join(traceback.format_exception(exc)), self.secrets)
        log.error("erasure %s: attempt %d failed: %s\n%s", self.id, self.attempt, summary, trace)
        if self._check_cancel_quietly():
            return self._finish("cancelled", detail="cancelled while running; nothing published")
        left = self._retries_left()
        if left > 0:
            transitions.mark_retrying(
                self.store,
                self.id,
                f"attempt {self.attempt} failed ({type(exc).__name__}); retrying "
                f"({left} retr{'y' if left == 1 else 'ies'} left)",
            )
            raise RetryableJobError(f"erasure {self.id}: {summary}") from None
        return self._fail(reason, kind)

    def _check_cancel_quietly(self) -> bool:
        try:
            self._cancel_checked_at = -math.inf
            return self.should_cancel()
        except Exception:
            return False
