"""What the CLIs read from the user (:mod:`editing.cli_input`): fact files in every accepted
shape, a fact given by flags, KEY=VALUE pairs; errors name the file or flag, never a secret."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from editing import cli_input
from editing.errors import ConfigError

FACT = {"subject": "Dana Berg", "relation": "phone", "target": "555-0100"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_input.add_fact_options(parser)
    cli_input.add_method_options(parser)
    cli_input.add_json_option(parser)
    return parser


@pytest.mark.parametrize(
    ("name", "text", "rest", "facts"),
    [
        ("r.json", json.dumps({"model": "demo", "facts": [FACT]}), {"model": "demo"}, [FACT]),
        ("one.json", json.dumps(FACT), {}, [FACT]),
        ("list.json", json.dumps([FACT, FACT]), {}, [FACT, FACT]),
        ("f.jsonl", json.dumps(FACT) + "\n\n" + json.dumps(FACT) + "\n", {}, [FACT, FACT]),
        ("nested.json", json.dumps({"facts": FACT}), {}, [FACT]),
    ],
)
def test_fact_files_in_every_shape(
    tmp_path: Path, name: str, text: str, rest: dict, facts: list
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert cli_input.read_fact_file(path, "--file x") == (rest, facts)


def test_bad_fact_files_name_the_file_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--file gone does not exist$"):
        cli_input.read_fact_file(tmp_path / "gone.json", "--file gone")
    broken = tmp_path / "broken.json"
    broken.write_text('{\n"target": "555-0100",\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken is not valid JSON \(line 3\)") as info:
        cli_input.read_fact_file(broken, "broken")
    assert "555-0100" not in str(info.value)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a request object"):
        cli_input.read_fact_file(scalar, "scalar")


def test_a_fact_from_flags(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("555-0100\n", encoding="utf-8")
    args = _parser().parse_args(
        ["--subject", "Dana Berg", "--relation", "phone", "--target-file", str(secret),
         "--prompt", "Dana's phone is", "--json"]
    )  # fmt: skip
    assert cli_input.fact_from_options(args) == FACT | {"edit_prompts": ["Dana's phone is"]}
    assert args.json and args.param is None and args.base_checkpoint is None
    assert cli_input.fact_from_options(_parser().parse_args([])) is None
    incomplete = _parser().parse_args(["--subject", "Dana Berg", "--target", "555-0100"])
    with pytest.raises(ConfigError, match="a fact needs --subject, --relation") as info:
        cli_input.fact_from_options(incomplete)
    assert "555-0100" not in str(info.value)


def test_key_value_pairs_decode_json_values() -> None:
    pairs = ["tau1=0.3", "layers=[1,2]", "variant=rows"]
    assert cli_input.parse_pairs(pairs) == {"tau1": 0.3, "layers": [1, 2], "variant": "rows"}
    with pytest.raises(ConfigError, match="--threshold expects KEY=VALUE, got 'x'"):
        cli_input.parse_pairs(["x"], "--threshold")
