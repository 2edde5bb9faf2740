"""API keys, request-blob encryption, callback signatures, the keys CLI, torch-freeness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from editing.cli import main
from editing.request import ErasureRequest
from service.security import (
    KeyStore,
    RequestKeyError,
    authenticate,
    callback_secret,
    decrypt_request,
    encrypt_request,
    sign_body,
    verify_signature,
)
from tests.service.conftest import SECRET, body


def test_keys_are_stored_hashed_and_revocable(tmp_path: Path):
    ks = KeyStore(tmp_path / "keys")
    key_id, key = ks.create_key("acme")
    assert key.startswith("fe_") and len(key) > 40 and key_id.startswith("key_")
    raw = (tmp_path / "keys" / "api_keys.json").read_text()
    assert key not in raw and key_id in raw
    assert (tmp_path / "keys" / "api_keys.json").stat().st_mode & 0o777 == 0o600
    assert ks.authenticate(key) == "acme"
    assert ks.authenticate(key + "x") is None and ks.authenticate(None) is None
    assert ks.authenticate("") is None and ks.authenticate("nope") is None
    assert [k.key_id for k in ks.list_keys()] == [key_id]
    info = ks.revoke(key_id)
    assert info.revoked_at is not None
    assert ks.authenticate(key) is None
    assert ks.revoke(key_id).revoked_at == info.revoked_at  # idempotent
    with pytest.raises(KeyError):
        ks.revoke("key_unknown")
    with pytest.raises(ValueError):
        ks.create_key("bad tenant/..")
    other = KeyStore(tmp_path / "keys")  # a second process sees the same file
    assert other.authenticate(ks.create_key("globex")[1]) == "globex"


def test_request_blob_round_trip(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FEATUREEDIT_SECRET_KEY", raising=False)
    request = ErasureRequest.model_validate(body())
    blob = encrypt_request(request, home=tmp_path)
    assert SECRET.encode() not in blob
    key_file = tmp_path / "keys" / "request.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    back = decrypt_request(blob, home=tmp_path)
    assert back.facts[0].secret == SECRET and back == request
    with pytest.raises(RequestKeyError):
        decrypt_request(blob, home=tmp_path / "other-home")


@pytest.mark.parametrize("method", ["featureedit", "neurons", "neuronlens"])
def test_request_blob_stored_before_per_method_params(tmp_path: Path, monkeypatch, method):
    """A blob written with the flat params class (every method's fields) still decrypts: the
    fields its method never used are dropped; the values it used are kept."""
    from editing.methods import method_spec
    from editing.request import FLAT_PARAMS_V1
    from editing.sealing import seal

    monkeypatch.delenv("FEATUREEDIT_SECRET_KEY", raising=False)
    flat = {
        "site": "resid_post", "layers": [1], "variant": "project-cols", "selector": "attribution",
        "objective": "target", "tau1": 0.2, "tau2": 0.5, "gamma": 0.6, "rho": 0.8,
        "max_features": 32, "relocate_rounds": 3, "min_prompts": 2, "ig_steps": 9,
        "ig_threshold": 0.2, "neuron_cap": 20, "neuronlens_tau": 2.0,
    }  # fmt: skip
    assert set(flat) == FLAT_PARAMS_V1
    doc = {**body(method=method), "params": flat}
    blob = seal(json.dumps(doc).encode(), home=tmp_path)
    params = decrypt_request(blob, home=tmp_path).params
    assert type(params) is method_spec(method).params_cls and params.layers == [1]
    defaults = type(params)().model_dump()  # fields added after the flat class take defaults
    assert params.model_dump() == {k: flat.get(k, defaults[k]) for k in type(params).model_fields}
    with pytest.raises(ValueError, match="not a parameter of the chosen method"):
        ErasureRequest.model_validate(doc)  # a new request must not carry other methods' fields


def test_request_key_from_env_with_rotation(tmp_path: Path, monkeypatch):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    request = ErasureRequest.model_validate(body())
    monkeypatch.setenv("FEATUREEDIT_SECRET_KEY", old)
    blob = encrypt_request(request, home=tmp_path)
    monkeypatch.setenv("FEATUREEDIT_SECRET_KEY", f"{new},{old}")
    assert decrypt_request(blob, home=tmp_path).facts[0].secret == SECRET
    assert not (tmp_path / "keys" / "request.key").exists()
    monkeypatch.setenv("FEATUREEDIT_SECRET_KEY", "not-a-key")
    with pytest.raises(RequestKeyError) as err:
        encrypt_request(request, home=tmp_path)
    assert "not-a-key" not in str(err.value)


def test_callback_secret_sources(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FEATUREEDIT_CALLBACK_SECRET", raising=False)
    generated = callback_secret(tmp_path)
    assert len(generated) == 64 and callback_secret(tmp_path) == generated
    assert (tmp_path / "keys" / "callback.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("FEATUREEDIT_CALLBACK_SECRET", "from-env")
    assert callback_secret(tmp_path) == b"from-env"
    assert callback_secret(tmp_path, configured="explicit") == b"explicit"


def test_callback_signature():
    payload = json.dumps({"id": "er_1", "status": "succeeded"}).encode()
    sig = sign_body(payload, "s3cret")
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(payload, sig, b"s3cret")
    assert not verify_signature(payload + b" ", sig, "s3cret")
    assert not verify_signature(payload, None, "s3cret")


def test_keys_cli_create_list_revoke(tmp_path: Path, capsys):
    home = str(tmp_path / "home")
    assert main(["--home", home, "keys", "create", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    key = out[-1]
    assert key.startswith("fe_") and authenticate(key, home) == "acme"
    assert main(["keys", "list", "--home", home, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [k["tenant"] for k in listed] == ["acme"] and key not in json.dumps(listed)
    key_id = listed[0]["key_id"]
    assert main(["keys", "list", "--home", home]) == 0
    assert key_id in capsys.readouterr().out
    assert main(["keys", "revoke", key_id, "--home", home]) == 0
    assert "Revoked" in capsys.readouterr().out
    assert authenticate(key, home) is None
    assert main(["keys", "revoke", "key_nope", "--home", home]) == 2
    assert "no API key" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "no spaces", "--home", home]) == 2
    audit = (tmp_path / "home" / "audit" / "audit.log").read_text()
    actions = [json.loads(line)["action"] for line in audit.splitlines()]
    assert actions == ["key_create", "key_revoke"] and key not in audit


def test_api_process_modules_do_not_import_torch(tmp_path: Path):
    code = (
        "import sys\n"
        "from service.config import Settings\n"
        "from service.main import create_app\n"
        "import service.cli, service.client, service.catalog\n"
        "from editing.registry import load_registry\n"
        f"app = create_app(Settings(home={str(tmp_path)!r}))\n"
        "assert load_registry()\n"
        "from fastapi.testclient import TestClient\n"
        "TestClient(app).get('/openapi.json')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'sae_lens', 'safetensors'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_world_sae_constant_matches_the_recipes():
    pytest.importorskip("torch")
    from editing.registry import DEMO_MODELS, DEMO_WORLD_SAES
    from editing.world.build import RECIPES

    for size in DEMO_MODELS.values():
        recipe = RECIPES[size]
        assert DEMO_WORLD_SAES[size] == (recipe.lm.n_layers, tuple(recipe.sites)), size
