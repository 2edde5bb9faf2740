"""Job metrics shared across processes: workers record them in Redis, the API renders them.

Erasures run in worker processes (often on other machines) while ``/metrics`` is served by the
API processes, so the figures live where all of them meet: Redis, under the service's
``redis_prefix``. Each observation is a handful of ``HINCRBY``/``HINCRBYFLOAT`` in one
``MULTI`` transaction, so concurrent workers never lose an update, a worker restart loses
nothing, and every API process renders the same totals (scrape any one of them). Why not
prometheus_client's multiprocess mode: it needs a directory shared by every process, which
workers on other hosts or containers do not have, and it loses a dead worker's series.

Keys (hashes; all counters, monotonic until Redis itself is reset):

* ``<prefix>:metrics:stage_seconds:<stage>``: ``le:<bound>`` cumulative bucket counts, ``sum``,
  ``count``; ``stage`` is one of :data:`TIMING_STAGES` (queue wait, model load, baseline, locate,
  edit, evaluate, attacks, publish, total);
* ``<prefix>:metrics:finished``: erasures that ended, by terminal status;
* ``<prefix>:metrics:failures``: failed erasures by reason, one of :data:`FAILURE_REASONS`;
* ``<prefix>:metrics:accepted``: ``total`` erasures the API accepted (counted by the API).

Label values come only from these closed sets (anything else counts as ``other``), never from
free text: no secret and no unbounded cardinality can reach a label. Recording never raises: a
Redis error is logged and the job goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

TIMING_STAGES: tuple[str, ...] = (
    "queue_wait",
    "model_load",
    "baseline",
    "locate",
    "edit",
    "evaluate",
    "attacks",
    "publish",
    "total",
)
FAILURE_REASONS: tuple[str, ...] = (
    "invalid_request",  # the stored request or its base checkpoint cannot be used
    "engine_error",  # the editing library refused (an EditingError: bad layer, missing SAE...)
    "timeout",  # the job timeout was reached
    "request_key",  # the worker cannot decrypt the request
    "internal_error",  # an unexpected exception, retries used up
    "worker_lost",  # the worker died (AbandonedJobError) and retries are used up
    "job_failed",  # rq failed the job outside the job function
    "store_full",  # the store ran out of space (ENOSPC/EDQUOT) while writing
    "other",
)
TERMINAL_STATUSES: tuple[str, ...] = (
    "succeeded",
    "rejected",
    "nothing_to_erase",
    "failed",
    "cancelled",
)
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def _key(prefix: str, *parts: str) -> str:
    return ":".join((prefix, "metrics", *parts))


def _bound(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(float(le))


@dataclass
class Histogram:
    """One stage's cumulative buckets (upper bound -> count), sum and count."""

    buckets: dict[float, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0


@dataclass
class JobMetricsSnapshot:
    """Everything :class:`JobMetrics` holds, read in one round trip."""

    stages: dict[str, Histogram]
    finished: dict[str, int]
    failures: dict[str, int]
    accepted: int = 0


class JobMetrics:
    """Record and read the job metrics under ``prefix`` in ``redis`` (module docstring)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def observe_stages(self, seconds: Mapping[str, float]) -> None:
        """Add one observation per stage in ``seconds`` (unknown stages are ignored)."""
        try:
            pipe = self.redis.pipeline(transaction=True)
            for stage, value in seconds.items():
                if stage not in TIMING_STAGES or not math.isfinite(value) or value < 0:
                    continue
                key = _key(self.prefix, "stage_seconds", stage)
                for le in (*BUCKETS, math.inf):
                    if value <= le:
                        pipe.hincrby(key, f"le:{_bound(le)}", 1)
                pipe.hincrbyfloat(key, "sum", float(value))
                pipe.hincrby(key, "count", 1)
            pipe.execute()
        except RedisError as exc:
            log.warning("cannot record stage durations: %s", type(exc).__name__)

    def count_finished(self, status: str, reason: str | None = None) -> None:
        """Count an erasure that ended with ``status`` (and, if failed, its ``reason``)."""
        if status not in TERMINAL_STATUSES:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hincrby(_key(self.prefix, "finished"), status, 1)
            if status == "failed":
                label = reason if reason in FAILURE_REASONS else "other"
                pipe.hincrby(_key(self.prefix, "failures"), label, 1)
            pipe.execute()
        except RedisError as exc:
            log.warning("cannot count a finished erasure: %s", type(exc).__name__)

    def count_accepted(self) -> None:
        """Count an erasure the API accepted (queued)."""
        try:
            self.redis.hincrby(_key(self.prefix, "accepted"), "total", 1)
        except RedisError as exc:
            log.warning("cannot count an accepted erasure: %s", type(exc).__name__)

    def snapshot(self) -> JobMetricsSnapshot:
        """The current totals (raises RedisError if Redis is down)."""
        pipe = self.redis.pipeline(transaction=False)
        for stage in TIMING_STAGES:
            pipe.hgetall(_key(self.prefix, "stage_seconds", stage))
        pipe.hgetall(_key(self.prefix, "finished"))
        pipe.hgetall(_key(self.prefix, "failures"))
        pipe.hget(_key(self.prefix, "accepted"), "total")
        *raw_stages, finished, failures, accepted = pipe.execute()
        stages: dict[str, Histogram] = {}
        for stage, raw in zip(TIMING_STAGES, raw_stages):
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            hist = Histogram(sum=float(fields.get("sum", 0.0)), count=int(fields.get("count", 0)))
            for le in (*BUCKETS, math.inf):
                hist.buckets[le] = int(fields.get(f"le:{_bound(le)}", 0))
            stages[stage] = hist

        def counts(raw: Mapping[bytes, bytes], allowed: tuple[str, ...]) -> dict[str, int]:
            got = {k.decode(): int(v) for k, v in raw.items()}
            return {name: got.get(name, 0) for name in allowed}

        return JobMetricsSnapshot(
            stages=stages,
            finished=counts(finished, TERMINAL_STATUSES),
            failures=counts(failures, FAILURE_REASONS),
            accepted=int(accepted or 0),
        )
