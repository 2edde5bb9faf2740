"""`featureedit erase` / `apply-delta` end to end on the small demo world (bench: see
test_cli_bench.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from editing.checkpoints import read_manifest, verify_checkpoint
from editing.cli import main
from editing.cli_engine import DEMO_SAMPLES
from editing.evaluate import leaks
from editing.fingerprint import find_secrets_in_dir
from editing.relations import RELATIONS


def _erase(tmp_path: Path, fact, *extra: str) -> list[str]:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(fact.target)
    return [
        "erase",
        "--model",
        "demo-small",
        "--subject",
        fact.subject,
        "--relation",
        fact.relation,
        "--target-file",
        str(secret_file),
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def published(tmp_path_factory, small_model, erasable_fact):
    """Run `featureedit erase` once; return (json doc, checkpoint dir, captured text)."""
    tmp = tmp_path_factory.mktemp("erase")
    out = tmp / "checkpoints"
    stdout, stderr = io.StringIO(), io.StringIO()
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(_erase(tmp, erasable_fact, "--out", str(out)))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert code == 0, stderr.getvalue()
    doc = json.loads(stdout.getvalue())
    return doc, Path(doc["checkpoint"]), stderr.getvalue() + "\n".join(records)


def test_checkpoint_loads_and_secret_is_gone(published, small_world, erasable_fact) -> None:
    doc, ckpt, _ = published
    assert doc["status"] == "succeeded"
    # published by the service's decision: its default attacks ran and its limits passed
    assert set(doc["attacks"]) == {"sampled", "logit_lens"}
    assert doc["thresholds"]["max_sampled_leak"] == 0.01
    assert doc["thresholds"]["max_logit_lens_success_at_1"] == 0.0
    assert verify_checkpoint(ckpt) == []
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    base = AutoModelForCausalLM.from_pretrained(small_world.model_dir, dtype=torch.float32).eval()
    prompts = RELATIONS[erasable_fact.relation].edit_prompts(erasable_fact.subject)
    assert sum(leaks(base, tok, prompts, erasable_fact.target)) > 0
    assert sum(leaks(model, tok, prompts, erasable_fact.target)) == 0


def test_secret_in_no_file_and_no_log(published, erasable_fact) -> None:
    doc, ckpt, logs = published
    assert find_secrets_in_dir(ckpt, [erasable_fact.target]) == []
    assert (ckpt / "tokenizer.json").is_file()
    assert erasable_fact.target not in logs
    assert erasable_fact.target not in json.dumps(doc)
    manifest = read_manifest(ckpt)
    assert manifest["facts"][0]["fingerprint"].startswith("hmac-sha256:")
    assert {f["name"] for f in manifest["files"]} >= {"model.safetensors", "config.json"}


def test_apply_delta_bit_identical_and_revert(published, small_world, tmp_path, capsys) -> None:
    doc, ckpt, _ = published
    out = tmp_path / "applied"
    assert main(["apply-delta", str(small_world.model_dir), str(ckpt), str(out), "-q"]) == 0
    applied = load_file(out / "model.safetensors")
    full = load_file(ckpt / "model.safetensors")
    assert applied.keys() == full.keys()
    assert all(torch.equal(applied[k], full[k]) for k in full)
    back = tmp_path / "reverted"
    # the checkpoint cannot undo itself: reverting needs the private revert data `erase` kept
    assert main(["apply-delta", str(out), str(ckpt), str(back), "--revert", "-q"]) != 0
    assert "no revert data given" in capsys.readouterr().err
    revert = Path(doc["revert_data"])
    assert revert.is_file() and not revert.is_relative_to(ckpt)
    assert revert.read_bytes().startswith(b"gAAAAA")  # sealed with the service key
    args = ["apply-delta", str(out), str(ckpt), str(back), "--revert", "--revert-data", str(revert)]
    assert main([*args, "-q"]) == 0
    base = load_file(small_world.model_dir / "model.safetensors")
    reverted = load_file(back / "model.safetensors")
    assert all(torch.equal(base[k], reverted[k]) for k in base)


def test_erase_nothing_to_erase_exit_1(tmp_path, small_world, capsys) -> None:
    fact = small_world.private_facts()[0]
    fake = type(fact)(fact.subject, "phone", "000-000-0000", True)
    assert main(_erase(tmp_path, fake)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "nothing_to_erase" and doc["checkpoint"] is None


def test_erase_bad_input_one_line(tmp_path, small_world, capsys) -> None:
    fact = small_world.private_facts()[0]
    fake = type(fact)(fact.subject, "shoe_size", fact.target, True)
    assert main(_erase(tmp_path, fake)) == 2
    err = capsys.readouterr().err
    assert "Unknown relation 'shoe_size'" in err
    assert "Traceback" not in err and fact.target not in err


def test_demo_takes_a_registered_model_id(small_model) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["demo", "--model", "demo-small", "--json", "-q"])
    assert code == 0, stderr.getvalue()
    doc = json.loads(stdout.getvalue())
    assert doc["model"] == "demo-small" and doc["fact"]["relation"] == "phone"
    assert set(doc["results"]) == {"featureedit", "neurons"}
    verified = doc["verification"]
    if doc["checkpoint"] is not None:  # the downloaded checkpoint is sampled, as is the base
        assert verified["samples"] == verified["prompts"] * DEMO_SAMPLES
        assert verified["base_samples_leaking"] > 0
        assert 0 <= verified["checkpoint_samples_leaking"] <= verified["samples"]
    else:  # nothing published: nothing to verify
        assert verified == {}
