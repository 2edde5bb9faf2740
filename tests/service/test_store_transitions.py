"""Record transitions (service.store.transitions): an erasure ends once, is released (blob
deleted, private data under the retention setting), or goes back to the queue."""

from __future__ import annotations

import pytest

from service.config import Settings
from service.store import FilesystemStore, record_event, transitions
from tests.service.conftest import new_record


def _stored(store: FilesystemStore, status: str = "queued") -> str:
    """A stored record in ``status`` with a request blob and private subjects."""
    record = new_record()
    if status != "queued":
        record_event(record, status, stage="locate+edit")
    store.create_erasure(record, b"blob")
    store.put_private(record.id, "subjects", b"sealed")
    return record.id


@pytest.mark.parametrize("retention", ["record", "none"])
def test_finish_ends_once_and_releases(
    store: FilesystemStore, settings: Settings, retention: str
) -> None:
    settings.private_retention = retention
    erasure_id = _stored(store, "running")
    record, moved = transitions.finish(
        store, erasure_id, "succeeded", settings=settings, update={"timings": {"total": 1.0}}
    )
    assert moved and record is not None
    assert (record.status, record.stage, record.progress) == ("succeeded", "done", 1.0)
    assert record.timings["total"] == 1.0 and record.history[-1].status == "succeeded"
    assert store.get_request_blob(erasure_id) is None
    kept = store.get_private(erasure_id, "subjects")
    assert (kept is None) == (retention == "none")

    again, moved = transitions.finish(store, erasure_id, "failed", settings=settings, error="x")
    assert not moved and again is not None and again.status == "succeeded"
    with pytest.raises(ValueError, match="not a terminal status"):
        transitions.finish(store, erasure_id, "running", settings=settings)


def test_finish_only_from_leaves_other_statuses(store: FilesystemStore, settings: Settings) -> None:
    erasure_id = _stored(store, "running")
    record, moved = transitions.finish(
        store, erasure_id, "failed", settings=settings, error="e", only_from={"queued"}
    )
    assert not moved and record is not None and record.status == "running"
    queued = _stored(store)
    record, moved = transitions.finish(
        store, queued, "failed", settings=settings, error="e", stage="queued", only_from={"queued"}
    )
    assert moved and record is not None
    assert (record.status, record.error, record.stage) == ("failed", "e", "queued")
    assert transitions.finish(store, "er_missing", "failed", settings=settings) == (None, False)


def test_cancel_outcomes(store: FilesystemStore, settings: Settings) -> None:
    settings.private_retention = "none"
    queued = _stored(store)
    record, outcome = transitions.cancel(store, queued, dequeued=True, settings=settings)
    assert outcome == "cancelled" and record.status == "cancelled" and record.stage == "queued"
    assert store.get_request_blob(queued) is None and store.get_private(queued, "subjects") is None
    _, outcome = transitions.cancel(store, queued, dequeued=True, settings=settings)
    assert outcome == "terminal"

    running = _stored(store, "running")
    record, outcome = transitions.cancel(store, running, dequeued=True, settings=settings)
    assert outcome == "cancel_requested" and record.cancel_requested
    assert record.status == "running" and store.get_request_blob(running) == b"blob"


def test_mark_retrying_only_moves_running_records(store: FilesystemStore) -> None:
    running = _stored(store, "running")
    assert transitions.mark_retrying(store, running, "retrying")
    record = store.get_erasure(running)
    assert record is not None and (record.status, record.stage) == ("queued", "retrying")
    assert not transitions.mark_retrying(store, running, "again")
    assert not transitions.mark_retrying(store, "er_missing", "gone")
