"""Service benchmark: erasure jobs end to end through the real API and real RQ workers.

:func:`run_bench_service` (``featureedit bench --service``) starts a private
:class:`~ops.stack.LocalStack` on loopback (own Redis, ``serve --no-worker``, N ``worker``
processes, a fresh store), submits erasures over HTTP and waits for each, then splits every job's
latency into stages from two sources that never see a secret:

* the record's history (API-side timestamps): ``queue_wait`` = first ``running`` event minus
  ``created_at``; ``e2e_server`` = terminal event minus ``created_at``;
* the worker's ``timings`` (``ErasurePublic.timings``): ``model_load`` (``model_cached`` says
  whether the worker already held the model: the first job of a worker is *cold*, later ones
  *warm*, see :mod:`workers.cache`), ``baseline`` (the unedited model's metrics), ``locate``,
  ``edit``, ``evaluate``, ``publish`` (a full checkpoint: the edited safetensors and the delta;
  a delta-only one: the delta; sizes from the checkpoint manifest) and ``total``.

``engine`` = baseline + locate + edit + evaluate (what :func:`editing.erase.run_erasure`
computes); ``overhead`` = ``e2e_server`` - ``engine`` (queueing, model load, publishing and the
service's bookkeeping). ``e2e_client`` adds the client's polling resolution (0.2 s).

Jobs, one at a time unless noted: the first job (FeatureEdit, 1 fact) is cold; then, per fact
count (1, 10, 100 by default) and per method (FeatureEdit and the neuron baseline, same facts),
one warm job; then ``throughput_jobs`` 1-fact jobs submitted at once (jobs per minute with the
stack's workers); then, per publish mode (``publish_modes``: full and delta), ``publish_repeats``
1-fact FeatureEdit jobs asking for that mode (publish time and checkpoint bytes, full vs delta).
Then the evaluation-set sweep: per Locality set size (``eval_sizes``, in
prompts; 50, 200, 400 by default; 200 is the service's default set) a fresh worker started with
that size as its operator setting (``FEATUREEDIT_WORKER_LOCALITY_*``, see
:class:`workers.config.WorkerSettings`; requests cannot set it), a cold warm-up job, then one
1-fact job per method; the set size each job really evaluated on is the report's
``metrics.locality.set_size`` (a world with fewer facts of a kind caps it).

Acceptance thresholds are set to accept everything so each job publishes (the publish stage is
part of what is measured); metrics are reported but are not the point here (``featureedit bench``
is the quality benchmark).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from service.records import TERMINAL

if TYPE_CHECKING:
    from editing.registry import EvalSize

STAGES = ("queue_wait", "model_load", "baseline", "locate", "edit", "evaluate", "publish")
ENGINE_STAGES = ("baseline", "locate", "edit", "evaluate")
# Accept every result so every job publishes a checkpoint (publish is measured too).
ACCEPT_ALL = {
    "min_reliability": 0.0,
    "min_generalization": 0.0,
    "min_locality": 0.0,
    "max_delta_ppl": 1e9,
}
POLL_SECONDS = 0.2
# The workers run at normal priority: stage times are what is measured, and on a machine shared
# with other jobs a niced worker (the default, see workers.config) would measure their load.
BENCH_ENV = {"FEATUREEDIT_WORKER_NICE": "0"}
# The Locality set of the evaluation-size sweep keeps the default set's mix: 60 % private facts,
# 40 % public, 2 prompts each (200 prompts = 60 + 40 facts x 2).
EVAL_PROMPTS_PER_FACT = 2
EVAL_PRIVATE_SHARE = 0.6
MAX_EVAL_PROMPTS = 20_000
PUBLISH_REPEATS = 3  # jobs per publish mode (a publish of demo-small takes well under 0.1 s)


@dataclass(frozen=True)
class ServiceBenchPlan:
    """What to measure."""

    model: str = "demo-small"
    methods: tuple[str, ...] = ("featureedit", "neurons")
    fact_counts: tuple[int, ...] = (1, 10, 100)
    eval_sizes: tuple[int, ...] = (50, 200, 400)  # Locality prompts; () skips the sweep
    publish_modes: tuple[str, ...] = ("full", "delta")  # () skips the publish comparison
    workers: int = 1
    throughput_jobs: int = 4
    job_timeout: float = 1800.0  # seconds a single job may take before the bench gives up
    seed: int = 0

    def check(self) -> None:
        """ValueError naming the bad option."""
        from editing.methods import method_names
        from editing.request import MAX_FACTS, PUBLISH_MODES

        bad = [m for m in self.methods if m not in method_names()]
        if bad or not self.methods:
            raise ValueError(f"--methods: unknown {bad}; choose from {method_names()}")
        if any(not 1 <= n <= MAX_FACTS for n in self.fact_counts):
            raise ValueError(f"--fact-counts: each count must be between 1 and {MAX_FACTS}")
        if any(not 2 <= n <= MAX_EVAL_PROMPTS for n in self.eval_sizes):
            raise ValueError(f"--eval-sizes: each size must be between 2 and {MAX_EVAL_PROMPTS}")
        bad_modes = [m for m in self.publish_modes if m not in PUBLISH_MODES]
        if bad_modes:
            raise ValueError(
                f"--publish-modes: unknown {bad_modes}; choose from {list(PUBLISH_MODES)}"
            )
        if not (self.fact_counts or self.eval_sizes or self.publish_modes):
            raise ValueError(
                "--fact-counts, --eval-sizes and --publish-modes are all none: nothing to measure"
            )
        if not 1 <= self.workers <= 8:
            raise ValueError(f"--workers must be between 1 and 8, got {self.workers}")
        if not 0 <= self.throughput_jobs <= 100:
            raise ValueError("--throughput-jobs must be between 0 and 100")

    @classmethod
    def from_args(cls, args: Any) -> ServiceBenchPlan:
        """The plan of ``featureedit bench --service`` options (ValueError naming the flag)."""

        def names(text: str | None, default: str = "") -> tuple[str, ...]:
            text = default if text is None else text
            if text.strip().lower() == "none":
                return ()
            return tuple(m for m in (x.strip() for x in text.split(",")) if m)

        def counts(text: str, flag: str) -> tuple[int, ...]:
            try:
                return tuple(int(x) for x in names(text))
            except ValueError:
                raise ValueError(
                    f"{flag}: expected comma-separated integers, got {text!r}"
                ) from None

        methods = names(args.methods, "featureedit,neurons")
        plan = cls(
            model=args.model or "demo-small",
            methods=methods,
            fact_counts=counts(args.fact_counts, "--fact-counts"),
            eval_sizes=counts(args.eval_sizes, "--eval-sizes"),
            publish_modes=names(getattr(args, "publish_modes", None), "full,delta"),
            workers=args.workers,
            throughput_jobs=args.throughput_jobs,
        )
        plan.check()
        return plan


def eval_size_for(prompts: int) -> EvalSize:
    """The Locality set size of ``prompts`` prompts with the default set's mix (see above)."""
    from editing.registry import EvalSize

    facts = max(2, math.ceil(prompts / EVAL_PROMPTS_PER_FACT))
    private = min(facts - 1, max(1, round(facts * EVAL_PRIVATE_SHARE)))
    return EvalSize(private, facts - private, EVAL_PROMPTS_PER_FACT)


def eval_size_env(size: EvalSize) -> dict[str, str]:
    """The worker environment that makes ``size`` its operator setting (all models)."""
    return {f"FEATUREEDIT_WORKER_{k.upper()}": str(v) for k, v in size.to_dict().items()}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def job_row(record: dict[str, Any], public: dict[str, Any], e2e_client: float) -> dict[str, Any]:
    """One job's stage times (seconds) from its record (with history) and public document."""
    created = _epoch(record["created_at"])
    history = record.get("history", [])
    running = next((e for e in history if e["status"] == "running"), None)
    end = next((e for e in reversed(history) if e["status"] in TERMINAL), None)
    t = public.get("timings") or {}
    row: dict[str, Any] = {
        "status": public["status"],
        "facts": len(public.get("facts", [])),
        "method": public["method"],
        "cold": not bool(t.get("model_cached", 1.0)),
        "queue_wait": round(_epoch(running["at"]) - created, 4) if running else None,
    }
    for stage in STAGES[1:]:
        row[stage] = round(float(t.get(stage, 0.0)), 4)
    row["worker_total"] = round(float(t.get("total", 0.0)), 4)
    # inside the job but in no stage (e.g. the first job's imports), and after ``total``
    # (report, terminal record write) until the terminal event
    row["worker_other"] = round(row["worker_total"] - sum(row[s] for s in STAGES[1:]), 4)
    row["engine"] = round(sum(row[s] for s in ENGINE_STAGES), 4)
    row["e2e_server"] = round(_epoch(end["at"]) - created, 4) if end else None
    row["e2e_client"] = round(e2e_client, 4)
    row["finish"] = (
        None
        if row["e2e_server"] is None or row["queue_wait"] is None
        else round(row["e2e_server"] - row["queue_wait"] - row["worker_total"], 4)
    )
    row["overhead"] = (
        None if row["e2e_server"] is None else round(row["e2e_server"] - row["engine"], 4)
    )
    row["overhead_share"] = (
        None if not row["e2e_server"] else round(row["overhead"] / row["e2e_server"], 3)
    )
    row["checkpoint_id"] = public.get("checkpoint_id")
    metrics = public.get("metrics") or {}
    for name in ("reliability", "generalization", "locality"):
        v = metrics.get(name)
        row[name] = v.get("value") if isinstance(v, dict) else v
    locality = metrics.get("locality")
    row["locality_set"] = locality.get("set_size") if isinstance(locality, dict) else None
    return row


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

    def burst(self, facts: Sequence[dict[str, str]]) -> dict[str, Any]:
        n = len(facts)
        self.say(f"throughput: {n} 1-fact jobs at once on {self.plan.workers} worker(s)")
        submitted = [self.submit(self.body("featureedit", [f])) for f in facts]
        first = submitted[0][1]
        rows = [self.wait(i, s) for i, s in submitted]
        wall = time.monotonic() - first
        for r in rows:
            r["scenario"] = "throughput"
        waits = [r["queue_wait"] for r in rows if r["queue_wait"] is not None]
        return {
            "jobs": n,
            "workers": self.plan.workers,
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
    from editing.world.build import load_world

    entry = get_entry(model, home=home)
    if not entry.is_demo:
        raise ValueError(f"bench --service picks demo-world facts; {model!r} is not a demo model")
    world = load_world(entry.demo_size or "default", home, progress=False)
    by_subject: dict[str, list[Any]] = {}
    for f in world.private_facts():
        by_subject.setdefault(f.subject, []).append(f)
    subjects = sorted(by_subject)
    random.Random(seed).shuffle(subjects)
    picked = [
        f
        for subject in subjects
        for f in sorted(by_subject[subject], key=lambda f: (f.relation != "email", f.relation))
    ]
    return [{"subject": f.subject, "relation": f.relation, "target": f.target} for f in picked[:n]]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarize(rows: list[dict[str, Any]], plan: ServiceBenchPlan) -> dict[str, Any]:
    """Cold vs warm model load, per-fact-count scaling, method ratios, overhead shares."""
    cold = [r["model_load"] for r in rows if r["cold"]]
    warm = [r["model_load"] for r in rows if not r["cold"]]
    out: dict[str, Any] = {
        "model_load": {
            "cold_seconds": round(statistics.fmean(cold), 4) if cold else None,
            "warm_seconds": round(statistics.fmean(warm), 4) if warm else None,
            "cold_jobs": len(cold),
            "warm_jobs": len(warm),
        }
    }
    scaling = _by_method(rows, plan.methods, "scaling", "facts", plan.fact_counts)
    for per_n in scaling.values():
        for n, stats in per_n.items():
            stats["engine_per_fact"] = round(stats["engine"] / int(n), 4)
    out["scaling"] = scaling
    out["featureedit_vs_neurons"] = _method_ratios(scaling, ("e2e_server", "engine", "locate"))
    growth = _by_method(rows, plan.methods, "eval-size", "eval_prompts", plan.eval_sizes)
    for per_size in growth.values():
        smallest = next(iter(per_size.values()))
        for stats in per_size.values():
            stats["evaluate_vs_smallest"] = _ratio(stats["evaluate"], smallest["evaluate"])
            # baseline and evaluate each score the Locality set once (before, after the edit);
            # the rest of both (the request's own prompts, perplexity) does not depend on it
            added = (stats["locality_set"] or 0) - (smallest["locality_set"] or 0)
            scoring = stats["baseline"] + stats["evaluate"]
            stats["locality_ms_per_added_prompt"] = (
                round(1000 * (scoring - smallest["baseline"] - smallest["evaluate"]) / added, 3)
                if added > 0
                else None
            )
    out["publish"] = _publish_modes(rows, plan.publish_modes)
    full, delta = out["publish"].get("full"), out["publish"].get("delta")
    out["publish_delta_over_full"] = (
        {k: _ratio(delta[k], full[k]) for k in ("publish", "checkpoint_bytes", "e2e_server")}
        if full and delta
        else {}
    )
    out["eval_growth"] = growth
    out["eval_featureedit_vs_neurons"] = _method_ratios(
        growth, ("e2e_server", "engine", "evaluate")
    )
    return out


def _publish_modes(rows: list[dict[str, Any]], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per publish mode: the mean publish seconds, checkpoint bytes and end to end of its jobs."""
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        jobs = [r for r in rows if r["scenario"] == "publish" and r.get("publish_mode") == mode]
        if jobs:
            out[mode] = {"jobs": len(jobs)} | {
                k: round(statistics.fmean(r[k] for r in jobs), 4)
                for k in ("publish", "checkpoint_bytes", "delta_bytes", "e2e_server", "overhead")
            }
    return out


def _by_method(
    rows: list[dict[str, Any]],
    methods: Sequence[str],
    scenario: str,
    key: str,
    values: Sequence[int],
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {str(value): stage times}}`` of the first ``scenario`` row per method, value."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        for value in values:
            match = [
                r
                for r in rows
                if r["scenario"] == scenario and r["method"] == method and r.get(key) == value
            ]
            if match:
                r = match[0]
                out.setdefault(method, {})[str(value)] = {
                    k: r[k] for k in (*STAGES, "engine", "e2e_server", "overhead", "locality_set")
                }
    return out


def _method_ratios(
    table: dict[str, dict[str, dict[str, Any]]], keys: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """Per value of ``table`` (see :func:`_by_method`): FeatureEdit / neurons of each key."""
    ratios: dict[str, dict[str, float | None]] = {}
    fe_all, nb_all = table.get("featureedit", {}), table.get("neurons", {})
    for n, fe in fe_all.items():
        nb = nb_all.get(n)
        if nb is not None:
            ratios[n] = {
                f"{k.removesuffix('_server')}_featureedit_over_neurons": _ratio(fe[k], nb[k])
                for k in keys
            }
    return ratios


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
    most = max((*plan.fact_counts, 1))
    facts = pick_facts(
        plan.model, source_home, max(most, 5 * (plan.throughput_jobs + 1)), plan.seed
    )
    # the throughput burst: other subjects' e-mail facts (one per subject)
    burst = [f for f in facts if f["relation"] == "email"][1 : plan.throughput_jobs + 1]
    if len(facts) < most:
        raise ValueError(
            f"the {plan.model} world has only {len(facts)} private facts; lower --fact-counts"
        )
    rows: list[dict[str, Any]] = []
    throughput = None
    with LocalStack(root, model=plan.model, env=BENCH_ENV) as stack:
        link_worlds(stack.home, source_home)
        say(f"private stack under {root}: starting the API")
        stack.start_api()
        runner = _Runner(stack, stack.create_key("bench"), plan, say)
        try:
            if plan.fact_counts or plan.throughput_jobs or plan.publish_modes:
                say(f"starting {plan.workers} worker(s) with the default evaluation set")
                workers = [stack.start_worker() for _ in range(plan.workers)]
                rows.append(runner.one("cold", plan.methods[0], facts[:1]))
                for n in plan.fact_counts:
                    for method in plan.methods:
                        rows.append(runner.one("scaling", method, facts[:n]))
                throughput = runner.burst(burst) if plan.throughput_jobs else None
                for mode in plan.publish_modes:
                    for _ in range(PUBLISH_REPEATS):
                        rows.append(runner.one("publish", "featureedit", facts[:1], publish=mode))
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


def _csv(values: Sequence[int | str]) -> str:
    return ",".join(map(str, values)) or "none"


def command_line(plan: ServiceBenchPlan) -> str:
    """The ``featureedit bench --service`` command line that reproduces ``plan``."""
    return (
        f"featureedit bench --service --model {plan.model} --methods {','.join(plan.methods)} "
        f"--fact-counts {_csv(plan.fact_counts)} --eval-sizes {_csv(plan.eval_sizes)} "
        f"--publish-modes {_csv(plan.publish_modes)} "
        f"--workers {plan.workers} --throughput-jobs {plan.throughput_jobs}"
    )


# ----------------------------------------------------------------------------- output
_COLUMNS = (
    ("scenario", "job"),
    ("method", "method"),
    ("facts", "facts"),
    ("status", "status"),
    ("queue_wait", "queue"),
    ("model_load", "load"),
    ("baseline", "baseline"),
    ("locate", "locate"),
    ("edit", "edit"),
    ("evaluate", "evaluate"),
    ("publish", "publish"),
    ("worker_other", "other"),
    ("finish", "finish"),
    ("engine", "engine"),
    ("e2e_server", "end to end"),
    ("overhead", "overhead"),
)


# The evaluation-set sweep's table: one row per size and method (from the summary).
_GROWTH_COLUMNS = (
    ("eval_prompts", "prompts"),
    ("locality_set", "set"),
    ("method", "method"),
    ("baseline", "baseline"),
    ("locate", "locate"),
    ("edit", "edit"),
    ("evaluate", "evaluate"),
    ("evaluate_vs_smallest", "evaluate ×smallest"),
    ("locality_ms_per_added_prompt", "ms/added prompt"),
    ("engine", "engine"),
    ("e2e_server", "end to end"),
    ("overhead", "overhead"),
)


def _job_label(row: dict[str, Any]) -> str:
    if row["scenario"] == "publish":
        return f"publish {row.get('publish_mode')}"
    prompts = row.get("eval_prompts")
    return row["scenario"] if prompts is None else f"{row['scenario']} {prompts}"


def _cells(row: dict[str, Any], columns: Sequence[tuple[str, str]] = _COLUMNS) -> list[Any]:
    return [_job_label(row) if k == "scenario" else row.get(k) for k, _ in columns]


def growth_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation-set sweep as rows (prompts asked for, set evaluated, method, seconds)."""
    growth = result["summary"].get("eval_growth") or {}
    rows = [
        {"eval_prompts": int(n), "method": method, **stats}
        for method, per_size in growth.items()
        for n, stats in per_size.items()
    ]
    return sorted(rows, key=lambda r: r["eval_prompts"])  # stable: methods in plan order


def _md_cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(
    columns: Sequence[tuple[str, str]], rows: list[dict[str, Any]], markdown: bool
) -> list[str]:
    """``rows`` as a plain-text or Markdown table (lines)."""
    from editing.cli import format_table

    head = [h for _, h in columns]
    if not markdown:
        return format_table(head, [_cells(r, columns) for r in rows]).splitlines()
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(_md_cell(v) for v in _cells(r, columns)) + " |" for r in rows]


def _job_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result["rows"] + ((result["throughput"] or {}).get("rows") or [])


def bench_service_table(result: dict[str, Any]) -> str:
    """Plain-text tables of a result (seconds)."""
    lines = [*_table(_COLUMNS, _job_rows(result), markdown=False), ""]
    growth = growth_rows(result)
    if growth:
        lines += ["growth with the evaluation-set size (1 fact, warm):"]
        lines += [*_table(_GROWTH_COLUMNS, growth, markdown=False), ""]
    lines += _summary_lines(result)
    return "\n".join(lines)


def _summary_lines(result: dict[str, Any]) -> list[str]:
    s = result["summary"]
    ml = s["model_load"]
    lines = [
        f"model load: cold {ml['cold_seconds']} s ({ml['cold_jobs']} job), warm "
        f"{ml['warm_seconds']} s ({ml['warm_jobs']} jobs)"
    ]
    for n, r in s["featureedit_vs_neurons"].items():
        lines.append(
            f"{n} fact(s): FeatureEdit/neurons end to end {r['e2e_featureedit_over_neurons']}, "
            f"engine {r['engine_featureedit_over_neurons']}, locate "
            f"{r['locate_featureedit_over_neurons']}"
        )
    for n, r in (s.get("eval_featureedit_vs_neurons") or {}).items():
        lines.append(
            f"evaluation set of {n} prompts: FeatureEdit/neurons end to end "
            f"{r['e2e_featureedit_over_neurons']}, engine {r['engine_featureedit_over_neurons']}, "
            f"evaluate {r['evaluate_featureedit_over_neurons']}"
        )
    publish = s.get("publish") or {}
    for mode, p in publish.items():
        lines.append(
            f"publish {mode}: {p['publish']} s, checkpoint {p['checkpoint_bytes'] / 1e3:.1f} kB "
            f"(mean of {p['jobs']} 1-fact jobs; end to end {p['e2e_server']} s)"
        )
    ratio = s.get("publish_delta_over_full") or {}
    if ratio:
        lines.append(
            f"publish delta/full: time {ratio['publish']}, bytes {ratio['checkpoint_bytes']}, "
            f"end to end {ratio['e2e_server']}"
        )
    t = result["throughput"]
    if t:
        lines.append(
            f"throughput: {t['jobs']} 1-fact jobs on {t['workers']} worker(s) in "
            f"{t['wall_seconds']} s = {t['jobs_per_minute']} jobs/min (mean queue wait "
            f"{t['mean_queue_wait']} s, max {t['max_queue_wait']} s)"
        )
    lines.append(f"wall: {result['wall_seconds']} s")
    return lines


def bench_service_markdown(result: dict[str, Any]) -> str:
    """A Markdown section for ``docs/benchmarks.md`` (the command line included)."""
    rows = _job_rows(result)
    out = [
        f"Command: `{result['command']} --markdown` ({result['wall_seconds']} s wall).",
        "",
        "Seconds per job. *queue*: submitted → a worker starts it; *load*: model load (cold on a "
        "worker's first job, warm after); *engine* = baseline + locate + edit + evaluate; "
        "*other*: inside the job but in no stage (the first job's imports); *finish*: after the "
        "job's total (report, terminal write); *overhead* = end to end − engine.",
        "",
        *_table(_COLUMNS, rows, markdown=True),
    ]
    growth = growth_rows(result)
    if growth:
        out += [
            "",
            "Growth with the evaluation-set size (1-fact jobs on a warm worker started with the "
            "size; *prompts*: the size asked for; *set*: the Locality prompts evaluated, capped "
            "by the world's facts; *evaluate ×smallest*: evaluate over the smallest size's; "
            "*ms/added prompt*: (baseline + evaluate) over the smallest size's, per added prompt "
            "— both stages score the set once):",
            "",
            *_table(_GROWTH_COLUMNS, growth, markdown=True),
        ]
    out += [""] + [f"- {line}" for line in _summary_lines(result)]
    sizes = [r for r in rows if r.get("checkpoint_bytes") and r.get("publish_mode") != "delta"]
    if sizes:
        r = sizes[0]
        out.append(
            f"- publish writes the full checkpoint ({r['checkpoint_bytes'] / 1e6:.2f} MB) and its "
            f"delta ({r['delta_bytes'] / 1e3:.1f} kB of it) for {r['facts']} fact(s)"
        )
    return "\n".join(out)
