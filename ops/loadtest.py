"""A bounded load test of the HTTP API while a worker is busy: latency percentiles and errors.

:func:`run_load` sends a fixed number of status polls (``GET /v1/erasures/{id}``) and submissions
(``POST /v1/erasures``) to a running API, spread evenly over a target duration by a bounded pool of
client threads (one keep-alive ``httpx.Client`` each), and reports p50/p95/p99/max latency per kind
and every outcome class: 2xx, 429 (the rate limiter; counted apart, not as errors), other 4xx, 5xx
and transport errors. Everything is bounded: the number of requests, the threads, each request's
timeout and the whole run (``hard_deadline``; requests not sent by then are counted as skipped).

:func:`run_load_test` is the whole exercise on a private :class:`~ops.stack.LocalStack`
(``featureedit load``): its own Redis, the API (``serve --no-worker``) and one worker on loopback,
API keys for a few tenants (submissions are spread over them so the per-tenant write limit is not
what is measured), real demo-world facts as submissions (so the worker does real erasures), and a
warm-up that waits until the worker is running a job before the measured window opens. The report
says how much of the window the worker was busy (from the records' ``running`` and terminal
events). Secrets: the load's targets are fictional demo-world facts and never printed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.records import TERMINAL, epoch_of

POLL = "poll"
SUBMIT = "submit"
OUTCOMES = ("ok", "rate_limited", "client_error", "server_error", "transport_error")


@dataclass(frozen=True)
class LoadPlan:
    """How much load, how fast, how bounded."""

    polls: int = 2000
    submissions: int = 200
    duration: float = 60.0  # seconds over which the requests are spread
    concurrency: int = 8  # client threads
    timeout: float = 10.0  # per request, seconds
    seed: int = 0

    @property
    def hard_deadline(self) -> float:
        """Seconds after which no further request is sent (the run is bounded in time)."""
        return 2 * self.duration + 30

    def check(self) -> None:
        """ValueError naming the bad field (counts must be >= 0, at least one request, ...)."""
        if self.polls < 0 or self.submissions < 0 or self.polls + self.submissions == 0:
            raise ValueError("give at least one request: --polls and --submissions are >= 0")
        if self.duration <= 0 or self.timeout <= 0:
            raise ValueError("--duration and --timeout must be positive (seconds)")
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"--concurrency must be between 1 and 256, got {self.concurrency}")


@dataclass
class Sample:
    """One request: its kind, HTTP status (0 for a transport error) and latency in seconds."""

    kind: str
    status: int
    seconds: float


@dataclass
class Target:
    """An erasure the load may poll, with the key of the tenant that owns it."""

    erasure_id: str
    key: str


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """``{"n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}`` of latencies in seconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "n": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p95_ms": ms(percentile(seconds, 95)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def outcome(status: int) -> str:
    """The outcome class of an HTTP status (0 = no response)."""
    if status == 0:
        return "transport_error"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


def schedule(polls: int, submissions: int) -> list[str]:
    """The request kinds in sending order: submissions spread evenly among the polls."""
    total = polls + submissions
    kinds = []
    sent_submissions = 0
    for i in range(total):
        # Bresenham: the i-th slot is a submission when the running share falls behind
        due = (i + 1) * submissions // total if total else 0
        if due > sent_submissions:
            kinds.append(SUBMIT)
            sent_submissions += 1
        else:
            kinds.append(POLL)
    return kinds


def run_load(
    base_url: str,
    targets: Sequence[Target],
    submit_body: Callable[[int], tuple[dict[str, Any], str]],
    plan: LoadPlan,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Send the plan's requests to ``base_url``; return latency summaries and outcome counts.

    ``targets`` are erasures to poll (submitted ones are added as they are accepted);
    ``submit_body(i)`` gives the ``i``-th submission's JSON body and the API key to send it with.
    """
    plan.check()
    if plan.polls and not targets:
        raise ValueError("status polls need at least one erasure to poll (targets is empty)")
    kinds = schedule(plan.polls, plan.submissions)
    pool = list(targets)
    pool_lock = threading.Lock()
    rng = random.Random(plan.seed)
    samples: list[Sample] = []
    samples_lock = threading.Lock()
    next_index = 0
    index_lock = threading.Lock()
    interval = plan.duration / len(kinds)
    started = time.monotonic()
    deadline = started + plan.hard_deadline
    skipped = 0

    def take() -> int | None:
        nonlocal next_index, skipped
        with index_lock:
            if next_index >= len(kinds):
                return None
            if time.monotonic() > deadline:
                skipped += len(kinds) - next_index
                next_index = len(kinds)
                return None
            i = next_index
            next_index += 1
            return i

    def one(http: httpx.Client, i: int) -> Sample:
        if kinds[i] == SUBMIT:
            body, key = submit_body(i)
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"load-{i}"}
            t = time.perf_counter()
            try:
                response = http.post("/v1/erasures", json=body, headers=headers)
            except httpx.HTTPError:
                return Sample(SUBMIT, 0, time.perf_counter() - t)
            seconds = time.perf_counter() - t
            if response.status_code in (200, 202):
                with pool_lock:
                    pool.append(Target(response.json()["id"], key))
            return Sample(SUBMIT, response.status_code, seconds)
        with pool_lock:
            target = pool[rng.randrange(len(pool))]
        headers = {"Authorization": f"Bearer {target.key}"}
        t = time.perf_counter()
        try:
            response = http.get(f"/v1/erasures/{target.erasure_id}", headers=headers)
        except httpx.HTTPError:
            return Sample(POLL, 0, time.perf_counter() - t)
        return Sample(POLL, response.status_code, time.perf_counter() - t)

    def client_thread() -> None:
        with httpx.Client(base_url=base_url, timeout=plan.timeout) as http:
            while (i := take()) is not None:
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sample = one(http, i)
                with samples_lock:
                    samples.append(sample)
                    done = len(samples)
                if progress is not None:
                    progress(done, len(kinds))

    threads = [
        threading.Thread(target=client_thread, name=f"load-{n}", daemon=True)
        for n in range(plan.concurrency)
    ]
    window_start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan.hard_deadline + plan.timeout + 5)
    window_end = time.time()
    with samples_lock:
        done = list(samples)
    report: dict[str, Any] = {
        "plan": asdict(plan),
        "sent": len(done),
        "skipped": skipped + (len(kinds) - next_index),
        "wall_seconds": round(window_end - window_start, 2),
        "window": {"start": window_start, "end": window_end},
    }
    for kind, name in ((POLL, "polls"), (SUBMIT, "submissions")):
        mine = [s for s in done if s.kind == kind]
        counts = dict.fromkeys(OUTCOMES, 0)
        for s in mine:
            counts[outcome(s.status)] += 1
        report[name] = {
            # latency of answered requests that were not refused by the rate limiter
            "latency": latency_summary(
                [s.seconds for s in mine if outcome(s.status) in ("ok", "client_error")]
            ),
            "outcomes": counts,
            "statuses": _status_counts(mine),
        }
    report["errors_5xx"] = sum(
        report[n]["outcomes"]["server_error"] for n in ("polls", "submissions")
    )
    report["accepted_submissions"] = len(pool) - len(targets)
    report["pollable_ids"] = [t.erasure_id for t in pool]
    return report


def _status_counts(samples: Sequence[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- busy coverage
def running_intervals(record: dict[str, Any], now: float) -> list[tuple[float, float]]:
    """The ``(start, end)`` epoch intervals during which an erasure record was running.

    Built from the record's ``history`` (a JSON-dumped :class:`~service.records.ErasureRecord`): a
    ``running`` event opens an interval, the next ``queued`` (a retry) or terminal event closes it;
    one still open ends at ``now``.
    """
    spans: list[tuple[float, float]] = []
    opened: float | None = None
    for event in record.get("history", []):
        at = epoch_of(event["at"])
        if event["status"] == "running" and opened is None:
            opened = at
        elif event["status"] != "running" and opened is not None:
            spans.append((opened, at))
            opened = None
    if opened is not None:
        spans.append((opened, now))
    return spans


def covered_share(spans: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Share of ``[start, end]`` covered by the union of ``spans``."""
    if end <= start:
        return 0.0
    covered = 0.0
    cursor = start
    for a, b in sorted(spans):
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return covered / (end - start)


# ----------------------------------------------------------------------------- on a private stack
@dataclass
class LoadSetup:
    """What :func:`run_load_test` needs besides the plan."""

    source_home: Path  # a home whose demo worlds the private stack links (built if missing)
    root: Path  # the private stack's directory (home, store, logs, redis)
    model: str = "demo-small"
    tenants: int = 4
    warmup_timeout: float = 300.0
    env: dict[str, str] = field(default_factory=dict)


def _demo_facts(model: str, home: Path) -> list[dict[str, str]]:
    """The demo world's private facts as request ``facts`` entries (builds the world if needed)."""
    from editing.registry import get_entry
    from editing.world.demo_facts import demo_world_of, request_facts

    world = demo_world_of(get_entry(model, home=home), home, purpose="the load test")
    return request_facts(world.private_facts())


def run_load_test(
    plan: LoadPlan, setup: LoadSetup, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Start a private stack with one worker, keep the worker busy, run the load; the report."""
    from ops.stack import LocalStack, link_worlds
    from service.store import FilesystemStore

    say = progress or (lambda message: None)
    plan.check()
    if setup.tenants < 1:
        raise ValueError("--tenants must be at least 1")
    facts = _demo_facts(setup.model, setup.source_home)
    rng = random.Random(plan.seed)
    with LocalStack(setup.root, env=setup.env, model=setup.model) as stack:
        link_worlds(stack.home, setup.source_home)
        say("starting the API and a worker")
        stack.start_api()
        stack.start_worker()
        keys = {f"load-{n}": stack.create_key(f"load-{n}") for n in range(setup.tenants)}
        key_list = list(keys.values())

        def body(i: int) -> tuple[dict[str, Any], str]:
            fact = facts[rng.randrange(len(facts))]
            return {"model": setup.model, "facts": [fact]}, key_list[i % len(key_list)]

        # Warm-up (not measured): jobs for the worker, and wait until it is running one.
        warm: list[Target] = []
        with stack.client() as http:
            for n in range(2):
                payload, key = body(n)
                response = http.post(
                    "/v1/erasures", json=payload, headers={"Authorization": f"Bearer {key}"}
                )
                response.raise_for_status()
                warm.append(Target(response.json()["id"], key))
            say("waiting until the worker runs a job")
            deadline = time.monotonic() + setup.warmup_timeout
            while True:
                doc = http.get(
                    f"/v1/erasures/{warm[0].erasure_id}",
                    headers={"Authorization": f"Bearer {warm[0].key}"},
                ).json()
                if doc["status"] == "running" and doc.get("stage") not in (None, "starting"):
                    break
                if doc["status"] in TERMINAL or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the worker did not start the warm-up job ({doc['status']}); see the "
                        f"logs under {stack.logs}"
                    )
                time.sleep(0.5)
        say(
            f"load: {plan.polls} polls + {plan.submissions} submissions over ~{plan.duration:g} s "
            f"({plan.concurrency} clients)"
        )
        last = [0.0]

        def tick(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 5 or done == total:
                last[0] = now
                say(f"  {done}/{total} requests")

        report = run_load(stack.base, warm, body, plan, tick)
        start, end = report["window"]["start"], report["window"]["end"]
        store = FilesystemStore(stack.store_root)
        spans: list[tuple[float, float]] = []
        for erasure_id in report.pop("pollable_ids"):
            record = store.get_erasure(erasure_id)
            if record is not None:
                spans += running_intervals(record.model_dump(mode="json"), end)
        report["worker_busy_share"] = round(covered_share(spans, start, end), 3)
        report["setup"] = {"model": setup.model, "tenants": setup.tenants, "workers": 1}
    return report
