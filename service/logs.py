"""Structured JSON logs (one object per line on stderr; never request bodies, never secrets).

Every line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and ``msg``; then
``request_id`` while a request is served (set by the request-id middleware), ``erasure_id`` and
``job_id`` while a worker runs a job (:func:`log_context`), and any ``extra={...}`` fields of the
logging call. Exceptions add ``exc_type`` and ``traceback`` (the job redacts secrets from
exceptions before it logs them).

The API (:func:`configure_logging`: the ``service`` loggers, uvicorn's error log; uvicorn's
access log is replaced by the middleware's ``request`` line) and the workers
(``workers.worker.configure_worker_logging``: ``workers``, ``editing``, ``service``, ``rq``) both
install :class:`JsonFormatter` through :func:`install_json_handler`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("featureedit_request_id", default=None)
log_fields_var: ContextVar[dict[str, Any] | None] = ContextVar(
    "featureedit_log_fields", default=None
)

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (e.g. ``erasure_id=..., job_id=...``) to every line logged inside."""
    current = log_fields_var.get() or {}
    token = log_fields_var.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        log_fields_var.reset(token)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, msg, request/erasure ids, extras."""

    converter = time.gmtime  # timestamps in UTC

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        doc.update(log_fields_var.get() or {})
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def install_json_handler(names: Iterable[str], level: str = "INFO", replace: bool = False) -> None:
    """Make the loggers ``names`` write JSON lines to stderr (idempotent; not propagated).

    With ``replace`` their other handlers are removed first (uvicorn's plain-text ones).
    """
    for name in names:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(h, "_featureedit_json", False) for h in logger.handlers):
            if replace:
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JsonFormatter())
            handler._featureedit_json = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.propagate = False


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the ``service`` loggers and uvicorn's error log (idempotent).

    uvicorn's access log is switched off: the middleware logs every request as JSON (with its
    request id, route template, status, duration and tenant).
    """
    install_json_handler(("service",), level)
    install_json_handler(("uvicorn", "uvicorn.error"), level, replace=True)
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
