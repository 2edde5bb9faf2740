"""Structured JSON logs for the service (one object per line on stderr; never request bodies).

Records carry the request id of the request being served (a context variable set by the
request-id middleware) and any ``extra={...}`` fields given to the logging call.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("featureedit_request_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, request_id, extras."""

    converter = time.gmtime  # timestamps in UTC

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            doc["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send the ``service`` loggers' records to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_featureedit_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._featureedit_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
