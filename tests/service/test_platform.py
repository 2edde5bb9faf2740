"""Auth, rate limits, health, readiness, metrics, audit, error handling, OpenAPI."""

from __future__ import annotations

import json

from fastapi import APIRouter

from service.security import KeyStore, keys_dir
from tests.service.conftest import auth, body


def test_v1_routes_need_a_valid_key(client, keys, settings):
    routes = [
        ("GET", "/v1/erasures"),
        ("POST", "/v1/erasures"),
        ("GET", "/v1/erasures/er_0"),
        ("DELETE", "/v1/erasures/er_0"),
        ("GET", "/v1/erasures/er_0/events"),
        ("GET", "/v1/erasures/er_0/report"),
        ("GET", "/v1/checkpoints/abc"),
        ("GET", "/v1/checkpoints/abc/files/config.json"),
        ("GET", "/v1/models"),
    ]
    revoked_id, revoked = KeyStore(keys_dir(settings.home)).create_key("acme")
    KeyStore(keys_dir(settings.home)).revoke(revoked_id)
    for headers in (
        {},
        {"Authorization": "Bearer fe_wrong"},
        {"Authorization": f"Basic {keys['acme']}"},
        auth(revoked),
    ):
        for method, path in routes:
            kwargs = {"json": body()} if method == "POST" else {}
            r = client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 401, (method, path, headers)
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/models", headers=auth(keys["acme"])).status_code == 200


def test_rate_limit_is_per_tenant_with_retry_after(make_client, keys):
    client = make_client(rate_limit_read=3, rate_limit_window=60)
    codes = [client.get("/v1/models", headers=auth(keys["acme"])).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.get("/v1/models", headers=auth(keys["acme"]))
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "Rate limit" in r.json()["detail"]
    assert client.get("/v1/models", headers=auth(keys["globex"])).status_code == 200


def test_healthz_readyz_and_not_ready(client, make_client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"redis": True, "store": True}
    down = make_client(redis_url="redis://127.0.0.1:1/0")
    r = down.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["redis"] is False


def test_metrics_exposition(client, keys):
    client.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
    client.get("/v1/erasures", headers={"Authorization": "Bearer nope"})
    text = client.get("/metrics").text
    assert "# TYPE featureedit_http_requests_total counter" in text
    assert (
        'featureedit_http_requests_total{method="POST",route="/v1/erasures",status="202"} 1' in text
    )
    assert 'featureedit_http_requests_total{method="GET",route="/v1/erasures",status="401"} 1' in (
        text
    )
    assert "featureedit_erasures_accepted_total 1" in text  # a counter, not a scan of records
    assert 'featureedit_queue_depth{queue="featureedit-demo-small"} 1' in text
    assert "featureedit_redis_up 1" in text
    for line in text.splitlines():  # every sample line is "name{labels} value"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_audit_log_lines(client, keys, settings):
    erasure_id = client.post("/v1/erasures", json=body(), headers=auth(keys["acme"])).json()["id"]
    client.get(f"/v1/erasures/{erasure_id}", headers=auth(keys["globex"]))
    client.get("/v1/models")
    client.delete(f"/v1/erasures/{erasure_id}", headers=auth(keys["acme"]))
    client.get("/healthz")
    lines = [json.loads(x) for x in (settings.audit_path).read_text().splitlines()]
    summary = [(a["tenant"], a["action"], a["erasure_id"], a["outcome"]) for a in lines]
    assert summary == [
        ("acme", "create_erasure", erasure_id, "accepted"),
        ("globex", "get_erasure", erasure_id, "not_found"),
        (None, "list_models", None, "unauthenticated"),
        ("acme", "cancel_erasure", erasure_id, "cancelled"),
    ]
    for a in lines:
        assert set(a) >= {"time", "tenant", "action", "erasure_id", "request_id", "outcome"}
        assert keys["acme"] not in json.dumps(a) and keys["globex"] not in json.dumps(a)
    assert (settings.audit_path.stat().st_mode & 0o777) == 0o600


def test_request_id_is_kept_or_made(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"]
    assert made != "bad id" and len(made) == 32


def test_unhandled_errors_and_library_errors_do_not_leak(client, keys):
    from fastapi.testclient import TestClient

    from editing.errors import ConfigError, NotFoundError

    router = APIRouter()

    @router.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals /srv/featureedit/keys")

    @router.get("/v1/config")
    def config() -> None:
        raise ConfigError("bad parameter tau1: expected 0 < tau1 <= 1")

    @router.get("/v1/missing")
    def missing() -> None:
        raise NotFoundError("/srv/models/x is missing")

    client.app.include_router(router)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    r = quiet.get("/v1/boom")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "request_id": r.headers["x-request-id"]}
    assert "secret internals" not in r.text
    r = quiet.get("/v1/config")
    assert r.status_code == 422 and "tau1" in r.json()["detail"]
    r = quiet.get("/v1/missing")
    assert r.status_code == 404 and "/srv" not in r.text


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/erasures",
        "/v1/erasures/{erasure_id}",
        "/v1/erasures/{erasure_id}/events",
        "/v1/erasures/{erasure_id}/report",
        "/v1/checkpoints/{checkpoint_id}",
        "/v1/checkpoints/{checkpoint_id}/files/{name}",
        "/v1/models",
    ):
        assert path in paths, path
    create = spec["components"]["schemas"]["ErasureCreate"]
    assert "callback_url" in create["properties"]
    public = spec["components"]["schemas"]["ErasurePublic"]
    assert "target" not in public["properties"]
    assert "target" not in spec["components"]["schemas"]["FactPublic"]["properties"]
    assert client.get("/docs").status_code == 200
