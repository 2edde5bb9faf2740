"""``featureedit bench --service`` with tiny settings (1 fact, 1 worker, FeatureEdit only, one
20-prompt evaluation set): the JSON document's structure, and stage times that add up (queue wait
+ worker time fit in the end-to-end time; the worker's stages fit in its total; the first job is
cold, the second warm), and the sweep's worker evaluating on the set size it was given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.bench_service.job_times import JOB_STAGES

pytestmark = pytest.mark.slow

TOLERANCE = 0.05  # seconds: timestamps are in milliseconds, timings rounded to 0.1 ms
PICKUP = 0.5  # seconds: reading the record and writing "running" (inside the worker's total)


@pytest.fixture(scope="module")
def result(fe_home: Path, small_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict:
    keep = tmp_path_factory.mktemp("bench-service")
    cmd = [
        sys.executable,
        "-c",  # not `-m editing.cli`: print_json must see the same module as main()
        "import sys; from editing.cli import main; sys.exit(main())",
        "bench",
        "--service",
        "--fact-counts",
        "1",
        "--eval-sizes",
        "20",
        "--workers",
        "1",
        "--methods",
        "featureedit",
        "--throughput-jobs",
        "0",
        "--keep",
        str(keep),
        "--home",
        str(fe_home),
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (keep / "stderr.txt").write_text(done.stderr)
    assert "cold" in done.stderr  # progress goes to stderr
    return json.loads(done.stdout)


def test_document_structure(result: dict) -> None:
    assert result["model"] == "demo-small"
    assert result["command"].startswith("featureedit bench --service --model demo-small")
    scenarios = [r["scenario"] for r in result["rows"]]
    assert scenarios == ["cold", "scaling", *["publish"] * 6, "eval-warmup", "eval-size"]
    assert result["throughput"] is None
    for row in result["rows"]:
        assert row["status"] in ("succeeded", "rejected", "nothing_to_erase"), row
        for key in (*JOB_STAGES, "engine", "worker_total", "e2e_server", "e2e_client", "overhead"):
            assert isinstance(row[key], float), (key, row)
    summary = result["summary"]
    assert set(summary) >= {"model_load", "scaling", "featureedit_vs_neurons"}
    assert summary["scaling"]["featureedit"]["1"]["e2e_server"] > 0
    assert summary["eval_growth"]["featureedit"]["20"]["evaluate"] > 0


def test_the_sweep_worker_evaluates_on_the_size_it_was_given(result: dict) -> None:
    by_scenario = {r["scenario"]: r for r in result["rows"]}
    assert by_scenario["scaling"]["locality_set"] == 200  # the default set
    assert by_scenario["eval-warmup"]["locality_set"] == 20
    assert by_scenario["eval-size"]["locality_set"] == 20
    assert by_scenario["eval-warmup"]["cold"] and not by_scenario["eval-size"]["cold"]


def test_stage_times_add_up(result: dict) -> None:
    for row in result["rows"]:
        stages = [row[s] for s in JOB_STAGES]
        assert all(v >= 0 for v in stages), row
        worker_stages = sum(row[s] for s in JOB_STAGES[1:])
        assert worker_stages <= row["worker_total"] + TOLERANCE, row
        # the worker's clock starts when it picks the job, a moment before it records "running"
        assert row["queue_wait"] + row["worker_total"] <= row["e2e_server"] + PICKUP, row
        assert row["e2e_server"] <= row["e2e_client"] + TOLERANCE, row
        assert row["overhead"] == pytest.approx(row["e2e_server"] - row["engine"], abs=1e-3)
        # the engine did real work and the service's own share is bounded
        assert row["locate"] > 0 and row["evaluate"] > 0, row
    if all(r["status"] == "succeeded" for r in result["rows"]):
        for r in result["rows"]:
            assert r["publish"] > 0 and r["checkpoint_bytes"] >= r["delta_bytes"] > 0, r
            if r["publish_mode"] == "delta":
                assert r["checkpoint_bytes"] == r["delta_bytes"], r  # the delta alone
            else:
                assert r["checkpoint_bytes"] > r["delta_bytes"], r


def test_full_and_delta_publishing_are_compared(result: dict) -> None:
    modes = [r.get("publish_mode") for r in result["rows"] if r["scenario"] == "publish"]
    assert modes == ["full"] * 3 + ["delta"] * 3
    publish = result["summary"]["publish"]
    assert publish["full"]["jobs"] == publish["delta"]["jobs"] == 3
    ratio = result["summary"]["publish_delta_over_full"]
    assert 0 < ratio["checkpoint_bytes"] < 0.5  # demo-small: ~43 kB of ~860 kB


def test_first_job_is_cold_and_the_next_warm(result: dict) -> None:
    cold, warm = result["rows"][:2]
    assert cold["cold"] and not warm["cold"]
    assert warm["model_load"] < cold["model_load"]
    ml = result["summary"]["model_load"]
    assert ml["cold_jobs"] == 2 and ml["warm_jobs"] == 8  # each worker's first job is cold
