"""``facts probe``: word-boundary answer matching, the known-fact rules, batched greedy decoding
(left padding must not change a continuation) and the cache keyed by weights and fact set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from editing.errors import ConfigError
from editing.realdata.facts import load_facts
from editing.realdata.probe import (
    answers,
    cache_path,
    greedy_continuations,
    knows,
    probe_model,
    run_probe,
    weights_sha256,
)
from tests.editing.test_model_import import tiny_llama, write_gguf


@pytest.mark.parametrize(
    ("continuation", "target", "expected"),
    [
        (" Au.", " Au", True),
        (" Au", " Au", True),
        (" August", " Au", False),
        (" Paris, France", " Paris", True),
        (" Parisian", " Paris", False),
        (" Paris_x", " Paris", False),
        (" paris", " Paris", False),
        ("Paris", " Paris", False),
        (" New Delhi is", " New Delhi", True),
        (" New", " New Delhi", False),
        (" Leo Tolstoy's", " Leo Tolstoy", True),
    ],
)
def test_answers(continuation: str, target: str, expected: bool) -> None:
    assert answers(continuation, target) is expected


def test_rules() -> None:
    assert knows([True, True, False], "majority") and not knows([True, True, False], "all")
    assert not knows([True, False], "majority")  # a tie is not a majority
    assert knows([True, True], "all") and not knows([], "all")
    with pytest.raises(ConfigError, match="majority"):
        knows([True], "most")


def test_run_probe_with_a_scripted_model() -> None:
    fs = load_facts()
    facts = [f for f in fs.facts if f.relation.name == "element_symbol"][:3]

    def generate(prompts: Sequence[str], n: int) -> list[str]:
        # knows gold everywhere, silver on one edit prompt only, says " August" for iron
        out = []
        for p in prompts:
            if "gold" in p:
                out.append(" Au.")
            elif "silver" in p:
                out.append(" Ag" if p == facts[1].edit_prompts()[0] else " Si")
            else:
                out.append(" August")
        return out

    records = run_probe(facts, generate, 3)
    assert [r["key"] for r in records] == [f.key for f in facts]
    assert [knows(r["edit_answered"], "majority") for r in records] == [True, False, False]
    assert records[0]["heldout_answered"] == [True, True]
    assert records[1]["edit_answered"] == [True, False, False]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Llama and its byte-level tokenizer (from a GGUF file)."""
    model = tiny_llama(seed=1)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(model, path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tokenizer


def test_batched_decoding_matches_one_by_one(tiny) -> None:
    model, tokenizer = tiny
    side = tokenizer.padding_side
    prompts = ["the theory", "a much longer prompt about the 1969 theory", "x"]
    sizes: list[int] = []
    batched = greedy_continuations(
        model, tokenizer, prompts, 4, batch_size=2, on_batch=sizes.append
    )
    assert sizes == [2, 1]
    single = [greedy_continuations(model, tokenizer, [p], 4)[0] for p in prompts]
    assert batched == single
    assert all(batched)  # four new tokens each
    assert tokenizer.padding_side == side  # restored


def test_probe_is_cached_per_weights_and_facts(capsys, tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    fs = load_facts()
    small = type(fs)(fs.name, fs.version, fs.license, fs.relations, fs.facts[:4], fs.sha256)
    weights = weights_sha256(model, None)
    assert weights == weights_sha256(model, None) and len(weights) == 64
    first, cached = probe_model("tiny", model, tokenizer, small, weights, home=tmp_path)
    assert not cached
    assert cache_path(weights, small, tmp_path).is_file()
    again, cached = probe_model("tiny", model, tokenizer, small, weights, home=tmp_path)
    assert cached and again.facts == first.facts
    doc = again.to_dict("majority")
    assert doc["total"]["facts"] == 4 and doc["relations"]["capital_of"]["facts"] == 4
    assert json.loads(json.dumps(doc))["rule"] == "majority"
    _, cached = probe_model("tiny", model, tokenizer, small, weights, home=tmp_path, force=True)
    assert not cached
    again, _ = probe_model(
        "tiny", model, tokenizer, small, weights, home=tmp_path, force=True, progress=True
    )
    assert again.facts == first.facts
    assert "probe tiny on 4 facts" in capsys.readouterr().err  # the bar, on stderr
    other = tiny_llama(seed=2)
    assert weights_sha256(other, None) != weights


def test_cli_unknown_model_is_one_line_error(capsys, tmp_path: Path) -> None:
    from editing import cli

    code = cli.main(["--home", str(tmp_path), "facts", "probe", "--model", "no-such-model"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert "'no-such-model'" in err and "demo-small" in err and len(err.strip().splitlines()) == 1
