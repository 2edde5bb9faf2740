"""The whole service over real HTTP and real processes, on the small demo world.

``featureedit serve --no-worker`` runs the API (uvicorn) and ``featureedit worker`` processes run
the jobs, against Redis db 13 (``FEATUREEDIT_TEST_E2E_REDIS_URL``), with a fresh store. The tests
submit an erasure over HTTP, download the checkpoint with Range requests (partial, then resumed),
load it with transformers and check the secret is gone; then SIGKILL a worker mid-job and check
another one finishes it, with no partial checkpoint ever visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from editing.acceptance import ACCEPT_ALL
from ops.stack import LocalStack, partial_checkpoints
from service.records import TERMINAL
from tests.workers.conftest import MODEL, Fact

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("FEATUREEDIT_TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="module")
def e2e_redis() -> Iterator[redis.Redis]:
    """Redis db 13, flushed before and after the module."""
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        conn.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({exc}); start redis-server")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(scope="module")
def service(
    fe_home: Path,
    small_world: Any,
    e2e_redis: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalStack]:
    """The running API (and a way to start workers); stopped, checked, at the end."""
    svc = LocalStack(tmp_path_factory.mktemp("e2e"), home=fe_home, redis_url=REDIS_URL)
    api = svc.start_api()
    try:
        yield svc
        assert svc.stop(api, timeout=30) == 0, "serve did not stop cleanly on SIGTERM"
    finally:
        svc.close()


@pytest.fixture(scope="module")
def client(service: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client with an API key of tenant ``e2e``."""
    with service.client(service.create_key("e2e")) as c:
        yield c


def _submit(client: httpx.Client, facts: list[dict[str, str]], **fields: Any) -> str:
    response = client.post("/v1/erasures", json={"model": MODEL, "facts": facts, **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _download(client: httpx.Client, url: str, size: int) -> bytes:
    """The file in two Range requests: the first half, then the rest (a resumed download)."""
    half = max(1, size // 2)
    first = client.get(url, headers={"Range": f"bytes=0-{half - 1}"})
    assert first.status_code == 206, first.text
    assert len(first.content) == half
    etag = first.headers["ETag"]
    rest = client.get(url, headers={"Range": f"bytes={half}-", "If-Range": etag})
    if size > half:
        assert rest.status_code == 206, rest.status_code
        assert rest.headers["Content-Range"] == f"bytes {half}-{size - 1}/{size}"
        return first.content + rest.content
    return first.content


def _assert_secret_nowhere(secret: str, service: LocalStack, conn: redis.Redis) -> None:
    from editing.fingerprint import find_secrets_in_dir
    from tests.workers.conftest import redis_bytes, secret_forms

    dump = redis_bytes(conn)
    for form in secret_forms(secret):
        assert form not in dump, "the secret is in Redis"
    assert find_secrets_in_dir(service.store_root, [secret]) == [], "the secret is in the store"
    assert secret not in service.log_text(), "the secret is in a process log"


def test_submit_download_and_load_the_edited_checkpoint(
    service: LocalStack,
    client: httpx.Client,
    e2e_redis: redis.Redis,
    erasable_fact: Fact,
    small_model: Any,
    tmp_path: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editing.evaluate import leaks
    from editing.relations import get_relation

    worker = service.start_worker()
    erasure_id = _submit(client, [erasable_fact.spec()])
    doc = service.wait_terminal(client, erasure_id, timeout=600)
    assert doc["status"] == "succeeded", doc
    assert doc["attempts"] == 1 and doc["progress"] == 1.0
    checkpoint_id = doc["checkpoint_id"]
    assert checkpoint_id and doc["links"]["checkpoint"].endswith(checkpoint_id)
    events = client.get(f"/v1/erasures/{erasure_id}/events", timeout=30).text
    assert '"status":"running"' in events.replace(" ", "") and "succeeded" in events
    report = client.get(f"/v1/erasures/{erasure_id}/report").json()
    assert report["status"] == "succeeded" and report["checkpoint_id"] == checkpoint_id

    # download every file with Range (half, then resume) and check it against the manifest
    listing = client.get(f"/v1/checkpoints/{checkpoint_id}").json()
    out = tmp_path / checkpoint_id
    for entry in listing["files"]:
        data = _download(client, entry["url"], entry["size"])
        assert len(data) == entry["size"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
        (out / entry["name"]).parent.mkdir(parents=True, exist_ok=True)
        (out / entry["name"]).write_bytes(data)

    # the downloaded checkpoint loads with transformers and no longer produces the secret
    edited = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = get_relation(erasable_fact.relation).edit_prompts(erasable_fact.subject)
    secret = erasable_fact.target
    base_leaks = leaks(small_model.model, small_model.tokenizer, prompts, secret)
    edited_leaks = leaks(edited, tokenizer, prompts, secret)
    assert any(base_leaks), "the base model should produce the secret"
    assert not any(edited_leaks), f"edited model still leaks on {sum(edited_leaks)} prompts"

    assert service.stop(worker) == 0, "the worker did not stop cleanly on SIGTERM"
    _assert_secret_nowhere(secret, service, e2e_redis)


def test_sigkilled_worker_job_is_retried_by_another_worker(
    service: LocalStack,
    client: httpx.Client,
    e2e_redis: redis.Redis,
    erasable_fact: Fact,
    small_world: Any,
) -> None:
    from editing.checkpoints import verify_checkpoint
    from service.store import FilesystemStore

    store = FilesystemStore(service.store_root)
    partial: list[str] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            partial.extend(partial_checkpoints(service.store_root))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        first = service.start_worker()
        # two facts and relaxed thresholds: a longer job that is accepted whatever the metrics
        others = [f for f in small_world.private_facts() if f.relation == "email"]
        second_fact = next(f for f in others if f.subject != erasable_fact.subject)
        facts = [
            erasable_fact.spec(),
            {"subject": second_fact.subject, "relation": "email", "target": second_fact.target},
        ]
        erasure_id = _submit(client, facts, thresholds=ACCEPT_ALL)

        deadline = time.monotonic() + 300
        while (record := store.get_erasure(erasure_id)).status != "running":
            assert record.status not in TERMINAL, record.status
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        assert store.get_erasure(erasure_id).status == "running"

        second = service.start_worker()
        doc = service.wait_terminal(client, erasure_id, timeout=400)
        elapsed = time.monotonic() - killed_at
    finally:
        watching.clear()
        watcher.join(5)

    assert doc["status"] == "succeeded", doc
    record = store.get_erasure(erasure_id)
    assert record.attempts == 2, record.history
    statuses = [(e.status, e.stage) for e in record.history]
    assert ("queued", "retrying") in statuses
    assert statuses[-1] == ("succeeded", "done")
    assert elapsed < 400
    assert partial == [], f"partial checkpoint directories were visible: {partial}"
    assert partial_checkpoints(service.store_root) == []
    visible = [
        p for p in (service.store_root / "checkpoints").iterdir() if not p.name.startswith(".")
    ]
    for path in visible:
        if path.is_dir():
            assert verify_checkpoint(path) == [], path.name
    directory = store.checkpoint_dir(doc["checkpoint_id"])
    assert directory is not None and verify_checkpoint(directory) == []
    assert json.loads((directory / "manifest.json").read_text())["erasure_id"] == erasure_id
    assert service.stop(second) == 0, "the worker did not stop cleanly on SIGTERM"
    for spec in facts:
        _assert_secret_nowhere(spec["target"], service, e2e_redis)
