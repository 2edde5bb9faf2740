"""``featureedit bench --service`` results without a stack: the summary of the evaluation-set
sweep and the publish modes, and the tables (fast; :mod:`ops.bench_service.job_times` and
:mod:`ops.bench_service.tables`; the real run is in test_bench_service.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ops.bench_service.job_times import JOB_STAGES, summarize
from ops.bench_service.plan import ServiceBenchPlan, command_line
from ops.bench_service.tables import bench_service_markdown, bench_service_table, growth_rows


def _row(scenario: str, method: str, evaluate: float, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(JOB_STAGES, 0.1)
    row.update(
        scenario=scenario,
        method=method,
        facts=1,
        status="succeeded",
        cold=scenario in ("cold", "eval-warmup"),
        evaluate=evaluate,
        worker_other=0.0,
        finish=0.01,
        locality_set=None,
    )
    row.update(extra)
    row["engine"] = round(sum(row[s] for s in ("baseline", "locate", "edit", "evaluate")), 4)
    row["e2e_server"] = round(row["engine"] + 0.3, 4)
    row["overhead"] = 0.3
    return row


@pytest.fixture
def result() -> dict[str, Any]:
    plan = ServiceBenchPlan(fact_counts=(), eval_sizes=(50, 200), throughput_jobs=0)
    rows = []
    for prompts, fe, nb in ((50, 0.5, 0.6), (200, 2.0, 2.2)):
        set_size = 48 if prompts == 50 else 200  # a world may cap the set
        rows.append(_row("eval-warmup", "featureedit", fe, eval_prompts=prompts))
        for method, evaluate in (("featureedit", fe), ("neurons", nb)):
            rows.append(
                _row("eval-size", method, evaluate, eval_prompts=prompts, locality_set=set_size)
            )
    return {
        "model": "demo-small",
        "command": command_line(plan),
        "rows": rows,
        "summary": summarize(rows, plan),
        "throughput": None,
        "wall_seconds": 12.5,
    }


def test_summary_of_the_eval_sweep(result: dict[str, Any]) -> None:
    s = result["summary"]
    assert s["scaling"] == {} and s["featureedit_vs_neurons"] == {}
    fe = s["eval_growth"]["featureedit"]
    assert list(fe) == ["50", "200"]  # the warm-up jobs are not in it
    assert fe["50"]["locality_set"] == 48 and fe["200"]["evaluate"] == 2.0
    assert fe["50"]["locality_ms_per_added_prompt"] is None
    # baseline 0.1 at both sizes; evaluate 0.5 -> 2.0 for 152 more prompts
    assert fe["200"]["locality_ms_per_added_prompt"] == pytest.approx(1000 * 1.5 / 152, abs=1e-3)
    assert fe["50"]["evaluate_vs_smallest"] == 1.0 and fe["200"]["evaluate_vs_smallest"] == 4.0
    ratios = s["eval_featureedit_vs_neurons"]
    assert ratios["200"]["evaluate_featureedit_over_neurons"] == pytest.approx(2.0 / 2.2, abs=1e-3)
    assert set(ratios["50"]) == {
        "e2e_featureedit_over_neurons",
        "engine_featureedit_over_neurons",
        "evaluate_featureedit_over_neurons",
    }
    assert s["model_load"]["cold_jobs"] == 2 and s["model_load"]["warm_jobs"] == 4


def test_growth_rows_are_by_size_then_method(result: dict[str, Any]) -> None:
    rows = growth_rows(result)
    assert [(r["eval_prompts"], r["method"]) for r in rows] == [
        (50, "featureedit"),
        (50, "neurons"),
        (200, "featureedit"),
        (200, "neurons"),
    ]
    assert growth_rows({"summary": {}}) == []  # a result without the sweep


def test_text_table(result: dict[str, Any]) -> None:
    text = bench_service_table(result)
    assert "eval-warmup 50" in text and "eval-size 200" in text  # job labels carry the size
    assert "growth with the evaluation-set size" in text
    growth = text.split("growth with the evaluation-set size")[1]
    header = growth.splitlines()[1]
    for column in ("prompts", "set", "ms/added prompt", "evaluate ×smallest", "end to end"):
        assert column in header
    assert "evaluation set of 200 prompts: FeatureEdit/neurons end to end" in text
    assert text.rstrip().endswith("wall: 12.5 s")


def test_markdown_tables(result: dict[str, Any]) -> None:
    md = bench_service_markdown(result)
    assert md.startswith("Command: `featureedit bench --service --model demo-small")
    assert "--eval-sizes 50,200" in md
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| prompts | set |"))
    assert lines[head + 1] == "|" + "---|" * 12
    body = lines[head + 2 : head + 6]
    assert body[0].startswith("| 50 | 48 | featureedit |")
    assert body[3].startswith("| 200 | 200 | neurons |")
    assert "- evaluation set of 50 prompts: FeatureEdit/neurons" in md


def test_markdown_of_a_result_without_the_sweep(result: dict[str, Any]) -> None:
    result["summary"].pop("eval_growth")
    result["summary"].pop("eval_featureedit_vs_neurons")
    md = bench_service_markdown(result)
    assert "Growth with the evaluation-set size" not in md


def test_publish_modes_are_compared_full_vs_delta() -> None:
    plan = ServiceBenchPlan(fact_counts=(), eval_sizes=(), throughput_jobs=0)
    rows = []
    for mode, seconds, size in (("full", 0.08, 860_000), ("delta", 0.02, 43_000)):
        for _ in range(2):
            row = _row("publish", "featureedit", 1.0)
            row.update(
                publish=seconds, publish_mode=mode, checkpoint_bytes=size, delta_bytes=43_000
            )
            rows.append(row)
    s = summarize(rows, plan)
    assert s["publish"]["full"]["jobs"] == 2 and s["publish"]["delta"]["publish"] == 0.02
    assert s["publish_delta_over_full"]["publish"] == 0.25
    assert s["publish_delta_over_full"]["checkpoint_bytes"] == 0.05
    result = {"command": command_line(plan), "rows": rows, "summary": s, "throughput": None}
    text = bench_service_table({**result, "wall_seconds": 3.0})
    assert "publish full: 0.08 s, checkpoint 860.0 kB" in text
    assert "publish delta/full: time 0.25, bytes 0.05" in text
    assert "publish delta " in text  # the job rows are labelled with their mode


def test_fact_growth_per_worker_count_with_ratios_and_the_plot(tmp_path: Any) -> None:
    """The growth table: seconds per fact, ratio to one fact (same workers), ratio to one worker
    (same facts), the chunks stage; the log-log PNG written from it."""
    plan = ServiceBenchPlan(fact_counts=(1, 10), eval_sizes=(), workers=(1, 2))
    rows = []
    for workers, seconds in ((1, (2.0, 10.0)), (2, (2.0, 6.0))):
        for facts, e2e in zip((1, 10), seconds, strict=True):
            row = _row("scaling", "featureedit", 1.0, facts=facts, workers=workers)
            row.update(e2e_server=e2e, chunks=4.0 if workers == 2 and facts == 10 else 0.0)
            row["chunked"] = row["chunks"] > 0
            rows.append(row)
    growth = summarize(rows, plan)["fact_growth"]
    by = {(g["workers"], g["facts"]): g for g in growth}
    assert by[(1, 10)]["per_fact"] == 1.0 and by[(1, 10)]["vs_one_fact"] == 5.0
    assert by[(2, 10)]["vs_one_worker"] == 0.6 and by[(2, 10)]["vs_one_fact"] == 3.0
    assert by[(2, 10)]["chunks"] == 4.0 and by[(2, 10)]["chunked"]
    assert by[(2, 1)]["vs_one_worker"] == 1.0
    result = {
        "model": "demo-small",
        "command": command_line(plan),
        "rows": rows,
        "summary": summarize(rows, plan),
        "throughput": None,
        "notes": ["1000 facts asked for, but ..."],
        "wall_seconds": 1.0,
    }
    text = bench_service_table(result)
    assert "growth with the fact count" in text and "1000 facts asked for" in text
    assert "| featureedit | 2 | 10 | True | 6 | 0.6 | 3 | 0.6 |" in bench_service_markdown(result)

    from ops.bench_service.plot import plot_growth

    png = plot_growth(result, tmp_path / "growth.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no fact-count jobs"):
        plot_growth({**result, "summary": {"fact_growth": []}}, tmp_path / "none.png")
