"""The pre-publish secret scan looks only at what an erasure writes of its own (issue #14 step 5,
#15): a common word or a short number that a real vocabulary or weight bytes contain by chance
publishes; the same secret in the manifest or the patch metadata is still refused."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import save_file

from editing import fingerprint as fp
from editing.adapters import ModelAdapter
from editing.checkpoints import publish_checkpoint, verify_checkpoint
from editing.cli import main
from editing.errors import ConfigError
from editing.pipeline import erase_and_publish
from editing.request import ErasureRequest
from tests.editing.test_checkpoints import Loaded, make_edit, manifest_fields
from tests.editing.test_edits import make_model, make_tokenizer


def test_word_boundary_scan_of_text_json_and_safetensors_header(tmp_path: Path) -> None:
    import torch

    secrets = ["747", "K9", "José Ruiz"]
    files = {
        "hash.json": json.dumps({"sha256": "ab7473f0", "id": "xK9y", "n": 747}),  # no hit
        "flight.json": json.dumps({"note": "flight 747 left"}),  # 747 as a word
        "key.json": json.dumps({"K9": 1}),  # a key is text too
        "escaped.json": json.dumps({"who": "José Ruiz"}),  # JSON-escaped: decoded first
        "plain.txt": "dog unit (K9).",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "meta.safetensors"), {"who": "José Ruiz"})
    save_file({"w": torch.full((64,), 747.747)}, str(tmp_path / "clean.safetensors"))
    hits = fp.find_secrets_in_files(sorted(tmp_path.iterdir()), secrets)
    assert [(p.name, i) for p, i in hits] == [
        ("escaped.json", 2),
        ("flight.json", 0),
        ("key.json", 1),
        ("meta.safetensors", 2),
        ("plain.txt", 1),
    ]
    with pytest.raises(ConfigError, match="empty"):
        fp.find_secrets_in_files([tmp_path / "plain.txt"], [""])


def _chance_secrets(checkpoint: Path) -> tuple[str, str]:
    """A vocabulary word of the saved tokenizer and a 3-digit string of the weight bytes."""
    vocab = json.loads((checkpoint / "tokenizer.json").read_text())["model"]["vocab"]
    word = max((w for w in vocab if w.isalpha()), key=len)
    weights = (checkpoint / "model.safetensors").read_bytes()
    number = next(m.group().decode() for m in re.finditer(rb"(?<![0-9])[0-9]{3}", weights))
    return word, number


def test_base_model_files_are_not_scanned_but_what_the_erasure_writes_is(
    tmp_path: Path,
) -> None:
    model = make_model("gemma2")
    loaded = Loaded(model, make_tokenizer(), ModelAdapter(model), "tiny")
    edit = make_edit(loaded.adapter)
    first = publish_checkpoint(loaded, edit, tmp_path / "a", manifest_fields("x"))
    word, number = _chance_secrets(first)
    # the old whole-directory byte scan refuses both: they are in the tokenizer and the weights
    found = {i for _, i in fp.find_secrets_in_dir(first, [word, number])}
    assert found == {0, 1}

    full = publish_checkpoint(
        loaded, edit, tmp_path / "b", manifest_fields("x"), secrets=[word, number], mode="full"
    )
    assert verify_checkpoint(full) == [] and (full / "model.safetensors").is_file()

    for fields, tagged in (
        ({**manifest_fields("x"), "note": f"erased {word}"}, edit),  # the manifest
        (manifest_fields("x"), replace(edit, metadata={**edit.metadata, "n": f"#{number}"})),
    ):
        with pytest.raises(ConfigError) as info:
            publish_checkpoint(loaded, tagged, tmp_path / "c", fields, secrets=[word, number])
        assert word not in str(info.value) and number not in str(info.value)
        assert "manifest.json" in str(info.value) or "delta/delta.json" in str(info.value)
    assert [p.name for p in (tmp_path / "c").iterdir()] == []


def _public_fact(world: Any, model: Any) -> Any:
    """A public fact of the small world whose target is in the model's vocabulary."""
    vocab = model.tokenizer.get_vocab()
    for fact in world.facts:
        if not fact.private and any(fact.target in token for token in vocab):
            return fact
    raise AssertionError("no public target of the small world is in its vocabulary")


def test_public_relation_erasure_publishes_in_full_mode(
    tmp_path: Path, small_world: Any, small_model: Any
) -> None:
    fact = _public_fact(small_world, small_model)
    relaxed = {"min_reliability": 0, "min_generalization": 0, "min_locality": 0}
    request = ErasureRequest(
        model="demo-small",
        facts=[{"subject": fact.subject, "relation": fact.relation, "target": fact.target}],
        thresholds={**relaxed, "max_delta_ppl": 10},
        publish="full",
    )
    erasure = erase_and_publish(
        request, small_model, checkpoint_root=tmp_path, keep_revert=lambda e, c: None
    )
    assert erasure.result.status == "succeeded", erasure.result.acceptance
    ckpt = erasure.checkpoint
    assert ckpt is not None and verify_checkpoint(ckpt) == []
    assert fp.find_secrets_in_dir(ckpt, [fact.target]) != []  # in the copied tokenizer: fine
    assert fp.find_secrets_in_files([ckpt / "manifest.json"], [fact.target]) == []


@pytest.mark.parametrize("target", ["7", "42"])
def test_cli_refuses_a_too_short_target_clearly(tmp_path: Path, target: str) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(target)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        args = "erase --model demo-small --subject Dana --relation phone --no-publish".split()
        code = main([*args, "--target-file", str(secret_file)])
    assert code == 2
    assert "target is too short: at least 2 characters, 3 digits for a number" in stderr.getvalue()
