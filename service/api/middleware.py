"""ASGI middleware: request ids, header and body size caps, metrics, access log and audit.

Pure ASGI (not ``BaseHTTPMiddleware``), so streamed responses (event streams, file downloads)
pass through untouched. (FastAPI's own ``max_body_size`` answers a plain-text 413 from outside
the user middleware, without request id or JSON body; hence :class:`BodySizeLimitMiddleware`.)
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.audit import AuditLog
from service.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_OUTCOMES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    431: "headers_too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a JSON 413 (by Content-Length, or counted).

    Bodies of POST/PUT/PATCH are read here (at most ``max_bytes``) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await _send_json(
            send,
            413,
            {
                "detail": f"Request body too large: at most {self.max_bytes} bytes",
                "request_id": scope.get("state", {}).get("request_id"),
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def header_bytes(scope: Scope) -> int:
    """Bytes of the request target (path and query) plus every header name and value."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size + sum(len(k) + len(v) for k, v in scope.get("headers", []))


class RequestContextMiddleware:
    """Request id (``X-Request-ID`` in and out), metrics, a JSON access log line and the audit.

    Handlers may set ``request.state.audit_outcome`` and ``request.state.audit_erasure_id`` to
    enrich the audit line; the auth dependency sets ``tenant`` and ``key_id``. Only ``/v1``
    routes are audited.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, audit: AuditLog, max_header_bytes: int = 16384
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.audit = audit
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        rid = given if given and _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        token = request_id_var.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if header_bytes(scope) > self.max_header_bytes:  # before routing and authentication
                await _send_json(
                    send_with_id,
                    431,
                    {
                        "detail": "Request headers too large: at most "
                        f"{self.max_header_bytes} bytes of URL and headers",
                        "request_id": rid,
                    },
                )
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.observe(method, template, status, elapsed)
            params = scope.get("path_params") or {}
            erasure_id = _short(state.get("audit_erasure_id") or params.get("erasure_id"))
            log.info(
                "request",
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant": state.get("tenant"),
                    **({"erasure_id": erasure_id} if erasure_id else {}),
                },
            )
            if scope["path"].startswith("/v1"):
                self._audit(scope, state, route, status, rid)
            request_id_var.reset(token)

    def _audit(self, scope: Scope, state: dict, route: Any, status: int, rid: str) -> None:
        outcome = state.get("audit_outcome")
        if outcome is None:
            outcome = "ok" if status < 400 else _OUTCOMES.get(status, "error")
        params = scope.get("path_params") or {}
        try:
            self.audit.record(
                getattr(route, "name", None) or "unmatched",
                tenant=state.get("tenant"),
                outcome=outcome,
                erasure_id=_short(state.get("audit_erasure_id") or params.get("erasure_id")),
                request_id=rid,
                status_code=status,
                key_id=state.get("key_id"),
                checkpoint_id=_short(params.get("checkpoint_id")),
                method=scope["method"],
                client=(scope.get("client") or (None,))[0],
            )
        except OSError:
            log.error("cannot write the audit log", exc_info=True)


def _short(value: Any) -> str | None:
    """An id from the path, bounded (clients choose what they put in a URL)."""
    return str(value)[:128] if value else None
