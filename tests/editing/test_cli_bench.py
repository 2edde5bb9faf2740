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


def test_bench_over_seeds_reports_each_run_and_the_spread(capsys) -> None:
    argv = ["bench", "--model", "demo-small", "--facts", "1", "--methods", "featureedit"]
    argv += ["--seeds", "0,1", "--leak-samples", "1", "--param", 'featureedit.refine="none"']
    assert main([*argv, "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["seeds"] == [0, 1] and [r["seed"] for r in doc["runs"]] == [0, 1]
    rows = [r["per_fact"]["featureedit"][0] for r in doc["runs"]]
    assert rows[0]["relation"] == rows[1]["relation"]  # the round robin starts at one relation
    assert rows[0]["prob_before"] != rows[1]["prob_before"]  # but another seed picks another fact
    locality = doc["across_seeds"]["featureedit"]["locality"]
    per_seed = [r["summary"]["featureedit"]["locality"]["mean"] for r in doc["runs"]]
    assert locality["per_seed"] == per_seed
    assert locality["min"] <= locality["mean"] <= locality["max"]
    assert 0 <= doc["across_seeds"]["featureedit"]["accepted_share"]["mean"] <= 1
    assert main([*argv, "--markdown", "-q"]) == 0
    text = capsys.readouterr().out
    assert "| locality |" in text and "seeds [0, 1]" in text


def test_across_seeds_spreads_the_per_seed_means_and_attacks() -> None:
    from editing.bench import METRICS, across_seeds

    def run(locality: float, success: float) -> dict:
        summary = {name: {"mean": None} for name in (*METRICS, "prob_before", "prob_after")}
        summary["locality"] = {"mean": locality}
        summary["accepted"] = 1
        summary["attacks"] = {"sampled": {"after": {"success": {"any": success}, "values": {}}}}
        return {"facts": 2, "summary": {"featureedit": summary}}

    out = across_seeds([run(0.9, 0.0), run(1.0, 0.5)])["featureedit"]
    assert out["locality"] == {
        "mean": 0.95,
        "std": 0.05,
        "min": 0.9,
        "max": 1.0,
        "per_seed": [0.9, 1.0],
    }
    assert out["reliability"]["mean"] is None
    assert out["accepted_share"]["mean"] == 0.5
    assert out["attacks"]["sampled"]["success"]["any"]["max"] == 0.5


def test_bad_seeds_are_a_clear_error(capsys) -> None:
    assert main(["bench", "--model", "demo-small", "--seeds", "a,b", "-q"]) != 0
    err = capsys.readouterr().err
    assert "--seeds" in err and "Traceback" not in err
