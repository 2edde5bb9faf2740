"""Chunked erasures (issue #16): split, chunk jobs, merge job; real Redis and real rq workers.

The in-process tests run the jobs with a real :class:`~workers.worker.ErasureWorker` in burst
mode (one worker: the chunk jobs one after the other, then the merge that depends on them); the
test with two worker *processes* is ``test_two_workers_share_the_chunks`` below.
"""

from __future__ import annotations

import json
import logging
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

TOLERANCE = 0.25  # chunked vs unchunked Reliability/Generalization on 4 facts (1 fact = 0.25)


@pytest.fixture(scope="module")
def unchunked(small_model: Any, four_facts: list[dict[str, str]]) -> Any:
    """The four facts erased in one piece (the engine's own path): the reference."""
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    request = ErasureRequest(model=MODEL, facts=four_facts, thresholds=ACCEPT_ALL)
    return run_erasure(request, small_model)


def _chunked(settings: Settings, size: int = 2) -> Settings:
    settings.chunk_facts = size
    return settings


def test_chunk_ranges_cover_every_fact_once() -> None:
    from editing.chunks import chunk_ranges

    assert chunk_ranges(5, 0) == [(0, 5)]
    assert chunk_ranges(5, 5) == [(0, 5)]
    assert chunk_ranges(5, 2) == [(0, 2), (2, 3), (3, 5)]
    for n in (1, 7, 100, 1000):
        for size in (1, 3, 100):
            ranges = chunk_ranges(n, size)
            assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in ranges) <= size or len(ranges) == 1


def test_merging_one_chunk_is_the_unchunked_edit(
    small_model: Any, four_facts: list[dict[str, str]], unchunked: Any
) -> None:
    """One chunk of every fact, merged: the same edit, bit for bit, and the same metrics."""
    from editing.checkpoints import down_proj_sha256
    from editing.chunks import ChunkEdit, MergedChunks, edit_chunk
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    pristine = down_proj_sha256(small_model.adapter)
    request = ErasureRequest(model=MODEL, facts=four_facts, thresholds=ACCEPT_ALL)
    chunk = edit_chunk(request, small_model, 0, 0, len(four_facts))
    assert down_proj_sha256(small_model.adapter) == pristine
    chunk = ChunkEdit.from_bytes(chunk.to_bytes())  # what the store keeps, read back
    merged = run_erasure(request, small_model, editor=MergedChunks([chunk]))
    assert down_proj_sha256(small_model.adapter) == pristine
    assert merged.edit is not None and unchunked.edit is not None
    assert merged.edit.footprint() == unchunked.edit.footprint()
    assert merged.metrics.to_json() == unchunked.metrics.to_json()
    assert [f.units for f in merged.facts] == [f.units for f in unchunked.facts]


def test_merge_adds_the_changes_of_overlapping_chunks(small_model: Any) -> None:
    """Two patches on one entry: the sum of both changes; an entry of one: its value exactly."""
    import torch

    from editing.checkpoints.patch import Patch
    from editing.chunks import merge_patches
    from editing.edits import WeightSession

    adapter = small_model.adapter
    with WeightSession(adapter) as session:
        w = adapter.down_proj_weight(0)
        base = w.detach().clone()
        patches = []
        for col, step in ((3, 0.5), (4, 0.25)):
            with WeightSession(adapter) as one:
                with torch.no_grad():
                    w[:, col] += step
                    w[:, 5] += step
                patches.append(Patch.from_edit(one.edit()))
        assert torch.equal(adapter.down_proj_weight(0), base)
        overlaps = merge_patches(small_model, patches)
        after = adapter.down_proj_weight(0)
        assert torch.equal(after[:, 3], base[:, 3] + 0.5)
        assert torch.equal(after[:, 4], base[:, 4] + 0.25)
        assert torch.allclose(after[:, 5], base[:, 5] + 0.75, atol=1e-6)
        assert overlaps == base.shape[0]
        session.restore()


def test_agreeing_mean_merges_set_values_once_and_keeps_single_changes_exact(
    small_model: Any,
) -> None:
    """``agreeing_mean``: two chunks zeroing one column zero it once (a sum flips its sign);
    changes of opposite sign keep the side with the larger total magnitude (its mean); an entry
    one patch changes gets its value exactly, even inside another patch's unchanged region."""
    import torch

    from editing.checkpoints.patch import Patch
    from editing.chunks import merge_patches
    from editing.edits import WeightSession

    adapter = small_model.adapter
    w = adapter.down_proj_weight(0)
    base = w.detach().clone()

    def patch(change: Callable[[torch.Tensor], None]) -> Patch:
        with WeightSession(adapter) as one:
            with torch.no_grad():
                change(w)
            return Patch.from_edit(one.edit())

    def first(x: torch.Tensor) -> None:
        x[:, 2] = 0.0  # both zero column 2
        x[:, 6] += 0.5  # opposite signs on column 6: +0.5 here, -0.125 and -0.125 below
        x[:, 7] += 0.25  # only this patch changes column 7

    def second(x: torch.Tensor) -> None:
        x[:, 2] = 0.0
        x[:, 6] -= 0.125
        x[:, 7] += 0.0  # column 7 in no region of this patch: nothing changes it here
        x[0, 8] += 1.0

    def third(x: torch.Tensor) -> None:
        x[:, 2] = 0.0  # a third zeroing: still exactly zero, not a float mean
        x[:, 6] -= 0.125
        x[1, 8] += 0.75  # column 8 is in both regions; each changes one entry of it
        x[0, 9] -= 2.0

    patches = [patch(first), patch(second), patch(third)]
    assert torch.equal(adapter.down_proj_weight(0), base)
    with WeightSession(adapter) as session:
        merge_patches(small_model, patches, "sum")
        assert torch.allclose(adapter.down_proj_weight(0)[:, 2], -2 * base[:, 2], atol=1e-6)
        session.restore()
        overlaps = merge_patches(small_model, patches, "agreeing_mean")
        after = adapter.down_proj_weight(0)
        assert torch.equal(after[:, 2], torch.zeros_like(after[:, 2]))
        assert torch.allclose(after[:, 6], base[:, 6] + 0.5, atol=1e-6)  # 0.5 > 0.125 + 0.125
        assert torch.equal(after[:, 7], base[:, 7] + 0.25)
        assert after[0, 8] == base[0, 8] + 1.0 and after[1, 8] == base[1, 8] + 0.75
        assert after[0, 9] == base[0, 9] - 2.0 and torch.equal(after[2:, 8], base[2:, 8])
        assert torch.equal(after[:, 10:], base[:, 10:])
        assert overlaps == 2 * base.shape[0] - int((base[:, 2] == 0).sum())
        session.restore()
    with pytest.raises(Exception, match="unknown chunk merge rule"):
        merge_patches(small_model, patches, "median")  # type: ignore[arg-type]
    assert torch.equal(adapter.down_proj_weight(0), base)

    # patches along rows (as the rows variant makes them): the same rule, on the rows' union
    def zero_row(x: torch.Tensor) -> None:
        x[1] = 0.0

    def zero_row_and_shift(x: torch.Tensor) -> None:
        x[1] = 0.0
        x[3] += 0.5

    by_rows = [patch(zero_row), patch(zero_row_and_shift)]
    assert {d.axis for p in by_rows for d in p.layers} == {"rows"}
    with WeightSession(adapter) as session:
        assert merge_patches(small_model, by_rows, "agreeing_mean") == base.shape[1]
        after = adapter.down_proj_weight(0)
        assert torch.equal(after[1], torch.zeros_like(after[1]))
        assert torch.equal(after[3], base[3] + 0.5)
        assert torch.equal(after[[0, 2]], base[[0, 2]]) and torch.equal(after[4:], base[4:])
        session.restore()


def test_each_method_names_its_merge_rule_and_a_chunk_keeps_it() -> None:
    """FeatureEdit with the flatten refinement and the neuron baseline merge by agreeing mean,
    the projection alone by sum; a stored chunk keeps its rule, and mixed rules are refused."""
    from editing.checkpoints.patch import Patch
    from editing.chunks import ChunkEdit, merge_rule
    from editing.errors import ConfigError, CorruptCacheError
    from editing.methods.params import FeatureEditParams, NeuronParams

    assert FeatureEditParams().chunk_merge() == "agreeing_mean"
    assert FeatureEditParams(refine="none").chunk_merge() == "sum"
    assert FeatureEditParams(variant="rows").chunk_merge() == "agreeing_mean"  # zeroes rows
    assert NeuronParams().chunk_merge() == "agreeing_mean"

    def chunk(index: int, rule: Any) -> ChunkEdit:
        return ChunkEdit(index, index, index + 1, Patch([], {}), {}, merge=rule)

    stored = ChunkEdit.from_bytes(chunk(0, "agreeing_mean").to_bytes())
    assert stored.merge == "agreeing_mean"
    assert merge_rule([stored, chunk(1, "agreeing_mean")]) == "agreeing_mean"
    with pytest.raises(ConfigError, match="not one rule"):
        merge_rule([stored, chunk(1, "sum")])
    # a chunk stored before chunks recorded their rule: the request's
    old = ChunkEdit.from_bytes(chunk(2, None).to_bytes())
    assert old.merge is None and merge_rule([old], "agreeing_mean") == "agreeing_mean"
    assert merge_rule([old, stored], "sum") == "agreeing_mean"  # a recorded rule wins
    with pytest.raises(ConfigError, match="not one rule"):
        merge_rule([old])
    with pytest.raises(CorruptCacheError, match="merge rule"):
        ChunkEdit.from_bytes(chunk(0, "median").to_bytes())


def test_a_large_request_runs_as_chunks_and_publishes_one_merged_checkpoint(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    unchunked: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from editing.checkpoints import read_manifest, verify_checkpoint

    caplog.set_level(logging.INFO)
    _chunked(settings)
    erasure_id = submit(settings, store, rconn, four_facts, thresholds=ACCEPT_ALL)
    run_worker()

    record = store.get_erasure(erasure_id)
    assert record is not None and record.status == "succeeded", record and record.error
    assert record.chunks is not None
    assert (record.chunks["total"], record.chunks["done"]) == (2, 2)
    stages = [e.stage for e in record.history if e.status == "running"]
    assert stages.index("chunks") < stages.index("merge") < stages.index("evaluate")
    progress = [e.progress for e in record.history if e.progress is not None]
    assert progress == sorted(progress) and record.progress == 1.0
    for key in ("chunks", "merge", "baseline", "evaluate", "publish"):
        assert key in record.timings

    # one checkpoint, its lineage names the two chunks; nothing of the chunks is left
    assert record.checkpoint_id
    directory = store.checkpoint_dir(record.checkpoint_id)
    assert directory is not None and verify_checkpoint(directory) == []
    manifest = read_manifest(directory)
    assert manifest["chunks"]["count"] == 2
    assert manifest["chunks"]["merge"] == "agreeing_mean"  # the default refine=flatten's rule
    assert [c["facts"] for c in manifest["chunks"]["chunks"]] == [[0, 2], [2, 4]]
    assert len(manifest["facts"]) == 4
    report = store.get_report(erasure_id)
    measured_on = [f["evidence"].get("measured_on") for f in report["facts"] if f["evidence"]]
    assert measured_on and set(measured_on) <= {"chunk 1", "chunk 2"}  # not the merged edit
    assert not list((store.root / "private" / erasure_id).glob("chunk-*"))
    assert store.get_request_blob(erasure_id) is None
    for job_id in (f"{erasure_id}-chunk-0", f"{erasure_id}-chunk-1", f"{erasure_id}-merge"):
        assert Job.fetch(job_id, connection=rconn, serializer=JOB_SERIALIZER).is_finished

    # equal in effect to the unchunked erasure of the same facts
    metrics, reference = record.metrics, unchunked.metrics.to_json()
    for name in ("reliability", "generalization"):
        assert abs(metrics[name]["value"] - reference[name]["value"]) <= TOLERANCE, name
    assert metrics["locality"]["value"] >= reference["locality"]["value"] - 0.05
    assert abs(metrics["delta_ppl"] - reference["delta_ppl"]) <= 0.05

    dump = redis_bytes(rconn) + caplog.text.encode()
    for fact in four_facts:
        for form in secret_forms(fact["target"]):
            assert form not in dump, "a secret is in Redis or the logs"


def test_a_small_request_is_not_split(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
) -> None:
    _chunked(settings, size=4)
    erasure_id = submit(settings, store, rconn, four_facts, thresholds=ACCEPT_ALL)
    run_worker()
    record = store.get_erasure(erasure_id)
    assert record is not None and record.status == "succeeded"
    assert record.chunks is None and "chunks" not in record.timings
    assert not Job.exists(f"{erasure_id}-merge", connection=rconn)


def _with_failing_chunk(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    fails: Callable[[int, list[int]], bool],
) -> tuple[Any, list[int]]:
    """Run ``facts`` as 2 chunks (1 retry each) with ``edit_chunk`` raising an error quoting the
    last secret when ``fails(index, calls so far)``; the record and the chunk calls."""
    import editing.chunks

    real = editing.chunks.edit_chunk
    calls: list[int] = []

    def patched(request: Any, loaded: Any, index: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(index)
        if fails(index, calls):
            raise RuntimeError(f"chunk exploded on {facts[-1]['target']!r}")
        return real(request, loaded, index, *args, **kwargs)

    monkeypatch.setattr(editing.chunks, "edit_chunk", patched)
    _chunked(settings)
    settings.job_retries, settings.job_retry_intervals = 1, [0]
    erasure_id = submit(settings, store, rconn, facts, thresholds=ACCEPT_ALL)
    run_worker()
    record = store.get_erasure(erasure_id)
    assert record is not None
    return record, calls


def test_a_failed_chunk_is_retried(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record, calls = _with_failing_chunk(
        settings,
        store,
        rconn,
        run_worker,
        four_facts,
        monkeypatch,
        lambda index, calls: index == 1 and calls.count(1) == 1,
    )
    assert record.status == "succeeded", record.error
    assert sorted(calls) == [0, 1, 1]
    assert record.chunks is not None and record.chunks["done"] == 2
    assert record.checkpoint_id is not None


def test_a_chunk_that_keeps_failing_fails_the_request_and_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    record, calls = _with_failing_chunk(
        settings, store, rconn, run_worker, four_facts, monkeypatch, lambda index, _: index == 1
    )
    assert record.status == "failed" and sorted(calls) == [0, 1, 1]
    assert record.error is not None and record.error.startswith("chunk 2: internal error")
    assert record.checkpoint_id is None
    assert not any((store.root / "checkpoints").glob("*"))
    assert not list((store.root / "private" / record.id).glob("chunk-*"))
    assert store.get_request_blob(record.id) is None
    dump = json.dumps(record.model_dump()) + caplog.text
    assert four_facts[-1]["target"] not in dump and "[REDACTED]" in caplog.text


def test_cancelling_a_chunked_erasure(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],  # noqa: F811
    four_facts: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancellation requested while the first chunk runs: no other chunk runs, nothing is
    published, the merge job ends the erasure ``cancelled`` and deletes the chunks."""
    import editing.chunks

    real = editing.chunks.edit_chunk
    calls: list[int] = []

    def cancel_then_edit(request: Any, loaded: Any, index: int, *args: Any, **kw: Any) -> Any:
        calls.append(index)
        store.update_erasure(erasure_id, lambda r: setattr(r, "cancel_requested", True))
        return real(request, loaded, index, *args, **kw)

    monkeypatch.setattr(editing.chunks, "edit_chunk", cancel_then_edit)
    _chunked(settings)
    erasure_id = submit(settings, store, rconn, four_facts, thresholds=ACCEPT_ALL)
    run_worker()
    record = store.get_erasure(erasure_id)
    assert record is not None and record.status == "cancelled"
    assert calls == [0] and record.checkpoint_id is None
    assert not list((store.root / "private" / erasure_id).glob("chunk-*"))


def test_chunk_jobs_carry_ids_only(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, four_facts: Any
) -> None:
    """The split enqueues (id, index) chunk jobs and an (id) merge job depending on them."""
    from editing.request import ErasureRequest
    from workers.cache import ModelCache
    from workers.chunks import CHUNK_FUNC, MERGE_FUNC, split
    from workers.context import JobContext
    from workers.job_policy import ERASURE_FUNCTIONS, refusal

    _chunked(settings, size=1)
    erasure_id = submit(settings, store, rconn, four_facts[:3], enqueue=False)
    ctx = JobContext(settings=settings, store=store, cache=ModelCache(1), redis=rconn)
    record = store.get_erasure(erasure_id)
    request = ErasureRequest(model=MODEL, facts=four_facts[:3])
    assert split(ctx, request, record)
    assert split(ctx, request, store.get_erasure(erasure_id))  # idempotent
    chunks = [
        Job.fetch(f"{erasure_id}-chunk-{i}", connection=rconn, serializer=JOB_SERIALIZER)
        for i in range(3)
    ]
    merge = Job.fetch(f"{erasure_id}-merge", connection=rconn, serializer=JOB_SERIALIZER)
    for i, job in enumerate(chunks):
        assert job.func_name == CHUNK_FUNC and list(job.args) == [erasure_id, i]
        assert refusal(job, ERASURE_FUNCTIONS) is None
    assert merge.func_name == MERGE_FUNC and list(merge.args) == [erasure_id]
    assert sorted(merge.dependency_ids) == sorted(j.id for j in chunks)
    assert refusal(merge, ERASURE_FUNCTIONS) is None
    assert store.get_erasure(erasure_id).chunks["total"] == 3


def test_the_gpu_worker_path_in_bfloat16_on_cpu(
    fe_home: Any, four_facts: list[dict[str, str]]
) -> None:
    """What a GPU worker does (``featureedit worker --device cuda:0 --dtype bfloat16``), on the
    CPU: the worker's cache loads the model on the device and in the dtype it was given, each
    chunk's patch keeps that dtype through the store's bytes, and the merge (float32 sums, cast
    back) leaves the weights in it and restores them bit for bit."""
    import torch

    from editing.checkpoints import down_proj_sha256
    from editing.chunks import ChunkEdit, MergedChunks, edit_chunk
    from editing.erase import run_erasure
    from editing.request import ErasureRequest
    from workers.cache import ModelCache

    gpu_like = ModelCache(1, home=fe_home, device="cpu", dtype="bfloat16")
    loaded, _, _ = gpu_like.get(MODEL)
    assert gpu_like.key_for(MODEL) == (MODEL, "cpu", "bfloat16")
    weight = loaded.adapter.down_proj_weight(0)
    assert weight.dtype == torch.bfloat16 and weight.device.type == "cpu"
    pristine = down_proj_sha256(loaded.adapter)
    request = ErasureRequest(model=MODEL, facts=four_facts, thresholds=ACCEPT_ALL)
    chunks = [
        ChunkEdit.from_bytes(edit_chunk(request, loaded, i, a, b).to_bytes())
        for i, (a, b) in enumerate([(0, 2), (2, 4)])
    ]
    assert all(p.new.dtype == torch.bfloat16 for c in chunks for p in c.patch.layers)
    assert any(c.patch.layers for c in chunks), "no chunk changed a weight"
    result = run_erasure(request, loaded, editor=MergedChunks(chunks))
    assert result.edit is not None and not result.edit.is_empty()
    assert all(d.new.dtype == torch.bfloat16 for d in result.edit.deltas)
    assert result.metrics.reliability.value is not None
    assert down_proj_sha256(loaded.adapter) == pristine


def test_a_chunk_job_failed_outside_the_job_fails_the_erasure_and_forgets_the_chunks(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, four_facts: Any
) -> None:
    """The workers' maintenance reconciles a chunk job rq failed on its own (e.g. its worker died
    on the last attempt): the erasure fails, nothing is published, the patches are deleted; a
    chunk job queued again leaves the record running."""
    from rq.job import JobStatus

    from editing.request import ErasureRequest
    from service.private_records import keep_chunk, load_chunk
    from workers.cache import ModelCache
    from workers.chunks import split
    from workers.context import JobContext
    from workers.reconcile import reconcile_erasure

    _chunked(settings)
    erasure_id = submit(settings, store, rconn, four_facts, enqueue=False)
    ctx = JobContext(settings=settings, store=store, cache=ModelCache(1), redis=rconn)
    store.update_erasure(erasure_id, lambda r: setattr(r, "status", "running"))
    assert split(ctx, ErasureRequest(model=MODEL, facts=four_facts), store.get_erasure(erasure_id))
    keep_chunk(store, erasure_id, 0, b"a patch", settings)
    chunk = Job.fetch(f"{erasure_id}-chunk-1", connection=rconn, serializer=JOB_SERIALIZER)
    assert reconcile_erasure(ctx, chunk.id, rconn) is None  # queued: still running
    assert store.get_erasure(erasure_id).status == "running"
    chunk.set_status(JobStatus.FAILED)
    assert reconcile_erasure(ctx, chunk.id, rconn) == "failed"
    record = store.get_erasure(erasure_id)
    assert record.status == "failed" and "nothing was published" in (record.error or "")
    assert load_chunk(store, erasure_id, 0, settings) is None
