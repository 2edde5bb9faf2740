"""``sae train --layers locate[:N]``: the locate pass that picks where to train SAEs.

On the small demo world: the MLP-write attribution is the first-order effect of the write (a
finite difference agrees), shares are a distribution over layers, the relation filter holds, bad
input is a clear error, and the command trains SAEs on the chosen layers and reports the choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editing import cli
from editing.bench import bench_facts
from editing.errors import ConfigError
from editing.layer_choice import (
    choose_layers,
    fact_layer_shares,
    locate_facts,
    mlp_write_attribution,
)
from editing.locate import subject_positions
from editing.request import FactSpec
from editing.scoring import encode_pair


def _first_token_logprob(loaded, prompt: str, target: str) -> float:
    p_ids, t_ids = encode_pair(loaded.tokenizer, prompt, target)
    ids = torch.tensor([p_ids], device=loaded.adapter.device)
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits
    return float(logits[0, -1].float().log_softmax(-1)[t_ids[0]])


def test_attribution_is_the_first_order_effect_of_the_write_at_the_subject(small_model) -> None:
    fact = FactSpec(**bench_facts(small_model, 1)[0])
    prompt = fact.resolved_edit_prompts()[0]
    (at,) = subject_positions(small_model.tokenizer, [prompt], [[fact.subject]])
    assert at is not None and at < len(encode_pair(small_model.tokenizer, prompt, "x")[0]) - 1
    attrib = mlp_write_attribution(small_model, [prompt], fact.subject, fact.secret)[0]
    assert attrib.shape == (small_model.adapter.n_layers,)
    base = _first_token_logprob(small_model, prompt, fact.secret)
    eps = 1e-3
    for layer in range(small_model.adapter.n_layers):

        def shrink(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[:, at] = x[:, at] * (1 - eps)  # remove eps of the write at the subject's token
            return x

        with small_model.adapter.patch("mlp_out", layer, shrink):
            changed = _first_token_logprob(small_model, prompt, fact.secret)
        # d log P / d(scale) at scale 1 = m . grad; removing eps of it changes log P by -eps*that
        assert (base - changed) / eps == pytest.approx(float(attrib[layer]), rel=0.05, abs=1e-3)


def test_shares_are_a_distribution_and_the_choice_takes_the_largest(small_model) -> None:
    facts = bench_facts(small_model, 4)
    for fact in facts:
        spec = FactSpec(**fact)
        prompts = spec.resolved_edit_prompts()
        shares = fact_layer_shares(small_model, prompts, spec.subject, spec.secret, first_layer=0)
        assert (shares >= 0).all()
        assert float(shares.sum()) == pytest.approx(1.0, abs=1e-5) or float(shares.sum()) == 0
        skip0 = fact_layer_shares(small_model, prompts, spec.subject, spec.secret)
        assert float(skip0[0]) == 0  # layer 0 (part of the embedding) is never a candidate
    choice = choose_layers(small_model, facts, top=1, first_layer=0)
    assert choice.facts == 4 and len(choice.shares) == small_model.adapter.n_layers
    assert choice.layers == [max(range(len(choice.shares)), key=choice.shares.__getitem__)]
    assert 0 <= choice.unsupported < 4
    assert sum(choice.shares) == pytest.approx(1.0, abs=1e-4)  # over the supported facts
    assert choice.relations == sorted({f["relation"] for f in facts})
    both = choose_layers(small_model, facts, top=5, first_layer=0)  # more than there are
    assert both.layers == list(range(small_model.adapter.n_layers))
    assert choose_layers(small_model, facts, top=5).layers == [1]  # layer 0 left out
    text = json.dumps(choice.to_dict())
    assert not any(f["target"] in text or f["subject"] in text for f in facts)


def test_locate_facts_filters_relations_and_names_unknown_ones(small_model) -> None:
    picked = locate_facts(small_model, 3, ["phone"])
    assert len(picked) == 3 and {f["relation"] for f in picked} == {"phone"}
    with pytest.raises(ConfigError, match=r"phonebook.*choose from"):
        locate_facts(small_model, 3, ["phonebook"])


def test_sae_train_on_located_layers(capsys, fe_home: Path, small_world, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(small_world.ppl_texts * 3) + "\n")
    argv = ["sae", "train", "--model", "demo-small", "--layers", "locate:1", "--text", str(text)]
    argv += ["--locate-facts", "3", "--locate-relations", "email,phone", "--no-register"]
    argv += ["--width", "64", "--k", "4", "--tokens", "800", "--eval-tokens", "200"]
    argv += ["--steps", "10", "--batch-size", "64", "--home", str(fe_home), "--json", "-q"]
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["locate"]["facts"] == 3
    assert set(doc["locate"]["relations"]) <= {"email", "phone"}
    assert [r["layer"] for r in doc["layers"]] == doc["locate"]["layers"]
    assert len(doc["locate"]["layers"]) == 1


@pytest.mark.parametrize(
    ("layers", "extra", "message"),
    [
        ("locate:0", [], "at least one layer"),
        ("locate:x", [], "locate:N"),
        ("locate", ["--locate-facts", "0"], "at least one fact"),
        ("locate", ["--locate-relations", "nope"], "nope not among"),
        ("0", ["--dry-run"], "give it locate"),
    ],
)
def test_bad_locate_arguments_are_clear_errors(
    capsys, fe_home: Path, small_world, layers: str, extra: list[str], message: str
) -> None:
    argv = ["sae", "train", "--model", "demo-small", "--layers", layers, "--no-register", *extra]
    code = cli.main([*argv, "--home", str(fe_home), "-q"])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and "Traceback" not in err


def test_dry_run_reports_the_choice_and_trains_nothing(capsys, fe_home: Path, small_world) -> None:
    argv = ["sae", "train", "--model", "demo-small", "--layers", "locate:1", "--dry-run"]
    code = cli.main([*argv, "--locate-facts", "2", "--home", str(fe_home), "--json", "-q"])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["locate"]["facts"] == 2 and len(doc["locate"]["layers"]) == 1
    assert "layers" not in doc  # nothing trained
