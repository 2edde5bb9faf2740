"""A chunked erasure's merged edit evaluated across workers: one job per fact range, one finish.

:func:`workers.chunks.fan_out` (the merge job, once the merged edit is kept) enqueues

* :func:`evaluate_chunk_job` ``(erasure_id, index)`` per fact range (the chunks' ranges; job id
  ``<id>-eval-<index>``, the erasure jobs' timeout and rq ``Retry``): the worker binds the merged
  edit to its base model (hash-checked), measures the range's facts before and after it and runs
  the merged edit's attack plan on them (:func:`editing.chunk_eval.evaluate_fact_range`; the
  model is restored), keeps the figures sealed in the erasure's private record (``eval-<index>``)
  and counts the range evaluated on the record. Like a chunk job it stops (or does not start)
  when the erasure ended or cancellation was requested, is retried by rq on an unexpected error
  while it has retries, and fails the erasure at once otherwise;
* :func:`finish_chunks_job` ``(erasure_id)`` (``<id>-finish``), enqueued by rq once every
  evaluation job has ended (``allow_failure``): the erasure job's last steps on the gathered
  figures (:func:`editing.chunk_eval.finish_chunked`: Locality and perplexity of the merged edit,
  acceptance with the attacks; publish; report; terminal status; callback). A range whose figures
  are missing fails the erasure ("nothing was published"); a cancellation requested meanwhile
  ends it ``cancelled``. What the erasure kept privately for its chunks is deleted when it ends.

Jobs carry ids only (:mod:`workers.job_policy`); no figure, secret or name goes to Redis.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job

from service.private_records import forget_chunks, keep_chunk, load_chunk
from service.records import TERMINAL, ErasureRecord
from workers.chunks import EVAL_END, EVAL_START, _ChunkRun
from workers.context import JobContext, get_context
from workers.failures import JobFailure
from workers.jobs import PROGRESS_SHARES, _ErasureRun

log = logging.getLogger(__name__)

FINISH_SHARES: dict[str, tuple[float, float]] = {
    "finish": (EVAL_END, EVAL_END),
    "loading model": (EVAL_END, EVAL_END),
    "evaluate": (EVAL_END, PROGRESS_SHARES["publish"][0]),
    "publish": PROGRESS_SHARES["publish"],
}


def _merged(run: _ErasureRun) -> Any:
    """The erasure's merged edit as the merge job kept it (JobFailure if it is not kept)."""
    from editing.chunks import ChunkEdit

    data = load_chunk(run.store, run.id, 0, run.ctx.settings, "merged")
    if data is None:
        raise JobFailure("the chunks' merged edit is not kept (the merge did not finish)")
    return ChunkEdit.from_bytes(data)


# ----------------------------------------------------------------------------- evaluation job
def evaluate_chunk_job(erasure_id: str, index: int) -> str:
    """Evaluate fact range ``index`` of the erasure on its merged edit; keep the figures.

    ``"done"``, ``"skipped"`` or ``"failed"`` as :func:`workers.chunks.run_chunk_job`.
    """
    from service.logs import log_context

    job = get_current_job()
    with log_context(erasure_id=erasure_id, job_id=job.id if job is not None else None):
        return _EvalRun(get_context(), erasure_id, index).run()


class _EvalRun(_ChunkRun):
    """One attempt at one fact range's evaluation of a chunked erasure's merged edit."""

    counter = "evaluated"
    count_stage = "evaluate"
    count_range = (EVAL_START, EVAL_END)
    label = "evaluation"
    did = "evaluated on the merged edit"

    def _chunk(self, record: ErasureRecord) -> str:
        from editing.baseline import default_baseline_cache
        from editing.chunk_eval import evaluate_fact_range
        from editing.chunks import chunk_ranges
        from editing.errors import CancelledError

        assert record.chunks is not None
        request = self._request(record)
        start, stop = chunk_ranges(len(request.facts), int(record.chunks["facts"]))[self.index]
        merged = _merged(self)
        loaded, _, _ = self.ctx.cache.get(request.model)
        self.loaded = loaded
        try:
            part = evaluate_fact_range(
                request,
                loaded,
                merged,
                start,
                stop,
                base_edit=self._base_edit(request.base_checkpoint, record, loaded),
                eval_size=self.ctx.tuning.eval_size(loaded.entry),
                baseline_cache=default_baseline_cache(loaded),
                should_cancel=self.should_cancel,
            )
        except CancelledError:
            return "skipped"
        keep_chunk(self.store, self.id, self.index, part.to_bytes(), self.ctx.settings, "eval")
        self._count_done(part.timings)
        return "done"


# ----------------------------------------------------------------------------- finishing job
def finish_chunks_job(erasure_id: str) -> str:
    """Gather the erasure's evaluated ranges, decide, publish, end it; return its final status."""
    from service.logs import log_context

    job = get_current_job()
    with log_context(erasure_id=erasure_id, job_id=job.id if job is not None else None):
        return _FinishRun(get_context(), erasure_id).run()


class _FinishRun(_ErasureRun):
    """The end of a chunked erasure: the erasure job with the gathered figures of the merged
    edit in place of erasing (:meth:`_erasure`)."""

    shares = FINISH_SHARES
    start_stage = "finish"
    start_progress = EVAL_END

    def __init__(self, ctx: JobContext, erasure_id: str) -> None:
        super().__init__(ctx, erasure_id)
        self.merged: Any = None

    def run(self) -> str:
        status = super().run()  # a retry (RetryableJobError) keeps the figures for the next try
        record = self.store.get_erasure(self.id)
        if record is not None and record.chunks is not None and record.status in TERMINAL:
            forget_chunks(self.store, self.id, int(record.chunks["total"]))
        return status

    def _split(self, request: Any, record: ErasureRecord) -> bool:
        return False

    def _erasure(self, request: Any, record: ErasureRecord, loaded: Any, base_edit: Any) -> Any:
        from editing.baseline import default_baseline_cache
        from editing.chunk_eval import FactsEvaluation, finish_chunked
        from editing.pipeline import publish_result

        if record.chunks is None:
            raise JobFailure("the erasure was not split into chunks; nothing to finish")
        total = int(record.chunks["total"])
        self.merged = _merged(self)
        parts = []
        for index in range(total):
            data = load_chunk(self.store, self.id, index, self.ctx.settings, "eval")
            if data is None:
                raise JobFailure(
                    f"evaluation {index + 1} of {total} did not finish (its attempts are used "
                    "up); nothing was published"
                )
            parts.append(FactsEvaluation.from_bytes(data))
        self.timings["chunks"] = self.merged.timings.get("chunks", 0.0)
        self.timings["merge"] = self.merged.timings.get("merge", 0.0)
        merged_at = float(self.merged.extra.get("merged_at", time.time()))
        self.timings["eval_chunks"] = round(time.time() - merged_at, 4)
        self._progress("evaluate", 0.0)
        erasure = finish_chunked(
            request,
            loaded,
            self.merged,
            parts,
            base_edit=base_edit,
            eval_size=self.ctx.tuning.eval_size(loaded.entry),
            baseline_cache=default_baseline_cache(loaded),
        )
        self._check_cancel(force=True)
        return publish_result(
            erasure,
            request,
            loaded,
            checkpoint_root=self.store.checkpoint_root(),
            keep_revert=self._keep_revert,
            publish_mode=self.ctx.settings.publish_mode,
            progress=self._on_progress,
            should_cancel=self.should_cancel,
            edit_metadata={"erasure_id": self.id},
            manifest_extra={"erasure_id": self.id, **self._lineage()},
        )

    def _lineage(self) -> dict[str, Any]:
        return {} if self.merged is None else {"chunks": self.merged.extra["lineage"]}
