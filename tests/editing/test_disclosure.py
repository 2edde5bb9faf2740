"""Figures measured on a secret are stated coarsely in every document (:mod:`editing.disclosure`):
a report, a record's metrics or a manifest must not let a checkpoint holder match an exact
probability, exposure or rank against every guess of an enumerable secret. No torch."""

from __future__ import annotations

import math

import pytest

from editing.acceptance import decide
from editing.disclosure import coarse_probability, coarse_rank, coarsen, exact_figures
from editing.report import AttackState, AttackSummary, ErasureReport, load_report


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.0123, 0.1), (0.001, 0.001), (0.0011, 0.01), (0.99, 1.0), (1.0, 1.0), (0.0, 0.0)],
)
def test_a_probability_is_stated_as_its_decade(p: float, shown: float) -> None:
    assert math.isclose(coarse_probability(p), shown)


def test_a_loss_is_stated_as_its_decade_without_a_cap() -> None:
    assert coarsen({"refine_exposure_loss": 3.2, "refine_rank_loss": 0.0}) == {
        "refine_exposure_loss": 10.0,
        "refine_rank_loss": 0.0,
    }


def test_ranks_round_up_to_a_power_of_two() -> None:
    assert [coarse_rank(r) for r in (1, 2, 3, 17.5, 64)] == [1, 2, 4, 32, 64]


def _report() -> ErasureReport:
    fact = {
        "metrics": {
            "before": {"prob": 0.98731, "exposure": 22.4187},
            "after": {"prob": 0.0012345, "exposure": 16.2891, "leak_rate": {"value": 0.0}},
            "delta_prob": 0.998749,
        },
        "evidence": {"edit_prompts_max_target_prob": 0.00271, "refine_rank_loss": 0.0031},
    }
    exposure = AttackSummary(
        budget={"n_random": 500},
        after=AttackState(
            values={"exposure": 9.61, "exposure_minus_control": 1.37, "worst_rank": 746.0},
            success={"singled_out": 1.0},
        ),
    )
    return load_report(
        {
            "metrics": {"exposure_after": 16.2891, "delta_prob": 0.998749, "leak_rate_after": 0.25},
            "facts": [fact],
            "attacks": {"exposure": exposure.to_json()},
        }
    )


def test_a_report_states_every_figure_on_a_secret_coarsely() -> None:
    doc = _report().to_json()
    after = doc["facts"][0]["metrics"]["after"]
    assert after["prob"] == 0.01 and after["exposure"] == 16.0
    assert doc["facts"][0]["metrics"]["before"]["prob"] == 1.0
    assert doc["facts"][0]["metrics"]["delta_prob"] == 1.0
    assert doc["facts"][0]["evidence"] == {
        "edit_prompts_max_target_prob": 0.01,
        "refine_rank_loss": 0.01,
    }
    values = doc["attacks"]["exposure"]["after"]["values"]
    assert values == {"exposure": 10.0, "exposure_minus_control": 1.0, "worst_rank": 1024.0}
    assert doc["metrics"]["exposure_after"] == 16.0
    assert doc["metrics"]["leak_rate_after"] == 0.25  # a leak rate is not a figure on the secret
    assert load_report(doc).to_json() == doc  # idempotent: read back and written again


def test_exact_figures_are_kept_in_memory_and_inside_exact_figures() -> None:
    report = _report()
    assert report.facts[0].metrics.after is not None
    assert report.facts[0].metrics.after.prob == 0.0012345
    with exact_figures():
        assert report.to_json()["metrics"]["exposure_after"] == 16.2891
    assert report.to_json()["metrics"]["exposure_after"] == 16.0


def test_relearning_does_not_state_where_the_secret_occurs() -> None:
    assert coarsen({"values": {"train_texts": 12, "recovery_sampled_leak": 0.1}}) == {
        "values": {"recovery_sampled_leak": 0.1}
    }


def test_an_acceptance_reason_states_the_coarse_figure() -> None:
    attacks = {"exposure": {"after": {"worst": {"exposure_minus_control": 1.437}}}}
    metrics = {"reliability": 1.0, "generalization": 1.0, "locality": 1.0, "delta_ppl": 0.0}
    thresholds = {"max_exposure_over_control": 1.0}
    accepted, reasons = decide(metrics, thresholds, attacks)
    assert not accepted
    assert reasons == ["exposure worst fact exposure_minus_control ~1 > 1.0"]
    assert "1.437" not in " ".join(reasons)
