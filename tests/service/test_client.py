"""The Python client and the client CLI verbs against a real uvicorn server (no worker)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from rq import Queue

from editing.cli import main
from service.client import APIError, ChecksumError, FeatureeditClient
from service.store import record_event
from tests.service.conftest import SECRET, body, make_checkpoint

WEIGHTS = bytes(range(256)) * 2000  # 512000 bytes


@pytest.fixture
def fe(live_server: str, keys: dict[str, str]):
    with FeatureeditClient(live_server, keys["acme"]) as client:
        yield client


def test_submit_get_list_cancel(fe, rconn):
    accepted = fe.submit(body(), idempotency_key="k-1")
    again = fe.submit(body(), idempotency_key="k-1")
    assert again["id"] == accepted["id"]
    assert Queue("featureedit-demo-small", connection=rconn).count == 1
    record = fe.get(accepted["id"])
    assert record["status"] == "queued" and SECRET not in json.dumps(record)
    assert [i["id"] for i in fe.list()["items"]] == [accepted["id"]]
    assert fe.cancel(accepted["id"])["status"] == "cancelled"
    with pytest.raises(APIError) as err:
        fe.cancel(accepted["id"])
    assert err.value.status_code == 409 and err.value.request_id
    with pytest.raises(APIError) as err:
        fe.submit(body(model="nope"))
    assert err.value.status_code == 422 and "model" in str(err.value)


def test_wait_and_events_follow_the_worker(fe, store):
    erasure_id = fe.submit(body())["id"]

    def worker() -> None:  # what a worker would do, through the store
        time.sleep(0.3)
        store.update_erasure(erasure_id, lambda r: record_event(r, "running", stage="locate"))
        time.sleep(0.3)

        def done(r):
            record_event(r, "succeeded", stage="done", progress=1.0)
            r.checkpoint_id = "abc"

        store.update_erasure(erasure_id, done)

    t = threading.Thread(target=worker)
    t.start()
    events = list(fe.events(erasure_id, timeout=30))
    record = fe.wait(erasure_id, timeout=10, poll=0.1)
    t.join()
    assert [e["status"] for e in events] == ["queued", "running", "succeeded"]
    assert [e["seq"] for e in events] == [0, 1, 2]
    assert record["status"] == "succeeded" and record["checkpoint_id"] == "abc"
    assert [e["status"] for e in fe.events(erasure_id, last_event_id=1)] == ["succeeded"]
    with pytest.raises(TimeoutError):
        fe.wait(fe.submit(body())["id"], timeout=0.3, poll=0.1)


def test_download_checkpoint_resumes_and_verifies(fe, store, tmp_path: Path):
    checkpoint_id = make_checkpoint(
        store, "acme", {"model.safetensors": WEIGHTS, "delta/delta.json": b"{}"}
    )
    dest = tmp_path / "out"
    (dest).mkdir()
    (dest / "model.safetensors.part").write_bytes(WEIGHTS[:300000])  # an interrupted download
    out = fe.download_checkpoint(checkpoint_id, dest)
    assert (out / "model.safetensors").read_bytes() == WEIGHTS
    assert (out / "delta" / "delta.json").read_bytes() == b"{}"
    assert json.loads((out / "manifest.json").read_text())["checkpoint_id"] == checkpoint_id
    assert not list(out.rglob("*.part"))
    metrics = httpx.get(f"{fe.base_url}/metrics").text
    route = "/v1/checkpoints/{checkpoint_id}/files/{name:path}"
    assert f'route="{route}",status="206"}} 1' in metrics  # resumed with a Range request

    # a partial file that does not match is detected and removed
    (out / "model.safetensors").unlink()
    (dest / "model.safetensors.part").write_bytes(b"\0" * 300000)
    with pytest.raises(ChecksumError):
        fe.download_checkpoint(checkpoint_id, dest)
    assert not (dest / "model.safetensors.part").exists()
    fe.download_checkpoint(checkpoint_id, dest)
    assert hashlib.sha256((dest / "model.safetensors").read_bytes()).hexdigest() == (
        hashlib.sha256(WEIGHTS).hexdigest()
    )


def test_client_cli_verbs(live_server, keys, store, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("FEATUREEDIT_URL", live_server)
    monkeypatch.setenv("FEATUREEDIT_API_KEY", keys["acme"])
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body()))
    assert main(["submit", str(request_file)]) == 0
    erasure_id = capsys.readouterr().out.strip()
    assert erasure_id.startswith("er_")

    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    argv = ["submit", "--model", "demo-small", "--subject", "Bob Example", "--relation", "email"]
    assert main([*argv, "--target-file", str(secret_file), "--param", "site=mlp_out"]) == 0
    second = capsys.readouterr().out.strip()
    assert store.get_erasure(second).request_public["params"]["site"] == "mlp_out"

    assert main(["status", erasure_id]) == 0
    out = capsys.readouterr().out
    assert "queued" in out and SECRET not in out
    assert main(["status", erasure_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == erasure_id

    checkpoint_id = make_checkpoint(store, "acme", {"model.safetensors": WEIGHTS})
    assert main(["download", checkpoint_id, str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "model.safetensors").read_bytes() == WEIGHTS
    capsys.readouterr()

    assert main(["status", "er_nope"]) == 2
    assert "404" in capsys.readouterr().err
    assert main(["status", erasure_id, "--api-key", "fe_wrong"]) == 2
    assert "401" in capsys.readouterr().err
    assert main(["submit", "--subject", "x"]) == 2
    assert "a fact needs" in capsys.readouterr().err
