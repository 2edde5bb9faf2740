"""The load generator and its statistics (fast): percentiles, the schedule, busy coverage, and a
real run against the API served by uvicorn on loopback (real Redis, no worker)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from ops.cli import load_verdict
from ops.loadtest import (
    LoadPlan,
    Target,
    covered_share,
    latency_summary,
    outcome,
    percentile,
    run_load,
    running_intervals,
    schedule,
)
from tests.service.conftest import auth, body


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    summary = latency_summary([0.001, 0.002, 0.003, 0.2])
    assert summary["n"] == 4 and summary["p50_ms"] == 2.0 and summary["p99_ms"] == 200.0
    assert summary["max_ms"] == 200.0


def test_schedule_spreads_submissions_evenly() -> None:
    kinds = schedule(20, 5)
    assert kinds.count("submit") == 5 and kinds.count("poll") == 20
    positions = [i for i, k in enumerate(kinds) if k == "submit"]
    assert all(4 <= b - a <= 6 for a, b in itertools.pairwise(positions))
    assert schedule(0, 3) == ["submit"] * 3 and schedule(3, 0) == ["poll"] * 3


def test_outcome_classes() -> None:
    assert [outcome(s) for s in (200, 202, 404, 429, 500, 503, 0)] == [
        "ok",
        "ok",
        "client_error",
        "rate_limited",
        "server_error",
        "server_error",
        "transport_error",
    ]


def test_busy_coverage_from_history() -> None:
    history = [
        {"status": "queued", "at": "2026-01-01T00:00:00.000Z"},
        {"status": "running", "at": "2026-01-01T00:00:10.000Z"},
        {"status": "running", "at": "2026-01-01T00:00:12.000Z"},  # a progress event
        {"status": "succeeded", "at": "2026-01-01T00:00:20.000Z"},
    ]
    spans = running_intervals({"history": history}, now=0.0)
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == pytest.approx(10.0)
    a = spans[0][0]
    assert covered_share(spans, a, a + 10) == pytest.approx(1.0)
    assert covered_share(spans, a - 10, a + 10) == pytest.approx(0.5)
    # overlapping spans are counted once; a still-running one ends at ``now``
    open_spans = running_intervals({"history": history[:2]}, now=a + 5)
    assert covered_share([*spans, *open_spans], a, a + 10) == pytest.approx(1.0)


def test_plan_rejects_unbounded_or_empty_load() -> None:
    for bad in (
        LoadPlan(polls=0, submissions=0),
        LoadPlan(duration=0),
        LoadPlan(concurrency=0),
        LoadPlan(concurrency=1000),
    ):
        with pytest.raises(ValueError):
            bad.check()


def _verdict_report(p99: float, server_errors: int = 0, lost: int = 0) -> dict[str, Any]:
    part = {
        "latency": {"p99_ms": p99},
        "outcomes": {"server_error": server_errors, "transport_error": lost},
    }
    return {"polls": part, "submissions": part, "errors_5xx": 2 * server_errors}


def test_verdict_names_each_failed_bar() -> None:
    assert load_verdict(_verdict_report(20.0), 100) == []
    assert "p99" in load_verdict(_verdict_report(120.0), 100)[0]
    problems = load_verdict(_verdict_report(20.0, server_errors=1, lost=1), 100)
    assert any("5xx" in p for p in problems) and any("no answer" in p for p in problems)


def test_run_load_against_the_live_api(live_server: str, keys: dict[str, str]) -> None:
    """Real HTTP, real Redis: polls and submissions are counted, 404s and 429s apart."""
    with httpx.Client(base_url=live_server) as http:
        r = http.post("/v1/erasures", json=body(), headers=auth(keys["acme"]))
        assert r.status_code == 202, r.text
        own = r.json()["id"]
    targets = [Target(own, keys["acme"]), Target("er_000000000000ffffffffffff", keys["acme"])]

    def submission(i: int) -> tuple[dict[str, Any], str]:
        return body(), keys["globex"]

    plan = LoadPlan(polls=60, submissions=6, duration=1.0, concurrency=4)
    report = run_load(live_server, targets, submission, plan)
    polls, subs = report["polls"], report["submissions"]
    assert report["sent"] == 66 and report["skipped"] == 0
    assert sum(polls["outcomes"].values()) == 60 and sum(subs["outcomes"].values()) == 6
    assert subs["outcomes"]["ok"] == 6 and report["accepted_submissions"] == 6
    # the unknown id answers 404 (a client error, never a 5xx)
    assert polls["outcomes"]["client_error"] >= 1 and polls["statuses"].get("404", 0) >= 1
    assert report["errors_5xx"] == 0 and polls["outcomes"]["transport_error"] == 0
    assert (
        polls["latency"]["n"] == 60 and 0 < polls["latency"]["p50_ms"] <= polls["latency"]["p99_ms"]
    )
    assert report["wall_seconds"] >= 0.9  # spread over the planned second, not sent at once


def test_run_load_counts_rate_limited_requests_apart(
    live_server: str, keys: dict[str, str], settings: Any
) -> None:
    """With a write limit of 60 per window, 70 submissions from one tenant meet 429s."""
    targets = [Target("er_000000000000ffffffffffff", keys["acme"])]
    plan = LoadPlan(polls=0, submissions=70, duration=0.5, concurrency=4)
    report = run_load(live_server, targets, lambda i: (body(), keys["acme"]), plan)
    subs = report["submissions"]["outcomes"]
    assert subs["rate_limited"] >= 70 - settings.rate_limit_write
    assert subs["ok"] + subs["rate_limited"] == 70
    assert report["submissions"]["latency"]["n"] == subs["ok"]  # 429s are not in the latency


def test_perf_commands_are_one_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench --service`` comes from the featureedit.bench entry point; bad options exit 2."""
    from editing.cli import build_parser, main
    from ops.cli import cmd_bench_service, cmd_load

    args = build_parser().parse_args(["bench", "--service", "--fact-counts", "1,10"])
    assert args.service and args.bench_extensions["service"] is cmd_bench_service
    assert build_parser().parse_args(["load", "--polls", "5"]).func is cmd_load
    assert main(["bench", "--service", "--fact-counts", "1,x", "-q"]) == 2
    assert "--fact-counts" in capsys.readouterr().err
    assert main(["bench", "--service", "--fact-counts", "1001", "-q"]) == 2
    assert "between 1 and 1000" in capsys.readouterr().err
    assert main(["load", "--concurrency", "0", "-q"]) == 2
    assert "--concurrency" in capsys.readouterr().err
