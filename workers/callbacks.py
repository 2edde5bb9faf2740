"""Callbacks: tell a client's ``callback_url`` how its erasure ended, signed.

When an erasure ends, :func:`enqueue_callback` queues ``workers.callbacks.deliver_callback``
(:data:`CALLBACK_FUNC`, job id ``<erasure id>-callback``) on the callbacks queue with rq retries;
:func:`deliver_callback` POSTs :func:`callback_body`, signed with the callback secret, and refuses
URLs resolving to private addresses (SSRF) unless ``callback_allow_private``. Jobs queued under
the old path ``workers.jobs.deliver_callback`` still run: :mod:`workers.jobs` re-exports it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from service.config import Settings
from service.queueing import JOB_SERIALIZER
from service.records import TERMINAL, ErasureRecord
from workers.config import callback_queue_name
from workers.context import JobContext, get_context
from workers.redaction import scrub

log = logging.getLogger(__name__)

CALLBACK_FUNC = "workers.callbacks.deliver_callback"
CALLBACK_RETRY_MAX = 5
CALLBACK_RETRY_INTERVALS = [1, 5, 30, 120, 600]
CALLBACK_JOB_SUFFIX = "-callback"
SIGNATURE_HEADER = "X-Featureedit-Signature"  # = service.security.SIGNATURE_HEADER


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


def _callback_secret(settings: Settings) -> bytes:
    from service.security import callback_secret

    if settings.callback_secret is not None:
        return settings.callback_secret.get_secret_value().encode("utf-8")
    return callback_secret(settings.home)


def _refuse_private_target(url: str, allow_private: bool) -> str | None:
    """Why ``url`` must not be called (it resolves to a non-public address), or None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return "not an http(s) URL"
    if allow_private:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # cannot resolve: let the request fail (and be retried)
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            return "the host resolves to a private or local address"
    return None


def deliver_callback(erasure_id: str) -> str:
    """POST the erasure's outcome to its ``callback_url``, signed; raise so rq retries failures.

    The body is ``{"id", "status", "checkpoint_id", "metrics"}``; the header
    ``X-Featureedit-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body under the callback
    secret (:func:`service.security.sign_body`). A 2xx answer is a delivery; anything else
    (or a connection error) raises :class:`CallbackDeliveryError`. A URL resolving to a private
    address is refused (unless ``callback_allow_private``) and not retried.
    """
    from service.logs import log_context

    with log_context(erasure_id=erasure_id, job_id=f"{erasure_id}{CALLBACK_JOB_SUFFIX}"):
        return _deliver_callback(erasure_id)


def _deliver_callback(erasure_id: str) -> str:
    import httpx

    from service.security import sign_body

    ctx = get_context()
    record = ctx.store.get_erasure(erasure_id)
    if record is None or not record.callback_url or record.status not in TERMINAL:
        log.info("callback %s: nothing to deliver", erasure_id)
        return "skipped"
    host = urlsplit(record.callback_url).hostname or "?"
    refused = _refuse_private_target(record.callback_url, ctx.settings.callback_allow_private)
    if refused:
        log.warning("callback %s to %s refused: %s", erasure_id, host, refused)
        return "refused"
    body = callback_body(record)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "featureedit-callback/1",
        SIGNATURE_HEADER: sign_body(body, _callback_secret(ctx.settings)),
        "X-Featureedit-Erasure": record.id,
    }
    try:
        response = httpx.post(
            record.callback_url,
            content=body,
            headers=headers,
            timeout=ctx.tuning.callback_timeout,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise CallbackDeliveryError(
            f"callback {erasure_id} to {host}: {type(exc).__name__}"
        ) from None
    if not 200 <= response.status_code < 300:
        raise CallbackDeliveryError(f"callback {erasure_id} to {host}: HTTP {response.status_code}")
    log.info("callback %s delivered to %s (HTTP %d)", erasure_id, host, response.status_code)
    return "delivered"
