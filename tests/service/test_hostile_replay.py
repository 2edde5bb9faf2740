"""Issue #15's low-severity attacks, replayed against the real app (real Redis, real HTTP where
the socket matters): each must now be refused. Fairness attacks: test_fairness.py; leftovers of
killed processes: test_store_leftovers.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.config import Settings
from service.store import FilesystemStore
from tests.service.conftest import auth, body, make_checkpoint, serve_in_thread


def _erasure(client: TestClient, key: str) -> str:
    return client.post("/v1/erasures", json=body(), headers=auth(key)).json()["id"]


@pytest.mark.parametrize("value", ["--1", "١٢", "1e3", "+1", " 1 2", "99999999999999999999", "0x1"])
def test_a_malformed_last_event_id_is_a_400_not_a_broken_stream(
    client: TestClient, keys: dict[str, str], value: str
) -> None:
    erasure_id = _erasure(client, keys["acme"])
    headers = {**auth(keys["acme"]), "Last-Event-ID": value.encode()}
    response = client.get(f"/v1/erasures/{erasure_id}/events", headers=headers)
    assert response.status_code in (400, 422), response.text
    assert "Last-Event-ID" in response.text or "last-event-id" in response.text.lower()


def test_a_valid_last_event_id_resumes_after_that_event(
    make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    client = make_client(sse_max_seconds=0.2)
    erasure_id = _erasure(client, keys["acme"])
    url = f"/v1/erasures/{erasure_id}/events"
    assert "id: 0" in client.get(url, headers={**auth(keys["acme"]), "Last-Event-ID": "-1"}).text
    resumed = client.get(url, headers={**auth(keys["acme"]), "Last-Event-ID": "0"})
    assert resumed.status_code == 200 and "id: 0" not in resumed.text


def test_oversized_headers_are_refused_before_authentication(settings: Settings) -> None:
    with serve_in_thread(settings.model_copy(update={"max_header_bytes": 8192})) as url:
        big = httpx.get(f"{url}/v1/erasures", headers={"X-Pad": "a" * 20_000})
        assert big.status_code == 431 and "headers too large" in big.json()["detail"]
        # the key would have been a 401: the cap answers first
        unauth = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer " + "x" * 9000})
        assert unauth.status_code == 431
        assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "overrides",
    [
        {"thresholds": {"max_delta_ppl": "INF"}},
        {"thresholds": {"min_locality": "NAN"}},
        {"params": {"gamma": "INF"}},
    ],
)
def test_infinite_thresholds_and_params_are_a_clear_422(
    client: TestClient, keys: dict[str, str], overrides: dict
) -> None:
    doc = json.dumps(body(**overrides))  # sent as JSON 1e999 / NaN, as an attacker would
    raw = doc.replace('"INF"', "1e999").replace('"NAN"', "NaN")
    response = client.post(
        "/v1/erasures",
        content=raw,
        headers={**auth(keys["acme"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "finite number" in response.text


def test_metrics_need_the_token_or_a_loopback_client(
    settings: Settings, make_client: Callable[..., TestClient], keys: dict[str, str]
) -> None:
    remote = TestClient(make_client().app, client=("203.0.113.9", 4000))
    assert remote.get("/metrics").status_code == 404
    token = make_client(metrics_token=SecretStr("m-token"))
    assert token.get("/metrics").status_code == 401  # even from loopback, once a token is set
    assert token.get("/metrics", headers=auth(keys["acme"])).status_code == 401
    good = token.get("/metrics", headers={"Authorization": "Bearer m-token"})
    assert good.status_code == 200 and "featureedit_http_requests_total" in good.text


def test_metrics_do_not_read_every_record(
    client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _erasure(client, keys["acme"])
    store = client.app.state.ctx.store
    monkeypatch.setattr(store, "count_by_status", lambda: pytest.fail("scanned the records"))
    monkeypatch.setattr(store, "get_erasure", lambda *_: pytest.fail("read a record"))
    text = client.get("/metrics").text
    assert "featureedit_erasures_accepted_total 1" in text


def test_readyz_writes_nothing(client: TestClient, store: FilesystemStore) -> None:
    def tree() -> list[tuple[str, float]]:
        """Every path under the store with its mtime (a directory's changes with its entries)."""
        return sorted((str(p), p.stat().st_mtime) for p in store.root.rglob("*"))

    before = tree()
    for _ in range(3):
        assert client.get("/readyz").status_code == 200
    assert tree() == before


def test_readyz_is_not_ready_when_the_store_is_not_usable(
    client: TestClient, store: FilesystemStore
) -> None:
    os.chmod(store.root / "erasures", 0o500)
    try:
        if os.access(store.root / "erasures", os.W_OK):
            pytest.skip("running as root: permissions do not bind")
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["checks"]["store"] is False
    finally:
        os.chmod(store.root / "erasures", 0o700)


def test_links_never_reflect_the_host_header(
    client: TestClient, keys: dict[str, str], make_client: Callable[..., TestClient]
) -> None:
    headers = {**auth(keys["acme"]), "Host": "evil.example"}
    created = client.post("/v1/erasures", json=body(), headers=headers)
    assert "evil.example" not in created.headers["location"]
    assert "evil.example" not in created.json()["status_url"]
    public = make_client(public_url="https://fe.example.com/")
    located = public.post("/v1/erasures", json=body(), headers=headers).headers["location"]
    assert located.startswith("https://fe.example.com/v1/erasures/")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "api.internal"])
def test_public_url_is_required_outside_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="FEATUREEDIT_PUBLIC_URL"):
        Settings(public_url=None).check_bind(host)
    Settings(public_url="https://fe.example.com").check_bind(host)
    for loopback in ("127.0.0.1", "::1", "localhost", "[::1]"):
        Settings(public_url=None).check_bind(loopback)


def test_serve_refuses_a_public_bind_without_public_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from workers.cli import cmd_serve

    monkeypatch.delenv("FEATUREEDIT_PUBLIC_URL", raising=False)
    assert cmd_serve(argparse.Namespace(host="0.0.0.0", port=1)) == 2
    assert "FEATUREEDIT_PUBLIC_URL" in capsys.readouterr().err


def test_the_audit_log_records_the_client_address(settings: Settings, keys: dict[str, str]) -> None:
    with serve_in_thread(settings) as url:
        httpx.get(f"{url}/v1/erasures", headers=auth(keys["acme"]))
        httpx.get(f"{url}/v1/erasures", headers=auth("fe_wrong"))
    lines = [json.loads(line) for line in settings.audit_path.read_text().splitlines()]
    assert [(line["outcome"], line["client"]) for line in lines] == [
        ("ok", "127.0.0.1"),
        ("unauthenticated", "127.0.0.1"),
    ]


def test_s3_store_checks_the_owner_before_any_download(
    make_client: Callable[..., TestClient],
    keys: dict[str, str],
    settings: Settings,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.store.s3 import S3Store
    from tests.s3_server import new_bucket

    bucket = new_bucket(s3_endpoint)
    client = make_client(
        store_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        s3_cache_dir=tmp_path / "api-cache",
    )
    worker = S3Store(bucket, cache_dir=tmp_path / "worker", endpoint_url=s3_endpoint)
    checkpoint_id = make_checkpoint(worker, "acme", {"model.safetensors": b"w" * 4096})
    downloads: list[str] = []
    real = S3Store._download

    def counting(self: S3Store, cid: str, *args: object) -> None:
        downloads.append(cid)
        real(self, cid, *args)

    monkeypatch.setattr(S3Store, "_download", counting)
    for path in (f"/v1/checkpoints/{checkpoint_id}", f"/v1/checkpoints/{checkpoint_id}/files/x"):
        assert client.get(path, headers=auth(keys["globex"])).status_code == 404
    based = body(base_checkpoint=checkpoint_id)
    refused = client.post("/v1/erasures", json=based, headers=auth(keys["globex"]))
    assert refused.status_code == 422
    assert downloads == []  # another tenant's requests never pulled the checkpoint
    assert client.get(f"/v1/checkpoints/{checkpoint_id}", headers=auth(keys["acme"])).is_success
    assert downloads == [checkpoint_id]
