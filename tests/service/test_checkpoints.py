"""``/v1/checkpoints``: manifest, download with ETag and Range, isolation, traversal, corruption."""

from __future__ import annotations

import hashlib
import os

import pytest

from service.checkpoint_files import is_safe_name
from tests.service.conftest import auth, make_checkpoint

WEIGHTS = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def checkpoint(store) -> str:
    """A fake checkpoint of tenant acme with a weights file, a config and a nested delta file."""
    return make_checkpoint(
        store,
        "acme",
        {
            "model.safetensors": WEIGHTS,
            "config.json": b'{"model_type": "gemma2"}',
            "delta/delta.json": b'{"format": "featureedit-delta"}',
        },
    )


def test_manifest_lists_files_with_urls(client, keys, checkpoint):
    r = client.get(f"/v1/checkpoints/{checkpoint}", headers=auth(keys["acme"]))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["checkpoint_id"] == checkpoint
    files = {f["name"]: f for f in doc["files"]}
    assert set(files) == {"model.safetensors", "config.json", "delta/delta.json"}
    weights = files["model.safetensors"]
    assert weights["size"] == len(WEIGHTS)
    assert weights["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights["url"].endswith(f"/v1/checkpoints/{checkpoint}/files/model.safetensors")
    assert doc["manifest"]["base_model"]["model_id"] == "demo-small"


def test_download_with_etag_range_and_conditionals(client, keys, checkpoint):
    url = f"/v1/checkpoints/{checkpoint}/files/model.safetensors"
    etag = f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    full = client.get(url, headers=auth(keys["acme"]))
    assert full.status_code == 200 and full.content == WEIGHTS
    assert full.headers["etag"] == etag
    assert full.headers["accept-ranges"] == "bytes"

    part = client.get(url, headers={**auth(keys["acme"]), "Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == WEIGHTS[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(WEIGHTS)}"

    resumed = client.get(
        url, headers={**auth(keys["acme"]), "Range": "bytes=100000-", "If-Range": etag}
    )
    assert resumed.status_code == 206 and resumed.content == WEIGHTS[100000:]
    stale = client.get(
        url, headers={**auth(keys["acme"]), "Range": "bytes=100000-", "If-Range": '"other"'}
    )
    assert stale.status_code == 200 and stale.content == WEIGHTS

    unsatisfiable = client.get(url, headers={**auth(keys["acme"]), "Range": "bytes=999999-"})
    assert unsatisfiable.status_code == 416

    cached = client.get(url, headers={**auth(keys["acme"]), "If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["etag"] == etag

    head = client.head(url, headers=auth(keys["acme"]))
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(WEIGHTS)

    nested = client.get(
        f"/v1/checkpoints/{checkpoint}/files/delta/delta.json", headers=auth(keys["acme"])
    )
    assert nested.status_code == 200 and b"featureedit-delta" in nested.content


def test_other_tenant_and_unknown_ids_get_404(client, keys, checkpoint):
    for path in (
        f"/v1/checkpoints/{checkpoint}",
        f"/v1/checkpoints/{checkpoint}/files/model.safetensors",
        "/v1/checkpoints/0123456789abcdef",
        "/v1/checkpoints/0123456789abcdef/files/model.safetensors",
    ):
        r = client.get(path, headers=auth(keys["globex"]))
        assert r.status_code == 404, path
        assert r.json()["detail"] == "Checkpoint not found"


@pytest.mark.parametrize(
    "name",
    [
        "%2e%2e/%2e%2e/keys/api_keys.json",
        "..%2f..%2fkeys%2fapi_keys.json",
        "delta/%2e%2e/%2e%2e/%2e%2e/keys/api_keys.json",
        "%2fetc%2fpasswd",
        "..%5c..%5ckeys",
        "%2e/config.json",
    ],
)
def test_path_traversal_is_refused(client, keys, checkpoint, name):
    r = client.get(f"/v1/checkpoints/{checkpoint}/files/{name}", headers=auth(keys["acme"]))
    assert r.status_code in (400, 404), r.text
    assert b"fe_" not in r.content and "root:" not in r.text


def test_only_manifest_files_are_served(client, keys, checkpoint, store):
    (store.checkpoint_root() / checkpoint / "extra.bin").write_bytes(b"not listed")
    r = client.get(f"/v1/checkpoints/{checkpoint}/files/extra.bin", headers=auth(keys["acme"]))
    assert r.status_code == 404
    manifest = client.get(
        f"/v1/checkpoints/{checkpoint}/files/manifest.json", headers=auth(keys["acme"])
    )
    assert manifest.status_code == 200 and manifest.json()["checkpoint_id"] == checkpoint


def test_is_safe_name():
    assert is_safe_name("model.safetensors") and is_safe_name("delta/delta.json")
    for bad in ("", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\x00b", "a/"):
        assert not is_safe_name(bad), bad


def test_corrupted_file_is_refused_then_served_when_restored(client, keys, checkpoint, store):
    path = store.checkpoint_root() / checkpoint / "model.safetensors"
    url = f"/v1/checkpoints/{checkpoint}/files/model.safetensors"
    assert client.get(url, headers=auth(keys["acme"])).status_code == 200  # hash now cached
    corrupted = bytearray(WEIGHTS)
    corrupted[5000] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    r = client.get(url, headers=auth(keys["acme"]))
    detail = r.json()["detail"]
    assert r.status_code == 409 and "no longer matches" in detail
    assert "model.safetensors" in detail and "Checksum mismatch" in detail and "sha256" in detail
    ranged = client.get(url, headers={**auth(keys["acme"]), "Range": "bytes=0-10"})
    assert ranged.status_code == 409
    path.write_bytes(WEIGHTS)
    assert client.get(url, headers=auth(keys["acme"])).content == WEIGHTS
