"""Drills that kill processes: a worker mid-job (SIGKILL) and the Redis server mid-queue."""

from __future__ import annotations

import json
import threading
import time

from ops.drills.base import DrillContext, Observations, drill
from ops.stack import FAST_RECOVERY, leftover_temp_files, partial_checkpoints

JOB_TIMEOUT = 400.0  # seconds an erasure of the drills may take (a loaded 2-core machine)


class _PartialWatcher:
    """Polls the store for visible checkpoint directories without a manifest, in a thread."""

    def __init__(self, ctx: DrillContext) -> None:
        self.root = ctx.s.store_root
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.seen.update(partial_checkpoints(self.root))
            time.sleep(0.05)

    def __enter__(self) -> _PartialWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@drill(
    "worker-kill",
    """A worker killed with SIGKILL while its job runs: the job is retried by a new worker (or
    failed cleanly), ends in a terminal state with a clear reason, is never half-published (no
    checkpoint directory without a manifest, no temporary files left in the store), and the new
    worker edits a pristine model.""",
)
def worker_kill(ctx: DrillContext, obs: Observations) -> None:
    """SIGKILL the worker as soon as the erasure is running; start another; follow the erasure."""
    from editing.checkpoints import verify_checkpoint

    ctx.ensure_worker()
    store = ctx.store()
    with ctx.http() as http, _PartialWatcher(ctx) as watcher:
        response = ctx.submit(http, ctx.facts(2))
        if not obs.check(response.status_code == 202, f"submitted: HTTP {response.status_code}"):
            return
        erasure_id = response.json()["id"]
        ctx.wait_status(erasure_id, {"running"}, timeout=JOB_TIMEOUT)
        record = store.get_erasure(erasure_id)
        victim = ctx.worker
        assert victim is not None
        ctx.s.kill(victim)
        obs.note(
            f"SIGKILLed worker pid {victim.pid} during attempt {record.attempts} "
            f"(stage {record.stage!r})"
        )
        killed_at = time.monotonic()
        ctx.worker = ctx.s.start_worker()
        doc = ctx.s.wait_terminal(http, erasure_id, timeout=JOB_TIMEOUT)
        elapsed = time.monotonic() - killed_at
    record = store.get_erasure(erasure_id)
    statuses = [(e.status, e.stage) for e in record.history]
    if doc["status"] == "failed":
        obs.check(bool(doc.get("error")), f"failed cleanly: {doc.get('error')!r}")
    else:
        obs.check(
            doc["status"] == "succeeded" and ("queued", "retrying") in statuses,
            f"retried by the new worker: {doc['status']} after {elapsed:.0f} s, attempt "
            f"{record.attempts}, history {' > '.join(s for s, _ in statuses)}",
        )
    obs.check(not watcher.seen, f"no partial checkpoint ever visible ({sorted(watcher.seen)})")
    leftovers = leftover_temp_files(ctx.s.store_root)
    obs.check(not leftovers, f"no temporary files left in the store ({leftovers[:5]})")
    checkpoint_id = doc.get("checkpoint_id")
    if doc["status"] == "succeeded":
        directory = store.checkpoint_dir(checkpoint_id) if checkpoint_id else None
        if not obs.check(directory is not None, f"checkpoint {checkpoint_id} published"):
            return
        problems = verify_checkpoint(directory)
        obs.check(not problems, f"checkpoint verifies against its manifest ({problems[:3]})")
        manifest = json.loads((directory / "manifest.json").read_text())
        base = (manifest.get("base_model") or {}).get("down_proj_sha256")
        obs.check(
            base == ctx.pristine_sha256(),
            "the new worker's model was pristine (base down-projection sha256 in the manifest "
            "= the model on disk)",
        )
        ctx.checkpoints.append(checkpoint_id)


@drill(
    "redis-restart",
    """Redis killed while one erasure runs and another waits in the queue, and kept down until the
    running one has ended and longer than a job heartbeat lives (Redis persists with an fsync'ed
    append-only file): no accepted erasure is lost, both finish once, the worker survives and no
    running job is mistaken for a lost one; while Redis is down the API answers a submission with
    503 and a clear message (never a 500), still serves status reads from the durable store,
    reports Redis not ready in /readyz, and recovers by itself.""",
)
def redis_restart(ctx: DrillContext, obs: Observations) -> None:
    """Kill Redis mid-queue, probe the API while it is down, restart it, follow both erasures."""
    ctx.ensure_worker()
    first, second, third = ctx.facts(3)
    with ctx.http(timeout=20) as http:
        ids = []
        for fact in (first, second):
            response = ctx.submit(http, [fact])
            if not obs.check(response.status_code == 202, f"submitted: {response.status_code}"):
                return
            ids.append(response.json()["id"])
        ctx.wait_status(ids[0], {"running"}, timeout=JOB_TIMEOUT)
        queued = ctx.store().get_erasure(ids[1]).status
        obs.note(f"Redis SIGKILLed while erasure 1 runs and erasure 2 is {queued}")
        ctx.s.redis.stop(kill=True)
        down_at = time.monotonic()
        try:
            refused = ctx.submit(http, [third])
            detail = str(refused.json().get("detail", ""))
            obs.check(
                refused.status_code == 503 and "queue is unavailable" in detail,
                f"submission while down: HTTP {refused.status_code} {detail[:90]!r}",
            )
            read = http.get(f"/v1/erasures/{ids[0]}")
            obs.check(read.status_code == 200, f"status read while down: HTTP {read.status_code}")
            ready = http.get("/readyz")
            checks = ready.json().get("checks", {})
            obs.check(
                ready.status_code == 503 and checks.get("redis") is False,
                f"/readyz while down: {ready.status_code} {checks}",
            )
            # The running erasure ends while Redis is down (the worker's bookkeeping must wait
            # for Redis, not crash), and the outage outlives a heartbeat (after the restart the
            # running job's registration looks expired: it must not be taken for a lost job).
            ended = ctx.wait_status(ids[0], set(), timeout=JOB_TIMEOUT)  # terminal
            obs.note(f"erasure 1 ended {ended!r} in the store while Redis was down")
            hold = float(FAST_RECOVERY["FEATUREEDIT_WORKER_HEARTBEAT_TTL"]) + 2.0
            time.sleep(max(0.0, hold - (time.monotonic() - down_at)))
        finally:
            ctx.s.redis.start()
        obs.note(f"Redis down {time.monotonic() - down_at:.1f} s, restarted on the same port")
        deadline = time.monotonic() + 30
        while http.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        obs.check(http.get("/readyz").status_code == 200, "/readyz ready again after restart")
        if refused.status_code == 503:
            rid = refused.json()["detail"].split("erasure ")[1].split(" ")[0]
            doc = http.get(f"/v1/erasures/{rid}").json()
            obs.check(
                doc.get("status") == "failed" and doc.get("error") == "queue unavailable",
                f"the refused submission is recorded as {doc.get('status')} "
                f"({doc.get('error')!r}), not silently lost",
            )
        outcomes = [ctx.s.wait_terminal(http, i, timeout=JOB_TIMEOUT) for i in ids]
    summary = ", ".join(f"{d['status']} (attempts {d['attempts']})" for d in outcomes)
    obs.check(
        all(d["status"] == "succeeded" for d in outcomes),
        f"both accepted erasures finished: {summary}",
    )
    obs.check(
        all(d["attempts"] == 1 for d in outcomes), "each erasure ran once (no attempt repeated)"
    )
    worker_alive = ctx.worker is not None and ctx.worker.poll() is None
    obs.check(worker_alive, "the worker survived the Redis outage")
    lost = [
        line
        for line in ctx.s.log_text().splitlines()
        if "lost their worker" in line and any(i in line for i in ids)
    ]
    obs.check(not lost, f"neither erasure was taken for a lost job ({len(lost)} log lines)")
    for d in outcomes:
        if d.get("checkpoint_id"):
            ctx.checkpoints.append(d["checkpoint_id"])
