"""What a submitted erasure becomes before it is queued: the validated request, its public form
and its queued record.

:func:`validate_create` checks the body against the registry, the method's needs, the tenant's
base checkpoint and the callback host, raising :class:`~service.api.errors.Unprocessable` (or 503)
that names what to fix without echoing input. :func:`public_request` is the request with no
target, no prompt text and no subject name; :func:`new_record` the record that holds only that.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from editing.checkpoints.manifest import LegacyCheckpointError, base_model_problem
from editing.fingerprint import fingerprint, subject_fingerprint
from editing.request import ErasureRequest
from service.api.deps import ContextDep, registered_models_or_503
from service.api.errors import Unprocessable, from_validation_error
from service.api.schemas import ErasureCreate, callback_host_is_private
from service.catalog import method_problem
from service.records import ErasureRecord
from service.store import new_erasure_id, record_event


def public_request(request: ErasureRequest, key: bytes) -> tuple[dict[str, Any], list[str]]:
    """``(request_public, fact_fingerprints)``: the request with no target, no prompt text and no
    subject name (keyed fingerprints stand for both; the names stay in the private record)."""
    fingerprints = [fingerprint(f.secret, key) for f in request.facts]
    facts = [
        {
            "subject_fingerprint": subject_fingerprint(f.subject, key),
            "relation": f.relation,
            "fingerprint": fp,
            "edit_prompts": None if f.edit_prompts is None else len(f.edit_prompts),
            "heldout_prompts": None if f.heldout_prompts is None else len(f.heldout_prompts),
        }
        for f, fp in zip(request.facts, fingerprints, strict=True)
    ]
    doc = {
        "model": request.model,
        "method": request.method,
        "params": request.params.model_dump(mode="json"),
        "thresholds": request.thresholds.model_dump(mode="json"),
        "base_checkpoint": request.base_checkpoint,
        "publish": request.publish,
        "facts": facts,
    }
    return doc, fingerprints


def new_record(
    request: ErasureRequest,
    tenant: str,
    key: bytes,
    *,
    callback_url: str | None = None,
    request_id: str | None = None,
) -> ErasureRecord:
    """The queued record of a new erasure of ``request`` for ``tenant`` (with a fresh id; only
    the request's public form, see :func:`public_request`; ``key`` is the fingerprint key)."""
    request_public, fingerprints = public_request(request, key)
    record = ErasureRecord(
        id=new_erasure_id(),
        tenant=tenant,
        model=request.model,
        method=request.method,
        request_public=request_public,
        fact_fingerprints=fingerprints,
        callback_url=callback_url,
        request_id=request_id,
    )
    record_event(record, "queued", stage="queued", progress=0.0, detail="accepted")
    return record


def validate_create(body: ErasureCreate, ctx: ContextDep, tenant: str) -> ErasureRequest:
    """The request to run, or Unprocessable / 503 naming what is wrong (never echoing input)."""
    s = ctx.settings
    if len(body.facts) > s.max_facts:
        raise Unprocessable(
            ["body", "facts"],
            f"too many facts: at most {s.max_facts} per request, got {len(body.facts)}; "
            "split them over several requests",
            "too_many_facts",
        )
    try:
        request = body.to_request()
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    models = registered_models_or_503(s)
    entry = models.get(request.model)
    if entry is None:
        raise Unprocessable(
            ["body", "model"],
            f"model is not registered; registered models: {sorted(models)}",
            "unknown_model",
        )
    problem = method_problem(entry, request)
    if problem is not None:
        raise Unprocessable(problem[0], problem[1], "method_unavailable")
    if request.base_checkpoint is not None:
        owner = ctx.store.checkpoint_owner(request.base_checkpoint)
        owned = owner is not None and owner.get("tenant") == tenant
        # the owner first: the S3 store downloads the whole checkpoint in checkpoint_dir
        directory = ctx.store.checkpoint_dir(request.base_checkpoint) if owned else None
        if directory is None:
            raise Unprocessable(
                ["body", "base_checkpoint"],
                "base_checkpoint is not one of your published checkpoints",
                "unknown_checkpoint",
            )
        try:
            problem = base_model_problem(directory, request.model)
        except LegacyCheckpointError:
            raise Unprocessable(
                ["body", "base_checkpoint"],
                "base_checkpoint is in an old checkpoint format that is no longer served; ask "
                "the operator to run `featureedit checkpoints migrate`",
                "checkpoint_legacy",
            ) from None
        if problem:
            raise Unprocessable(
                ["body", "base_checkpoint"],
                problem.replace(f"base checkpoint {request.base_checkpoint}", "base_checkpoint"),
                "checkpoint_model_mismatch",
            )
    if (
        body.callback_url is not None
        and not s.callback_allow_private
        and callback_host_is_private(str(body.callback_url))
    ):
        raise Unprocessable(
            ["body", "callback_url"],
            "callback_url must name a public host (not localhost or a private address)",
            "callback_url_private",
        )
    return request
