"""``/v1/erasures``: submit, idempotency, concurrency, validation, isolation, cancel, events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from service.queueing import JOB_SERIALIZER
from service.records import ErasureRecord
from service.security import decrypt_request
from service.store import FilesystemStore, record_event
from tests.service.conftest import SECRET, auth, body, fact
from tests.service.reports import sample_report_json

QUEUE = "featureedit-demo-small"


def _submit(client: TestClient, key: str, **kwargs) -> dict:
    r = client.post("/v1/erasures", json=body(), headers=auth(key), **kwargs)
    assert r.status_code == 202, r.text
    return r.json()


# ----------------------------------------------------------------------------- submit
def test_submit_stores_record_and_enqueues_one_job(client, keys, store, settings, rconn):
    r = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    assert r.status_code == 202, r.text
    doc = r.json()
    erasure_id = doc["id"]
    assert doc["status"] == "queued"
    assert doc["status_url"].endswith(f"/v1/erasures/{erasure_id}")
    assert r.headers["location"] == doc["status_url"]
    assert r.headers["x-request-id"]

    record = store.get_erasure(erasure_id)
    assert record is not None and record.tenant == "acme" and record.status == "queued"
    assert record.history[0].seq == 0 and record.history[0].status == "queued"
    assert record.fact_fingerprints[0].startswith("hmac-sha256:")
    assert SECRET not in record.model_dump_json()
    assert record.request_public["facts"][0]["fingerprint"] == record.fact_fingerprints[0]

    # the secret lives only in the encrypted blob, which the worker can open
    blob = store.get_request_blob(erasure_id)
    assert blob is not None and SECRET.encode() not in blob
    request = decrypt_request(blob, home=settings.home)
    assert request.facts[0].secret == SECRET and request.model == "demo-small"

    q = Queue(QUEUE, connection=rconn)
    assert q.job_ids == [erasure_id]
    job = Job.fetch(erasure_id, connection=rconn, serializer=JOB_SERIALIZER)  # JSON, not pickle
    assert job.func_name == "workers.jobs.run_erasure_job"
    assert list(job.args) == [erasure_id] and job.kwargs == {}
    assert job.timeout == 1800 and job.result_ttl == 86400
    assert job.retries_left == 2 and job.retry_intervals == [5, 30]
    assert job.description == f"erasure {erasure_id}"


def test_get_and_public_view_never_show_the_target_or_subject(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]
    r = client.get(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    assert r.status_code == 200
    doc = r.json()
    assert SECRET not in r.text and "Alice Example" not in r.text
    assert "Alice Example" not in store.get_erasure(erasure_id).model_dump_json()
    assert doc["facts"] == [
        {
            "subject_fingerprint": doc["facts"][0]["subject_fingerprint"],
            "relation": "phone",
            "fingerprint": doc["facts"][0]["fingerprint"],
            "edit_prompts": None,
            "heldout_prompts": None,
        }
    ]
    assert set(doc["links"]) == {"self", "events", "report", "checkpoint"}
    assert doc["links"]["self"].endswith(erasure_id)
    assert doc["params"]["site"] == "resid_post"


def test_list_newest_first_with_cursor_and_status_filter(client, keys, store):
    ids = [_submit(client, keys["acme"])["id"] for _ in range(5)]
    store.update_erasure(ids[0], lambda r: record_event(r, "running", stage="locate"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/erasures", params=params, headers=auth(keys["acme"])).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    running = client.get(
        "/v1/erasures", params={"status": "running"}, headers=auth(keys["acme"])
    ).json()
    assert [i["id"] for i in running["items"]] == [ids[0]]
    bad = client.get("/v1/erasures", params={"cursor": "!!!"}, headers=auth(keys["acme"]))
    assert bad.status_code == 422


# ----------------------------------------------------------------------------- idempotency
def test_idempotency_key_returns_the_same_erasure_and_one_job(client, keys, store, rconn):
    headers = {**auth(keys["acme"]), "Idempotency-Key": "order-42"}
    first = client.post("/v1/erasures", json=body(), headers=headers)
    second = client.post("/v1/erasures", json=body(), headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len(store.list_erasures("acme")[0]) == 1
    assert Queue(QUEUE, connection=rconn).count == 1

    # another tenant may use the same key independently
    other = client.post(
        "/v1/erasures", json=body(), headers={**auth(keys["globex"]), "Idempotency-Key": "order-42"}
    )
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]

    # the same key with a different request is refused, without echoing anything
    changed = client.post(
        "/v1/erasures", json=body(facts=[fact(target="555-0100-0000")]), headers=headers
    )
    assert changed.status_code == 422
    assert "555-0100-0000" not in changed.text and SECRET not in changed.text


def test_replay_enqueues_a_queued_erasure_whose_job_was_lost(client, keys, rconn):
    headers = {**auth(keys["acme"]), "Idempotency-Key": "crash-before-enqueue"}
    erasure_id = client.post("/v1/erasures", json=body(), headers=headers).json()["id"]
    Job.fetch(erasure_id, connection=rconn).delete()  # as if the API died before enqueueing
    assert Queue(QUEUE, connection=rconn).count == 0
    again = client.post("/v1/erasures", json=body(), headers=headers)
    assert again.status_code == 200 and again.json()["id"] == erasure_id
    assert Queue(QUEUE, connection=rconn).job_ids == [erasure_id]
    client.post("/v1/erasures", json=body(), headers=headers)
    assert Queue(QUEUE, connection=rconn).count == 1  # never a second job


def _concurrent_posts(client: TestClient, n: int, headers_for) -> list:
    barrier = threading.Barrier(min(n, 20))

    def post(i: int):
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)
        return client.post("/v1/erasures", json=body(), headers=headers_for(i))

    with ThreadPoolExecutor(max_workers=20) as pool:
        return list(pool.map(post, range(n)))


def test_100_concurrent_posts_none_lost_none_duplicated(make_client, keys, store, rconn):
    client = make_client(tenant_max_jobs=100)  # the rate limit, not the in-flight cap, binds
    responses = _concurrent_posts(client, 100, lambda i: auth(keys["acme"]))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 429}, codes
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    assert 60 <= len(accepted) <= 100  # 60 per 10 s window; the burst may straddle two windows
    assert len(set(accepted)) == len(accepted)
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    records = store.list_erasures("acme", limit=1000)[0]
    assert sorted(r.id for r in records) == sorted(accepted)
    assert sorted(Queue(QUEUE, connection=rconn).job_ids) == sorted(accepted)


def test_100_concurrent_posts_with_one_key_create_one_erasure(client, keys, store, rconn):
    headers = {**auth(keys["acme"]), "Idempotency-Key": "same-for-all"}
    responses = _concurrent_posts(client, 100, lambda i: headers)
    assert {r.status_code for r in responses} <= {200, 202, 429}
    ok = [r for r in responses if r.status_code in (200, 202)]
    assert sum(r.status_code == 202 for r in ok) == 1
    assert len({r.json()["id"] for r in ok}) == 1
    assert len(store.list_erasures("acme", limit=1000)[0]) == 1
    assert Queue(QUEUE, connection=rconn).count == 1


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "payload",
    [
        # a prompt containing the target
        body(facts=[fact(edit_prompts=[f"Alice Example's phone number is {SECRET}"])]),
        # the target as a number, an object, an over-long string
        body(facts=[fact(target=5550199)]),
        body(facts=[fact(target={"value": SECRET})]),
        body(facts=[fact(target=SECRET * 200)]),
        # the target as a field name, as an unknown field's value, as the model or the method
        body(facts=[{**fact(), SECRET: 1}]),
        body(facts=[fact(note=SECRET)]),
        body(model=SECRET),
        body(method=SECRET),
        body(facts=[fact(relation=SECRET)]),
        body(callback_url=SECRET),
        body(params={"site": SECRET}),
        body(facts=[fact(subject=SECRET * 50)]),
    ],
    ids=[
        "prompt-contains-target",
        "target-int",
        "target-object",
        "target-too-long",
        "target-as-key",
        "extra-field",
        "model",
        "method",
        "relation",
        "callback",
        "site",
        "subject-too-long",
    ],
)
def test_validation_errors_never_echo_the_secret(client, keys, payload):
    r = client.post("/v1/erasures", json=payload, headers=auth(keys["acme"]))
    assert r.status_code == 422, r.text
    assert SECRET not in r.text
    assert "5550199" not in r.text
    doc = r.json()
    assert doc["summary"] and isinstance(doc["detail"], list)
    for err in doc["detail"]:
        assert set(err) == {"loc", "msg", "type"}


def test_malformed_json_does_not_echo(client, keys):
    raw = '{"model": "demo-small", "facts": [{"target": "' + SECRET + '"'
    r = client.post(
        "/v1/erasures",
        content=raw,
        headers={**auth(keys["acme"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and SECRET not in r.text


def test_validation_messages_are_clear(client, keys, make_client):
    r = client.post(
        "/v1/erasures",
        json=body(facts=[fact(edit_prompts=[f"The phone of Alice is {SECRET}"])]),
        headers=auth(keys["acme"]),
    )
    assert "already contains the target" in r.json()["summary"]
    r = client.post("/v1/erasures", json=body(model="nope"), headers=auth(keys["acme"]))
    assert r.status_code == 422 and "demo-small" in r.json()["summary"]
    small = make_client(max_facts=2)
    r = small.post("/v1/erasures", json=body(facts=[fact()] * 3), headers=auth(keys["acme"]))
    assert r.status_code == 422
    assert "at most 2" in r.json()["summary"] and SECRET not in r.text
    r = client.post("/v1/erasures", json=body(params={"layers": [7]}), headers=auth(keys["acme"]))
    assert r.status_code == 422 and "layers with SAEs: [0, 1]" in r.json()["summary"]
    for url in (  # every spelling of a local host (issue #15: `localhost.` used to pass)
        "http://127.0.0.1:9/hook",
        "http://localhost./hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0177.0.0.1/hook",
        "http://[fe80::1]/hook",
    ):
        r = client.post("/v1/erasures", json=body(callback_url=url), headers=auth(keys["acme"]))
        assert r.status_code == 422 and "public host" in r.json()["summary"], url


def test_params_are_the_methods_own(client, keys):
    r = client.post(
        "/v1/erasures",
        json=body(method="neurons", params={"tau1": 0.3}),
        headers=auth(keys["acme"]),
    )
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "loc": ["body", "params", "tau1"],
            "msg": "not a parameter of the chosen method, whose parameters are: layers, ig_steps, "
            "ig_threshold, neuron_cap",
            "type": "extra_forbidden",
        }
    ]
    r = client.post("/v1/erasures", json=body(params={"tau1": "0.3"}), headers=auth(keys["acme"]))
    assert r.status_code == 422 and "wrong JSON type for params.tau1" in r.json()["summary"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    create = schema.get("ErasureCreate") or schema["ErasureCreate-Input"]
    assert create["properties"]["method"]["enum"] == ["featureedit", "neurons", "neuronlens"]
    assert len(create["properties"]["params"]["anyOf"]) == 3


def test_method_needs_saes(make_client, settings, keys):
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text('[models.plain]\npath = "/models/plain"\n')
    client = make_client()
    r = client.post(
        "/v1/erasures", json=body(model="plain", method="featureedit"), headers=auth(keys["acme"])
    )
    assert r.status_code == 422 and "needs SAEs" in r.json()["summary"]
    assert "a method without SAEs: neurons, neuronlens" in r.json()["summary"]
    r = client.post(
        "/v1/erasures", json=body(model="plain", method="neurons"), headers=auth(keys["acme"])
    )
    assert r.status_code == 202
    models = client.get("/v1/models", headers=auth(keys["acme"])).json()["models"]
    by_id = {m["model_id"]: m for m in models}
    assert by_id["plain"]["methods"] == ["neurons", "neuronlens"]
    assert by_id["demo-small"]["methods"] == ["featureedit", "neurons", "neuronlens"]
    assert by_id["demo-small"]["saes"]["resid_post"]["layers"] == [0, 1]
    assert "/models/plain" not in json.dumps(models)  # server paths are not shown


def test_oversized_body_is_413(client, keys):
    big = body(facts=[fact(edit_prompts=["x" * 900] * 60)] * 25)
    raw = json.dumps(big)
    assert len(raw) > 1 << 20
    r = client.post(
        "/v1/erasures",
        content=raw,
        headers={**auth(keys["acme"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "at most 1048576 bytes" in r.json()["detail"]


def test_base_checkpoint_must_be_the_tenants(client, keys, store):
    from tests.service.conftest import make_checkpoint

    checkpoint_id = make_checkpoint(store, "acme", {"a.bin": b"abc"})
    ok = client.post(
        "/v1/erasures", json=body(base_checkpoint=checkpoint_id), headers=auth(keys["acme"])
    )
    assert ok.status_code == 202
    other = client.post(
        "/v1/erasures", json=body(base_checkpoint=checkpoint_id), headers=auth(keys["globex"])
    )
    assert other.status_code == 422
    wrong_model = client.post(
        "/v1/erasures",
        json=body(model="demo", base_checkpoint=checkpoint_id),
        headers=auth(keys["acme"]),
    )
    assert wrong_model.status_code == 422 and "demo-small" in wrong_model.text


# ----------------------------------------------------------------------------- queue down
def test_redis_down_at_enqueue_is_503_and_recorded_failed(make_client, keys, store):
    client = make_client(redis_url="redis://127.0.0.1:1/0")
    r = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    assert r.status_code == 503
    assert "queue" in r.json()["detail"] and r.headers["retry-after"]
    (record,) = store.list_erasures("acme")[0]
    assert record.status == "failed" and record.error == "queue unavailable"
    assert record.history[-1].status == "failed"
    assert store.get_request_blob(record.id) is None  # the secret is not kept for nothing


# ----------------------------------------------------------------------------- isolation
def test_other_tenants_get_404_everywhere(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]
    store.put_report(erasure_id, {"metrics": {}})
    other = auth(keys["globex"])
    for method, path in [
        ("GET", f"/v1/erasures/{erasure_id}"),
        ("DELETE", f"/v1/erasures/{erasure_id}"),
        ("GET", f"/v1/erasures/{erasure_id}/report"),
        ("GET", f"/v1/erasures/{erasure_id}/events"),
    ]:
        r = client.request(method, path, headers=other)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"] == "Erasure not found"
    assert client.get("/v1/erasures", headers=other).json()["items"] == []
    assert client.get(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"])).status_code == 200
    assert store.get_erasure(erasure_id).status == "queued"  # the foreign DELETE did nothing


# ----------------------------------------------------------------------------- cancel
def test_cancel_queued_removes_the_job(client, keys, store, rconn):
    erasure_id = _submit(client, keys["acme"])["id"]
    r = client.delete(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert Queue(QUEUE, connection=rconn).count == 0
    assert store.get_request_blob(erasure_id) is None
    again = client.delete(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_cancel_running_sets_the_flag(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]
    store.update_erasure(erasure_id, lambda r: record_event(r, "running", stage="locate"))
    r = client.delete(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert store.get_erasure(erasure_id).cancel_requested


# ----------------------------------------------------------------------------- events
def _parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "data" in fields:
            events.append({"id": fields.get("id"), **json.loads(fields["data"])})
    return events


def _finish(store: FilesystemStore, erasure_id: str) -> None:
    def mutate(r: ErasureRecord) -> None:
        record_event(r, "running", stage="locate", progress=0.1)
        record_event(r, "succeeded", stage="done", progress=1.0)

    store.update_erasure(erasure_id, mutate)


def test_events_replay_history_and_resume(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]
    _finish(store, erasure_id)
    r = client.get(f"/v1/erasures/{erasure_id}/events", headers=auth(keys["acme"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(r.text)
    assert [(e["id"], e["status"]) for e in events] == [
        ("0", "queued"),
        ("1", "running"),
        ("2", "succeeded"),
    ]
    assert all(e["erasure_id"] == erasure_id for e in events)
    resumed = client.get(
        f"/v1/erasures/{erasure_id}/events",
        headers={**auth(keys["acme"]), "Last-Event-ID": "1"},
    )
    assert [e["status"] for e in _parse_sse(resumed.text)] == ["succeeded"]


def test_events_follow_live_updates(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]

    def later() -> None:
        time.sleep(0.3)
        _finish(store, erasure_id)

    t = threading.Thread(target=later)
    t.start()
    started = time.monotonic()
    with client.stream("GET", f"/v1/erasures/{erasure_id}/events", headers=auth(keys["acme"])) as r:
        text = "".join(r.iter_text())
    t.join()
    assert [e["status"] for e in _parse_sse(text)] == ["queued", "running", "succeeded"]
    assert time.monotonic() - started < 5


def test_events_stream_has_bounded_lifetime(make_client, keys):
    client = make_client(sse_max_seconds=0.2)
    erasure_id = _submit(client, keys["acme"])["id"]
    started = time.monotonic()
    r = client.get(f"/v1/erasures/{erasure_id}/events", headers=auth(keys["acme"]))
    assert [e["status"] for e in _parse_sse(r.text)] == ["queued"]
    assert time.monotonic() - started < 3


# ----------------------------------------------------------------------------- reports
def test_report_json_and_escaped_html(client, keys, store):
    erasure_id = _submit(client, keys["acme"])["id"]
    r = client.get(f"/v1/erasures/{erasure_id}/report", headers=auth(keys["acme"]))
    assert r.status_code == 404 and "queued" in r.json()["detail"]
    report = sample_report_json(erasure_id)
    store.put_report(erasure_id, report)
    doc = client.get(f"/v1/erasures/{erasure_id}/report", headers=auth(keys["acme"])).json()
    assert doc["erasure_id"] == erasure_id
    assert doc["metrics"]["exposure_after"] == 0.0  # stored 0.4: served in whole bits
    page = client.get(
        f"/v1/erasures/{erasure_id}/report", params={"format": "html"}, headers=auth(keys["acme"])
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    assert "accepted" in page.text and "resid_post" in page.text
    assert "9.5" not in page.text  # the stored exposure, rendered in whole bits (10)
    assert "default-src 'none'" in page.headers["content-security-policy"]


# ----------------------------------------------------------------------------- no secret anywhere
def test_no_secret_in_redis_store_or_audit(client, keys, rconn, settings):
    _submit(client, keys["acme"])
    client.post(
        "/v1/erasures",
        json=body(facts=[fact(edit_prompts=[f"phone {SECRET}"])]),
        headers=auth(keys["acme"]),
    )
    needle = SECRET.encode()
    for key in rconn.scan_iter("*"):
        assert needle not in key
        kind = rconn.type(key).decode()
        if kind == "string":
            values = [rconn.get(key)]
        elif kind == "hash":
            values = [b for kv in rconn.hgetall(key).items() for b in kv]
        elif kind == "list":
            values = rconn.lrange(key, 0, -1)
        elif kind == "set":
            values = list(rconn.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in rconn.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        assert all(needle not in (v or b"") for v in values), key
    for path in Path(settings.home).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    audit = (settings.home / "audit" / "audit.log").read_text()
    lines = [json.loads(line) for line in audit.splitlines()]
    actions = {(a["action"], a["outcome"]) for a in lines}
    assert ("create_erasure", "accepted") in actions
    assert ("create_erasure", "invalid") in actions
    assert all(a["request_id"] for a in lines)


@pytest.mark.parametrize("target", ["7", "42", " K "])
def test_too_short_target_is_a_clear_422(client, keys, target):
    r = client.post(
        "/v1/erasures", json=body(facts=[fact(target=target)]), headers=auth(keys["acme"])
    )
    assert r.status_code == 422, r.text
    summary = r.json()["summary"]
    assert "target is too short: at least 2 characters, 3 digits for a number" in summary


def test_three_digit_and_two_letter_targets_are_accepted(client, keys):
    for target in ("747", "K9"):
        r = client.post(
            "/v1/erasures", json=body(facts=[fact(target=target)]), headers=auth(keys["acme"])
        )
        assert r.status_code == 202, r.text
