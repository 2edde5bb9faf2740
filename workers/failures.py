"""Why an erasure job failed: the job's exceptions and what each failure means for the record.

:func:`classify` maps an exception raised while an erasure ran to a :class:`Failure`: cancelled,
a terminal failure with a user-facing reason (invalid request, engine error, full store), or an
unexpected one that rq may retry (timeout, request key, internal error). Reasons hold no secret:
engine messages are redacted (:func:`workers.redaction.public_message`). No torch.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from service.config import Settings
from workers.redaction import public_message


class JobFailure(Exception):
    """A terminal failure with a user-facing reason (holds no secret)."""


class RetryableJobError(RuntimeError):
    """An attempt failed unexpectedly; rq retries the job. The message is redacted."""


class Cancelled(Exception):
    """The record asked for cancellation between engine steps."""


STORE_FULL = (
    "the store ran out of disk space (No space left on device) while writing the checkpoint or "
    "the report; nothing was published. Free space on the store, then submit again"
)
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class Failure:
    """What an exception means for the erasure.

    ``kind`` is ``"cancelled"`` or one of :data:`service.job_metrics.FAILURE_REASONS`;
    ``reason`` the user-facing text (None when cancelled); ``unexpected`` failures are retried
    while rq has retries left.
    """

    kind: str
    reason: str | None = None
    unexpected: bool = False


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota.

    An OSError with ENOSPC/EDQUOT, or a library error wrapping one in its message (safetensors'
    Rust writer raises ``SafetensorError: ... StorageFull ...``, not an OSError). A full store
    fails the erasure at once: retrying within seconds would only fail again.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        text = str(current)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def classify(exc: Exception, *, erasure_id: str, secrets: list[str], settings: Settings) -> Failure:
    """The :class:`Failure` ``exc`` means for the erasure ``erasure_id``."""
    from pydantic import ValidationError
    from rq.timeouts import JobTimeoutException

    from editing.errors import CancelledError, EditingError
    from editing.request import validation_summary

    if isinstance(exc, CancelledError | Cancelled):
        return Failure("cancelled")
    if isinstance(exc, JobFailure):
        return Failure("invalid_request", str(exc))
    if isinstance(exc, EditingError):
        return Failure("engine_error", public_message(str(exc), secrets, settings))
    if isinstance(exc, ValidationError):
        return Failure(
            "invalid_request", f"the stored request is invalid: {validation_summary(exc)}"
        )
    if out_of_space(exc):
        return Failure("store_full", STORE_FULL)
    if isinstance(exc, JobTimeoutException):
        reason = (
            f"the erasure did not finish within the job timeout "
            f"({settings.job_timeout} s); nothing was published"
        )
        return Failure("timeout", reason, unexpected=True)
    if type(exc).__name__ == "SealKeyError":
        reason = (
            "the worker could not decrypt the request: the API and the workers must share "
            "the request key; contact the operator"
        )
        return Failure("request_key", reason, unexpected=True)
    reason = (
        f"internal error ({type(exc).__name__}); nothing was published. Contact the "
        f"operator with the erasure id {erasure_id}"
    )
    return Failure("internal_error", reason, unexpected=True)
