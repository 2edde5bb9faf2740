"""``featureedit bench`` (:mod:`editing.cli_bench`) on the small demo world: the JSON document."""

from __future__ import annotations

import json

from editing.cli import main


def test_bench_json_keys(capsys) -> None:
    assert (
        main(
            [
                "bench",
                "--model",
                "demo-small",
                "--facts",
                "2",
                "--methods",
                "featureedit,neurons",
                "--leak-samples",
                "3",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["leak_samples"] == 3
    for row in doc["per_fact"]["featureedit"]:  # every leak rate comes with its sample count
        assert row["leak_after_samples"] % 3 == 0
        assert 0 <= row["leak_after_hits"] <= row["leak_after_samples"]
    fe = doc["summary"]["featureedit"]
    for key in ("reliability", "generalization", "locality", "delta_ppl"):
        assert key in fe and "mean" in fe[key] and "std" in fe[key]
    assert set(fe["seconds"]) == {"locate", "edit", "evaluate"}
    assert "locate_speedup_featureedit_vs_neurons" in doc["ratios"]
    assert fe["prob_before"]["n"] == 2 and fe["prob_before"]["median"] > 0
    assert all(r["prob_after"] is not None for r in doc["per_fact"]["featureedit"])


def test_bench_param_names_a_method_and_a_key() -> None:
    import pytest

    from editing.cli_bench import method_params
    from editing.errors import ConfigError

    got = method_params(
        ["featureedit.refine=none", "featureedit.refine_steps=5", "neurons.neuron_cap=3"]
    )
    assert got == {
        "featureedit": {"refine": "none", "refine_steps": 5},
        "neurons": {"neuron_cap": 3},
    }
    assert method_params(None) == {}
    for bad in ("refine=none", ".refine=none", "featureedit.=1"):
        with pytest.raises(ConfigError):
            method_params([bad])
