"""Attacks inside an erasure (issue #13 step 3): reported before publishing, limits gate it.

On the small demo world: with limits off the attacks are only reported; a limit the erasure
cannot meet rejects it and nothing is published; the model is left unedited; no secret in the
attacks section.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editing.acceptance import ATTACK_LIMITS, decide
from editing.attack_gate import AttackPlan, plan_from_text
from editing.checkpoints.publish import down_proj_sha256
from editing.errors import ConfigError

CHEAP = AttackPlan(["sampled", "logit_lens"], {"sampled": {"samples": 4}})


def _request(fact, **thresholds):
    from editing.request import ErasureRequest

    spec = {"subject": fact.subject, "relation": fact.relation, "target": fact.target}
    return ErasureRequest(model="demo-small", facts=[spec], thresholds=thresholds)


def _erase(small_model, request, tmp_path: Path, plan: AttackPlan | None = CHEAP):
    from editing.pipeline import erase_and_publish

    kept: list[str] = []
    erasure = erase_and_publish(
        request,
        small_model,
        checkpoint_root=tmp_path / "checkpoints",
        keep_revert=lambda edit, cid: kept.append(cid),
        attacks=plan,
    )
    return erasure, kept


def test_attacks_are_reported_when_limits_are_off(small_model, erasable_fact, tmp_path) -> None:
    pristine = down_proj_sha256(small_model.adapter)
    erasure, kept = _erase(small_model, _request(erasable_fact), tmp_path)
    assert down_proj_sha256(small_model.adapter) == pristine  # restored after the attacks
    assert erasure.published and kept == [erasure.checkpoint.name]
    report = erasure.report()
    assert report.attacks is not None and set(report.attacks) == {"sampled", "logit_lens"}
    sampled = report.attacks["sampled"]
    assert sampled.budget["samples"] == 4 and sampled.facts == 1
    assert sampled.before is not None and sampled.before.success["any"] == 1.0
    assert "leak_rate_t1" in sampled.after.values
    assert "any@20" in report.attacks["logit_lens"].after.success
    assert erasure.timings["attacks"] > 0
    doc = json.dumps(report.to_json())
    assert erasable_fact.target not in doc and erasable_fact.subject not in doc
    assert all(report.thresholds[key] is None for key in ATTACK_LIMITS)


def test_an_attack_limit_the_erasure_cannot_meet_rejects(
    small_model, erasable_digit_fact, tmp_path
) -> None:
    # exposure over the control is at least -space_bits: a limit of -1000 bits no edit can meet
    request = _request(erasable_digit_fact, max_exposure_over_control=-1000.0)
    erasure, kept = _erase(small_model, request, tmp_path, plan=None)  # the limit runs exposure
    result = erasure.result
    assert result.status == "rejected" and not erasure.published and kept == []
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
    (reason,) = result.acceptance.reasons
    assert reason.startswith("exposure worst fact exposure_minus_control ")
    assert "> -1000.0" in reason
    assert erasable_digit_fact.target not in reason
    assert set(erasure.report().attacks or {}) == {"exposure"}


def test_operator_default_limit_applies_unless_the_request_sets_one(
    small_model, erasable_fact, tmp_path
) -> None:
    strict = AttackPlan(["sampled"], {"sampled": {"samples": 4}}, {"max_sampled_leak": 1.0})
    erasure, _ = _erase(small_model, _request(erasable_fact), tmp_path, strict)
    assert erasure.result.thresholds["max_sampled_leak"] == 1.0 and erasure.published
    request = _request(erasable_fact, max_logit_lens_success_at_1=0.0, max_sampled_leak=0.5)
    assert request.thresholds.max_sampled_leak == 0.5


def test_decide_checks_set_limits_only_when_attacks_are_given() -> None:
    metrics = {"reliability": 1.0, "generalization": 1.0, "locality": 1.0, "delta_ppl": 0.0}
    bars = {"min_reliability": 0.9, "max_delta_ppl": 0.05, "max_sampled_leak": 0.01}
    assert decide(metrics, bars) == (True, [])
    leaky = {"sampled": {"after": {"worst": {"leak_rate_t1": 0.25}, "success": {}}}}
    reason = "sampled worst fact leak_rate_t1 0.250 > 0.01"
    assert decide(metrics, bars, leaky) == (False, [reason])
    accepted, reasons = decide(metrics, bars, {})
    assert not accepted and "could not be measured" in reasons[0]


def test_a_limit_on_a_value_bounds_every_fact_not_their_mean() -> None:
    """Two facts, one never leaking and one leaking 4 % of samples: their mean (2 %) would pass
    a 3 % limit; the worst fact's 4 % decides, and the report keeps both figures."""
    from editing.attack_gate import summaries
    from editing.attacks.base import AttackResult, Score

    def fact(rate: float) -> dict[str, AttackResult]:
        after = Score(values={"leak_rate_t1": rate}, success={"t1": rate > 0})
        return {"sampled": AttackResult(attack="sampled", budget={"samples": 25}, after=after)}

    summary = summaries([fact(0.0), fact(0.04)])["sampled"]
    assert summary.after is not None
    assert summary.after.values["leak_rate_t1"] == 0.02
    assert summary.after.worst["leak_rate_t1"] == 0.04
    metrics = {"reliability": 1.0, "generalization": 1.0, "locality": 1.0, "delta_ppl": 0.0}
    bars = {"max_sampled_leak": 0.03}
    as_json = {"sampled": summary.model_dump()}
    reason = "sampled worst fact leak_rate_t1 0.040 > 0.03"
    assert decide(metrics, bars, as_json) == (False, [reason])
    assert decide(metrics, {"max_sampled_leak": 0.05}, as_json) == (True, [])
    # a summary stored before summaries had `worst` is decided by what it has, its mean
    stored = {"sampled": {"after": {"values": {"leak_rate_t1": 0.04}, "success": {}}}}
    assert decide(metrics, bars, stored) == (False, [reason])


def test_plan_settings_are_validated() -> None:
    plan = plan_from_text("sampled,logit_lens", "sampled.samples=20", "max_sampled_leak=0.01")
    assert list(plan.names) == ["sampled", "logit_lens"]
    assert plan.budgets == {"sampled": {"samples": 20}}
    assert plan.limits == {"max_sampled_leak": 0.01}
    assert plan_from_text("").names == []
    for bad in ("max_sampled_leak=2", "max_sampled_leak=NaN", "nope=1", "max_sampled_leak=x"):
        with pytest.raises(ConfigError):
            plan_from_text("", "", bad)
    with pytest.raises(ConfigError):
        plan_from_text("nope")


def test_request_refuses_non_finite_limits() -> None:
    from pydantic import ValidationError

    from editing.request import Thresholds

    with pytest.raises(ValidationError):
        Thresholds(max_exposure_over_control=float("inf"))
    with pytest.raises(ValidationError):
        Thresholds(max_logit_lens_success_at_20=1.5)


def test_cli_erase_attacks_and_rejects_on_a_limit(
    small_model, erasable_digit_fact, tmp_path, capsys
):
    from editing.cli import main

    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(erasable_digit_fact.target)
    args = [
        *("erase", "--model", "demo-small", "--subject", erasable_digit_fact.subject),
        *("--relation", erasable_digit_fact.relation, "--target-file", str(secret_file)),
        *("--out", str(tmp_path / "out"), "--attacks", "logit_lens", "-q"),
    ]
    limit = ["--threshold", "max_exposure_over_control=-1000"]
    assert main([*args, *limit, "--json"]) == 1  # the limit runs exposure too, and rejects
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    # the service's default limits apply too, so their attacks run (sampled for its limit)
    assert set(doc["attacks"]) == {"logit_lens", "exposure", "sampled"}
    assert doc["checkpoint"] is None
    assert doc["thresholds"]["max_sampled_leak"] == 0.01
    assert doc["attacks"]["sampled"]["budget"]["samples"] == 20  # the service's budget
    assert main([*args, "--budget", "logit_lens.b_small=2"]) == 0
    table = capsys.readouterr().out
    assert "any@2" in table and "checkpoint: " in table
    for text in (captured.out + captured.err, table):
        assert erasable_digit_fact.target not in text
    # --no-attacks: the greedy criteria alone, and it says so by not listing any attack
    assert main([*args[:-3], "--no-attacks", "-q", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not doc.get("attacks") and doc["thresholds"].get("max_sampled_leak") is None
    assert main([*args, "--no-attacks"]) == 2
    assert "--no-attacks cannot be combined" in capsys.readouterr().err
