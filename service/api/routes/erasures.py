"""``/v1/erasures``: submit, read, list, cancel, follow (SSE) and report erasures.

Routes validate, store, enqueue and return. The submitted request is stored twice: its public
form (targets replaced by keyed fingerprints, prompts by their counts) in the record, and the
whole request encrypted as a blob that only the worker decrypts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import AsyncIterable, Iterator
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import ContextDep, TenantDep, too_many
from service.api.errors import Unprocessable
from service.api.intake import new_record, validate_create
from service.api.schemas import (
    ErasureAccepted,
    ErasureCreate,
    ErasureList,
    ErasurePublic,
    EventPublic,
    Problem,
    problem_response,
)
from service.job_metrics import JobMetrics
from service.queueing import QueueUnavailable
from service.records import TERMINAL, ErasureRecord, Status
from service.report_html import render_report_html
from service.security import encrypt_request
from service.store import transitions

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/erasures", tags=["erasures"])

_NOT_FOUND = {404: {"model": Problem, "description": "No such erasure (for this tenant)."}}
QUEUE_UNAVAILABLE = "queue unavailable"
LAST_EVENT_ID_RE = re.compile(r"-1|0|[1-9][0-9]{0,17}", re.ASCII)


# ----------------------------------------------------------------------------- helpers
def owned_erasure(erasure_id: str, ctx: ContextDep, tenant: TenantDep) -> ErasureRecord:
    """The tenant's erasure ``erasure_id``; 404 if absent or another tenant's."""
    record = ctx.store.get_erasure(erasure_id)
    if record is None or record.tenant != tenant:
        raise HTTPException(status_code=404, detail="Erasure not found")
    return record


OwnedErasure = Annotated[ErasureRecord, Depends(owned_erasure)]


def _encode_cursor(erasure_id: str | None) -> str | None:
    if erasure_id is None:
        return None
    return base64.urlsafe_b64encode(erasure_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unprocessable(["query", "cursor"], "invalid cursor", "cursor_invalid") from None


def _has_ended(ctx: ContextDep, erasure_id: str) -> bool | None:
    """Whether the erasure has finished (it then no longer counts against a quota); None if it
    has no record (yet)."""
    record = ctx.store.get_erasure(erasure_id)
    return None if record is None else record.status in TERMINAL


def parse_last_event_id(value: str | None) -> int | None:
    """The seq a ``Last-Event-ID`` header names: ASCII digits only (``-1`` allowed), else 400."""
    if value is None:
        return None
    text = value.strip()
    if not LAST_EVENT_ID_RE.fullmatch(text):
        raise HTTPException(
            status_code=400,
            detail="Last-Event-ID must be the id of an event received (a decimal integer, "
            "at most 18 digits), or -1",
        )
    return int(text)


def resume_after(
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=20, description="Resume after this seq."),
    ] = None,
    after: Annotated[
        int | None, Query(ge=-1, description="Resume after this seq (for clients without headers).")
    ] = None,
) -> int:
    """The seq an event stream resumes after: ``Last-Event-ID`` (strict, 400 if malformed),
    else ``after``, else -1 (from the start)."""
    resumed = parse_last_event_id(last_event_id)
    if resumed is not None:
        return resumed
    return after if after is not None else -1


def stream_slot(request: Request, ctx: ContextDep, tenant: TenantDep) -> Iterator[None]:
    """Hold one of the tenant's event streams while the response streams (429 if all are
    open); released when the stream ends, however it ends."""
    token, refusal = ctx.quota.open_stream(tenant)
    if refusal is not None:
        request.state.audit_outcome = "over_quota"
        raise too_many(refusal)
    try:
        yield
    finally:
        if token is not None:
            ctx.quota.close_stream(tenant, token)


def _ensure_enqueued(ctx: ContextDep, record: ErasureRecord) -> None:
    """Enqueue a replayed, still-queued erasure whose job is missing (a crash before enqueue)."""
    if record.status != "queued":
        return
    try:
        if not ctx.queue.job_exists(record.id):
            ctx.queue.enqueue(record.id, record.model, record.tenant)  # unique: never twice
            log.warning("re-enqueued a queued erasure without a job", extra={"erasure": record.id})
    except QueueUnavailable:
        log.warning("queue unavailable while replaying", extra={"erasure": record.id})


# ----------------------------------------------------------------------------- routes
@router.post(
    "",
    status_code=202,
    response_model=ErasureAccepted,
    summary="Submit an erasure",
    responses={
        200: {"model": ErasureAccepted, "description": "Idempotency-Key replayed: same erasure."},
        413: {"model": Problem, "description": "Body too large."},
        422: {"description": "Invalid request (never echoes the input)."},
        429: {"model": Problem, "description": "Rate limit exceeded (see Retry-After)."},
        503: {"model": Problem, "description": "Queue unavailable: recorded as failed."},
    },
)
def create_erasure(
    body: ErasureCreate,
    request: Request,
    response: Response,
    ctx: ContextDep,
    tenant: TenantDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Retry-safe submission: the same key returns the same erasure.",
        ),
    ] = None,
) -> ErasureAccepted:
    """Validate and store the request, then enqueue its job. Returns 202 with the status URL."""
    erasure_request = validate_create(body, ctx, tenant)
    record = new_record(
        erasure_request,
        tenant,
        ctx.fingerprint_key(),
        callback_url=str(body.callback_url) if body.callback_url else None,
        request_id=getattr(request.state, "request_id", None),
    )
    erasure_id = record.id
    refusal = ctx.quota.reserve_erasure(
        tenant, erasure_id, len(erasure_request.facts), lambda i: _has_ended(ctx, i)
    )
    if refusal is not None:
        request.state.audit_outcome = "over_quota"
        raise too_many(refusal)
    blob = encrypt_request(erasure_request, home=ctx.settings.home, key=ctx.request_key())
    try:
        stored, created = ctx.store.create_erasure(record, blob, idempotency_key)
    except BaseException:
        ctx.quota.release_erasure(tenant, erasure_id)
        raise
    if not created:
        ctx.quota.release_erasure(tenant, erasure_id)
    request.state.audit_erasure_id = stored.id
    status_url = f"{ctx.base_url(request)}/v1/erasures/{stored.id}"
    response.headers["Location"] = status_url

    if not created:
        if (
            stored.request_public != record.request_public
            or stored.callback_url != record.callback_url
        ):
            raise Unprocessable(
                ["header", "Idempotency-Key"],
                "this Idempotency-Key was already used for a different request; use a new key",
                "idempotency_key_reused",
            )
        _ensure_enqueued(ctx, stored)
        request.state.audit_outcome = "replayed"
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        return ErasureAccepted(id=stored.id, status=stored.status, status_url=status_url)

    try:
        ctx.queue.enqueue(stored.id, stored.model, tenant)
    except QueueUnavailable as exc:
        log.error("enqueue failed", extra={"erasure": stored.id, "error": str(exc)})

        transitions.finish(
            ctx.store,
            stored.id,
            "failed",
            settings=ctx.settings,
            error=QUEUE_UNAVAILABLE,
            detail=QUEUE_UNAVAILABLE,
            stage="queued",
            only_from={"queued"},
        )
        request.state.audit_outcome = "queue_unavailable"
        raise HTTPException(
            status_code=503,
            detail=f"The job queue is unavailable; erasure {stored.id} was recorded as failed "
            "('queue unavailable'). Submit again later (with a new Idempotency-Key).",
            headers={"Retry-After": "30"},
        ) from None
    request.state.audit_outcome = "accepted"
    JobMetrics(ctx.redis, ctx.settings.redis_prefix).count_accepted()
    return ErasureAccepted(id=stored.id, status=stored.status, status_url=status_url)


@router.get("", response_model=ErasureList, summary="List your erasures, newest first")
def list_erasures(
    request: Request,
    ctx: ContextDep,
    tenant: TenantDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
) -> ErasureList:
    """A page of the tenant's erasures (filter by ``status``; follow ``next_cursor``)."""
    after = _decode_cursor(cursor) if cursor else None
    try:
        items, last = ctx.store.list_erasures(tenant, status=status, limit=limit, cursor=after)
    except ValueError:
        raise Unprocessable(["query", "cursor"], "invalid cursor", "cursor_invalid") from None
    base = ctx.base_url(request)
    return ErasureList(
        items=[ErasurePublic.from_record(r, base) for r in items],
        next_cursor=_encode_cursor(last),
    )


@router.get(
    "/{erasure_id}", response_model=ErasurePublic, responses=_NOT_FOUND, summary="Get an erasure"
)
def get_erasure(record: OwnedErasure, request: Request, ctx: ContextDep) -> ErasurePublic:
    """The erasure's status, progress, metrics and links."""
    return ErasurePublic.from_record(record, ctx.base_url(request))


@router.delete(
    "/{erasure_id}",
    response_model=ErasurePublic,
    summary="Cancel an erasure",
    responses={
        **_NOT_FOUND,
        202: {"model": ErasurePublic, "description": "Running: cancellation requested."},
        409: {"model": Problem, "description": "Already finished."},
    },
)
def cancel_erasure(
    record: OwnedErasure, request: Request, response: Response, ctx: ContextDep
) -> ErasurePublic:
    """Queued: taken off the queue and cancelled (200). Running: cancellation requested (202).

    Finished: 409.
    """
    if record.status in TERMINAL:
        raise HTTPException(status_code=409, detail=f"Erasure is already {record.status}")
    removed = True
    if record.status == "queued":
        try:
            removed = ctx.queue.cancel(record.id)
        except QueueUnavailable:
            # the worker checks the record before running a job, so marking it is enough
            log.warning("queue unavailable while cancelling", extra={"erasure": record.id})
    updated, outcome = transitions.cancel(
        ctx.store, record.id, dequeued=removed, settings=ctx.settings
    )
    if outcome == "terminal":
        raise HTTPException(status_code=409, detail=f"Erasure is already {updated.status}")
    request.state.audit_outcome = outcome
    if outcome != "cancelled":
        response.status_code = 202
    return ErasurePublic.from_record(updated, ctx.base_url(request))


@router.get(
    "/{erasure_id}/events",
    response_class=EventSourceResponse,
    summary="Follow an erasure (Server-Sent Events)",
    responses={
        400: problem_response("Malformed Last-Event-ID."),
        404: problem_response("No such erasure (for this tenant)."),
    },
)
async def erasure_events(
    record: OwnedErasure,
    ctx: ContextDep,
    last: Annotated[int, Depends(resume_after)],
    _slot: Annotated[None, Depends(stream_slot)],
) -> AsyncIterable[ServerSentEvent]:
    """The status history as ``status`` events (``id`` = seq), then new events as they happen.

    Ends after a terminal event, or after ``sse_max_seconds`` (reconnect with Last-Event-ID).
    """
    s = ctx.settings
    deadline = time.monotonic() + s.sse_max_seconds
    first = True
    current: ErasureRecord | None = record
    while current is not None:
        for event in current.history:
            if event.seq <= last:
                continue
            data = EventPublic(erasure_id=current.id, **event.model_dump())
            yield ServerSentEvent(
                id=str(event.seq), event="status", data=data, retry=2000 if first else None
            )
            first = False
            last = event.seq
            if event.status in TERMINAL:
                return
        if current.status in TERMINAL or time.monotonic() >= deadline:
            return
        await anyio.sleep(s.sse_poll_interval)
        current = await anyio.to_thread.run_sync(ctx.store.get_erasure, current.id)


@router.get(
    "/{erasure_id}/report",
    summary="The erasure's compliance report (JSON, HTML or PDF)",
    responses={
        **_NOT_FOUND,
        200: {"content": {"application/json": {}, "text/html": {}, "application/pdf": {}}},
    },
)
def get_report(
    record: OwnedErasure,
    ctx: ContextDep,
    format: Literal["json", "html", "pdf"] = "json",
) -> Response:
    """Acceptance (thresholds vs measured), metrics before and after, located units per fact,
    the edit's footprint, lineage, file hashes, code version and history; never a secret.

    ``html`` is one self-contained page (inline CSS and SVG charts, no script); ``pdf`` the same
    document as an A4 PDF, served as an attachment.
    """
    report = ctx.store.get_report(record.id)
    if report is None:
        raise HTTPException(
            status_code=404, detail=f"Report not available (erasure is {record.status})"
        )
    history = [e.model_dump(mode="json") for e in record.history]
    rendering = {"erasure_id": record.id, "status": record.status, "history": history}
    if format == "html":
        page = ctx.reports.render("html", render_report_html, report, **rendering)
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff",
            },
        )
    if format == "pdf":
        from service.report_pdf import render_report_pdf

        pdf = ctx.reports.render("pdf", render_report_pdf, report, **rendering)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="erasure-{record.id}-report.pdf"',
                "X-Content-Type-Options": "nosniff",
            },
        )
    doc = {"erasure_id": record.id, "checkpoint_id": record.checkpoint_id, **report}
    return JSONResponse(doc)
