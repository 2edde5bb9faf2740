"""The erasure job end to end in one process: real Redis, real store, real rq SimpleWorker.

Each test submits erasures exactly as the API does and runs an :class:`ErasureWorker` in burst
mode on the small demo world.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus

from service.config import Settings
from service.private_records import REVERT
from service.queueing import JOB_SERIALIZER
from service.records import TERMINAL, ErasureRecord
from service.store import FilesystemStore
from tests.workers.conftest import (
    MODEL,
    UNKNOWN_TARGET,
    Fact,
    redis_bytes,
    secret_forms,
    submit,
)
from workers.cache import ModelCache
from workers.callbacks import deliver_callback
from workers.config import WorkerSettings, callback_queue_name
from workers.context import JobContext, install_context, reset_context
from workers.jobs import finish_erasure, run_erasure_job
from workers.worker import CallbackWorker, ErasureWorker, FeatureeditWorker

NOT_PRODUCED = {"subject": "Brigid Draycott", "relation": "email", "target": UNKNOWN_TARGET}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def tuning() -> WorkerSettings:
    """Worker tuning for tests: read the cancel flag on every check."""
    return WorkerSettings(cancel_poll_interval=0)


@pytest.fixture
def cache(fe_home: Path) -> ModelCache:
    """A fresh model cache (nothing loaded)."""
    return ModelCache(1, home=fe_home)


@pytest.fixture
def context(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    cache: ModelCache,
    tuning: WorkerSettings,
) -> Iterator[JobContext]:
    """The jobs' context, installed for the test."""
    ctx = JobContext(settings=settings, store=store, cache=cache, tuning=tuning, redis=rconn)
    install_context(ctx)
    yield ctx
    reset_context()


@pytest.fixture
def run_worker(context: JobContext, rconn: redis.Redis) -> Callable[..., FeatureeditWorker]:
    """``run_worker(queues=None)``: run workers in burst mode on the test queues.

    Default: an :class:`ErasureWorker` on the model's queue, then a :class:`CallbackWorker` on the
    callbacks queue (the erasure's callback is delivered); returns the erasure worker. Given
    ``[<callbacks queue>]``, only the callback worker.
    """

    def run(queues: list[str] | None = None) -> FeatureeditWorker:
        s = context.settings
        callbacks = callback_queue_name(s.queue_prefix)
        runs: list[tuple[type[FeatureeditWorker], list[str]]] = [(CallbackWorker, [callbacks])]
        if queues != [callbacks]:
            runs.insert(0, (ErasureWorker, queues or [s.queue_name(MODEL)]))
        workers = []
        for worker_class, names in runs:
            worker = worker_class(names, connection=rconn, context=context)
            worker.work(burst=True, logging_level="INFO")
            workers.append(worker)
        return workers[0]

    return run


def _record(store: FilesystemStore, erasure_id: str) -> ErasureRecord:
    record = store.get_erasure(erasure_id)
    assert record is not None
    return record


def _checkpoint_dirs(store: FilesystemStore) -> list[Path]:
    return [p for p in store.checkpoint_root().iterdir() if p.is_dir()]


def _assert_history(record: ErasureRecord) -> None:
    seqs = [e.seq for e in record.history]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert record.history[0].status == "queued"
    assert record.history[-1].status == record.status
    assert [e for e in record.history if e.status in TERMINAL] == [record.history[-1]]


def _assert_nowhere(secret: str, conn: redis.Redis, store: FilesystemStore, logs: str) -> None:
    from editing.fingerprint import find_secrets_in_dir

    dump = redis_bytes(conn)
    assert dump, "the Redis scan found nothing at all"
    for form in secret_forms(secret):
        assert form not in dump, "the secret is in Redis"
    assert find_secrets_in_dir(store.root, [secret]) == [], "the secret is in the store"
    assert secret not in logs, "the secret is in the logs"


# ----------------------------------------------------------------------------- tests
def test_erasure_succeeds_with_history_checkpoint_report_and_no_secret_anywhere(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    erasable_fact: Fact,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from editing.checkpoints import read_manifest, verify_checkpoint

    caplog.set_level(logging.DEBUG)
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()])
    job = Job.fetch(erasure_id, connection=rconn, serializer=JOB_SERIALIZER)
    assert job.description == f"erasure {erasure_id}"
    assert job.args == [erasure_id] or job.args == (erasure_id,)

    worker = run_worker()

    record = _record(store, erasure_id)
    assert record.status == "succeeded", record.error
    assert record.attempts == 1 and record.worker == worker.name
    assert record.progress == 1.0 and record.error is None
    _assert_history(record)
    stages = [e.stage for e in record.history if e.status == "running"]
    for stage in (
        "starting",
        "loading model",
        "baseline",
        "locate+edit",
        "evaluate",
        "attacks",
        "publish",
    ):
        assert stage in stages
    progress = [e.progress for e in record.history if e.progress is not None]
    assert progress == sorted(progress)
    assert record.metrics["reliability"]["value"] >= 0.9
    assert record.acceptance == {"accepted": True, "reasons": []}
    assert record.timings["model_cached"] == 0.0 and record.timings["model_load"] > 0
    for key in ("baseline", "locate", "edit", "evaluate", "publish", "total"):
        assert key in record.timings

    # the checkpoint: complete, owned, listed with the erasure
    assert record.checkpoint_id
    directory = store.checkpoint_dir(record.checkpoint_id)
    assert directory is not None and verify_checkpoint(directory) == []
    assert [p.name for p in _checkpoint_dirs(store)] == [record.checkpoint_id]
    assert store.checkpoint_owner(record.checkpoint_id) == {
        "tenant": "acme",
        "erasure_id": erasure_id,
    }
    manifest = read_manifest(directory)
    assert manifest["erasure_id"] == erasure_id
    assert manifest["facts"][0]["fingerprint"] == record.fact_fingerprints[0]

    report = store.get_report(erasure_id)
    assert report is not None and report["status"] == "succeeded"
    assert report["erasure_id"] == erasure_id and report["checkpoint_id"] == record.checkpoint_id
    assert report["model_cache"]["cached"] is False
    assert set(report["attacks"]) == {"sampled", "logit_lens"}  # the operator's default set
    assert report["attacks"]["sampled"]["budget"]["samples"] == 20
    assert record.timings["attacks"] > 0

    assert store.get_request_blob(erasure_id) is None
    assert Job.fetch(erasure_id, connection=rconn).get_status() == JobStatus.FINISHED
    out, err = capfd.readouterr()
    _assert_nowhere(erasable_fact.target, rconn, store, caplog.text + out + err)


def test_locality_size_is_the_registry_setting_with_the_worker_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from editing.errors import ConfigError
    from editing.registry import EvalSize, ModelEntry

    entry = ModelEntry(model_id="m", path="/m")
    assert WorkerSettings().eval_size(entry) is None  # the engine's default (200 prompts)
    configured = ModelEntry(model_id="m", path="/m", evaluation=EvalSize(10, 10, 3))
    assert WorkerSettings().eval_size(configured) == EvalSize(10, 10, 3)
    monkeypatch.setenv("FEATUREEDIT_WORKER_LOCALITY_PUBLIC_FACTS", "7")
    tuning = WorkerSettings()
    assert tuning.eval_size(configured) == EvalSize(10, 7, 3)  # unset keys keep the registry's
    assert tuning.eval_size(entry) == EvalSize(60, 7, 2)  # ... or the defaults
    monkeypatch.setenv("FEATUREEDIT_WORKER_LOCALITY_PROMPTS_PER_FACT", "0")
    with pytest.raises(ValueError, match="locality_prompts_per_fact"):
        WorkerSettings()
    with pytest.raises(ConfigError):
        EvalSize(0, 1, 1)


def test_the_job_evaluates_on_the_operator_sized_locality_set(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    context: JobContext,
    run_worker: Callable[..., FeatureeditWorker],
    erasable_fact: Fact,
) -> None:
    context.tuning = context.tuning.model_copy(
        update={
            "locality_private_facts": 6,
            "locality_public_facts": 4,
            "locality_prompts_per_fact": 1,
        }
    )
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()])
    run_worker()

    record = _record(store, erasure_id)
    assert record.status in ("succeeded", "rejected"), record.error
    assert record.metrics["locality"]["set_size"] == 10  # 6 + 4 facts × 1 prompt
    assert store.get_report(erasure_id)["metrics"]["locality"]["set_size"] == 10


def test_attack_settings_are_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = WorkerSettings().attack_plan()
    assert list(plan.names) == ["sampled", "logit_lens"]
    assert plan.limits == {"max_sampled_leak": 0.01, "max_logit_lens_success_at_1": 0.0}
    monkeypatch.setenv("FEATUREEDIT_WORKER_ATTACK_LIMITS", "")
    assert WorkerSettings().attack_plan().limits == {}  # an operator can turn them off
    monkeypatch.setenv("FEATUREEDIT_WORKER_ATTACKS", "")
    monkeypatch.setenv("FEATUREEDIT_WORKER_ATTACK_LIMITS", "max_sampled_leak=0.01")
    plan = WorkerSettings().attack_plan()
    assert list(plan.names) == [] and plan.limits == {"max_sampled_leak": 0.01}
    monkeypatch.setenv("FEATUREEDIT_WORKER_ATTACK_LIMITS", "max_sampled_leak=Infinity")
    with pytest.raises(ValueError, match="finite"):
        WorkerSettings()


def test_an_attack_limit_the_erasure_cannot_meet_rejects_and_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    context: JobContext,
    run_worker: Callable[..., FeatureeditWorker],
    erasable_digit_fact: Any,
) -> None:
    context.tuning = context.tuning.model_copy(
        update={"attacks": "logit_lens", "attack_limits": "max_exposure_over_control=10"}
    )
    # exposure over the control is at least -space_bits: -1000 bits is a limit no edit can meet;
    # the request's own limit wins over the operator's default
    thresholds = {"max_exposure_over_control": -1000.0}
    fact = erasable_digit_fact
    spec = {"subject": fact.subject, "relation": fact.relation, "target": fact.target}
    erasure_id = submit(settings, store, rconn, [spec], thresholds=thresholds)
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "rejected", record.error
    assert record.checkpoint_id is None and _checkpoint_dirs(store) == []
    (reason,) = record.acceptance["reasons"]
    assert reason.startswith("exposure worst fact exposure_minus_control ")
    assert "> -1000.0" in reason
    report = store.get_report(erasure_id)
    assert set(report["attacks"]) == {"logit_lens", "exposure"}
    assert report["thresholds"]["max_exposure_over_control"] == -1000.0
    assert "control_exposure" in report["attacks"]["exposure"]["control"]
    stored = json.dumps(report)
    assert fact.target not in stored and fact.subject not in stored


@pytest.mark.parametrize("request_mode", [None, "delta"])
def test_publish_mode_comes_from_the_request_else_the_setting(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    erasable_fact: Fact,
    request_mode: str | None,
) -> None:
    from editing.checkpoints import read_manifest, verify_checkpoint

    settings.publish_mode = "delta" if request_mode is None else "full"
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()], publish=request_mode)
    run_worker()
    record = _record(store, erasure_id)
    assert record.status == "succeeded", record.error
    directory = store.checkpoint_dir(record.checkpoint_id)
    assert directory is not None and verify_checkpoint(directory) == []
    manifest = read_manifest(directory)
    assert manifest["publish"] == "delta"  # the request's mode, else the operator's setting
    assert {f["name"] for f in manifest["files"]} == {"delta/delta.safetensors", "delta/delta.json"}
    assert store.get_report(erasure_id)["checkpoint"]["publish"] == "delta"
    assert record.request_public["publish"] == request_mode


def test_second_job_on_a_warm_worker_skips_loading(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
) -> None:
    first = submit(settings, store, rconn, [NOT_PRODUCED])
    run_worker()
    second = submit(settings, store, rconn, [{**NOT_PRODUCED, "target": "x" + UNKNOWN_TARGET}])
    run_worker()

    one, two = _record(store, first), _record(store, second)
    assert one.status == two.status == "nothing_to_erase"
    assert one.timings["model_cached"] == 0.0 and one.timings["model_load"] > 0
    assert two.timings["model_cached"] == 1.0 and two.timings["model_load"] == 0.0
    assert cache.loads == 1
    assert store.get_report(second)["model_cache"] == {"cached": True, "load_seconds": 0.0}


def test_jobs_share_the_baseline_cache_of_the_workers_home(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
    tuning: WorkerSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first job keeps the unedited model's Locality and perplexity scores under the home;
    a later job on the same model scores none of them again (it writes no cache file)."""
    from editing.baseline import BaselineCache, model_key
    from editing.checkpoints import down_proj_sha256
    from editing.evaldata import eval_data_for

    loaded, _, _ = cache.get(MODEL)
    key = model_key(loaded, down_proj_sha256(loaded.adapter))
    folder = BaselineCache.for_home(settings.home).model_dir(key)
    shutil.rmtree(folder, ignore_errors=True)  # earlier runs' entries for this model (a cache)

    def files() -> set[Path]:
        return set(folder.glob("*.json"))

    monkeypatch.setenv("FEATUREEDIT_BASELINE_CACHE", "0")
    submit(settings, store, rconn, [NOT_PRODUCED])
    run_worker()
    assert files() == set()  # turned off: nothing written

    monkeypatch.setenv("FEATUREEDIT_BASELINE_CACHE", "1")
    submit(settings, store, rconn, [NOT_PRODUCED])
    run_worker()
    assert files()
    kept = BaselineCache.for_home(settings.home).lookup(key)
    data = eval_data_for(loaded, {NOT_PRODUCED["subject"]}, tuning.eval_size(loaded.entry))
    keys = BaselineCache.for_home(settings.home)
    assert data.locality and all(
        keys.entry_key("locality", p, t) in kept for p, t, _ in data.locality
    )
    assert all(keys.entry_key("ppl", t) in kept for t in data.ppl_texts)
    filled = files()
    third = submit(settings, store, rconn, [{**NOT_PRODUCED, "target": "y" + UNKNOWN_TARGET}])
    run_worker()
    assert _record(store, third).status == "nothing_to_erase"
    assert files() == filled


def test_nothing_to_erase_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
) -> None:
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "nothing_to_erase"
    assert record.checkpoint_id is None and record.error is None
    assert _checkpoint_dirs(store) == []
    _assert_history(record)
    report = store.get_report(erasure_id)
    assert report["status"] == "nothing_to_erase" and report["checkpoint_id"] is None
    assert store.get_request_blob(erasure_id) is None


def test_cancel_requested_before_start(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
) -> None:
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED])
    store.update_erasure(erasure_id, lambda r: setattr(r, "cancel_requested", True))
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "cancelled" and record.attempts == 0
    _assert_history(record)
    assert cache.loads == 0  # never even loaded the model
    assert store.get_request_blob(erasure_id) is None


def test_cancel_mid_run_restores_the_model_and_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
    erasable_fact: Fact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import editing.pipeline as pipeline  # erase_and_publish calls run_erasure from there
    from editing.checkpoints import down_proj_sha256

    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()])
    real = pipeline.run_erasure
    seen: list[str] = []

    def cancel_during_edit(request: Any, loaded: Any, progress: Any = None, **kw: Any) -> Any:
        def hook(stage: str, fraction: float) -> None:
            seen.append(stage)
            if stage == "locate+edit":  # what DELETE /v1/erasures/{id} does to a running one
                store.update_erasure(erasure_id, lambda r: setattr(r, "cancel_requested", True))
            progress(stage, fraction)

        return real(request, loaded, progress=hook, **kw)

    monkeypatch.setattr(pipeline, "run_erasure", cancel_during_edit)
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "cancelled", record.error
    assert "locate+edit" in seen and "evaluate" not in seen
    assert [e.stage for e in record.history if e.status == "running"][-1] == "locate+edit"
    assert record.checkpoint_id is None and _checkpoint_dirs(store) == []
    assert store.get_request_blob(erasure_id) is None
    entry = cache.entry(MODEL)
    assert entry is not None and down_proj_sha256(entry.loaded.adapter) == entry.pristine_sha256


def test_an_erasure_ended_elsewhere_while_publishing_publishes_nothing(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    erasable_fact: Fact,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reconcile can fail an erasure while a job of it still runs (a chunk's job failed): the
    job must not publish, and a checkpoint written as the record ended is taken back."""
    import editing.checkpoints as checkpoints  # erase_and_publish imports it from there

    accept_all = {"min_reliability": 0.0, "min_generalization": 0.0, "min_locality": 0.0}
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()], thresholds=accept_all)
    real = checkpoints.publish_checkpoint

    def ended_while_publishing(*args: Any, **kw: Any) -> Any:
        store.update_erasure(erasure_id, lambda r: setattr(r, "status", "failed"))  # reconcile
        return real(*args, **kw)

    monkeypatch.setattr(checkpoints, "publish_checkpoint", ended_while_publishing)
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "failed" and record.checkpoint_id is None
    assert _checkpoint_dirs(store) == [], "a checkpoint of an ended erasure stayed published"
    assert store.get_private(erasure_id, REVERT) is None, "its sealed revert data stayed"


def test_error_after_editing_is_retried_then_failed_redacted_and_the_model_is_pristine(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
    erasable_fact: Fact,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An unexpected error while the edit is applied (its message quoting the secret!)."""
    import editing.evaluate as evaluate
    from editing.adapters import ModelAdapter
    from editing.checkpoints import down_proj_sha256

    caplog.set_level(logging.DEBUG)
    secret = erasable_fact.target
    settings.job_retries, settings.job_retry_intervals = 1, [0]  # retry at once
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()])
    edited_hashes: list[str] = []

    def exploding_leaks(model: Any, tokenizer: Any, groups: Any, *args: Any) -> Any:
        edited_hashes.append(down_proj_sha256(ModelAdapter(model)))
        raise RuntimeError(f"leak check exploded on {groups[0][1]!r}")

    # the evaluate stage's greedy leak check (every fact's prompts in one batched call)
    monkeypatch.setattr(evaluate, "leaks_many", exploding_leaks)
    run_worker()

    record = _record(store, erasure_id)
    assert record.status == "failed" and record.attempts == 2
    assert record.error.startswith("internal error (RuntimeError)")
    assert [e.stage for e in record.history if e.status == "queued"] == ["queued", "retrying"]
    _assert_history(record)
    assert store.get_request_blob(erasure_id) is None
    assert record.checkpoint_id is None and _checkpoint_dirs(store) == []
    # the error struck while the edit was applied; the model is back to its loaded weights
    entry = cache.entry(MODEL)
    assert entry is not None and cache.loads == 1
    assert edited_hashes and all(h != entry.pristine_sha256 for h in edited_hashes)
    assert down_proj_sha256(entry.loaded.adapter) == entry.pristine_sha256
    out, err = capfd.readouterr()
    assert "[REDACTED]" in caplog.text
    _assert_nowhere(secret, rconn, store, caplog.text + out + err + json.dumps(record.model_dump()))


def test_changed_weights_are_dropped_from_the_cache_and_reloaded(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    cache: ModelCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The belt to the engine's braces: a job that leaves weights changed loses its model."""
    import editing.pipeline as pipeline  # erase_and_publish calls run_erasure from there
    from editing.errors import ConfigError

    first = submit(settings, store, rconn, [NOT_PRODUCED])

    def corrupting(request: Any, loaded: Any, **kw: Any) -> Any:
        loaded.adapter.down_proj_weight(0).data[0, 0] += 1.0
        raise ConfigError("simulated engine bug")

    monkeypatch.setattr(pipeline, "run_erasure", corrupting)
    run_worker()
    monkeypatch.undo()
    assert _record(store, first).status == "failed"
    assert _record(store, first).error == "simulated engine bug"
    assert MODEL not in cache

    second = submit(settings, store, rconn, [NOT_PRODUCED])
    run_worker()
    record = _record(store, second)
    assert record.status == "nothing_to_erase" and record.timings["model_cached"] == 0.0
    assert cache.loads == 2


def test_missing_base_checkpoint_fails_clearly(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
) -> None:
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED], base_checkpoint="0123456789abcdef")
    run_worker()
    record = _record(store, erasure_id)
    assert record.status == "failed"
    assert "base checkpoint 0123456789abcdef is not available" in record.error
    assert store.get_request_blob(erasure_id) is None


def test_missing_and_terminal_records_are_left_alone(
    settings: Settings, store: FilesystemStore, rconn: redis.Redis, context: JobContext
) -> None:
    assert run_erasure_job("er_000000000000000000000000") == "missing"
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED], enqueue=False)
    finish_erasure(context, erasure_id, "cancelled", detail="test")
    before = _record(store, erasure_id)
    assert run_erasure_job(erasure_id) == "cancelled"  # a duplicate or late delivery
    after = _record(store, erasure_id)
    assert after.history == before.history and after.attempts == 0
    # finishing twice does nothing either
    _, moved = finish_erasure(context, erasure_id, "failed", error="late")
    assert not moved and _record(store, erasure_id).status == "cancelled"


# ----------------------------------------------------------------------------- callbacks
class _Receiver:
    """A local HTTP endpoint recording POSTs and answering with ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A local callback endpoint."""
    r = _Receiver()
    yield r
    r.close()


def test_callback_is_delivered_signed(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    run_worker: Callable[..., FeatureeditWorker],
    receiver: _Receiver,
) -> None:
    from service.security import verify_callback
    from service.security.signing import settings_tenant_secret

    settings.callback_allow_private = True
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED], callback_url=receiver.url)
    run_worker()

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    doc = json.loads(body)
    assert doc == {
        "id": erasure_id,
        "status": "nothing_to_erase",
        "checkpoint_id": None,
        "metrics": _record(store, erasure_id).metrics,
    }
    assert headers["X-Featureedit-Signature"].startswith("v1=")
    assert headers["X-Featureedit-Delivery"].startswith("dlv_")
    assert verify_callback(body, headers, settings_tenant_secret(settings, "acme"))
    assert not verify_callback(body, headers, settings_tenant_secret(settings, "other"))
    job = Job.fetch(f"{erasure_id}-callback", connection=rconn)
    assert job.get_status() == JobStatus.FINISHED and job.description == f"callback {erasure_id}"


def test_failed_callback_is_retried_and_private_targets_are_refused(
    settings: Settings,
    store: FilesystemStore,
    rconn: redis.Redis,
    context: JobContext,
    run_worker: Callable[..., FeatureeditWorker],
    receiver: _Receiver,
) -> None:
    settings.callback_allow_private = True
    receiver.status = 500
    erasure_id = submit(settings, store, rconn, [NOT_PRODUCED], callback_url=receiver.url)
    _, moved = finish_erasure(context, erasure_id, "cancelled", detail="test")
    assert moved
    run_worker([callback_queue_name(settings.queue_prefix)])
    assert len(receiver.received) == 1
    job = Job.fetch(f"{erasure_id}-callback", connection=rconn)
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == 4

    settings.callback_allow_private = False
    assert deliver_callback(erasure_id) == "refused"
    assert len(receiver.received) == 1


def test_worker_bookkeeping_waits_out_a_redis_outage(
    settings: Settings, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rq's bookkeeping around a job is retried while Redis is unreachable (the job's outcome is
    already in the store); a worker asked to stop gives up instead of waiting."""
    import redis.exceptions

    from workers import worker as worker_module

    monkeypatch.setattr(worker_module.time, "sleep", lambda seconds: None)
    w = worker_module.build_worker(["featureedit-test-outage"], settings=settings, connection=rconn)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        return "done"

    assert w.until_redis_answers("test", flaky) == "done" and len(calls) == 3
    # the loop's own Redis calls between jobs go through it too (rq's loop would quit on them)
    from rq.worker import BaseWorker

    real = BaseWorker.check_for_suspension
    calls.clear()

    def suspension_check_once_down(self: Any, burst: bool) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        real(self, burst)

    monkeypatch.setattr(BaseWorker, "check_for_suspension", suspension_check_once_down)
    w.check_for_suspension(False)
    assert len(calls) == 2
    w.heartbeat()  # a direct heartbeat works as before
    w._stop_requested = True
    calls.clear()
    with pytest.raises(redis.exceptions.ConnectionError):
        w.until_redis_answers("test", flaky)
    assert len(calls) == 1
