"""The attack suite (issue #13) on the small demo world: behaviour, not thresholds.

An unedited model that memorised a secret must be attacked successfully; results carry numbers
only (no secret, no name); budgets are respected; the model is restored whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from editing.attacks import AttackCase, ModelStates, Score, get_attack, parse_attacks
from editing.attacks.base import Attack
from editing.attacks.logit_lens import delta_candidates, head_candidates
from editing.attacks.rephrase import paraphrases
from editing.attacks.suite import run_attacks, summarise
from editing.checkpoints.publish import down_proj_sha256
from editing.errors import ConfigError
from editing.scoring import contains_target

CHEAP = {  # small budgets: the tests check behaviour, the benchmark measures
    "sampled": {"samples": 8},
    "exposure": {"n_random": 200, "max_enumerate": 1000},
    "quantization": {"samples": 2},
    "relearning": {"steps": 3, "batch": 4, "samples": 2},
}


@pytest.fixture(scope="module")
def case(erasable_fact) -> AttackCase:
    """The erasable fact with the relation's edit and held-out prompts."""
    from editing.request import FactSpec

    spec = FactSpec(
        subject=erasable_fact.subject,
        relation=erasable_fact.relation,
        target=erasable_fact.target,
    )
    return AttackCase.from_fact(spec)


@pytest.fixture(scope="module")
def edit(small_model, erasable_fact):
    """Default FeatureEdit's edit of the erasable fact."""
    from editing.erase import run_erasure
    from editing.request import ErasureRequest

    req = ErasureRequest(
        model="demo-small",
        facts=[erasable_fact.spec()],
    )
    result = run_erasure(req, small_model, leak_samples=1)
    assert result.edit is not None
    return result.edit


def _no_secret(doc: object, case: AttackCase) -> None:
    text = json.dumps(doc)
    assert case.secret not in text
    assert case.subject not in text
    for part in case.subject.split():
        assert part not in text


def test_contains_target_whole_words_only() -> None:
    assert contains_target(" 12 August 1990.", "12 August 1990")
    assert not contains_target(" August", "Au")
    assert contains_target("It is Au, surely", "Au")
    assert not contains_target("555-01234", "555-0123")
    assert not contains_target("1555-0123", "555-0123")
    assert contains_target("call 555-0123.", "555-0123")
    assert contains_target("mail a.b@x.org", "a.b@x.org")


def test_registry_is_torch_free_and_names_are_checked() -> None:
    code = "import sys, editing.attacks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert parse_attacks("sampled,logit_lens") == ["sampled", "logit_lens"]
    assert len(parse_attacks(None)) == 6
    with pytest.raises(ConfigError, match="nope"):
        parse_attacks("sampled,nope")
    with pytest.raises(ConfigError, match="no budget"):
        get_attack("sampled", nonsense=3)


def test_scores_hold_numbers_only() -> None:
    with pytest.raises(ValidationError):
        Score(values={"leak_rate": "555-0123"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        Score(values={"Dana Berg": 1})


def test_lens_candidate_sets_respect_the_budget() -> None:
    lens = torch.randn(5, 3, 50)  # embedding + 4 layers, 3 secret positions, vocabulary 50
    for budget in (1, 2, 7, 20, 100):
        for cands in (head_candidates(lens, budget), delta_candidates(lens, budget)):
            assert cands.shape[0] == 3 and 1 <= cands.shape[1] <= budget
    assert torch.equal(head_candidates(lens, 1)[:, 0], lens[-1].argmax(-1))


def test_paraphrases_are_never_the_requests_prompts(case) -> None:
    found = paraphrases(case)
    assert len(found) >= 4
    assert not set(found) & set(case.prompts)
    assert all(case.subject in p for p in found)


def test_unedited_model_is_attacked_successfully(small_model, case) -> None:
    names = ["sampled", "logit_lens", "rephrase", "exposure"]
    (results,) = run_attacks(small_model, None, [case], names, CHEAP)
    after = {n: r.after for n, r in results.items()}
    assert after["sampled"].success["any"]
    assert after["sampled"].values["samples_t1"] == 8 * len(case.prompts)
    assert after["logit_lens"].success["head@20"]
    assert after["logit_lens"].success["any@20"]
    assert after["rephrase"].values["budget_used"] == 20
    assert results["exposure"].budget["n_random"] == 200
    _no_secret({n: r.model_dump() for n, r in results.items()}, case)


def test_edit_is_attacked_and_the_model_restored(small_model, case, edit) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    params = {k: v.clone() for k, v in small_model.model.state_dict().items()}
    names = ["sampled", "logit_lens", "quantization", "relearning"]
    per_fact = run_attacks(small_model, edit, [case], names, CHEAP)
    assert down_proj_sha256(small_model.adapter) == pristine
    for k, v in small_model.model.state_dict().items():  # casts and fine-tuning used copies
        assert torch.equal(v, params[k]), k
    results = per_fact[0]
    assert results["logit_lens"].before.success["head@20"]
    ll_after = results["logit_lens"].after.values
    assert ll_after["worst_rank"] >= results["logit_lens"].before.values["worst_rank"]
    assert set(results["quantization"].after.values) >= {"int8_greedy_leak", "bf16_sampled_leak"}
    assert "recovery_greedy_leak" in results["relearning"].after.values
    summary = summarise(per_fact)
    assert summary["sampled"]["facts"] == 1
    assert 0.0 <= summary["logit_lens"]["after"]["success"]["any@20"] <= 1.0
    _no_secret([{n: r.model_dump() for n, r in results.items()}, summary], case)


class _Boom(Attack):
    """Fails while the edit is applied."""

    name = "boom"

    def measure(self, loaded: object, case: AttackCase) -> Score:
        raise RuntimeError("boom")


def test_edit_is_reverted_when_an_attack_fails(small_model, case, edit) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    states = ModelStates(small_model, edit)
    with pytest.raises(RuntimeError, match="boom"):
        _Boom().run(states, case, before=Score())
    assert down_proj_sha256(small_model.adapter) == pristine


def test_cli_attacks_a_published_checkpoint(small_model, erasable_fact, tmp_path, capsys) -> None:
    from editing.cli import main
    from editing.pipeline import erase_and_publish
    from editing.request import ErasureRequest

    fact = {
        "subject": erasable_fact.subject,
        "relation": erasable_fact.relation,
        "target": erasable_fact.target,
    }
    erasure = erase_and_publish(
        ErasureRequest(model="demo-small", facts=[fact]),
        small_model,
        checkpoint_root=tmp_path / "checkpoints",
        keep_revert=lambda edit, cid: None,
    )
    assert erasure.checkpoint is not None
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(json.dumps({"facts": [fact]}))
    args = ["attack", str(erasure.checkpoint), "--file", str(facts_file), "--json", "-q"]
    code = main([*args, "--attacks", "logit_lens,rephrase", "--budget", "rephrase.samples=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["model"] == "demo-small" and doc["attacks"] == ["logit_lens", "rephrase"]
    assert doc["summary"]["rephrase"]["budget"]["samples"] == 2
    assert doc["facts"][0]["attacks"]["logit_lens"]["before"]["success"]["head@20"]
    assert erasable_fact.target not in captured.out + captured.err
    assert erasable_fact.subject not in captured.out + captured.err
    assert main([*args, "--attacks", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    text_args = [a for a in args if a != "--json"]
    assert main([*text_args, "--attacks", "logit_lens"]) == 0
    table = capsys.readouterr().out
    assert "head@20" in table and erasable_fact.target not in table


def test_bench_reports_attacks_per_method(small_model) -> None:
    from editing.bench import run_bench

    result = run_bench(small_model, 1, methods=("featureedit",), attacks=["logit_lens"])
    assert result["attacks"] == ["logit_lens"]
    attacks = result["summary"]["featureedit"]["attacks"]
    if result["per_fact"]["featureedit"][0]["status"] != "nothing_to_erase":
        assert set(attacks["logit_lens"]["after"]["success"]) >= {"head@20", "delta@1"}
        json.dumps(result)
