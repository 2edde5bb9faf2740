"""Exception handlers: validation errors without input, library errors as 4xx, no tracebacks.

* ``RequestValidationError`` (any route) -> 422 ``{"detail": [{"loc", "msg", "type"}], "summary"}``
  with neither ``input`` nor ``ctx``; messages in :func:`editing.request.validation_summary`
  style; any string the client sent is blanked out of the messages (so a target can never come
  back even through a message that quotes it), and field names that are not identifiers are
  replaced in ``loc``.
* a body that is not valid JSON (or not UTF-8) -> the same 422, saying so (FastAPI's own answer to
  undecodable bytes is a 400 "There was an error parsing the body").
* 405 -> ``Allow`` lists the methods of *every* route on the path (Starlette names only those of
  the first route it tried, e.g. ``POST`` for ``GET``/``POST /v1/erasures``).
* :class:`editing.errors.EditingError` -> 4xx with a short message.
* anything else -> 500 ``{"detail": "internal error", "request_id": ...}``, logged with traceback.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from editing.errors import (
    CancelledError,
    ConfigError,
    CorruptCacheError,
    EditingError,
    NotFoundError,
)
from editing.fingerprint import redact

log = logging.getLogger(__name__)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_MSG = 300
_BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 for undecodable bodies
_SEND_JSON = "send a UTF-8 JSON object with Content-Type: application/json"


def not_json_message(where: str = "") -> str:
    """The message for a body that is not JSON; ``where`` says where, e.g. ``" (... at 3)"``."""
    return f"the request body is not valid JSON{where}; {_SEND_JSON}"


def request_id_of(request: Request) -> str | None:
    """The request id the middleware assigned."""
    return getattr(request.state, "request_id", None)


def _strings(value: Any, out: list[str]) -> list[str]:
    """Every string value (and non-identifier key) in a decoded request body."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not _IDENT.fullmatch(str(k)):  # field names appear in messages legitimately
                _strings(k, out)
            _strings(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _strings(v, out)
    elif isinstance(value, bytes | bytearray):
        out.append(bytes(value).decode("utf-8", "replace"))
    return out


def _safe_loc(loc: Iterable[Any]) -> list[str | int]:
    return [p if isinstance(p, int) or _IDENT.fullmatch(str(p)) else "<field>" for p in loc]


def sanitize_errors(errors: Sequence[dict[str, Any]], sent: Any = None) -> list[dict[str, Any]]:
    """Validation errors reduced to ``loc``, ``msg`` and ``type``, echoing nothing sent."""
    # strings of 3+ characters the client sent (shorter ones would blank out ordinary words)
    secrets = [s for s in _strings(sent, []) if len(s.strip()) >= 3]
    clean = []
    for err in errors:
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error")
            at = [p for p in err.get("loc", ()) if isinstance(p, int)]
            where = f" ({reason} at character {at[0]})" if reason and at else ""
            msg = not_json_message(where)
        msg = redact(msg, secrets) if secrets else msg
        if len(msg) > _MAX_MSG:
            msg = msg[:_MAX_MSG] + "..."
        clean.append(
            {"loc": _safe_loc(err.get("loc", ())), "msg": msg, "type": str(err.get("type"))}
        )
    return clean


def summary_of(errors: Sequence[dict[str, Any]]) -> str:
    """One line: ``loc: msg; loc: msg`` (``body.`` dropped from body locations)."""
    lines = []
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == "body":
            loc = loc[1:]
        lines.append(f"{'.'.join(loc) or 'request'}: {err['msg']}")
    return "; ".join(lines)


def validation_response(
    errors: Sequence[dict[str, Any]], request: Request, sent: Any = None
) -> JSONResponse:
    """The 422 response for ``errors``."""
    clean = sanitize_errors(errors, sent)
    return JSONResponse(
        status_code=422,
        content={
            "detail": clean,
            "summary": summary_of(clean),
            "request_id": request_id_of(request),
        },
    )


class Unprocessable(Exception):
    """Raise in a route for a 422 shaped like a validation error (``loc``, ``msg``, ``type``)."""

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.errors = [{"loc": list(loc), "msg": msg, "type": type_}]


def from_validation_error(
    exc: ValidationError, prefix: Sequence[str | int] = ("body",)
) -> Unprocessable:
    """An :class:`Unprocessable` for a pydantic ValidationError raised inside a route."""
    out = Unprocessable(prefix, "invalid")
    out.errors = [
        {"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    return out


_EDITING_STATUS: tuple[tuple[type[EditingError], int, str | None], ...] = (
    # (class, status, fixed message or None to use the error's own)
    (NotFoundError, 404, "Not found"),
    (CorruptCacheError, 409, "A stored artifact failed its integrity check"),
    (CancelledError, 409, "The erasure was cancelled"),
    (ConfigError, 422, None),
    (EditingError, 400, None),
)


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app fully matches for the request's path."""
    routes = request.app.router.routes
    allowed = []
    for method in _HTTP_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def install_exception_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _BODY_PARSE_ERROR:
            errors = [{"loc": ["body"], "msg": not_json_message(), "type": "json_invalid"}]
            return validation_response(errors, request)
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            return JSONResponse(
                status_code=405,
                content={
                    "detail": f"Method {request.method} not allowed here; use one of {allowed}",
                    "request_id": request_id_of(request),
                },
                headers={"Allow": ", ".join(allowed)},
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc.errors(), request, getattr(exc, "body", None))

    @app.exception_handler(Unprocessable)
    async def _unprocessable(request: Request, exc: Unprocessable) -> JSONResponse:
        return validation_response(exc.errors, request)

    @app.exception_handler(EditingError)
    async def _editing(request: Request, exc: EditingError) -> JSONResponse:
        status, fixed = next((st, f) for c, st, f in _EDITING_STATUS if isinstance(exc, c))
        message = fixed or " ".join(str(exc).split())[:_MAX_MSG]
        log.info("library error", extra={"error_type": type(exc).__name__, "status": status})
        return JSONResponse(
            status_code=status,
            content={"detail": message, "request_id": request_id_of(request)},
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, HTTPException):  # pragma: no cover - handled by FastAPI first
            raise exc
        # the traceback's frames, but the message only if it cannot quote input (a pydantic
        # ValidationError's text does)
        message = "" if isinstance(exc, ValidationError) else " ".join(str(exc).split())[:500]
        log.error(
            "unhandled error",
            extra={
                "error_type": type(exc).__name__,
                "error": message,
                "traceback": "".join(traceback.format_tb(exc.__traceback__)),
            },
        )
        rid = request_id_of(request)
        headers = {"X-Request-ID": rid} if rid else None
        return JSONResponse(
            status_code=500,
            content={"detail": "internal error", "request_id": rid},
            headers=headers,
        )
