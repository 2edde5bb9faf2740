"""A real erasure job publishing through the S3 store (moto_server over HTTP), read back elsewhere.

The worker builds the checkpoint in its staging directory and uploads it (manifest last); a
second S3Store with an empty cache (another host) downloads and verifies it. Real Redis, a real rq
``SimpleWorker``, the small demo world.
"""

from __future__ import annotations

from pathlib import Path

import redis
from rq import Queue

from service.config import Settings
from service.store import get_store
from service.store.s3 import S3Store
from tests.s3_server import new_bucket, s3_client
from tests.workers.conftest import MODEL, Fact, secret_forms, submit
from workers.cache import ModelCache
from workers.config import WorkerSettings
from workers.context import JobContext, install_context, reset_context
from workers.worker import ErasureWorker


def test_a_job_publishes_its_checkpoint_through_s3(
    settings: Settings,
    rconn: redis.Redis,
    erasable_fact: Fact,
    small_model: object,
    fe_home: Path,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    from editing.checkpoints import verify_checkpoint

    settings = settings.model_copy(
        update={
            "store_backend": "s3",
            "s3_bucket": new_bucket(s3_endpoint),
            "s3_endpoint_url": s3_endpoint,
            "s3_cache_dir": tmp_path / "worker-cache",
        }
    )
    store = get_store(settings)
    assert isinstance(store, S3Store)
    erasure_id = submit(settings, store, rconn, [erasable_fact.spec()])
    ctx = JobContext(
        settings=settings,
        store=store,
        cache=ModelCache(1, home=fe_home),
        tuning=WorkerSettings(cancel_poll_interval=0),
        redis=rconn,
    )
    install_context(ctx)
    try:
        ErasureWorker(
            [Queue(settings.queue_name(MODEL), connection=rconn)], connection=rconn, context=ctx
        ).work(burst=True)
    finally:
        reset_context()

    record = store.get_erasure(erasure_id)
    assert record is not None and record.status == "succeeded", record and record.error
    assert record.checkpoint_id and store.get_request_blob(erasure_id) is None
    assert list(store.checkpoint_root().iterdir()) == []  # nothing left in staging

    elsewhere = S3Store(
        settings.s3_bucket, cache_dir=tmp_path / "api-cache", endpoint_url=s3_endpoint
    )
    assert elsewhere.checkpoint_owner(record.checkpoint_id) == {
        "tenant": "acme",
        "erasure_id": erasure_id,
    }
    directory = elsewhere.checkpoint_dir(record.checkpoint_id)
    assert directory is not None and directory.is_relative_to(tmp_path / "api-cache")
    assert verify_checkpoint(directory) == []
    assert elsewhere.get_report(erasure_id)["checkpoint_id"] == record.checkpoint_id

    client = s3_client(s3_endpoint)
    for item in client.list_objects_v2(Bucket=settings.s3_bucket)["Contents"]:
        data = client.get_object(Bucket=settings.s3_bucket, Key=item["Key"])["Body"].read()
        for form in secret_forms(erasable_fact.target):
            assert form not in data and form.decode() not in item["Key"], item["Key"]
