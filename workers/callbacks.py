"""Callbacks: tell a client's ``callback_url`` how its erasure ended, signed.

When an erasure ends, :func:`enqueue_callback` queues ``workers.callbacks.deliver_callback``
(:data:`CALLBACK_FUNC`, job id ``<erasure id>-callback``) on the callbacks queue with rq retries;
only a :class:`~workers.worker.CallbackWorker` (``featureedit worker --callbacks-only``, no model)
runs it. :func:`deliver_callback` POSTs :func:`callback_body`, signed with the tenant's secret
(:func:`service.security.signing.settings_tenant_secret`), to the one address it checked
(:mod:`service.security.callback_target`: no DNS rebinding, refused when the name does not
resolve), under one deadline and a reply cap (:mod:`workers.callback_http`). See
docs/security.md.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from service.queueing import JOB_SERIALIZER
from service.records import TERMINAL, ErasureRecord
from service.security.callback_target import Resolver, normalise_host
from workers.callback_http import post_pinned
from workers.config import callback_queue_name
from workers.context import JobContext, get_context
from workers.redaction import scrub

log = logging.getLogger(__name__)

CALLBACK_FUNC = "workers.callbacks.deliver_callback"
CALLBACK_RETRY_MAX = 5
CALLBACK_RETRY_INTERVALS = [1, 5, 30, 120, 600]
CALLBACK_JOB_SUFFIX = "-callback"
SIGNATURE_HEADER = "X-Featureedit-Signature"  # = service.security.SIGNATURE_HEADER
# The DNS resolver of deliveries (None: socket.getaddrinfo); tests monkeypatch a stub in.
DNS_RESOLVER: Resolver | None = None


class CallbackDeliveryError(RuntimeError):
    """The callback endpoint did not accept the notification (rq retries the delivery)."""


def enqueue_callback(ctx: JobContext, erasure_id: str) -> bool:
    """Queue the delivery of ``erasure_id``'s callback; False if already queued or Redis fails."""
    s = ctx.settings
    try:
        queue = Queue(
            callback_queue_name(s.queue_prefix),
            connection=ctx.connection(),
            serializer=JOB_SERIALIZER,
        )
        queue.enqueue(
            CALLBACK_FUNC,
            erasure_id,
            job_id=f"{erasure_id}{CALLBACK_JOB_SUFFIX}",
            description=f"callback {erasure_id}",
            retry=Retry(max=CALLBACK_RETRY_MAX, interval=CALLBACK_RETRY_INTERVALS),
            job_timeout=int(ctx.tuning.callback_timeout * 3) + 10,
            result_ttl=s.result_ttl,
            failure_ttl=s.failure_ttl,
            unique=True,
        )
    except DuplicateJobError:
        return False
    except RedisError as exc:
        log.error("erasure %s: could not queue the callback: %s", erasure_id, exc)
        return False
    return True


def callback_body(record: ErasureRecord) -> bytes:
    """The JSON body of a record's callback: ``{id, status, checkpoint_id, metrics}``."""
    doc = {
        "id": record.id,
        "status": record.status,
        "checkpoint_id": record.checkpoint_id,
        "metrics": scrub(record.metrics, []),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def deliver_callback(erasure_id: str) -> str:
    """POST the erasure's outcome to its ``callback_url``, signed; raise so rq retries failures.

    The body is ``{"id", "status", "checkpoint_id", "metrics"}``, signed with the tenant's own
    secret over a timestamp and a delivery id (:func:`service.security.callback_headers`). The
    host is resolved once and must be public (unless ``callback_allow_private``); the POST goes
    to that very address (:func:`workers.callback_http.post_pinned`), within one overall
    deadline (``callback_timeout``), reading at most ``callback_max_reply_bytes`` of the reply. A
    2xx answer is a delivery; anything else (or a connection error, or the deadline) raises
    :class:`CallbackDeliveryError`. A refused URL (private, unresolvable) is not retried.
    """
    from service.logs import log_context

    with log_context(erasure_id=erasure_id, job_id=f"{erasure_id}{CALLBACK_JOB_SUFFIX}"):
        return _deliver_callback(erasure_id)


def _deliver_callback(erasure_id: str) -> str:
    import httpcore

    from service.security.callback_target import CallbackTargetRefused, resolve_public
    from service.security.signing import callback_headers, settings_tenant_secret

    ctx = get_context()
    tuning = ctx.tuning
    record = ctx.store.get_erasure(erasure_id)
    if record is None or not record.callback_url or record.status not in TERMINAL:
        log.info("callback %s: nothing to deliver", erasure_id)
        return "skipped"
    parts = urlsplit(record.callback_url)
    host = normalise_host(parts.hostname or "") or "?"
    try:
        if parts.scheme not in ("http", "https"):
            raise CallbackTargetRefused("not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = resolve_public(
            host, port, allow_private=ctx.settings.callback_allow_private, resolver=DNS_RESOLVER
        )
    except (CallbackTargetRefused, ValueError) as exc:  # ValueError: a malformed port
        log.warning("callback %s to %s refused: %s", erasure_id, host, exc)
        return "refused"
    body = callback_body(record)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "featureedit-callback/2",
        "X-Featureedit-Erasure": record.id,
        **callback_headers(body, settings_tenant_secret(ctx.settings, record.tenant)),
    }
    started = time.monotonic()
    try:
        reply = post_pinned(
            record.callback_url,
            address,
            body,
            headers,
            seconds=tuning.callback_timeout,
            max_reply_bytes=tuning.callback_max_reply_bytes,
        )
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise CallbackDeliveryError(
            f"callback {erasure_id} to {host}: {type(exc).__name__} after "
            f"{time.monotonic() - started:.1f} s"
        ) from None
    if reply.truncated:
        log.warning("callback %s to %s: reply cut at %d bytes", erasure_id, host, reply.bytes_read)
    if not 200 <= reply.status < 300:
        raise CallbackDeliveryError(f"callback {erasure_id} to {host}: HTTP {reply.status}")
    log.info("callback %s delivered to %s (HTTP %d)", erasure_id, host, reply.status)
    return "delivered"
