"""``/healthz`` (process up), ``/readyz`` (Redis and store usable) and ``/metrics``.

``/metrics`` needs ``Authorization: Bearer <metrics_token>`` when that setting is set; without
it, only loopback clients get it (others get 404), so it is never public by accident.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from service.api.deps import ContextDep, client_is_local
from service.job_metrics import JobMetrics
from service.store import store_ready

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "Redis unreachable or store not usable."}},
)
def readyz(ctx: ContextDep) -> JSONResponse:
    """200 if Redis answers PING and the store answers a read; 503 (with the failing check).

    Writes nothing: a probe every few seconds must not cost an fsync."""
    checks = {"redis": ctx.queue.ping(), "store": store_ready(ctx.store)}
    ready = all(checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


def check_metrics_access(request: Request, ctx: ContextDep, authorization: str | None) -> None:
    """401 without the metrics token (when one is set); 404 to non-loopback clients otherwise."""
    token = ctx.settings.metrics_token
    if token is None:
        if not client_is_local(request):
            raise HTTPException(status_code=404, detail="Not Found")
        return
    expected = f"Bearer {token.get_secret_value()}".encode()
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
        raise HTTPException(
            status_code=401,
            detail="/metrics needs 'Authorization: Bearer <metrics token>'",
            headers={"WWW-Authenticate": 'Bearer realm="featureedit-metrics"'},
        )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    include_in_schema=False,
)
def metrics(
    request: Request,
    ctx: ContextDep,
    authorization: Annotated[str | None, Header(max_length=1024)] = None,
) -> PlainTextResponse:
    """Request counts by route and status, queue depths, and the job counters: erasures
    accepted, stage duration histograms, erasures finished by status, failures by reason."""
    check_metrics_access(request, ctx, authorization)
    jobs = JobMetrics(ctx.redis, ctx.settings.redis_prefix)
    return PlainTextResponse(
        ctx.metrics.render(ctx.queue, jobs),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
