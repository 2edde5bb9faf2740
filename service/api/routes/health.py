"""``/healthz`` (process up), ``/readyz`` (Redis and store usable) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from service.api.deps import ContextDep
from service.job_metrics import JobMetrics

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "Redis unreachable or store not writable."}},
)
def readyz(ctx: ContextDep) -> JSONResponse:
    """200 if Redis answers PING and the store accepts writes; 503 (with the failing check)."""
    checks = {"redis": ctx.queue.ping(), "store": ctx.store.writable()}
    ready = all(checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(ctx: ContextDep) -> PlainTextResponse:
    """Request counts by route and status, erasures by status, queue depths, and the workers'
    job metrics: stage duration histograms, erasures finished by status, failures by reason."""
    jobs = JobMetrics(ctx.redis, ctx.settings.redis_prefix)
    return PlainTextResponse(
        ctx.metrics.render(ctx.store, ctx.queue, jobs),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
