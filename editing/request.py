"""The erasure request: what to erase, from which model, how, and when the result may be published.

Shared by the CLI, the library and the HTTP API. The target (the secret) is a ``SecretStr``: it
never appears in ``repr``, logs or validation messages; :func:`validation_summary` formats errors
without echoing input values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from editing.methods.params import MethodParams
from editing.methods.registry import method_names, method_spec
from editing.relations import RELATIONS, get_relation

DEFAULT_METHOD = "featureedit"
# Validation contexts. STRICT makes ``params`` strict along with the request (``strict=True``
# alone does not reach them: they are validated by the method's own class). STORED reads a request
# stored before per-method params (issue #12): it carried every field of one flat params class,
# FLAT_PARAMS_V1, and each method used only its own, so the others are dropped.
STRICT = {"strict": True}
STORED = {"stored": True}
FLAT_PARAMS_V1 = frozenset(
    "site layers variant selector objective tau1 tau2 gamma rho max_features relocate_rounds "
    "min_prompts ig_steps ig_threshold neuron_cap neuronlens_tau".split()
)
MAX_FACTS = 1000  # the service's own cap (Settings.max_facts, default 100) is at most this
MAX_PROMPTS = 64
MAX_TEXT = 1000
# The shortest target an erasure takes: 2 characters, 3 for a number. A shorter "secret" is not
# one (a single character, one of 100 two-digit numbers): neither the greedy leak check nor the
# pre-publish scan can tell it apart from ordinary text (it is in every vocabulary and date).
MIN_TARGET_CHARS = 2
MIN_DIGIT_TARGET_CHARS = 3


class FactSpec(BaseModel):
    """One fact to erase. Prompts default to the relation's built-in templates."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    subject: str = Field(min_length=1, max_length=200, description="Who the fact is about.")
    relation: str = Field(
        min_length=1,
        max_length=64,
        description=f"Relation name; built-in: {sorted(RELATIONS)}. Any other name needs prompts.",
    )
    target: SecretStr = Field(description="The secret to erase (never echoed back).")
    edit_prompts: list[str] | None = Field(
        default=None,
        max_length=MAX_PROMPTS,
        description="Prompts that end right before the secret; used to locate and edit.",
    )
    heldout_prompts: list[str] | None = Field(
        default=None,
        max_length=MAX_PROMPTS,
        description="Paraphrases never used to locate or edit; they measure Generalization.",
    )

    @model_validator(mode="after")
    def _check(self) -> FactSpec:
        secret = self.target.get_secret_value().strip()
        if not secret:
            raise ValueError("target is empty: give the secret string to erase")
        if len(secret) > MAX_TEXT:
            raise ValueError(f"target is longer than {MAX_TEXT} characters")
        shortest = MIN_DIGIT_TARGET_CHARS if secret.isdigit() else MIN_TARGET_CHARS
        if len(secret) < shortest:
            raise ValueError(
                f"target is too short: at least {MIN_TARGET_CHARS} characters, "
                f"{MIN_DIGIT_TARGET_CHARS} digits for a number (a shorter one occurs in ordinary "
                "text: no erasure or leak check can tell it apart)"
            )
        if self.edit_prompts is None:
            if self.relation not in RELATIONS:
                get_relation(self.relation)  # raises ConfigError listing the relations
        elif not self.edit_prompts:
            raise ValueError("edit_prompts is empty: give at least one prompt or omit the field")
        for name in ("edit_prompts", "heldout_prompts"):
            for i, prompt in enumerate(getattr(self, name) or []):
                if not prompt.strip():
                    raise ValueError(f"{name}[{i}] is empty")
                if len(prompt) > MAX_TEXT:
                    raise ValueError(f"{name}[{i}] is longer than {MAX_TEXT} characters")
                if secret in prompt:
                    raise ValueError(
                        f"{name}[{i}] already contains the target; a prompt must end right "
                        "before the secret"
                    )
        return self

    @property
    def secret(self) -> str:
        """The target string (handle with care: never log it)."""
        return self.target.get_secret_value().strip()

    def resolved_edit_prompts(self) -> list[str]:
        """Edit prompts, generated from the relation's templates when not given."""
        if self.edit_prompts is not None:
            return list(self.edit_prompts)
        return get_relation(self.relation).edit_prompts(self.subject)

    def resolved_heldout_prompts(self) -> list[str]:
        """Held-out prompts, generated from the relation's templates when not given."""
        if self.heldout_prompts is not None:
            return list(self.heldout_prompts)
        if self.relation in RELATIONS and self.edit_prompts is None:
            return get_relation(self.relation).heldout_prompts(self.subject)
        return []


class Thresholds(BaseModel):
    """Acceptance thresholds: a result is published only if it meets all of them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_reliability: float = Field(0.9, ge=0, le=1)
    min_generalization: float = Field(0.7, ge=0, le=1)
    min_locality: float = Field(0.9, ge=0, le=1)
    max_delta_ppl: float = Field(0.05, ge=0)
    # attack limits (issue #13; editing.acceptance.ATTACK_CRITERIA): None = the operator's
    # default (FEATUREEDIT_WORKER_ATTACK_LIMITS, default editing.acceptance.DEFAULT_ATTACK_LIMITS:
    # max_sampled_leak 0.01 and max_logit_lens_success_at_1 0); checked after the edit
    max_sampled_leak: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Sampled leak rate (temperature 1, no top-k) of every fact (the worst one), "
        "at most; unset: the operator's default (0.01 unless changed).",
    )
    max_logit_lens_success_at_20: float | None = Field(
        None, ge=0, le=1, description="Share of facts the logit lens recovers at B = 20, at most."
    )
    max_logit_lens_success_at_1: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of facts the logit lens recovers at B = 1, at most; unset: the "
        "operator's default (0 unless changed).",
    )
    max_rephrase_success_at_20: float | None = Field(
        None, ge=0, le=1, description="Share of facts unnamed paraphrases leak (B = 20), at most."
    )
    max_exposure_over_control: float | None = Field(
        None,
        description="Exposure of every fact's secret (the worst one) minus a never-seen "
        "control's, bits, at most.",
    )


PublishMode = Literal["full", "delta"]
PUBLISH_MODES: tuple[PublishMode, ...] = ("full", "delta")


class ErasureRequest(BaseModel):
    """An erasure request: one or more facts, one model, one method."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("demo", min_length=1, max_length=200, description="Registered model id.")
    method: str = Field(
        DEFAULT_METHOD,
        description="Erasure method (a registered name; GET /v1/models lists each model's).",
        json_schema_extra=lambda schema: schema.update(enum=method_names()),
    )
    facts: list[FactSpec] = Field(min_length=1, max_length=MAX_FACTS)
    params: SerializeAsAny[MethodParams] = Field(
        default_factory=dict,
        validate_default=True,
        description="The method's parameters (its params class; defaults are the tuned values).",
        json_schema_extra=lambda schema: _params_schema(schema),
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    base_checkpoint: str | None = Field(
        default=None, description="Checkpoint id to edit further (sequential erasures)."
    )
    publish: PublishMode | None = Field(
        default=None,
        description="What an accepted erasure publishes: 'full' (the edited model's safetensors, "
        "which transformers loads as is, plus the delta) or 'delta' (only the changed weights "
        "and the manifest; `featureedit apply-delta` rebuilds the model from the base). Default: "
        "the operator's setting (full unless configured).",
    )

    @field_validator("method")
    @classmethod
    def _registered(cls, method: str) -> str:
        if method not in method_names():
            raise PydanticCustomError(  # the value is not echoed: a client may have sent a secret
                "unknown_method",
                "unknown method; available methods are {names}",
                {"names": ", ".join(method_names())},
            )
        return method

    @field_validator("params", mode="before")
    @classmethod
    def _method_params(cls, value: Any, info: ValidationInfo) -> Any:
        """Validate ``params`` with the request's method's params class (contexts: see STRICT).

        A params object of another method, or a field the method does not take, is an error
        naming the method's fields.
        """
        method = info.data.get("method")
        if method is None:  # the method itself was invalid: reported there
            return MethodParams()
        params_cls = method_spec(method).params_cls
        if isinstance(value, MethodParams):
            value = value.model_dump(exclude_unset=True)
        context = info.context or {}
        if context.get("stored") and isinstance(value, dict):
            own = params_cls.model_fields
            value = {k: v for k, v in value.items() if k in own or k not in FLAT_PARAMS_V1}
        if isinstance(value, dict):
            _refuse_non_finite(value)
        try:
            return params_cls.model_validate(value, strict=bool(context.get("strict")))
        except ValidationError as exc:
            raise _naming_fields(exc, params_cls) from None

    def secrets(self) -> list[str]:
        """All targets of the request (for redaction and output scans)."""
        return [f.secret for f in self.facts]


def model_params(method: str, given: dict[str, Any], defaults: dict[str, Any]) -> MethodParams:
    """``method``'s parameters: the ``given`` values, then a model's own ``defaults``
    (:meth:`editing.registry.ModelEntry.method_defaults`) for the fields not given, then the
    params class's defaults. ValidationError if a value is invalid."""
    return method_spec(method).params_cls.model_validate(defaults | given)


def with_model_params(request: ErasureRequest, defaults: dict[str, Any]) -> ErasureRequest:
    """``request`` with its method's parameters resolved by :func:`model_params` against a
    model's ``defaults``: the fields the request set explicitly keep their values. The same
    request when ``defaults`` is empty; idempotent."""
    if not defaults:
        return request
    given = request.params.model_dump(exclude_unset=True)
    return request.model_copy(update={"params": model_params(request.method, given, defaults)})


def _refuse_non_finite(params: dict[str, Any]) -> None:
    """Raise the ``finite_number`` error (as ``allow_inf_nan=False`` would) for any infinite or
    NaN number in ``params`` (``1e999`` in JSON is infinity): no method parameter takes one."""
    details = [
        InitErrorDetails(type="finite_number", loc=(key, *path), input=number)
        for key, value in params.items()
        for path, number in _numbers(value)
        if not math.isfinite(number)
    ]
    if details:
        raise ValidationError.from_exception_data("params", details)


def _numbers(value: Any) -> Iterator[tuple[tuple[int | str, ...], float]]:
    """``(path, float)`` of every float in a JSON-like value."""
    if isinstance(value, float):
        yield (), value
    elif isinstance(value, dict):
        for k, v in value.items():
            for path, number in _numbers(v):
                yield (k, *path), number
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for path, number in _numbers(v):
                yield (i, *path), number


def _params_schema(schema: dict[str, Any]) -> None:
    """``params`` in the JSON schema: one of the registered methods' params classes."""
    schema.pop("$ref", None)
    schema["anyOf"] = [
        {**method_spec(name).params_cls.model_json_schema(), "title": f"{name} params"}
        for name in method_names()
    ]


def _naming_fields(exc: ValidationError, params_cls: type[MethodParams]) -> ValidationError:
    """``exc`` with each unknown field's error naming the method's fields; the rest unchanged.

    The method's name is not in the message: the API redacts every string the client sent.
    """
    fields = ", ".join(params_cls.model_fields)
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "extra_forbidden":
            kind: str | PydanticCustomError = PydanticCustomError(
                "extra_forbidden",
                "not a parameter of the chosen method, whose parameters are: {fields}",
                {"fields": fields},
            )
        else:
            kind = err["type"]
        detail = InitErrorDetails(type=kind, loc=err["loc"], input=err["input"])
        if "ctx" in err and not isinstance(kind, PydanticCustomError):
            detail["ctx"] = err["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details)


def validation_summary(exc: ValidationError) -> str:
    """One line per error, ``field.path: message``, never echoing the input values."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)
