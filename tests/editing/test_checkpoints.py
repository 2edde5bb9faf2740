"""Tests of editing.checkpoints (patches, revert data, apply, publish, verify) on tiny random
Gemma-2 and GPT-2 models (the fingerprint and secret scan: test_fingerprint.py)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from editing import fingerprint as fp
from editing.adapters import ModelAdapter
from editing.checkpoints import (
    MANIFEST,
    LegacyCheckpointError,
    Patch,
    apply_delta_files,
    apply_delta_to_adapter,
    bind_patch,
    down_proj_sha256,
    load_patch,
    publish_checkpoint,
    read_manifest,
    read_revert_file,
    save_patch,
    verify_checkpoint,
    write_revert_file,
)
from editing.edits import Edit, LayerDelta, WeightSession, tensor_sha256
from editing.errors import ConfigError, CorruptCacheError, NotFoundError
from tests.editing.test_edits import (
    FAMILIES,
    assert_same_weights,
    make_model,
    make_tokenizer,
    snapshot,
    state_dict_sha256,
)

SECRET = "555-0199"
IDS = torch.tensor([[1, 5, 9, 17, 4, 33, 60, 2]])


@dataclass
class Loaded:
    """Minimal stand-in for editing.models.LoadedModel (what publish_checkpoint needs)."""

    model: PreTrainedModel
    tokenizer: Any
    adapter: ModelAdapter
    model_id: str


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def loaded(family: str) -> Loaded:
    model = make_model(family)
    return Loaded(model, make_tokenizer(), ModelAdapter(model), f"tiny-{family}")


def make_edit(adapter: ModelAdapter) -> Edit:
    """Zero two neurons of layer 0 and shift one residual row of layer 1."""
    with WeightSession(adapter, [0, 1]) as session, torch.no_grad():
        adapter.down_proj_weight(0)[:, [1, 5]] = 0.0
        adapter.down_proj_weight(1)[3] += 0.5
        return session.edit({"method": "test", "units": [1, 5]})


@pytest.fixture
def edit(loaded: Loaded) -> Edit:
    return make_edit(loaded.adapter)


def manifest_fields(family: str) -> dict[str, Any]:
    return {
        "method": "test",
        "params": {"alpha": 1.0},
        "metrics": {"target_prob_after": 0.01},
        "facts": [fp.fingerprint(SECRET, key=b"test-key")],
        "note": f"tiny {family}",
    }


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def load_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the top-level safetensors files of a model directory."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def assert_edits_equal(a: Edit, b: Edit) -> None:
    assert len(a.deltas) == len(b.deltas)
    for x, y in zip(a.deltas, b.deltas, strict=True):
        assert (x.layer, x.param, x.axis) == (y.layer, y.param, y.axis)
        for name in ("indices", "old", "new"):
            tx, ty = getattr(x, name), getattr(y, name)
            assert tx.dtype == ty.dtype and torch.equal(tx, ty), name
    assert a.metadata == b.metadata
    assert a.footprint() == b.footprint()


def base_checkpoint(loaded: Loaded, directory: Path, shard_size: str | None = None) -> Path:
    kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
    loaded.model.save_pretrained(str(directory), **kwargs)
    loaded.tokenizer.save_pretrained(str(directory))
    return directory


# ------------------------------------------------------------------------------- patches
def base_weights(edit: Edit) -> dict[int, torch.Tensor]:
    """Canonical stand-ins for the base weights of ``edit``'s layers (old values in place)."""
    out = {}
    for d in edit.deltas:
        if d.axis == "dense":
            out[d.layer] = d.old.clone()
    return out


def test_patch_round_trip_holds_no_old_values(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    assert [d.axis for d in edit.deltas] == ["cols", "rows"]
    out = save_patch(edit, tmp_path / "delta", {"base_model": loaded.model_id})
    assert sorted(p.name for p in out.iterdir()) == ["delta.json", "delta.safetensors"]
    patch = load_patch(out)
    assert_edits_equal(bind_patch(loaded.adapter, patch), edit)  # old values from the base
    doc = json.loads((out / "delta.json").read_text())
    assert doc["format_version"] == 2 and doc["extra"] == {"base_model": loaded.model_id}
    assert [entry["layer"] for entry in doc["layers"]] == [0, 1]
    assert doc["layers"][0]["base_sha256"] == edit.deltas[0].old_sha256()
    assert "old_sha256" not in doc["layers"][0]
    assert sorted(load_file(str(out / "delta.safetensors"))) == sorted(
        f"layers.{lay}.{k}" for lay in (0, 1) for k in ("indices", "new")
    )


def test_patch_round_trip_dense_bfloat16(tmp_path: Path) -> None:
    old = torch.randn(4, 6).to(torch.bfloat16)
    delta = LayerDelta(
        2,
        "model.layers.2.mlp.down_proj.weight",
        "dense",
        torch.empty(0, dtype=torch.long),
        old,
        old * 2,
    )
    edit = Edit([delta], {"k": [1, 2]})
    patch = load_patch(save_patch(edit, tmp_path))
    assert_edits_equal(patch.bind(base_weights(edit), "w"), edit)
    with pytest.raises(ConfigError, match="already applied"):
        patch.bind({2: old * 2}, "w")
    with pytest.raises(ConfigError, match="does not hold the values"):
        patch.bind({2: old * 3}, "w")


def test_load_patch_reports_bad_files(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    with pytest.raises(NotFoundError):
        load_patch(tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match="not a delta directory"):
        load_patch(tmp_path)

    out = save_patch(edit, tmp_path / "d", {})
    tensors = load_file(str(out / "delta.safetensors"))
    tensors["layers.0.new"] = tensors["layers.0.new"] + 1.0
    save_file(tensors, str(out / "delta.safetensors"))
    with pytest.raises(CorruptCacheError, match="integrity check"):
        load_patch(out)

    (out / "delta.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CorruptCacheError, match="cannot be read"):
        load_patch(out)

    (out / "delta.safetensors").unlink()
    with pytest.raises(CorruptCacheError, match="is missing"):
        load_patch(out)

    out = save_patch(edit, tmp_path / "v", {})
    doc = json.loads((out / "delta.json").read_text())
    (out / "delta.json").write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ConfigError, match="Upgrade featureedit"):
        load_patch(out)
    (out / "delta.json").write_text(json.dumps({**doc, "format_version": 1}))
    with pytest.raises(LegacyCheckpointError, match="checkpoints migrate"):
        load_patch(out)
    (out / "delta.json").write_text("{ truncated")
    with pytest.raises(CorruptCacheError, match="not valid JSON"):
        load_patch(out)


def test_revert_data_round_trip_sealed_and_plain(tmp_path: Path, edit: Edit) -> None:
    sealed = write_revert_file(edit, tmp_path / "r.sealed", "abc", home=tmp_path)
    plain = write_revert_file(edit, tmp_path / "r.plain", "abc", sealed=False)
    assert stat.S_IMODE(os.stat(sealed).st_mode) == 0o600
    assert sealed.read_bytes().startswith(b"gAAAAA")  # a Fernet token: unreadable without the key
    for path in (sealed, plain):
        got, info = read_revert_file(path, home=tmp_path)
        assert_edits_equal(got, edit) and info == {"checkpoint_id": "abc"}
    with pytest.raises(NotFoundError, match="private revert data"):
        read_revert_file(tmp_path / "missing")


# ------------------------------------------------------------------------------- applying
def test_apply_delta_to_adapter(family: str, loaded: Loaded, edit: Edit) -> None:
    model, adapter = loaded.model, loaded.adapter
    before = snapshot(model)
    apply_delta_to_adapter(adapter, edit)
    assert not adapter.down_proj_weight(0)[:, [1, 5]].any()
    with pytest.raises(ConfigError, match="already applied"):
        apply_delta_to_adapter(adapter, edit)
    apply_delta_to_adapter(adapter, edit, revert=True)
    assert_same_weights(model, before)
    with pytest.raises(ConfigError, match="already reverted"):
        apply_delta_to_adapter(adapter, edit, revert=True)
    patch = Patch.from_edit(edit)
    assert_edits_equal(apply_delta_to_adapter(adapter, patch), edit)  # a patch applies too
    with pytest.raises(ConfigError, match="revert data"):
        apply_delta_to_adapter(adapter, patch, revert=True)  # but cannot undo itself
    apply_delta_to_adapter(adapter, edit, revert=True)
    assert_same_weights(model, before)

    # a model on which layer 0 fits but layer 1 does not: nothing may be written
    hybrid = make_model(family, seed=1)
    hybrid_adapter = ModelAdapter(hybrid)
    hybrid_adapter.set_down_proj_weight(0, adapter.down_proj_weight(0))
    hybrid_before = snapshot(hybrid)
    with pytest.raises(ConfigError, match="layer 1"):
        apply_delta_to_adapter(hybrid_adapter, edit)
    assert_same_weights(hybrid, hybrid_before)


@pytest.mark.parametrize("shard_size", [None, "20KB"])
def test_apply_delta_files_matches_published_and_reverts(
    tmp_path: Path, loaded: Loaded, edit: Edit, shard_size: str | None
) -> None:
    base = base_checkpoint(loaded, tmp_path / "base", shard_size)
    published = publish_checkpoint(loaded, edit, tmp_path / "pub", manifest_fields("x"))
    out = apply_delta_files(base, published / "delta", tmp_path / "out")

    assert (out / "model.safetensors.index.json").is_file() == (shard_size is not None)
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    assert not (out / MANIFEST).exists() and not (out / "delta").exists()
    edited, expected = load_tensors(out), load_tensors(published)
    assert edited.keys() == expected.keys()
    assert all(torch.equal(edited[k], expected[k]) for k in expected)

    with pytest.raises(ConfigError, match="no revert data given"):
        apply_delta_files(out, published, tmp_path / "rev", revert=True)  # no undo in the files
    revert_file = write_revert_file(edit, tmp_path / "private" / "r", published.name)
    reverted = apply_delta_files(
        out, published, tmp_path / "rev", revert=True, revert_data=revert_file
    )
    base_tensors = load_tensors(base)
    assert {k: tensor_sha256(t) for k, t in load_tensors(reverted).items()} == {
        k: tensor_sha256(t) for k, t in base_tensors.items()
    }

    with pytest.raises(ConfigError, match="already applied"):
        apply_delta_files(out, published / "delta", tmp_path / "again")
    with pytest.raises(ConfigError, match="not empty"):
        apply_delta_files(base, published / "delta", out)
    assert not (tmp_path / "again").exists()


def test_apply_delta_files_rejects_other_base(
    tmp_path: Path, family: str, loaded: Loaded, edit: Edit
) -> None:
    delta = save_patch(edit, tmp_path / "delta", {})
    other = make_model(family, seed=1)
    other_loaded = Loaded(other, loaded.tokenizer, ModelAdapter(other), "other")
    base = base_checkpoint(other_loaded, tmp_path / "other")
    with pytest.raises(ConfigError, match="does not hold the values the edit was made from"):
        apply_delta_files(base, delta, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta", "other"]  # no temp left


def test_apply_delta_files_accepts_hub_style_keys(
    tmp_path: Path, loaded: Loaded, edit: Edit
) -> None:
    base = base_checkpoint(loaded, tmp_path / "base")
    tensors = load_file(
        str(base / "model.safetensors")
    )  # drop the base-model prefix, as on the Hub
    save_file({k.split(".", 1)[1]: v for k, v in tensors.items()}, str(base / "model.safetensors"))
    delta = save_patch(edit, tmp_path / "delta", {})
    out = load_tensors(apply_delta_files(base, delta, tmp_path / "out"))
    with edit.applied(loaded.adapter):
        expected = {k.split(".", 1)[1]: v.clone() for k, v in loaded.model.state_dict().items()}
    assert all(torch.equal(out[k], expected[k]) for k in out)


# ------------------------------------------------------------------------------- publishing
def test_publish_loads_with_edited_logits(
    tmp_path: Path, family: str, loaded: Loaded, edit: Edit
) -> None:
    model, adapter = loaded.model, loaded.adapter
    before_sha = state_dict_sha256(model)
    base_logits = logits(model)
    with edit.applied(adapter):
        edited_logits = logits(model)
    assert not torch.equal(edited_logits, base_logits)

    fields = {**manifest_fields(family), "parent_checkpoint_id": "0123456789abcdef"}
    path = publish_checkpoint(loaded, edit, tmp_path / "ckpts", fields)

    assert state_dict_sha256(model) == before_sha  # the model in memory is left unedited
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert torch.equal(logits(reloaded), edited_logits)
    assert AutoTokenizer.from_pretrained(path)("alice phone").input_ids == [8, 5]
    assert_edits_equal(bind_patch(adapter, load_patch(path / "delta")), edit)

    manifest = read_manifest(path)
    assert manifest["checkpoint_id"] == path.name and len(path.name) == 16
    assert manifest["parent_checkpoint_id"] == "0123456789abcdef"
    assert manifest["base_model"]["model_id"] == f"tiny-{family}"
    assert manifest["base_model"]["down_proj_sha256"] == down_proj_sha256(adapter)
    assert manifest["created_at"].endswith("+00:00")
    assert manifest["code_version"]["version"] == "0.1.0" and manifest["format_version"] == 2
    for key, value in manifest_fields(family).items():
        assert manifest[key] == value
    assert manifest["edit"]["entries_changed"] == edit.entries_changed
    names = [f["name"] for f in manifest["files"]]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(names)
    assert {"delta/delta.safetensors", "delta/delta.json"} <= set(names)
    assert MANIFEST not in names
    assert verify_checkpoint(path) == []
    assert [p.name for p in (tmp_path / "ckpts").iterdir()] == [path.name]


def test_delta_publish_holds_the_delta_alone_and_rebuilds_the_full_model(
    tmp_path: Path, loaded: Loaded, edit: Edit
) -> None:
    before_sha = state_dict_sha256(loaded.model)
    full = publish_checkpoint(loaded, edit, tmp_path / "full", manifest_fields("x"))
    delta = publish_checkpoint(loaded, edit, tmp_path / "delta", manifest_fields("x"), mode="delta")

    assert state_dict_sha256(loaded.model) == before_sha
    manifest = read_manifest(delta)
    assert manifest["publish"] == "delta" and read_manifest(full)["publish"] == "full"
    assert {f["name"] for f in manifest["files"]} == {"delta/delta.safetensors", "delta/delta.json"}
    assert verify_checkpoint(delta) == [] and delta.name != full.name
    assert manifest["base_model"] == read_manifest(full)["base_model"]
    assert manifest["edited_down_proj_sha256"] == read_manifest(full)["edited_down_proj_sha256"]
    assert (
        sum(f["size"] for f in manifest["files"])
        < full.joinpath("model.safetensors").stat().st_size
    )

    base = base_checkpoint(loaded, tmp_path / "base", None)
    rebuilt = apply_delta_files(base, delta, tmp_path / "rebuilt")  # what apply-delta does
    expected = load_tensors(full)
    assert all(torch.equal(load_tensors(rebuilt)[k], expected[k]) for k in expected)
    with pytest.raises(ConfigError, match="publish mode"):
        publish_checkpoint(loaded, edit, tmp_path / "x", {}, mode="zip")  # type: ignore[arg-type]


def test_sharded_publish(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    with edit.applied(loaded.adapter):
        edited_logits = logits(loaded.model)
    path = publish_checkpoint(loaded, edit, tmp_path, manifest_fields("x"), shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (path / "model.safetensors").exists()
    assert set(shards) <= {f["name"] for f in read_manifest(path)["files"]}
    reloaded = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert torch.equal(logits(reloaded), edited_logits)
    assert verify_checkpoint(path) == []


def test_publish_is_content_addressed(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    first = publish_checkpoint(loaded, edit, tmp_path, {"run": 1})
    created_at = read_manifest(first)["created_at"]
    second = publish_checkpoint(loaded, edit, tmp_path, {"run": 2})
    assert second == first and [p.name for p in tmp_path.iterdir()] == [first.name]
    assert read_manifest(first)["run"] == 1 and read_manifest(first)["created_at"] == created_at


def test_verify_detects_corruption(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    path = publish_checkpoint(loaded, edit, tmp_path, {})
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    problems = verify_checkpoint(path)
    assert len(problems) == 1 and problems[0].startswith("model.safetensors: sha256")

    (path / "delta" / "delta.json").unlink()
    (path / "extra.txt").write_text("added later")
    problems = verify_checkpoint(path)
    assert "delta/delta.json: missing" in problems
    assert "extra.txt: not listed in manifest.json" in problems

    (path / MANIFEST).unlink()
    assert verify_checkpoint(path) == [
        f"{path} is not a published checkpoint: manifest.json is missing."
    ]


def test_publish_failure_leaves_model_pristine_and_nothing_behind(
    tmp_path: Path, loaded: Loaded, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = loaded.model
    before = snapshot(model)
    save = model.save_pretrained

    def save_then_fail(directory: str, **kwargs: Any) -> None:
        save(directory, **kwargs)
        assert not loaded.adapter.down_proj_weight(0)[:, 1].any()  # the edit is applied here
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        publish_checkpoint(loaded, edit, tmp_path, {})
    assert_same_weights(model, before)
    assert list(tmp_path.iterdir()) == []


def test_publish_rejects_reserved_and_unserialisable_manifest(
    tmp_path: Path, loaded: Loaded, edit: Edit
) -> None:
    with pytest.raises(ConfigError, match="files"):
        publish_checkpoint(loaded, edit, tmp_path, {"files": []})
    with pytest.raises(ConfigError, match=r"facts\[0\]\.subject"):  # names no data subject
        publish_checkpoint(loaded, edit, tmp_path, {"facts": [{"subject": "Dana Berg"}]})
    with pytest.raises(ConfigError, match="JSON"):
        publish_checkpoint(loaded, edit, tmp_path, {"metric": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_publish_refuses_a_secret(tmp_path: Path, loaded: Loaded, edit: Edit) -> None:
    before = snapshot(loaded.model)
    with pytest.raises(ConfigError) as info:
        publish_checkpoint(
            loaded, edit, tmp_path, {"note": f"erased {SECRET}"}, secrets=["x@y.org", SECRET]
        )
    message = str(info.value)
    assert SECRET not in message and "#1" in message and "manifest.json" in message
    assert list(tmp_path.iterdir()) == []  # neither a checkpoint nor a temp dir
    assert_same_weights(loaded.model, before)

    path = publish_checkpoint(loaded, edit, tmp_path, manifest_fields("x"), secrets=[SECRET])
    assert verify_checkpoint(path) == []


def test_finish_checkpoint_fsyncs_every_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from editing.checkpoints import publish

    tmp = tmp_path / ".publish-x"
    (tmp / "delta").mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"w" * 64)
    (tmp / "delta" / "delta.json").write_text("{}")
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync:" + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    final = publish.finish_checkpoint(tmp, tmp_path, {"publish": "full"})
    assert final.is_dir() and not tmp.exists()
    before = events[: events.index("rename")]
    for name in ("model.safetensors", "delta.json", "manifest.json", "delta"):
        assert f"fsync:{name}" in before, (name, events)
    assert events[-1] == f"fsync:{tmp_path.name}"  # the rename itself made durable
