"""The FastAPI application: ``create_app(settings=None)`` (a uvicorn factory).

    uvicorn --factory service.main:create_app

Routes under ``/v1`` need ``Authorization: Bearer <API key>``; ``/healthz``, ``/readyz`` and
``/metrics`` do not. OpenAPI at ``/openapi.json``, interactive docs at ``/docs``. The process
never imports torch: it validates, stores and enqueues; workers run the erasures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.deps import AUTH_RESPONSES, ServiceContext
from service.api.errors import install_exception_handlers
from service.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from service.api.routes import checkpoints, erasures, health, models
from service.audit import AuditLog
from service.config import Settings
from service.fairness import TenantQuota
from service.logs import configure_logging
from service.metrics import Metrics
from service.queueing import JobQueue, RateLimiter, connect_redis
from service.report_cache import ReportCache
from service.security import KeyStore, keys_dir
from service.store import get_store

DESCRIPTION = """Erase private facts (phone numbers, e-mail addresses...) from causal language
models by editing the weights that sparse-autoencoder features point to, prove it with metrics
before and after, and publish the edited checkpoint.

Submit with `POST /v1/erasures` (202 + status URL), follow with `GET /v1/erasures/{id}` or the
event stream `GET /v1/erasures/{id}/events`, read the report, download the checkpoint. Targets
are never echoed back: responses, logs and reports carry keyed fingerprints only."""


def build_context(settings: Settings) -> ServiceContext:
    """The long-lived objects of one API process."""
    redis = connect_redis(settings.redis_url)
    return ServiceContext(
        settings=settings,
        store=get_store(settings),
        redis=redis,
        queue=JobQueue(redis, settings),
        limiter=RateLimiter(redis, settings.redis_prefix, settings.rate_limit_window),
        keys=KeyStore(keys_dir(settings.home)),
        audit=AuditLog(settings.audit_path),
        metrics=Metrics(),
        quota=TenantQuota(
            redis,
            settings.redis_prefix,
            max_jobs=settings.tenant_max_jobs,
            max_facts=settings.tenant_max_facts,
            max_streams=settings.tenant_max_streams,
            stream_seconds=settings.sse_max_seconds,
            retry_after=settings.tenant_retry_after,
        ),
        reports=ReportCache(settings.report_cache_entries),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. ``settings`` default to ``Settings()`` (the environment)."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.audit.close()
        ctx.redis.close()

    app = FastAPI(
        title="featureedit",
        summary="Erase private facts from language models, prove it, publish the checkpoint.",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operationId = function name
    )
    app.state.ctx = ctx
    install_exception_handlers(app)
    for module in (erasures, checkpoints, models):
        app.include_router(module.router, responses=AUTH_RESPONSES)
    app.include_router(health.router)
    # the last added is the outermost: request ids and audit wrap the body-size check
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=ctx.metrics,
        audit=ctx.audit,
        max_header_bytes=settings.max_header_bytes,
    )
    return app
