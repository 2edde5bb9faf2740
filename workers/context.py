"""What the jobs of one worker process share: the :class:`JobContext` and how jobs find it.

The worker installs a context (:func:`install_context`); without one, :func:`get_context` builds
one from the environment. This module imports no torch.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from redis import Redis
from rq import get_current_job

from service.config import Settings
from service.job_metrics import JobMetrics
from service.store import Store, get_store
from workers.cache import ModelCache
from workers.config import WorkerSettings


@dataclass
class JobContext:
    """What the jobs of one worker process share: settings, store, model cache, Redis."""

    settings: Settings
    store: Store
    cache: ModelCache
    tuning: WorkerSettings = field(default_factory=WorkerSettings)
    redis: Redis | None = None
    worker_name: str | None = None

    def connection(self) -> Redis:
        """The Redis connection: the running job's, else the context's, else a new one."""
        job = get_current_job()
        if job is not None:
            return job.connection
        if self.redis is None:
            self.redis = Redis.from_url(self.settings.redis_url)
        return self.redis

    def name(self) -> str:
        """This worker's name for records (rq's worker name when known)."""
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"


_context: JobContext | None = None
_context_lock = threading.Lock()


def install_context(context: JobContext) -> None:
    """Make ``context`` the one the jobs of this process use."""
    global _context
    with _context_lock:
        _context = context


def reset_context() -> None:
    """Forget the installed context (tests)."""
    global _context
    with _context_lock:
        _context = None


def get_context() -> JobContext:
    """The installed context, or one built from the environment on first use."""
    global _context
    with _context_lock:
        if _context is None:
            settings = Settings()
            tuning = WorkerSettings()
            _context = JobContext(
                settings=settings,
                store=get_store(settings),
                cache=ModelCache(tuning.cache_size, home=settings.home),
                tuning=tuning,
            )
        return _context


def job_metrics(ctx: JobContext) -> JobMetrics:
    """The Redis-backed job metrics (stage durations, outcomes) of ``ctx``'s service."""
    return JobMetrics(ctx.connection(), ctx.settings.redis_prefix)
