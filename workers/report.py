"""The report an erasure job stores: the pipeline's typed report plus the worker's fields.

:func:`stored_report` is :meth:`editing.pipeline.Erasure.report` (the erasure's metrics, facts,
acceptance, edit footprint and published checkpoint) with what only the worker knows (the
record's ids and public request, code version, attempts, worker, model cache, timings), as the
JSON the store keeps, scrubbed of secrets. No torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from service.records import ErasureRecord, utcnow
from workers.redaction import scrub

if TYPE_CHECKING:  # the pipeline imports torch; the job passes its result in
    from editing.pipeline import Erasure


def stored_report(
    erasure: Erasure,
    record: ErasureRecord,
    *,
    attempt: int,
    worker: str,
    cached: bool,
    load_seconds: float,
    timings: Mapping[str, float],
    secrets: list[str],
) -> dict[str, Any]:
    """The report JSON of ``record``'s erasure (secrets redacted, non-finite floats as None)."""
    from editing.checkpoints import code_version

    report = erasure.report(
        erasure_id=record.id,
        code_version=code_version(),
        model=record.model,
        request=record.request_public,
        fact_fingerprints=record.fact_fingerprints,
        parent_checkpoint_id=record.request_public.get("base_checkpoint"),
        created_at=record.created_at,
        finished_at=utcnow(),
        attempts=attempt,
        worker=worker,
        model_cache={"cached": cached, "load_seconds": round(load_seconds, 4)},
        timings=dict(timings),
    )
    return scrub(report.to_json(), secrets)
