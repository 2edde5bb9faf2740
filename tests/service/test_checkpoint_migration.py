"""Format-1 checkpoints (with pre-edit values and subject names) and their migration.

A format-1 checkpoint is made the way featureedit 0.1 wrote it: ``delta/`` with ``layers.<l>.old``
and a manifest naming each fact's subject. The API refuses to serve it (409, pointing at the
migration); ``featureedit checkpoints migrate`` rewrites it, moves the pre-edit values and names
to the owner's private record, aliases the old id, scrubs the record and report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from editing.adapters import ModelAdapter
from editing.checkpoints import publish_checkpoint, read_manifest, verify_checkpoint
from editing.checkpoints.manifest import MANIFEST, checkpoint_id, file_entries, json_dumps
from editing.checkpoints.revert import edit_from_revert_bytes
from editing.edits import Edit, tensor_sha256
from editing.errors import ConfigError
from service.config import Settings
from service.private_records import load_revert_bytes, load_subjects
from service.records import ErasureRecord
from service.store import FilesystemStore, new_erasure_id
from tests.editing.test_checkpoints import Loaded, make_edit
from tests.editing.test_edits import make_model, make_tokenizer

SUBJECT = "Dana Berg"


def make_legacy(published: Path, edit: Edit) -> Path:
    """Rewrite a published checkpoint the way featureedit 0.1 wrote it; return its new dir."""
    delta = published / "delta"
    tensors = load_file(str(delta / "delta.safetensors"))
    doc = json.loads((delta / "delta.json").read_text())
    for d, entry in zip(edit.deltas, doc["layers"], strict=True):
        tensors[f"layers.{d.layer}.old"] = d.old.contiguous()
        entry["old_sha256"] = tensor_sha256(d.old)
        del entry["base_sha256"]
    doc["format_version"] = 1
    save_file(tensors, str(delta / "delta.safetensors"), metadata={"format": "pt"})
    (delta / "delta.json").write_text(json.dumps(doc))
    manifest = read_manifest(published)
    manifest.update(format_version=1, facts=[{"subject": SUBJECT, "relation": "phone"}])
    manifest["files"] = file_entries(published)
    manifest["checkpoint_id"] = checkpoint_id(manifest["files"])
    (published / MANIFEST).write_text(json_dumps(manifest, "manifest"))
    return Path(shutil.move(published, published.parent / manifest["checkpoint_id"]))


@pytest.fixture
def legacy_store(tmp_path: Path) -> tuple[FilesystemStore, Settings, str, str, Edit, Any]:
    """A store holding one format-1 checkpoint owned by one erasure."""
    settings = Settings(home=tmp_path / "home", store_root=tmp_path / "store")
    store = FilesystemStore(settings.store_dir)
    model = make_model("gemma2")
    loaded = Loaded(model, make_tokenizer(), ModelAdapter(model), "tiny-gemma2")
    edit = make_edit(loaded.adapter)
    published = publish_checkpoint(loaded, edit, store.checkpoint_root(), {"method": "test"})
    old_dir = make_legacy(published, edit)
    erasure_id = new_erasure_id()
    facts = [{"subject": SUBJECT, "relation": "phone", "fingerprint": "hmac-sha256:00"}]
    record = ErasureRecord(
        id=erasure_id,
        tenant="acme",
        model="tiny-gemma2",
        method="featureedit",
        request_public={"facts": facts},
        fact_fingerprints=[],
        checkpoint_id=old_dir.name,
    )
    store.create_erasure(record, b"blob")
    store.register_checkpoint(old_dir.name, "acme", erasure_id)
    store.put_report(erasure_id, {"checkpoint_id": old_dir.name, "facts": facts})
    return store, settings, erasure_id, old_dir.name, edit, loaded


def test_a_legacy_checkpoint_is_refused_until_migrated(legacy_store: Any) -> None:
    store, _, _, old_id, _, _ = legacy_store
    problems = verify_checkpoint(store.checkpoint_dir(old_id))
    assert len(problems) == 1 and "checkpoints migrate" in problems[0]
    with pytest.raises(ConfigError, match="checkpoints migrate"):
        read_manifest(store.checkpoint_dir(old_id))


def test_migration_moves_old_values_and_names_to_the_private_record(legacy_store: Any) -> None:
    from service.checkpoint_migration import migrate_store

    store, settings, erasure_id, old_id, edit, _ = legacy_store
    dry = migrate_store(store, settings, dry_run=True)
    assert [(r.checkpoint_id, r.status) for r in dry] == [(old_id, "would_migrate")]
    rows = migrate_store(store, settings)
    assert [(r.checkpoint_id, r.status) for r in rows] == [(old_id, "migrated")]
    new_id = rows[0].new_id
    new_dir = store.checkpoint_dir(new_id)
    assert store.checkpoint_dir(old_id) is None and verify_checkpoint(new_dir) == []
    manifest = read_manifest(new_dir)
    assert manifest["format_version"] == 2 and manifest["migrated_from"] == old_id
    assert SUBJECT.encode() not in b"".join(p.read_bytes() for p in new_dir.rglob("*.json"))
    assert manifest["facts"][0]["subject_fingerprint"].startswith("hmac-sha256:")
    tensors = load_file(str(new_dir / "delta" / "delta.safetensors"))
    assert not any(name.endswith(".old") for name in tensors)
    # the operator keeps what was taken out; the owner and the record follow the new id
    reverted, info = edit_from_revert_bytes(load_revert_bytes(store, erasure_id, settings))
    assert info["checkpoint_id"] == new_id
    assert [tensor_sha256(d.old) for d in reverted.deltas] == [
        tensor_sha256(d.old) for d in edit.deltas
    ]
    assert load_subjects(store, erasure_id, settings) == [{"subject": SUBJECT, "relation": "phone"}]
    assert store.checkpoint_owner(old_id)["moved_to"] == new_id
    assert store.checkpoint_owner(new_id) == {"tenant": "acme", "erasure_id": erasure_id}
    record = store.get_erasure(erasure_id)
    assert record.checkpoint_id == new_id and "subject" not in record.request_public["facts"][0]
    report = store.get_report(erasure_id)
    assert report["checkpoint_id"] == new_id and SUBJECT not in json.dumps(report)
    assert migrate_store(store, settings)[0].status == "current"  # idempotent


def test_api_redirects_a_migrated_id_and_refuses_a_legacy_one(legacy_store: Any) -> None:
    from service.checkpoint_migration import migrate_store
    from service.security import KeyStore, keys_dir
    from tests.service.conftest import serve_in_thread

    store, settings, _, old_id, _, _ = legacy_store
    key = KeyStore(keys_dir(settings.home)).create_key("acme")[1]
    auth = {"Authorization": f"Bearer {key}"}
    with serve_in_thread(settings) as url:
        got = httpx.get(f"{url}/v1/checkpoints/{old_id}", headers=auth)
        assert got.status_code == 409 and "checkpoints migrate" in got.json()["detail"]
        got = httpx.get(
            f"{url}/v1/checkpoints/{old_id}/files/delta/delta.safetensors", headers=auth
        )
        assert got.status_code == 409
        new_id = migrate_store(store, settings)[0].new_id
        got = httpx.get(f"{url}/v1/checkpoints/{old_id}", headers=auth)
        assert got.status_code == 308 and got.headers["location"].endswith(f"/{new_id}")
        assert httpx.get(got.headers["location"], headers=auth).status_code == 200
        other = KeyStore(keys_dir(settings.home)).create_key("other")[1]
        denied = httpx.get(
            f"{url}/v1/checkpoints/{old_id}", headers={"Authorization": f"Bearer {other}"}
        )
        assert denied.status_code == 404  # an alias tells another tenant nothing


def test_migrated_checkpoint_loads_with_the_same_weights(legacy_store: Any) -> None:
    from transformers import AutoModelForCausalLM

    from service.checkpoint_migration import migrate_store

    store, settings, _, _, edit, loaded = legacy_store
    new_dir = store.checkpoint_dir(migrate_store(store, settings)[0].new_id)
    reloaded = AutoModelForCausalLM.from_pretrained(new_dir)
    with edit.applied(loaded.adapter):
        expected = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    got = reloaded.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
