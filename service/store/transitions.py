"""Record transitions: how an erasure's record ends, or goes back to the queue.

Shared by the workers (a job's outcome, reconciliation after a lost worker) and the API (a queued
erasure the client cancels, a submission the queue could not take). Each transition is one
:meth:`~service.store.base.Store.update_erasure` and then, once an erasure has ended, the
clean-up it needs: the encrypted request deleted (the secret is no longer needed) and the
private data kept or forgotten under ``Settings.private_retention``
(:func:`service.private_records.apply_retention`). What the workers add on top of an ending (job
metrics, the callback) stays in :mod:`workers.jobs`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Literal

from service.private_records import apply_retention
from service.records import TERMINAL, ErasureRecord, Status
from service.store.base import Store, record_event

if TYPE_CHECKING:
    from service.config import Settings

COMPLETED = frozenset({"succeeded", "rejected", "nothing_to_erase"})
CancelOutcome = Literal["cancelled", "cancel_requested", "terminal"]


def end_record(
    record: ErasureRecord,
    status: Status,
    *,
    detail: str | None = None,
    error: str | None = None,
    stage: str | None = None,
    update: dict[str, Any] | None = None,
) -> None:
    """Give ``record`` the terminal ``status`` and its history event (inside a mutation).

    ``update`` sets record fields first (``timings`` are merged). A failure gets ``error`` (a
    generic one if None); a completed erasure ends at stage ``done`` with progress 1, any other
    end at ``stage`` (default: the record's current one).
    """
    for key, value in (update or {}).items():
        if key == "timings":
            record.timings.update(value)
        else:
            setattr(record, key, value)
    if status == "failed":
        record.error = error or "the erasure failed"
    progress = 1.0 if status in COMPLETED else None
    end_stage = "done" if status in COMPLETED else (stage or record.stage)
    record_event(record, status, stage=end_stage, progress=progress, detail=detail)


def release(store: Store, erasure_id: str, settings: Settings) -> None:
    """After an erasure ended: delete its request blob and apply the private-data retention."""
    store.delete_request_blob(erasure_id)
    apply_retention(store, erasure_id, settings)


def finish(
    store: Store,
    erasure_id: str,
    status: Status,
    *,
    settings: Settings,
    detail: str | None = None,
    error: str | None = None,
    stage: str | None = None,
    update: dict[str, Any] | None = None,
    only_from: Collection[Status] | None = None,
) -> tuple[ErasureRecord | None, bool]:
    """Move the record to the terminal ``status`` once (see :func:`end_record`), then
    :func:`release` it.

    Idempotent: a record already terminal (or, with ``only_from``, in a status not listed) is
    left alone; the blob is deleted all the same. Returns the record (None if it vanished) and
    whether this call made the transition.
    """
    if status not in TERMINAL:
        raise ValueError(f"{status!r} is not a terminal status; expected one of {sorted(TERMINAL)}")
    moved = False

    def mutate(r: ErasureRecord) -> None:
        nonlocal moved
        if r.status in TERMINAL or (only_from is not None and r.status not in only_from):
            return
        end_record(r, status, detail=detail, error=error, stage=stage, update=update)
        moved = True

    try:
        record: ErasureRecord | None = store.update_erasure(erasure_id, mutate)
    except KeyError:
        record = None
    release(store, erasure_id, settings)
    return record, moved


def cancel(
    store: Store, erasure_id: str, *, dequeued: bool, settings: Settings
) -> tuple[ErasureRecord, CancelOutcome]:
    """The client's cancellation: a queued erasure whose job was taken off the queue
    (``dequeued``) is cancelled now and released; any other unfinished one gets
    ``cancel_requested`` (its worker stops at its next check).

    Returns the record and the outcome, ``"terminal"`` if it had already ended (unchanged).
    KeyError if there is no such record.
    """
    outcome: CancelOutcome = "terminal"

    def mutate(r: ErasureRecord) -> None:
        nonlocal outcome
        if r.status in TERMINAL:
            outcome = "terminal"
        elif r.status == "queued" and dequeued:
            end_record(r, "cancelled", detail="cancelled by the client")
            outcome = "cancelled"
        else:
            r.cancel_requested = True
            outcome = "cancel_requested"

    record = store.update_erasure(erasure_id, mutate)
    if outcome == "cancelled":
        release(store, erasure_id, settings)
    return record, outcome


def mark_retrying(store: Store, erasure_id: str, detail: str) -> bool:
    """Show a running erasure as queued again (its rq job will be retried); whether it changed."""
    changed = False

    def mutate(r: ErasureRecord) -> None:
        nonlocal changed
        if r.status == "running":
            record_event(r, "queued", stage="retrying", detail=detail)
            changed = True

    try:
        store.update_erasure(erasure_id, mutate)
    except KeyError:
        return False
    return changed
