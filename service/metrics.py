"""Prometheus metrics in the text exposition format, written by hand (no prometheus_client).

Everything comes from counters, never from a scan of the records: request counters are per
process (scrape each API process); queue depths are rq's list lengths and registry sizes; job
figures (erasures accepted, per-stage duration histograms, erasures finished by status, failures
by reason) are counted in Redis by the API and the workers (:mod:`service.job_metrics`) and are
the same from every API process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from service.job_metrics import JobMetrics, JobMetricsSnapshot

if TYPE_CHECKING:
    from service.queueing import JobQueue

log = logging.getLogger(__name__)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


class Metrics:
    """Request counters and durations of this process, and the /metrics text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._seconds: dict[tuple[str, str], float] = defaultdict(float)
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            self._seconds[(method, route)] += seconds
            self._counts[(method, route)] += 1

    def render(self, queue: JobQueue, jobs: JobMetrics | None = None) -> str:
        """The exposition text (with the workers' job metrics when ``jobs`` is given)."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value}" for labels, value in samples)

        with self._lock:
            requests = dict(self._requests)
            seconds = dict(self._seconds)
            counts = dict(self._counts)
        family(
            "featureedit_http_requests_total",
            "counter",
            "HTTP requests served by this process, by method, route and status.",
            [
                (_labels(method=m, route=r, status=s), n)
                for (m, r, s), n in sorted(requests.items())
            ],
        )
        family(
            "featureedit_http_request_duration_seconds_sum",
            "counter",
            "Total time spent serving requests, by method and route.",
            [(_labels(method=m, route=r), f"{v:.6f}") for (m, r), v in sorted(seconds.items())],
        )
        family(
            "featureedit_http_request_duration_seconds_count",
            "counter",
            "Requests timed, by method and route.",
            [(_labels(method=m, route=r), n) for (m, r), n in sorted(counts.items())],
        )
        up = 1
        try:
            depths = queue.depths()
        except Exception:  # Redis down: report it, keep the rest of the page
            log.warning("cannot read queue depths for /metrics", exc_info=True)
            depths, up = {}, 0
        family("featureedit_redis_up", "gauge", "Whether Redis answered.", [("", up)])
        for field, help_text in (
            ("queued", "Jobs waiting in each queue."),
            ("started", "Jobs running from each queue."),
            ("failed", "Jobs in each queue's failed registry."),
            ("scheduled", "Jobs scheduled (e.g. retries waiting) per queue."),
        ):
            name = "featureedit_queue_depth" if field == "queued" else f"featureedit_jobs_{field}"
            family(
                name,
                "gauge",
                help_text,
                [(_labels(queue=q), d[field]) for q, d in sorted(depths.items())],
            )
        if jobs is not None:
            try:
                snapshot = jobs.snapshot()
            except RedisError:
                log.warning("cannot read job metrics for /metrics", exc_info=True)
            else:
                out.extend(_job_families(snapshot))
        family(
            "featureedit_process_start_time_seconds",
            "gauge",
            "Start time of this API process (unix seconds).",
            [("", f"{self.started:.3f}")],
        )
        return "\n".join(out) + "\n"


def _job_families(snap: JobMetricsSnapshot) -> list[str]:
    """Exposition lines of the workers' job metrics."""
    name = "featureedit_job_stage_duration_seconds"
    out = [
        "# HELP featureedit_erasures_accepted_total Erasures the API accepted (queued).",
        "# TYPE featureedit_erasures_accepted_total counter",
        f"featureedit_erasures_accepted_total {snap.accepted}",
        f"# HELP {name} Seconds each erasure spent per stage (queue_wait: enqueue to start), "
        "recorded by the workers.",
        f"# TYPE {name} histogram",
    ]
    for stage, hist in snap.stages.items():
        for le, n in hist.buckets.items():
            bound = "+Inf" if le == float("inf") else f"{le:g}"
            out.append(f"{name}_bucket{_labels(stage=stage, le=bound)} {n}")
        out.append(f"{name}_sum{_labels(stage=stage)} {hist.sum:.6f}")
        out.append(f"{name}_count{_labels(stage=stage)} {hist.count}")
    for metric, label, counts, help_text in (
        (
            "featureedit_erasures_finished_total",
            "status",
            snap.finished,
            "Erasures that ended, by terminal status (counted by the workers).",
        ),
        (
            "featureedit_erasure_failures_total",
            "reason",
            snap.failures,
            "Failed erasures by "
            "reason (a closed set: invalid_request, engine_error, timeout, request_key, "
            "internal_error, worker_lost, job_failed, other).",
        ),
    ):
        out.append(f"# HELP {metric} {help_text}")
        out.append(f"# TYPE {metric} counter")
        out.extend(f"{metric}{_labels(**{label: k})} {v}" for k, v in counts.items())
    return out
