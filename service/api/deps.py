"""Typed dependencies: ``SettingsDep``, ``StoreDep``, ``QueueDep``, ``TenantDep``, ``ContextDep``.

Everything a route needs lives on one :class:`ServiceContext` built by ``create_app`` (stored
at ``app.state.ctx``). :func:`get_tenant` authenticates the bearer key (401 with
``WWW-Authenticate``) and applies the tenant's rate limit (429 with ``Retry-After``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis

from editing.fingerprint import fingerprint_key
from service.api.schemas import problem_response
from service.audit import AuditLog
from service.catalog import RegistryUnavailable, registered_models
from service.checkpoint_files import FileVerifier
from service.config import Settings, is_loopback_host
from service.fairness import QuotaRefusal, TenantQuota
from service.metrics import Metrics
from service.queueing import JobQueue, RateLimiter
from service.report_cache import ReportCache
from service.security import KeyStore
from service.store import Store


@dataclass
class ServiceContext:
    """The API process's long-lived objects."""

    settings: Settings
    store: Store
    redis: Redis
    queue: JobQueue
    limiter: RateLimiter
    keys: KeyStore
    audit: AuditLog
    metrics: Metrics
    quota: TenantQuota
    reports: ReportCache
    verifier: FileVerifier = field(default_factory=FileVerifier)
    _fp_key: bytes | None = None
    _fp_lock: threading.Lock = field(default_factory=threading.Lock)

    def fingerprint_key(self) -> bytes:
        """The fingerprint key of this home (``FEATUREEDIT_FINGERPRINT_KEY`` or the key file)."""
        with self._fp_lock:
            if self._fp_key is None:
                self._fp_key = fingerprint_key(self.settings.home)
            return self._fp_key

    def request_key(self) -> str | None:
        """The configured request-blob key(s), or None for the environment / key file."""
        key = self.settings.secret_key
        return key.get_secret_value() if key is not None else None

    def base_url(self, request: Request) -> str:
        """Base of absolute links: ``public_url``, else the address the server listens on
        (never the client's ``Host`` header, which an attacker chooses)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        server = request.scope.get("server")
        if not server:
            return str(request.base_url).rstrip("/")
        host, port = server[0], server[1]
        if ":" in host:
            host = f"[{host}]"
        default = {"http": 80, "https": 443}.get(request.url.scheme)
        suffix = "" if port in (None, default) else f":{port}"
        root = request.scope.get("root_path", "")
        return f"{request.url.scheme}://{host}{suffix}{root}".rstrip("/")


def get_context(request: Request) -> ServiceContext:
    """The app's :class:`ServiceContext`."""
    return request.app.state.ctx


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return get_context(request).settings


def get_store(request: Request) -> Store:
    """The app's store."""
    return get_context(request).store


def get_queue(request: Request) -> JobQueue:
    """The app's job queue."""
    return get_context(request).queue


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key from `featureedit keys create`: `Authorization: Bearer fe_...`.",
)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# What every route depending on get_tenant may answer (documented on every /v1 operation).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem_response("Missing or invalid API key (see WWW-Authenticate)."),
    429: problem_response("Rate limit exceeded (see Retry-After)."),
}


def get_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> str:
    """Authenticate the bearer key and count the request against the tenant's rate limit."""
    ctx = get_context(request)
    info = ctx.keys.identify(credentials.credentials if credentials else None)
    if info is None:
        challenge = 'Bearer realm="featureedit"'
        if credentials is not None:
            challenge += ', error="invalid_token"'
        raise HTTPException(
            status_code=401,
            detail="Missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": challenge},
        )
    request.state.tenant = info.tenant
    request.state.key_id = info.key_id
    s = ctx.settings
    read = request.method in _READ_METHODS
    limit = s.rate_limit_read if read else s.rate_limit_write
    retry_after = ctx.limiter.hit(info.tenant, "read" if read else "write", limit)
    if retry_after is not None:
        raise HTTPException(
            status_code=429,
            detail=f"Rate limit exceeded: {limit} {'read' if read else 'write'} requests per "
            f"{s.rate_limit_window} s; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return info.tenant


def too_many(refusal: QuotaRefusal) -> HTTPException:
    """The 429 of a tenant over its quota (with ``Retry-After``)."""
    return HTTPException(
        status_code=429, detail=refusal.detail, headers={"Retry-After": str(refusal.retry_after)}
    )


def client_is_local(request: Request) -> bool:
    """Whether the request's peer address is loopback."""
    client = request.scope.get("client")
    return bool(client) and is_loopback_host(str(client[0]))


ContextDep = Annotated[ServiceContext, Depends(get_context)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
TenantDep = Annotated[str, Depends(get_tenant)]


def registered_models_or_503(settings: Settings) -> dict[str, Any]:
    """The registered models (:func:`service.catalog.registered_models`); HTTP 503 if the
    registry cannot be read (the operator's problem, not the client's)."""
    try:
        return registered_models(settings)
    except RegistryUnavailable:
        raise HTTPException(
            status_code=503, detail="The model registry is misconfigured; contact the operator"
        ) from None
