"""Running the service benchmark: a private :class:`~ops.stack.LocalStack`, the jobs submitted
over HTTP and waited for, and the demo-world facts they erase (see the package docstring)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from editing.acceptance import ACCEPT_ALL
from editing.request import MAX_FACTS
from ops.bench_service.job_times import job_row, summarize
from ops.bench_service.plan import (
    PUBLISH_REPEATS,
    ServiceBenchPlan,
    command_line,
    eval_size_env,
    eval_size_for,
)
from service.records import TERMINAL

# Accept every result (editing.acceptance.ACCEPT_ALL) so every job publishes a checkpoint
# (publish is measured too).
POLL_SECONDS = 0.2
# The workers run at normal priority: stage times are what is measured, and on a machine shared
# with other jobs a niced worker (the default, see workers.config) would measure their load.
BENCH_ENV = {"FEATUREEDIT_WORKER_NICE": "0"}


class _Runner:
    """Submit, wait and measure jobs on one stack."""

    def __init__(self, stack: Any, key: str, plan: ServiceBenchPlan, say: Callable) -> None:
        from service.store import FilesystemStore

        self.stack = stack
        self.http = httpx.Client(
            base_url=stack.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.store = FilesystemStore(stack.store_root)
        self.plan = plan
        self.say = say

    def body(
        self, method: str, facts: Sequence[dict[str, str]], publish: str | None = None
    ) -> dict[str, Any]:
        body = {
            "model": self.plan.model,
            "method": method,
            "facts": list(facts),
            "thresholds": ACCEPT_ALL,
        }
        if publish is not None:
            body["publish"] = publish
        return body

    def submit(self, body: dict[str, Any]) -> tuple[str, float]:
        started = time.monotonic()
        response = self.http.post("/v1/erasures", json=body)
        if response.status_code != 202:
            raise RuntimeError(
                f"the API refused a benchmark job: HTTP {response.status_code} {response.text}"
            )
        return response.json()["id"], started

    def wait(self, erasure_id: str, started: float) -> dict[str, Any]:
        deadline = started + self.plan.job_timeout
        while time.monotonic() < deadline:
            doc = self.http.get(f"/v1/erasures/{erasure_id}").json()
            if doc["status"] in TERMINAL:
                return self.row(erasure_id, doc, time.monotonic() - started)
            time.sleep(POLL_SECONDS)
        raise TimeoutError(
            f"erasure {erasure_id} did not finish within {self.plan.job_timeout:.0f} s; see the "
            f"logs under {self.stack.logs}"
        )

    def row(self, erasure_id: str, doc: dict[str, Any], e2e_client: float) -> dict[str, Any]:
        record = self.store.get_erasure(erasure_id)
        if record is None:
            raise RuntimeError(f"erasure {erasure_id} has no record in the stack's store")
        row = job_row(record.model_dump(mode="json"), doc, e2e_client)
        row["id"] = erasure_id
        if doc["status"] == "failed":
            row["error"] = doc.get("error")
        if row["checkpoint_id"]:
            manifest = self.http.get(f"/v1/checkpoints/{row['checkpoint_id']}").json()
            files = manifest.get("files", [])
            row["publish_mode"] = (manifest.get("manifest") or {}).get("publish", "full")
            row["checkpoint_bytes"] = sum(f["size"] for f in files)
            row["delta_bytes"] = sum(f["size"] for f in files if f["name"].startswith("delta/"))
        return row

    def one(
        self,
        label: str,
        method: str,
        facts: Sequence[dict[str, str]],
        publish: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        detail = "".join(f", {k} {v}" for k, v in extra.items())
        detail += f", publish {publish}" if publish else ""
        self.say(f"{label}: {method}, {len(facts)} fact(s){detail}")
        erasure_id, started = self.submit(self.body(method, facts, publish))
        row = self.wait(erasure_id, started)
        row["scenario"] = label
        row.update(extra)
        self.say(
            f"  {row['status']} in {row['e2e_server']} s (queue {row['queue_wait']} s, load "
            f"{row['model_load']} s, engine {row['engine']} s, publish {row['publish']} s)"
        )
        return row

    def burst(
        self, facts: Sequence[dict[str, str]], workers: int, scenario: str = "throughput"
    ) -> dict[str, Any]:
        n = len(facts)
        self.say(f"{scenario}: {n} 1-fact jobs at once on {workers} worker(s)")
        submitted = [self.submit(self.body("featureedit", [f])) for f in facts]
        first = submitted[0][1]
        rows = [self.wait(i, s) for i, s in submitted]
        wall = time.monotonic() - first
        for r in rows:
            r["scenario"] = scenario
            r["workers"] = workers
        waits = [r["queue_wait"] for r in rows if r["queue_wait"] is not None]
        return {
            "jobs": n,
            "workers": workers,
            "wall_seconds": round(wall, 3),
            "jobs_per_minute": round(60 * n / wall, 2) if wall > 0 else None,
            "mean_queue_wait": round(statistics.fmean(waits), 3) if waits else None,
            "max_queue_wait": round(max(waits), 3) if waits else None,
            "rows": rows,
        }

    def close(self) -> None:
        self.http.close()


def pick_facts(model: str, home: Path, n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` private facts of the demo world: every private fact of one subject after another.

    Subjects are shuffled by ``seed``; each subject's e-mail fact comes first (e-mail facts erase
    best, so the 1-fact jobs are real erasures). Whole subjects keep the Locality set non-empty:
    it holds only facts of subjects the request does not name (100 facts of the small world's
    40 people name 20 of them, not nearly all).
    """
    from editing.registry import get_entry
    from editing.world.demo_facts import by_whole_subjects, demo_world_of, request_facts

    world = demo_world_of(get_entry(model, home=home), home, purpose="bench --service")
    return request_facts(by_whole_subjects(world.private_facts(), seed)[:n])


def run_bench_service(
    plan: ServiceBenchPlan,
    source_home: Path,
    root: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the service benchmark on a private stack under ``root``; the result document."""
    from ops.stack import LocalStack, link_worlds

    say = progress or (lambda message: None)
    plan.check()
    wall = time.monotonic()
    facts = pick_facts(plan.model, source_home, MAX_FACTS, plan.seed)  # every private fact
    fact_counts, notes = plan.capped(len(facts))
    for note in notes:
        say(note)
    # the throughput burst (and each worker set's warm-up): other subjects' e-mail facts
    emails = [f for f in facts if f["relation"] == "email"]
    burst = emails[1 : plan.throughput_jobs + 1]
    rows: list[dict[str, Any]] = []
    throughput = None
    with LocalStack(root, model=plan.model, env=BENCH_ENV | plan.env()) as stack:
        link_worlds(stack.home, source_home)
        say(f"private stack under {root}: starting the API")
        stack.start_api()
        runner = _Runner(stack, stack.create_key("bench"), plan, say)
        try:
            if plan.fact_counts or plan.throughput_jobs or plan.publish_modes:
                for k, count in enumerate(plan.workers):
                    say(f"starting {count} worker(s) with the default evaluation set")
                    workers = [stack.start_worker() for _ in range(count)]
                    if k == 0:
                        rows.append(runner.one("cold", plan.methods[0], facts[:1], workers=count))
                    else:  # every worker of the set loads the model before it is measured
                        rows += runner.burst(emails[-count:], count, "warm-up")["rows"]
                    for n in fact_counts:
                        for method in plan.methods:
                            rows.append(runner.one("scaling", method, facts[:n], workers=count))
                    if k == 0:
                        throughput = runner.burst(burst, count) if plan.throughput_jobs else None
                        for mode in plan.publish_modes:
                            for _ in range(PUBLISH_REPEATS):
                                rows.append(
                                    runner.one("publish", "featureedit", facts[:1], publish=mode)
                                )
                    for worker in workers:
                        stack.stop(worker)
            for prompts in plan.eval_sizes:
                rows += _eval_size_jobs(stack, runner, prompts, facts[:1])
        finally:
            runner.close()
    return {
        "model": plan.model,
        "plan": asdict(plan),
        "command": command_line(plan),
        "rows": rows,
        "summary": summarize(rows, plan),
        "throughput": throughput,
        "notes": notes,
        "wall_seconds": round(time.monotonic() - wall, 1),
    }


def _eval_size_jobs(
    stack: Any, runner: _Runner, prompts: int, facts: Sequence[dict[str, str]]
) -> list[dict[str, Any]]:
    """On a fresh worker whose Locality set is ``prompts`` prompts: a warm-up, then each method."""
    size = eval_size_for(prompts)
    runner.say(
        f"evaluation set of {prompts} prompts: a worker with {size.private_facts} private + "
        f"{size.public_facts} public facts x {size.prompts_per_fact} prompts"
    )
    worker = stack.start_worker(env=eval_size_env(size))
    try:
        rows = [runner.one("eval-warmup", runner.plan.methods[0], facts, eval_prompts=prompts)]
        for method in runner.plan.methods:
            rows.append(runner.one("eval-size", method, facts, eval_prompts=prompts))
    finally:
        stack.stop(worker)
    return rows
