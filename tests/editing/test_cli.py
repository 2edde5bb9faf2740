"""Tests of the ``featureedit`` command line (in-process through ``main`` and as a subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from editing import cli
from editing.world.build import world_dir


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test the built-in commands alone: installed plugins are tested by their own packages."""
    monkeypatch.setattr(cli, "entry_points", lambda *, group: [])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == cli.EXIT_ERROR
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("featureedit: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_help_subprocess() -> None:
    script = Path(sys.executable).with_name("featureedit")  # the installed console script
    exe = str(script) if script.exists() else shutil.which("featureedit")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "editing.cli", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for word in ("world", "models", "--home", "--device", "--dtype", "--quiet", "--debug"):
        assert word in proc.stdout


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from editing.cli import build_parser; build_parser().format_help(); "
        "heavy = [m for m in ('torch', 'transformers', 'sae_lens') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    "argv", [["world", "build"], ["world", "info"], ["models"], ["sae", "train"]]
)
def test_command_help(capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_no_command_prints_help(capsys) -> None:
    code, out, _ = run(capsys)
    assert code == cli.EXIT_ERROR
    assert "COMMAND" in out and "world" in out


def test_dtype_choices_match_settings() -> None:
    from editing.settings import DTYPES

    assert sorted(cli.DTYPE_CHOICES) == sorted(DTYPES)


def test_world_info_json(capsys, small_world) -> None:
    code, out, _ = run(capsys, "world", "info", "--size", "small", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model_id"] == "demo-small"
    assert doc["root"] == str(small_world.root)
    assert Path(doc["model_dir"]).is_dir()
    assert {"recall_train", "recall_heldout", "saes"} <= set(doc["quality"])
    assert doc["sizes"]["model_parameters"] > 0
    assert len(doc["saes"]) == len(small_world.sites) * small_world.n_layers
    for sae in doc["saes"]:
        assert Path(sae["dir"], "cfg.json").is_file()
        assert {"fvu", "l0"} <= set(sae)
    assert len(doc["facts"]) == len(small_world.facts)
    fact = doc["facts"][0]
    assert {"subject", "relation", "target", "private"} <= set(fact)
    assert fact["edit_prompts"] and fact["heldout_prompts"]
    assert fact["subject"] in fact["heldout_prompts"][0]
    assert not set(fact["edit_prompts"]) & set(fact["heldout_prompts"])


def test_world_info_relation_filter(capsys, small_world) -> None:
    code, out, _ = run(capsys, "world", "info", "--size", "small", "--relation", "email", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {f["relation"] for f in doc["facts"]} == {"email"}
    assert list(doc["relations"]) == ["email"]
    code, out, err = run(capsys, "world", "info", "--size", "small", "--relation", "shoe_size")
    assert_one_line_error(code, out, err, "'shoe_size'", "phone")


def test_world_info_human(capsys, small_world) -> None:
    code, out, _ = run(capsys, "world", "info", "--size", "small")
    assert code == 0
    fact = small_world.private_facts()[0]
    assert fact.subject in out and fact.target in out
    assert "recall_heldout" in out and "held-out" in out
    assert str(small_world.model_dir) in out


def test_world_build_cached_json(capsys, small_world) -> None:
    code, out, _ = run(capsys, "-q", "world", "build", "--size", "small", "--json")
    assert code == 0
    doc = json.loads(out)  # stdout holds exactly one JSON document
    assert doc["cached"] is True
    assert doc["model_dir"] == str(small_world.model_dir)
    assert doc["quality"]["recall_train"] == small_world.quality["recall_train"]
    assert all("fvu" in s and "l0" in s for s in doc["saes"])


def test_world_build_cached_human(capsys, small_world) -> None:
    code, out, _ = run(capsys, "world", "build", "--size", "small")
    assert code == 0
    assert "reused from the cache" in out
    assert "recall_train" in out and "fvu" in out
    assert str(small_world.sae_dir("mlp_out", 1)) in out


def test_models_json(capsys) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    doc = json.loads(out)
    ids = [m["model_id"] for m in doc["models"]]
    assert {"demo", "demo-small"} <= set(ids)
    small = next(m for m in doc["models"] if m["model_id"] == "demo-small")
    assert small["saes"]["resid_post"]["layers"] == [0, 1]


def test_models_human(capsys) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "demo-small" in out and "model_id" in out


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["models", "no-such-model"], ["'no-such-model'", "demo-small"]),
        (["world", "info", "--size", "huge"], ["'huge'", "small"]),
        (["world", "build", "--size", "huge"], ["'huge'", "default"]),
    ],
)
def test_user_errors_are_one_line(capsys, argv: list[str], needles: list[str]) -> None:
    assert_one_line_error(*run(capsys, *argv), *needles)


def test_world_not_built(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "--home", str(tmp_path), "world", "info", "--size", "small")
    assert_one_line_error(code, out, err, "not built", "featureedit world build --size small")


def test_corrupt_world(capsys, small_world, tmp_path: Path) -> None:
    root = world_dir("small", tmp_path)
    shutil.copytree(small_world.root, root)
    (root / "model" / "tokenizer.json").write_text("{}")
    code, out, err = run(capsys, "world", "info", "--size", "small", "--home", str(tmp_path))
    assert_one_line_error(code, out, err, "corrupt", "featureedit world build --size small")


def test_debug_shows_traceback(capsys) -> None:
    code, _, err = run(capsys, "--debug", "models", "no-such-model")
    assert code == cli.EXIT_ERROR
    assert "Traceback" in err and "UnknownModelError" in err
    assert err.strip().splitlines()[-1].startswith("featureedit: error: ")


@pytest.mark.parametrize("debug", [False, True])
def test_validation_error_is_one_line_without_input(monkeypatch, capsys, debug: bool) -> None:
    from pydantic import BaseModel, Field

    class Request(BaseModel):
        target: str = Field(max_length=3)

    def bad_request(_args: argparse.Namespace) -> int:
        secret = "-".join(["555", "0100"])  # not literal in this file: tracebacks quote source
        Request(target=secret)
        return 0

    monkeypatch.setattr(cli, "cmd_models", bad_request)
    code, out, err = run(capsys, *(["--debug"] if debug else []), "models")
    assert code == cli.EXIT_ERROR
    assert "555-0100" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("featureedit: error: invalid Request: target: ")
    if not debug:
        assert_one_line_error(code, out, err, "at most 3 characters")


def test_unexpected_errors_are_not_hidden(capsys, monkeypatch) -> None:
    def boom(_args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_models", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["models"])


def test_global_options_before_or_after_command(capsys, tmp_path: Path) -> None:
    before = os.environ.get("FEATUREEDIT_HOME")
    for argv in (["--home", str(tmp_path), "models"], ["models", "--home", str(tmp_path)]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert str(tmp_path / "models.toml") in out
    assert os.environ.get("FEATUREEDIT_HOME") == before  # exported only while the command ran


def test_global_options_exported_to_commands(monkeypatch, capsys, tmp_path: Path) -> None:
    seen = {}

    def spy(args: argparse.Namespace) -> int:
        seen.update({k: os.environ.get(k) for k in ("FEATUREEDIT_HOME", "FEATUREEDIT_DTYPE")})
        return 0

    monkeypatch.setattr(cli, "cmd_models", spy)
    cli.main(["--home", str(tmp_path), "models", "--dtype", "bfloat16"])
    assert seen == {"FEATUREEDIT_HOME": str(tmp_path), "FEATUREEDIT_DTYPE": "bfloat16"}


def test_bad_dtype_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--dtype", "float8", "models"])
    assert info.value.code == 2
    assert "float8" in capsys.readouterr().err


def test_installed_plugins_load(monkeypatch, capsys) -> None:
    """Every installed ``featureedit.commands`` entry point loads and registers cleanly."""
    import importlib.metadata

    monkeypatch.setattr(cli, "entry_points", importlib.metadata.entry_points)
    parser = cli.build_parser()
    assert capsys.readouterr().err == ""
    names = set(parser._subparsers._group_actions[0].choices)
    assert {"world", "models"} <= names


class _FakeEntryPoint:
    def __init__(self, name: str, target) -> None:
        self.name, self.value, self._target = name, f"fake:{name}", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_plugin_commands(monkeypatch, capsys) -> None:
    def cmd_hello(args: argparse.Namespace) -> int:
        if args.json:
            cli.print_json({"hello": args.name})
        else:
            print(cli.format_table(["greeting"], [[f"hello {args.name}"]]))
        return 0

    def register(subparsers) -> None:
        p = subparsers.add_parser("hello", parents=[cli.global_options()], help="say hello")
        p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_hello)

    def register_clash(subparsers) -> None:
        subparsers.add_parser("models")  # a built-in name: refused, with a warning

    plugins = [
        _FakeEntryPoint("hello", register),
        _FakeEntryPoint("broken", ImportError("no module named 'nowhere'")),
        _FakeEntryPoint("clash", register_clash),
    ]
    requested = []

    def fake_entry_points(*, group: str):
        requested.append(group)
        return plugins

    monkeypatch.setattr(cli, "entry_points", fake_entry_points)
    code, out, err = run(capsys, "hello", "world", "--json")
    assert requested == [cli.ENTRY_POINT_GROUP]
    assert code == 0
    assert json.loads(out) == {"hello": "world"}
    assert "'broken'" in err and "no module named 'nowhere'" in err
    assert "'clash'" in err
    code, out, _ = run(capsys, "hello", "you")
    assert code == 0 and "hello you" in out
    code, out, _ = run(capsys, "models", "--json")  # the built-in survived the clash
    assert code == 0 and json.loads(out)["models"]


def test_json_stdout_is_only_the_document(monkeypatch, capsys) -> None:
    original = cli.cmd_models

    def noisy(args: argparse.Namespace) -> int:
        print("stray library print")
        return original(args)

    monkeypatch.setattr(cli, "cmd_models", noisy)
    code, out, err = run(capsys, "models", "--json")
    assert code == 0
    json.loads(out)
    assert "stray library print" in err


def test_format_table_aligns() -> None:
    text = cli.format_table(["a", "long header"], [["x", 1.23456], ["longer cell", None]])
    lines = text.splitlines()
    assert lines[0].index("long header") == lines[2].index("1.235") == lines[3].index("-")
