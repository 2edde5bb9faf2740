"""``featureedit bench --service`` options: the plan, its command line and the evaluation-set
sweep's worker setting (fast, no stack; :mod:`ops.bench_service.plan`)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from editing.registry import EvalSize
from ops.bench_service.plan import ServiceBenchPlan, command_line, eval_size_env, eval_size_for
from workers.config import WorkerSettings


def _args(**overrides: Any) -> argparse.Namespace:
    values = {
        "model": None,
        "methods": None,
        "fact_counts": "1,10,100",
        "eval_sizes": "50,200,400",
        "publish_modes": "full,delta",
        "workers": 1,
        "throughput_jobs": 4,
    }
    return argparse.Namespace(**(values | overrides))


def test_plan_defaults_and_none() -> None:
    plan = ServiceBenchPlan.from_args(_args())
    assert plan.eval_sizes == (50, 200, 400) and plan.fact_counts == (1, 10, 100)
    assert "--fact-counts 1,10,100 --eval-sizes 50,200,400 --publish-modes full,delta" in (
        command_line(plan)
    )
    assert ServiceBenchPlan.from_args(_args(publish_modes="none")).publish_modes == ()
    only_eval = ServiceBenchPlan.from_args(_args(fact_counts="none", throughput_jobs=0))
    assert only_eval.fact_counts == () and only_eval.eval_sizes == (50, 200, 400)
    assert "--fact-counts none --eval-sizes 50,200,400" in command_line(only_eval)
    assert ServiceBenchPlan.from_args(_args(eval_sizes="None")).eval_sizes == ()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"eval_sizes": "1"}, "--eval-sizes: each size must be between 2"),
        ({"eval_sizes": "50,x"}, "--eval-sizes: expected comma-separated integers"),
        ({"fact_counts": "none", "eval_sizes": "none", "publish_modes": "none"}, "nothing to"),
        ({"publish_modes": "full,zip"}, "--publish-modes: unknown"),
        ({"fact_counts": "0"}, "--fact-counts: each count"),
    ],
)
def test_bad_options_name_the_flag(overrides: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServiceBenchPlan.from_args(_args(**overrides))


def test_eval_sizes_keep_the_default_mix_and_reach_the_worker_as_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from editing.registry import get_entry

    assert eval_size_for(200) == EvalSize(60, 40, 2)  # the service's default set
    assert eval_size_for(50) == EvalSize(15, 10, 2)
    assert eval_size_for(400) == EvalSize(120, 80, 2)
    assert eval_size_for(2) == EvalSize(1, 1, 2)
    for prompts in (2, 3, 50, 51, 199, 400, 20_000):
        size = eval_size_for(prompts)
        assert prompts <= size.max_prompts <= prompts + 2, prompts
    for key, value in eval_size_env(EvalSize(15, 10, 2)).items():
        monkeypatch.setenv(key, value)
    entry = get_entry("demo-small")
    assert WorkerSettings().eval_size(entry) == EvalSize(15, 10, 2)


def test_worker_counts_chunks_and_counts_above_the_world() -> None:
    plan = ServiceBenchPlan.from_args(
        _args(workers="1,2", fact_counts="1,10,100,1000", chunk_facts=50)
    )
    assert plan.workers == (1, 2) and plan.chunk_facts == 50
    assert "--workers 1,2" in command_line(plan) and "--chunk-facts 50" in command_line(plan)
    env = plan.env()
    assert env["FEATUREEDIT_CHUNK_FACTS"] == "50" and env["FEATUREEDIT_MAX_FACTS"] == "1000"
    counts, notes = plan.capped(200)
    assert counts == (1, 10, 100, 200)
    assert notes == [
        "1000 facts asked for, but the demo-small world has only 200 private facts: measured at 200"
    ]
    assert plan.capped(5000) == ((1, 10, 100, 1000), [])
    assert ServiceBenchPlan.from_args(_args(workers=2)).workers == (2,)
    with pytest.raises(ValueError, match="--workers"):
        ServiceBenchPlan.from_args(_args(workers="1,9"))
    with pytest.raises(ValueError, match="--fact-counts"):
        ServiceBenchPlan.from_args(_args(fact_counts="1001"))
