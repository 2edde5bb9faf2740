"""The operator's private erasure record: what an erasure needs kept but must never publish.

Two sealed data per erasure, kept in the store beside (never inside) the public record:

``subjects``
    the data subjects' names and relations, as submitted (JSON). The public record, the report,
    events, callbacks and the checkpoint name subjects only by keyed fingerprint.
``revert``
    the revert data of the published checkpoint: its pre-edit values
    (:mod:`editing.checkpoints.revert`). Only it can roll the erasure back.

While a chunked erasure runs (:mod:`workers.chunks`) each chunk's edit is kept here too, as
``chunk-<n>`` (:func:`keep_chunk`), then the merged edit (``merged``) and each fact range's
evaluation of it (``eval-<n>``): new weight values and figures, never published; the chunks'
edits are deleted once merged, the rest when the erasure ends, whatever its outcome
(:func:`forget_chunks`), whatever the retention.

All are sealed with the service's key (:mod:`editing.sealing`, the key that seals request
blobs), no route serves them, and ``Settings.private_retention`` decides how long they live:
``"record"`` (default) keeps them as long as the erasure record (until ``featureedit private
delete``), ``"none"`` deletes them as soon as the erasure ends.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from editing import sealing
from editing.errors import NotFoundError
from service.store import Store

if TYPE_CHECKING:
    from editing.edits import Edit
    from editing.request import ErasureRequest
    from service.config import Settings

REVERT = "revert"
SUBJECTS = "subjects"


def _key(settings: Settings) -> str | None:
    return None if settings.secret_key is None else settings.secret_key.get_secret_value()


def _seal(data: bytes, settings: Settings) -> bytes:
    return sealing.seal(data, home=settings.home, key=_key(settings))


def _unseal(token: bytes, settings: Settings, what: str) -> bytes:
    return sealing.unseal(token, home=settings.home, key=_key(settings), what=what)


def keep_subjects(
    store: Store, erasure_id: str, subjects: list[dict[str, Any]], settings: Settings
) -> None:
    """Seal and keep ``[{"subject", "relation"}, ...]`` for the erasure."""
    data = json.dumps(subjects, ensure_ascii=False).encode("utf-8")
    store.put_private(erasure_id, SUBJECTS, _seal(data, settings))


def subjects_of(request: ErasureRequest) -> list[dict[str, Any]]:
    """The subjects and relations of a request's facts (what :func:`keep_subjects` keeps)."""
    return [{"subject": f.subject, "relation": f.relation} for f in request.facts]


def load_subjects(store: Store, erasure_id: str, settings: Settings) -> list[dict[str, Any]]:
    """The erasure's subjects; NotFoundError if none are kept (retention or never stored)."""
    token = store.get_private(erasure_id, SUBJECTS)
    if token is None:
        raise NotFoundError(
            f"No subject names are kept for erasure {erasure_id} (private_retention='none', "
            "deleted, or an unknown erasure)."
        )
    return json.loads(_unseal(token, settings, f"The subjects of erasure {erasure_id}"))


def keep_revert_data(
    store: Store, erasure_id: str, edit: Edit, checkpoint_id: str, settings: Settings
) -> None:
    """Seal and keep the revert data of ``checkpoint_id`` (unless retention is ``"none"``)."""
    if settings.private_retention == "none":
        return
    from editing.checkpoints.revert import revert_bytes

    store.put_private(erasure_id, REVERT, _seal(revert_bytes(edit, checkpoint_id), settings))


def load_revert_bytes(store: Store, erasure_id: str, settings: Settings) -> bytes:
    """The erasure's revert data (plain bytes: handle as toxic); NotFoundError if not kept."""
    token = store.get_private(erasure_id, REVERT)
    if token is None:
        raise NotFoundError(
            f"No revert data is kept for erasure {erasure_id}: it published no checkpoint, its "
            "private data was deleted (retention 'none' or `featureedit private delete`), or the "
            "erasure is unknown. Without it the erasure cannot be rolled back from the edited "
            "model; the base model itself is the pre-erasure state."
        )
    return _unseal(token, settings, f"The revert data of erasure {erasure_id}")


def apply_retention(store: Store, erasure_id: str, settings: Settings) -> None:
    """At the end of an erasure: forget its private data if retention is ``"none"``."""
    if settings.private_retention == "none":
        store.delete_private(erasure_id)


ChunkPart = Literal["chunk", "merged", "eval"]
CHUNK_PARTS: tuple[ChunkPart, ...] = ("chunk", "merged", "eval")


def chunk_name(index: int, part: ChunkPart = "chunk") -> str:
    """The private datum name of a chunked erasure's ``part``: chunk ``index``'s edit
    (``chunk-<n>``), the merged edit (``merged``; no index) or fact range ``index``'s evaluation
    of it (``eval-<n>``)."""
    return "merged" if part == "merged" else f"{part}-{index}"


def keep_chunk(
    store: Store,
    erasure_id: str,
    index: int,
    data: bytes,
    settings: Settings,
    part: ChunkPart = "chunk",
) -> None:
    """Seal and keep a chunked erasure's ``part`` (:func:`chunk_name`; a chunk's edit is
    :meth:`editing.chunks.ChunkEdit.to_bytes`)."""
    store.put_private(erasure_id, chunk_name(index, part), _seal(data, settings))


def load_chunk(
    store: Store, erasure_id: str, index: int, settings: Settings, part: ChunkPart = "chunk"
) -> bytes | None:
    """The ``part`` as :func:`keep_chunk` kept it, or None if it was not kept."""
    token = store.get_private(erasure_id, chunk_name(index, part))
    if token is None:
        return None
    return _unseal(token, settings, f"Part {chunk_name(index, part)} of erasure {erasure_id}")


def forget_chunks(
    store: Store, erasure_id: str, count: int, parts: tuple[ChunkPart, ...] = CHUNK_PARTS
) -> None:
    """Delete ``parts`` of chunks ``0 .. count - 1`` (default: the chunks' edits, the merged
    edit and the evaluations; idempotent)."""
    names = {chunk_name(index, part) for part in parts for index in range(count)}
    for name in sorted(names):
        store.delete_private(erasure_id, name)
