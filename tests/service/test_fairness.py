"""Fairness between tenants (issue #15): per-tenant quotas (429 + Retry-After), round-robin order
in a model's queue on the real Redis, and reports rendered once per content."""

from __future__ import annotations

from collections.abc import Callable

import redis
from fastapi.testclient import TestClient
from rq import Queue

from service.config import Settings
from service.fairness import fair_tally_key, place_fairly
from service.store import FilesystemStore, transitions
from tests.service.conftest import auth, body, fact


def _submit(client: TestClient, key: str, facts: int = 1) -> tuple[int, dict]:
    payload = body(facts=[fact(subject=f"Person {i}") for i in range(facts)])
    response = client.post("/v1/erasures", json=payload, headers=auth(key))
    return response.status_code, {**response.headers, "_body": response.json()}


def test_one_tenants_many_jobs_do_not_delay_anothers_single_job(
    make_client: Callable[..., TestClient],
    keys: dict[str, str],
    settings: Settings,
    rconn: redis.Redis,
) -> None:
    client = make_client(tenant_max_jobs=100, rate_limit_write=1000)
    flood = [_submit(client, keys["acme"])[1]["_body"]["id"] for _ in range(50)]
    single = _submit(client, keys["globex"])[1]["_body"]["id"]
    queue = Queue(settings.queue_name("demo-small"), connection=rconn)
    order = queue.get_job_ids()
    assert len(order) == 51
    assert order.index(single) == 1  # after acme's first job, not after all 50
    assert [i for i in order if i != single] == flood  # acme's own order is kept
    # a worker takes them in that order: globex's job is the second one dequeued
    taken = [Queue.dequeue_any([queue], None, connection=rconn)[0].id for _ in range(2)]
    assert taken == [flood[0], single]


def test_round_robin_interleaves_three_tenants_by_round(
    settings: Settings, rconn: redis.Redis
) -> None:
    key, tally = "rq:queue:fair-test", fair_tally_key(settings.redis_prefix, "fair-test")
    arrivals = ["a1", "a2", "a3", "b1", "b2", "c1", "a4"]
    for job_id in arrivals:
        rconn.rpush(key, job_id)  # what rq's enqueue does, then the API places it
        place_fairly(rconn, key, tally, job_id, job_id[0])
    assert [j.decode() for j in rconn.lrange(key, 0, -1)] == [
        "a1", "b1", "c1", "a2", "b2", "a3", "a4"
    ]  # fmt: skip
    rconn.lpop(key)
    assert place_fairly(rconn, key, tally, "gone", "x") == -1  # taken before placing: no insert
    assert b"gone" not in rconn.lrange(key, 0, -1)


def test_jobs_and_facts_in_flight_are_capped_per_tenant(
    make_client: Callable[..., TestClient],
    keys: dict[str, str],
    store: FilesystemStore,
    settings: Settings,
) -> None:
    client = make_client(tenant_max_jobs=2, tenant_max_facts=5, tenant_retry_after=7)
    first = _submit(client, keys["acme"], facts=3)[1]["_body"]["id"]
    code, headers = _submit(client, keys["acme"], facts=3)  # 6 facts > 5
    assert code == 429 and headers["retry-after"] == "7"
    assert "facts in flight" in headers["_body"]["detail"]
    assert _submit(client, keys["acme"], facts=2)[0] == 202
    code, headers = _submit(client, keys["acme"])  # a third erasure
    assert code == 429 and "at most 2 queued or running" in headers["_body"]["detail"]
    assert _submit(client, keys["globex"])[0] == 202  # another tenant is not affected
    transitions.finish(store, first, "failed", settings=settings, error="x", detail="x")
    assert _submit(client, keys["acme"])[0] == 202  # a finished erasure frees its slot


def test_event_streams_are_capped_per_tenant(
    make_client: Callable[..., TestClient], keys: dict[str, str], settings: Settings
) -> None:
    client = make_client(tenant_max_streams=1, sse_max_seconds=60)
    erasure_id = _submit(client, keys["acme"])[1]["_body"]["id"]
    url = f"/v1/erasures/{erasure_id}/events"
    with client.stream("GET", url, headers=auth(keys["acme"])) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()  # kept: dropping the iterator closes the stream
        next(lines)
        second = client.get(url, headers=auth(keys["acme"]))
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert "open event streams" in second.json()["detail"]
    fast = make_client(tenant_max_streams=1, sse_max_seconds=0.2)
    assert fast.get(url, headers=auth(keys["acme"])).status_code == 200  # the slot came back


def test_reports_are_rendered_once_per_content(
    client: TestClient, keys: dict[str, str], store: FilesystemStore
) -> None:
    erasure_id = _submit(client, keys["acme"])[1]["_body"]["id"]
    store.put_report(erasure_id, {"status": "rejected", "metrics": {}, "acceptance": {}})
    cache = client.app.state.ctx.reports
    url = f"/v1/erasures/{erasure_id}/report?format=html"
    pages = [client.get(url, headers=auth(keys["acme"])).text for _ in range(5)]
    assert len(set(pages)) == 1 and cache.renders == 1 and cache.hits == 4
    store.update_erasure(erasure_id, lambda r: setattr(r, "status", "rejected"))
    client.get(url, headers=auth(keys["acme"]))
    assert cache.renders == 2  # a changed record is rendered anew


def test_concurrent_submissions_never_exceed_the_cap(
    make_client: Callable[..., TestClient], keys: dict[str, str], store: FilesystemStore
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(tenant_max_jobs=5, rate_limit_write=1000)
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: _submit(client, keys["acme"])[0], range(40)))
    assert codes.count(202) == 5 and codes.count(429) == 35
    assert len(store.list_erasures("acme", limit=100)[0]) == 5
