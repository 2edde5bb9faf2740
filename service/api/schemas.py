"""Request and response bodies of the HTTP API.

Requests and responses are separate models: :class:`ErasureCreate` carries the targets (as
``SecretStr``); :class:`ErasurePublic` is built from an :class:`~service.records.ErasureRecord`,
which holds only keyed fingerprints, so a response cannot echo a secret by construction.
"""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from editing.request import STRICT, ErasureRequest, FactSpec
from service.records import ErasureRecord, Status, StatusEvent
from service.security.callback_target import host_refusal


# ----------------------------------------------------------------------------- requests
class ErasureCreate(ErasureRequest):
    """Body of ``POST /v1/erasures``: an :class:`~editing.request.ErasureRequest` plus a callback.

    The number of facts is capped by the server setting ``max_facts`` (checked by the route, so
    the error says so clearly).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "demo",
                    "method": "featureedit",
                    "facts": [
                        {"subject": "Alice Example", "relation": "phone", "target": "555-0100"}
                    ],
                    "callback_url": "https://example.com/hooks/featureedit",
                }
            ]
        },
    )

    facts: list[FactSpec] = Field(min_length=1, description="Facts to erase.")
    callback_url: HttpUrl | None = Field(
        default=None,
        description="POSTed the final record when the erasure ends, signed with "
        "X-Featureedit-Signature: sha256=<HMAC-SHA256 of the body>.",
    )

    @model_validator(mode="before")
    @classmethod
    def _json_types_as_documented(cls, data: Any) -> Any:
        """Refuse what pydantic's lax mode would coerce: ``false`` or ``"0.9"`` for a number...

        The OpenAPI schema says ``number``; a boolean or a string there is a client bug that
        would otherwise run with a surprising value (``false`` -> 0.0).
        """
        if not isinstance(data, dict):
            return data
        own = {k: v for k, v in data.items() if k in ErasureRequest.model_fields}
        try:
            # the context makes the method's params class strict too (validated separately)
            ErasureRequest.model_validate(own, strict=True, context=STRICT)
        except ValidationError as strict:
            try:
                ErasureRequest.model_validate(own)
            except ValidationError:
                return data  # invalid anyway: the normal validation reports it
            wrong = [
                ".".join(str(p) for p in e["loc"])
                for e in strict.errors(include_input=False, include_url=False)
            ]
            raise PydanticCustomError(
                "json_type",
                "wrong JSON type for {fields}: send numbers as JSON numbers, booleans as "
                "true/false and text as strings, as the schema says",
                {"fields": ", ".join(wrong)},
            ) from None
        return data

    @model_validator(mode="after")
    def _no_control_characters(self) -> ErasureCreate:
        """Subjects and prompts are shown in responses, reports and logs: no control characters
        (NUL, ESC sequences that rewrite a terminal, ...)."""
        for i, fact in enumerate(self.facts):
            texts = [("subject", fact.subject)]
            for kind in ("edit_prompts", "heldout_prompts"):
                texts += [(f"{kind}.{j}", t) for j, t in enumerate(getattr(fact, kind) or [])]
            for where, text in texts:
                bad = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"})
                if bad:
                    raise PydanticCustomError(
                        "control_characters",
                        "facts.{i}.{where} contains control characters ({bad}); remove them",
                        {"i": i, "where": where, "bad": ", ".join(bad[:5])},
                    )
        return self

    @field_validator("callback_url")
    @classmethod
    def _http_only(cls, url: HttpUrl | None) -> HttpUrl | None:
        if url is not None and url.scheme not in ("http", "https"):
            raise ValueError("callback_url must be an http or https URL")
        return url

    def to_request(self) -> ErasureRequest:
        """The :class:`ErasureRequest` part (validated again, e.g. against ``MAX_FACTS``)."""
        return ErasureRequest.model_validate(
            {name: getattr(self, name) for name in ErasureRequest.model_fields}
        )


def callback_host_is_private(url: str | HttpUrl) -> bool:
    """Whether a callback URL names a local name or a private/loopback/link-local address, in any
    spelling (``localhost.``, ``[::ffff:127.0.0.1]``, ``2130706433``, ``0177.0.0.1``...).

    Host names are not resolved here (the worker resolves once when it delivers, and connects to
    the address it checked); this refuses what is refused whatever DNS says
    (:func:`service.security.callback_target.host_refusal`).
    """
    # urlsplit, not HttpUrl(url): the normalised form of a valid URL near the length limit (a
    # trailing "/" added) may not parse again
    return host_refusal(urlsplit(str(url)).hostname or "") is not None


# ----------------------------------------------------------------------------- responses
class FactPublic(BaseModel):
    """A fact as the API shows it: keyed fingerprints of its subject and target, and the relation.

    The subject's name is not shown: it stays in the operator's private record (sealed), so no
    response, event, callback, report or checkpoint says whom an erasure concerns.
    """

    subject_fingerprint: str | None = Field(
        default=None,
        description="hmac-sha256 fingerprint of the subject's name (the operator can match it); "
        "null on records made before 0.2 until `featureedit checkpoints migrate` rewrites them.",
    )
    relation: str
    fingerprint: str = Field(description="hmac-sha256 fingerprint of the target.")
    edit_prompts: int | None = Field(
        default=None, description="Number of edit prompts given (null: the relation's templates)."
    )
    heldout_prompts: int | None = Field(
        default=None, description="Number of held-out prompts given (null: templates)."
    )


class Links(BaseModel):
    """Where to follow an erasure."""

    self_: str = Field(serialization_alias="self")
    events: str
    report: str
    checkpoint: str | None = None


class ErasurePublic(BaseModel):
    """An erasure as the API shows it (never a target)."""

    id: str
    status: Status
    stage: str | None = None
    progress: float = 0.0
    cancel_requested: bool = False
    model: str
    method: str
    params: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None
    base_checkpoint: str | None = None
    publish: str | None = Field(
        default=None, description="The request's publish mode (null: the service's setting)."
    )
    facts: list[FactPublic]
    created_at: str
    updated_at: str
    metrics: dict[str, Any] | None = None
    acceptance: dict[str, Any] | None = None
    checkpoint_id: str | None = None
    error: str | None = None
    attempts: int = 0
    chunks: dict[str, int] | None = Field(
        default=None,
        description="A chunked erasure's chunks: total and done (located and edited); null when "
        "the request was not split.",
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds per stage (model_load, locate, edit, evaluate, publish, total); "
        "model_cached is 1 when the worker already held the model (no load).",
    )
    links: Links

    @classmethod
    def from_record(cls, record: ErasureRecord, base_url: str) -> ErasurePublic:
        """The public view of ``record``; links are absolute under ``base_url``."""
        pub = record.request_public
        facts = [FactPublic.model_validate(f) for f in pub.get("facts", [])]
        me = f"{base_url}/v1/erasures/{record.id}"
        links = Links(
            self_=me,
            events=f"{me}/events",
            report=f"{me}/report",
            checkpoint=(
                f"{base_url}/v1/checkpoints/{record.checkpoint_id}"
                if record.checkpoint_id
                else None
            ),
        )
        return cls(
            id=record.id,
            status=record.status,
            stage=record.stage,
            progress=record.progress,
            cancel_requested=record.cancel_requested,
            model=record.model,
            method=record.method,
            params=pub.get("params"),
            thresholds=pub.get("thresholds"),
            base_checkpoint=pub.get("base_checkpoint"),
            publish=pub.get("publish"),
            facts=facts,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metrics=record.metrics,
            acceptance=record.acceptance,
            checkpoint_id=record.checkpoint_id,
            error=record.error,
            attempts=record.attempts,
            chunks=(
                None
                if record.chunks is None
                else {k: int(record.chunks.get(k, 0)) for k in ("total", "done")}
            ),
            timings=record.timings,
            links=links,
        )


class ErasureList(BaseModel):
    """A page of erasures, newest first."""

    items: list[ErasurePublic]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class ErasureAccepted(BaseModel):
    """Body of a 202 (or of a 200 when an Idempotency-Key was replayed)."""

    id: str
    status: Status
    status_url: str


class EventPublic(StatusEvent):
    """One status event as sent on the event stream (``id:`` is its ``seq``)."""

    erasure_id: str


class SAEPublic(BaseModel):
    """SAEs of one site."""

    layers: list[int]


class ModelPublic(BaseModel):
    """A registered model: its SAEs and the methods it supports."""

    model_id: str
    dtype: str
    demo: bool = False
    saes: dict[str, SAEPublic]
    methods: list[str]


class ModelList(BaseModel):
    """Every registered model."""

    models: list[ModelPublic]


class CheckpointFile(BaseModel):
    """One file of a published checkpoint."""

    name: str
    size: int
    sha256: str
    url: str


class CheckpointPublic(BaseModel):
    """A published checkpoint: its manifest and where to download each file."""

    checkpoint_id: str
    erasure_id: str | None = None
    files: list[CheckpointFile]
    manifest: dict[str, Any] = Field(description="manifest.json as published (no secret).")


class Problem(BaseModel):
    """Error body."""

    detail: Any
    request_id: str | None = None


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry: a :class:`Problem` as ``application/json``.

    Unlike ``{"model": Problem}``, which FastAPI documents under the route's own media type
    (``text/event-stream`` for the event stream), this always says ``application/json``, which
    is what the error handlers send.
    """
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
