"""A chunked erasure's merged edit evaluated in parts (issue #16): split and gather, then the
evaluation and finishing jobs on real Redis with a real rq worker (burst mode, in process).

The engine tests check that evaluating the merged edit over fact ranges and gathering the figures
gives the result of evaluating it whole (metrics, per-fact figures, attacks, acceptance); the job
tests check retry, failure, cancellation and what the jobs carry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq.job import Job

from editing.acceptance import ACCEPT_ALL
from service.config import Settings
from service.queueing import JOB_SERIALIZER
from service.store import FilesystemStore
from tests.workers.conftest import MODEL, redis_bytes, secret_forms, submit
from tests.workers.test_jobs import cache, context, run_worker, tuning  # noqa: F401
from workers.worker import FeatureeditWorker

# a small attack suite (the worker's default attacks, fewer samples) and one attack limit
BUDGETS = {"sampled": {"samples": 2}}
LIMITS = {"max_sampled_leak": 1.0}


def _close(a: Any, b: Any, path: str = "") -> None:
    """``a`` equals ``b``, floats within 1e-6 (batches of other sizes round differently)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{n}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope="module")
def chunked(small_model: Any, four_facts: list[dict[str, str]]) -> dict[str, Any]:
    """The four facts as two chunks of two, their merged edit and the attack plan."""
    from editing.attack_gate import AttackPlan
    from editing.chunk_eval import plan_to_json
    from editing.chunks import ChunkEdit, edit_chunk, merge_chunk_edits
    from editing.request import ErasureRequest

    request = ErasureRequest(model=MODEL, facts=four_facts, thresholds=ACCEPT_ALL)
    chunks = [
        ChunkEdit.from_bytes(edit_chunk(request, small_model, i, a, b).to_bytes())
        for i, (a, b) in enumerate(((0, 2), (2, 4)))
    ]
    plan = AttackPlan(("sampled", "logit_lens"), BUDGETS, LIMITS)
    merged = merge_chunk_edits(
        small_model, chunks, method=request.method, extra={"plan": plan_to_json(plan)}
    )
    return {"request": request, "chunks": chunks, "plan": plan, "merged": merged}


def test_the_merged_edit_evaluated_in_parts_equals_its_whole_evaluation(
    small_model: Any, chunked: dict[str, Any]
) -> None:
    """Two fact ranges evaluated apart and gathered: the merged edit's result evaluated whole
    (the merge job's path before: ``run_erasure`` with the merged chunks, then the attacks)."""
    from editing.attack_gate import attack_result
    from editing.checkpoints import down_proj_sha256
    from editing.chunk_eval import FactsEvaluation, evaluate_fact_range, finish_chunked
    from editing.chunks import ChunkEdit, MergedChunks
    from editing.erase import run_erasure

    request, plan = chunked["request"], chunked["plan"]
    pristine = down_proj_sha256(small_model.adapter)
    whole = run_erasure(request, small_model, editor=MergedChunks(chunked["chunks"]))
    whole = attack_result(whole, request, small_model, plan)

    merged = ChunkEdit.from_bytes(chunked["merged"].to_bytes())  # what the store keeps
    assert merged.patch.metadata == {"method": request.method}
    parts = [
        FactsEvaluation.from_bytes(
            evaluate_fact_range(request, small_model, merged, a, b).to_bytes()
        )
        for a, b in ((2, 4), (0, 2))  # any order: gathered by range
    ]
    assert down_proj_sha256(small_model.adapter) == pristine
    gathered = finish_chunked(request, small_model, merged, parts).result
    assert down_proj_sha256(small_model.adapter) == pristine

    assert gathered.edit is not None and whole.edit is not None
    assert gathered.edit.footprint() == whole.edit.footprint()
    for a, b in zip(gathered.edit.deltas, whole.edit.deltas):
        assert a.new.equal(b.new) and a.old.equal(b.old)
    _close(gathered.metrics.model_dump(mode="json"), whole.metrics.model_dump(mode="json"))
    _close(
        [f.model_dump(mode="json") for f in gathered.facts],
        [f.model_dump(mode="json") for f in whole.facts],
    )
    assert gathered.attacks is not None and whole.attacks is not None
    _close(
        {k: v.model_dump(mode="json") for k, v in gathered.attacks.items()},
        {k: v.model_dump(mode="json") for k, v in whole.attacks.items()},
    )
    assert gathered.thresholds == whole.thresholds and gathered.thresholds["max_sampled_leak"] == 1
    assert (gathered.status, gathered.acceptance) == (whole.status, whole.acceptance)
    evidence = [f.evidence.get("measured_on") for f in gathered.facts if f.evidence]
    assert evidence and set(evidence) <= {"chunk 1", "chunk 2"}


def test_gathering_needs_every_fact_once(small_model: Any, chunked: dict[str, Any]) -> None:
    from editing.chunk_eval import FactsEvaluation, finish_chunked

    request, merged = chunked["request"], chunked["merged"]
    part = FactsEvaluation(0, 2, [], [], [])
    for parts in ([part], [part, part]):
        with pytest.raises(ValueError, match="cover the request's facts once"):
            finish_chunked(request, small_model, merged, parts)


def test_a_stored_evaluation_holds_no_secret_and_a_corrupt_one_is_refused(
    small_model: Any, chunked: dict[str, Any], four_facts: list[dict[str, str]]
) -> None:
    from editing.chunk_eval import FactsEvaluation, evaluate_fact_range
    from editing.errors import CorruptCacheError

    data = evaluate_fact_range(chunked["request"], small_model, chunked["merged"], 0, 2).to_bytes()
    for fact in four_facts:
        for form in secret_forms(fact["target"]):
            assert form not in data
        assert fact["subject"].encode() not in data
    with pytest.raises(CorruptCacheError):
        FactsEvaluation.from_bytes(data.replace(b"featureedit-facts-evaluation", b"x"))
    with pytest.raises(CorruptCacheError):
        FactsEvaluation.from_bytes(b"not json")


# ----------------------------------------------------------------------------- the jobs
def _chunked(settings: Settings) -> Settings:
    settings.chunk_facts = 2
    settings.job_retries, settings.job_retry_intervals = 1, [0]
    return settings


def _with_evaluation(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[int, list[int], str], None],
) -> tuple[Any, list[int]]:
    """Run ``facts`` as 2 chunks (1 retry per job), calling ``before(start, calls, erasure id)``
    ahead of each fact range's evaluation; the record and the ranges' starts, in call order."""
    import editing.chunk_eval

    real = editing.chunk_eval.evaluate_fact_range
    calls: list[int] = []
    ids: list[str] = []

    def patched(request: Any, loaded: Any, merged: Any, start: int, *args: Any, **kw: Any) -> Any:
        calls.append(start)
        before(start, calls, ids[0])
        return real(request, loaded, merged, start, *args, **kw)

    monkeypatch.setattr(editing.chunk_eval, "evaluate_fact_range", patched)
    _chunked(settings)
    ids.append(submit(settings, store, rconn, facts, thresholds=ACCEPT_ALL))
    run_worker()
    record = store.get_erasure(ids[0])
    assert record is not None
    return record, calls


def _private_parts(store: FilesystemStore, erasure_id: str) -> list[str]:
    names = ("chunk-*", "eval-*", "merged*")
    return [p.name for n in names for p in (store.root / "private" / erasure_id).glob(n)]


def test_the_merged_edit_is_evaluated_by_evaluation_jobs_then_finished(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from workers.chunks import EVAL_FUNC, FINISH_FUNC, erasure_of_job, eval_job_id, finish_job_id
    from workers.job_policy import ERASURE_FUNCTIONS, refusal

    caplog.set_level(logging.INFO)
    record, calls = _with_evaluation(
        settings, store, rconn, run_worker, four_facts, monkeypatch, lambda *_: None
    )
    assert record.status == "succeeded", record.error
    assert sorted(calls) == [0, 2] and record.checkpoint_id is not None
    assert record.chunks is not None and record.chunks["evaluated"] == 2
    details = [e.detail or "" for e in record.history]
    assert sum("evaluated on the merged edit by" in d for d in details) == 2
    for key in ("chunks", "merge", "eval_chunks", "baseline", "evaluate", "attacks", "publish"):
        assert key in record.timings, key
    progress = [e.progress for e in record.history if e.progress is not None]
    assert progress == sorted(progress) and record.progress == 1.0
    assert _private_parts(store, record.id) == []

    jobs = [
        Job.fetch(eval_job_id(record.id, i), connection=rconn, serializer=JOB_SERIALIZER)
        for i in (0, 1)
    ]
    finish = Job.fetch(finish_job_id(record.id), connection=rconn, serializer=JOB_SERIALIZER)
    for i, job in enumerate(jobs):
        assert job.func_name == EVAL_FUNC and list(job.args) == [record.id, i] and job.is_finished
        assert refusal(job, ERASURE_FUNCTIONS) is None
        assert erasure_of_job(job.id) == record.id
    assert finish.func_name == FINISH_FUNC and list(finish.args) == [record.id]
    assert refusal(finish, ERASURE_FUNCTIONS) is None and finish.is_finished
    assert erasure_of_job(finish.id) == record.id
    report = store.get_report(record.id)
    assert report["attacks"] and report["metrics"]["reliability"]["facts"] >= 1
    dump = redis_bytes(rconn) + caplog.text.encode()
    for fact in four_facts:
        for form in secret_forms(fact["target"]):
            assert form not in dump, "a secret is in Redis or the logs"


def test_a_failed_evaluation_is_retried(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail_once(start: int, calls: list[int], _: str) -> None:
        if start == 2 and calls.count(2) == 1:
            raise RuntimeError(f"evaluation exploded on {four_facts[-1]['target']!r}")

    record, calls = _with_evaluation(
        settings, store, rconn, run_worker, four_facts, monkeypatch, fail_once
    )
    assert record.status == "succeeded", record.error
    assert sorted(calls) == [0, 2, 2] and record.checkpoint_id is not None
    assert record.chunks is not None and record.chunks["evaluated"] == 2


def test_an_evaluation_that_keeps_failing_fails_the_request_and_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    def always(start: int, calls: list[int], _: str) -> None:
        if start == 2:
            raise RuntimeError(f"evaluation exploded on {four_facts[-1]['target']!r}")

    record, calls = _with_evaluation(
        settings, store, rconn, run_worker, four_facts, monkeypatch, always
    )
    assert record.status == "failed" and calls.count(2) == 2
    assert record.error is not None and record.error.startswith("evaluation 2: internal error")
    assert record.checkpoint_id is None and not any((store.root / "checkpoints").glob("*"))
    assert _private_parts(store, record.id) == []
    assert store.get_request_blob(record.id) is None
    dump = json.dumps(record.model_dump()) + caplog.text
    assert four_facts[-1]["target"] not in dump and "[REDACTED]" in caplog.text


def test_cancelling_while_the_merged_edit_is_evaluated(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancellation requested as the first range is evaluated: the other range is not, nothing
    is published, the finishing job ends the erasure ``cancelled`` and forgets every part."""

    def cancel(start: int, calls: list[int], erasure_id: str) -> None:
        store.update_erasure(erasure_id, lambda r: setattr(r, "cancel_requested", True))

    record, calls = _with_evaluation(
        settings, store, rconn, run_worker, four_facts, monkeypatch, cancel
    )
    assert record.status == "cancelled" and len(calls) == 1
    assert record.checkpoint_id is None and not any((store.root / "checkpoints").glob("*"))
    assert _private_parts(store, record.id) == []
