"""Tests of the demo world: build, cache reuse, integrity checks, loading with standard tools."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from editing.adapters import hook_name
from editing.errors import CorruptCacheError, NotFoundError
from editing.world.build import load_world, verify_world, world_dir


def _copy_world(world, tmp_path: Path) -> tuple[Path, Path]:
    """Copy the session's small world into a separate home; return (home, world root)."""
    home = tmp_path / "home"
    root = world_dir("small", home)
    shutil.copytree(world.root, root)
    return home, root


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_small_world_builds(small_world) -> None:
    assert small_world.root == world_dir("small")
    verify_world(small_world.root)
    assert (small_world.model_dir / "model.safetensors").is_file()
    assert len(small_world.people) == 40
    assert small_world.private_facts()


def test_quality_json(small_world) -> None:
    quality = json.loads((small_world.root / "quality.json").read_text())
    assert 0.0 <= quality["recall_heldout"] <= quality["recall_train"] <= 1.0
    assert quality["recall_train"] >= 0.9  # the model knows its facts (something to erase)
    hooks = {hook_name(s, layer) for s in small_world.sites for layer in range(2)}
    assert set(quality["saes"]) == hooks
    for q in quality["saes"].values():
        assert 0.0 <= q["fvu"] < 1.0
        assert 0.0 < q["l0"] <= small_world.recipe["sae"]["k"]


def test_model_dir_loads_with_transformers(small_world, small_model) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(small_world.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(small_world.model_dir)
    fact = small_world.private_facts()[0]
    prompts = [fact.subject + "'s home address is", "The quiet market in Norby"]
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        assert ids["input_ids"][0].tolist() == small_model.tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            theirs = model(**ids).logits
            ours = small_model.model(**ids).logits
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_sae_dirs_load_with_sae_lens(small_world) -> None:
    from sae_lens import SAE

    d_model = small_world.recipe["lm"]["d_model"]
    x = torch.randn(5, d_model)
    for site in small_world.sites:
        for layer in range(small_world.n_layers):
            sae = SAE.load_from_disk(str(small_world.sae_dir(site, layer)), device="cpu")
            assert sae.cfg.d_in == d_model
            assert sae.cfg.metadata.hook_name == hook_name(site, layer)
            with torch.no_grad():
                f = sae.encode(x)
                assert f.shape == (5, sae.cfg.d_sae)
                assert sae.decode(f).shape == (5, d_model)
                assert int((f > 0).sum(-1).max()) <= small_world.recipe["sae"]["k"]


def test_second_load_reuses_cache(small_world) -> None:
    weights = small_world.model_dir / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (small_world.root / "MANIFEST.json").stat().st_mtime_ns)
    start = time.perf_counter()
    again = load_world("small", build=True, progress=False)
    elapsed = time.perf_counter() - start
    assert again.root == small_world.root
    assert again.facts == small_world.facts
    after = (weights.stat().st_mtime_ns, (again.root / "MANIFEST.json").stat().st_mtime_ns)
    assert after == before
    assert elapsed < 10  # a checksum pass, not a build


@pytest.mark.parametrize(
    "damage",
    ["flip_weights_byte", "truncate_sae", "delete_tokenizer", "delete_manifest", "bad_manifest"],
)
def test_corrupt_cache_detected(small_world, tmp_path: Path, damage: str) -> None:
    home, root = _copy_world(small_world, tmp_path)
    verify_world(root)  # the copy is intact
    if damage == "flip_weights_byte":
        _flip_byte(root / "model" / "model.safetensors")
    elif damage == "truncate_sae":
        path = root / "saes" / "resid_post" / "layer_0" / "sae_weights.safetensors"
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "delete_tokenizer":
        (root / "model" / "tokenizer.json").unlink()
    elif damage == "delete_manifest":
        (root / "MANIFEST.json").unlink()
    else:
        (root / "MANIFEST.json").write_text("{not json")
    with pytest.raises(CorruptCacheError):
        verify_world(root)
    with pytest.raises(CorruptCacheError, match=r"featureedit world build --size small"):
        load_world("small", home, build=False)
    assert root.exists()  # build=False never deletes


def test_missing_world_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"featureedit world build --size small"):
        load_world("small", tmp_path / "empty-home", build=False)


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(small_world, tmp_path: Path, caplog) -> None:
    home, root = _copy_world(small_world, tmp_path)
    weights = root / "model" / "model.safetensors"
    _flip_byte(weights)
    corrupt = weights.read_bytes()
    with caplog.at_level(logging.WARNING, logger="editing"):
        world = load_world("small", home, build=True, progress=False)
    assert "rebuilding" in caplog.text
    assert world.root == root
    verify_world(root)
    assert weights.read_bytes() != corrupt
    assert world.facts == small_world.facts  # same recipe, same corpus
    assert world.quality["recall_train"] >= 0.9


def test_concurrent_load_waits_for_the_builder(small_world, tmp_path: Path, caplog) -> None:
    """A second caller waits on the build lock, then loads the finished world (no second build)."""
    import threading

    from editing.world.build import _build_lock

    home, root = _copy_world(small_world, tmp_path)
    holding, release = threading.Event(), threading.Event()

    def builder() -> None:
        with _build_lock(root):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=builder)
    t.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="editing"):
        world = load_world("small", home, build=True, progress=False)
    t.join(10)
    assert time.perf_counter() - start >= 0.4  # it waited for the lock
    assert "another process is building" in caplog.text
    assert world.root == root and world.facts == small_world.facts
