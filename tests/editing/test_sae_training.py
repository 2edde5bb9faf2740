"""``featureedit sae train`` on the small demo world's model, registered as a plain model directory.

Tiny SAEs, few tokens and steps: the command reports FVU and L0, sae-lens's ``SAE.load_from_disk``
reads what it wrote, the registry names the SAEs, a second run is a cache hit, and a run stopped
after a checkpoint resumes to the same SAE as an uninterrupted one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from editing import cli, cli_sae
from editing import sae_training as st
from editing.errors import ConfigError
from editing.registry import get_entry

TINY = ["--width", "96", "--k", "4", "--tokens", "1500", "--eval-tokens", "400"]
TINY += ["--steps", "40", "--batch-size", "64"]


@pytest.fixture
def tiny_home(tmp_path: Path, small_world) -> Path:
    """A home whose registry holds the small world's model as the plain model ``tiny``."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models.toml").write_text(
        f'[models.tiny]\npath = "{small_world.model_dir}"\ndtype = "float32"\n'
    )
    return home


@pytest.fixture
def text_file(tmp_path: Path, small_world) -> Path:
    """The demo world's perplexity passages, one per line (every 10th is held out)."""
    path = tmp_path / "text.txt"
    path.write_text("\n".join(small_world.ppl_texts * 3) + "\n")
    return path


def _train(capsys, home: Path, text: Path, *extra: str) -> dict:
    argv = ["sae", "train", "--model", "tiny", "--layers", "0,1", "--text", str(text)]
    code = cli.main([*argv, *TINY, *extra, "--home", str(home), "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_train_registers_loadable_saes_and_caches(capsys, tiny_home: Path, text_file) -> None:
    from sae_lens import SAE

    doc = _train(capsys, tiny_home, text_file)
    assert [r["layer"] for r in doc["layers"]] == [0, 1]
    for r in doc["layers"]:
        assert 0.0 < r["fvu"] < 1.0
        assert 0 < r["l0"] <= 4
        assert r["train_tokens"] == 1500 and r["eval_tokens"] > 0
        assert not r["cached"]
        sae = SAE.load_from_disk(r["path"], device="cpu")
        assert sae.cfg.d_sae == 96
        assert sae.cfg.metadata.hook_name == f"blocks.{r['layer']}.hook_resid_post"
    entry = get_entry("tiny", tiny_home)
    assert entry.saes["resid_post"].layers == (0, 1)
    assert doc["registered_layers"] == [0, 1]

    again = _train(capsys, tiny_home, text_file)
    assert all(r["cached"] for r in again["layers"])
    assert [r["fvu"] for r in again["layers"]] == [r["fvu"] for r in doc["layers"]]
    assert again["directory"] == doc["directory"]

    other = _train(capsys, tiny_home, text_file, "--k", "8")  # another recipe: trained anew
    assert not any(r["cached"] for r in other["layers"])
    assert other["directory"] != doc["directory"]


def test_registered_saes_load_through_the_registry(capsys, tiny_home: Path, text_file) -> None:
    from editing.models import load_model

    _train(capsys, tiny_home, text_file)
    loaded = load_model("tiny", home=tiny_home)
    assert loaded.sae_layers("resid_post") == [0, 1]
    assert loaded.sae("resid_post", 1).cfg.d_in == loaded.adapter.d_model


def test_resume_matches_uninterrupted_run(monkeypatch, tmp_path: Path, small_model) -> None:
    from safetensors.torch import load_file

    _, held, sha = st.split_text(None)
    train = st.split_text(None)[0][:20]
    recipe = st.SAETrainRecipe(
        width=64, k=4, tokens=800, eval_tokens=200, steps=30, batch_size=32, text_sha256=sha
    )

    def run(home: Path, stop_after: int | None = None) -> st.TrainSummary:
        monkeypatch.setattr(small_model, "home", home)
        seen = 0

        def on_step(n: int, _loss: float) -> None:
            nonlocal seen
            seen += n
            if stop_after is not None and seen >= stop_after:
                raise KeyboardInterrupt

        return st.train_saes(
            small_model, "resid_post", [1], recipe, train, held, "ab" * 32, 10, on_step=on_step
        )

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_after=25)  # checkpoints at steps 10 and 20
    (checkpoint,) = (tmp_path / "b").rglob("checkpoint.pt")
    assert torch.load(checkpoint, weights_only=False)["step"] == 20
    resumed = run(tmp_path / "b")
    assert not checkpoint.exists()  # removed once the SAE is written
    wa = load_file(Path(straight.layers[0].path) / "sae_weights.safetensors")
    wb = load_file(Path(resumed.layers[0].path) / "sae_weights.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    assert straight.layers[0].fvu == resumed.layers[0].fvu


def test_sink_and_special_positions_are_dropped() -> None:
    ids = torch.tensor([[1, 5, 6, 7, 0], [8, 9, 2, 5, 6]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    norms = torch.tensor([[500.0, 1.0, 1.2, 0.9, 1.0], [300.0, 1.1, 1.0, 0.8, 1.0]])
    keep = st.text_mask(ids, attention, [1, 2], norms, sink_factor=10.0)
    # BOS (1) and EOS (2) dropped wherever they are; the first position of row 2 is no special
    # token but an attention sink by its norm; padding is never kept.
    assert keep.tolist() == [
        [False, True, True, True, False],
        [False, True, False, True, True],
    ]


def test_parse_layers() -> None:
    assert cli_sae.parse_layers("all", 3) == [0, 1, 2]
    assert cli_sae.parse_layers("4,1-2", 6) == [1, 2, 4]
    for bad in ("7", "x", "1,,2"):
        with pytest.raises(ConfigError):
            cli_sae.parse_layers(bad, 6)


def test_cli_defaults_match_recipe() -> None:
    recipe = asdict(st.SAETrainRecipe())
    assert {k: recipe[k] for k in cli_sae.DEFAULTS} == cli_sae.DEFAULTS


def test_registering_needs_a_registry_entry(capsys, tmp_path: Path, text_file) -> None:
    argv = ["sae", "train", "--model", "demo-small", "--layers", "0", "--text", str(text_file)]
    code = cli.main([*argv, *TINY, "-q"])
    assert code == 2
    assert "not registered in a registry file" in capsys.readouterr().err
