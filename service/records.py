"""Records shared by the API and the workers: an erasure's durable state and its status values.

The request body itself (with its secrets) is never part of a record: it is stored encrypted as a
separate blob (see :mod:`service.store`) only while the job needs it. A record carries the public
form of the request (targets replaced by keyed fingerprints).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal[
    "queued", "running", "succeeded", "rejected", "failed", "cancelled", "nothing_to_erase"
]
TERMINAL: frozenset[str] = frozenset(
    {"succeeded", "rejected", "failed", "cancelled", "nothing_to_erase"}
)


def utcnow() -> str:
    """Current UTC time, ISO 8601 with a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(stamp: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (``Z`` suffix allowed, as :func:`utcnow`'s)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class StatusEvent(BaseModel):
    """One entry of an erasure's status history (also an SSE event)."""

    seq: int
    status: Status
    stage: str | None = None
    progress: float | None = None
    at: str = Field(default_factory=utcnow)
    detail: str | None = None


class ErasureRecord(BaseModel):
    """The durable record of one erasure request."""

    id: str
    tenant: str
    status: Status = "queued"
    stage: str | None = None
    progress: float = 0.0
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)
    model: str
    method: str
    request_public: dict[str, Any]  # the request with every target replaced by its fingerprint
    fact_fingerprints: list[str]
    callback_url: str | None = None
    history: list[StatusEvent] = Field(default_factory=list)
    metrics: dict[str, Any] | None = None
    acceptance: dict[str, Any] | None = None
    checkpoint_id: str | None = None
    error: str | None = None  # redacted, user-facing reason for "failed"
    timings: dict[str, float] = Field(default_factory=dict)
    attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    request_id: str | None = None  # X-Request-ID of the submission (in the worker's log lines)
    # a chunked erasure's chunks: {"total", "done", "facts" (chunk size), "split_at" (epoch s),
    # "evaluated" (fact ranges evaluated on the merged edit, once it is merged)}
    chunks: dict[str, float] | None = None
