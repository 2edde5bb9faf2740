"""The erasure request: what to erase, from which model, how, and when the result may be published.

Shared by the CLI, the library and the HTTP API. The target (the secret) is a ``SecretStr``: it
never appears in ``repr``, logs or validation messages; :func:`validation_summary` formats errors
without echoing input values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from editing.relations import RELATIONS, get_relation

METHODS = ("featureedit", "neurons", "neuronlens")
VARIANTS = ("project-cols", "project", "rows")
SELECTORS = ("attribution", "write", "activation")
MAX_FACTS = 100
MAX_PROMPTS = 64
MAX_TEXT = 1000


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


class MethodParams(BaseModel):
    """Method parameters (METHOD.md); defaults are the benchmark-tuned values.

    Tuned on the demo world with ``scripts/tune_featureedit.py`` (see docs/benchmarks.md): versus
    METHOD.md's starting values, the attribution objective is the whole target's log-probability
    (not only its first token), the specificity filter is gamma = 0.6 (not 0.3) and the greedy cap
    is 32 features (not 12); each change raised Reliability without costing Locality. On the
    rebuilt world, re-locating on the edited model when the candidates run out
    (``relocate_rounds``) lifted Reliability 0.958 -> 0.975 and Generalization 0.867 -> 0.933 at
    Locality 1.0 (15 facts); 1 and 3 rounds measured the same, 3 leaves room on harder facts.
    """

    model_config = ConfigDict(extra="forbid")

    site: Literal["resid_post", "mlp_out"] = "resid_post"
    layers: list[int] | None = Field(default=None, description="Layers to search; default all.")
    variant: Literal["project-cols", "project", "rows"] = "project-cols"
    selector: Literal["attribution", "write", "activation"] = "attribution"
    objective: Literal["first_token", "target"] = Field(
        "target",
        description="Attribution objective: log P of the first target token, or of the target.",
    )
    tau1: float = Field(0.2, gt=0, le=1, description="Activation selector threshold (× max).")
    tau2: float = Field(0.5, gt=0, le=1, description="`rows` variant: |d_j| threshold (× max).")
    gamma: float = Field(0.6, ge=0, description="Specificity filter: control/target ratio.")
    rho: float = Field(0.8, gt=0, le=1, description="`project-cols`: share of the write kept.")
    max_features: int = Field(32, ge=1, le=256, description="Greedy cap on features per fact.")
    relocate_rounds: int = Field(
        3,
        ge=0,
        le=8,
        description="Greedy selectors: locate again on the edited model when candidates run out.",
    )
    min_prompts: int = Field(2, ge=1, description="A feature must be active in this many prompts.")
    ig_steps: int = Field(20, ge=2, le=200, description="Integrated-gradient steps (neurons).")
    ig_threshold: float = Field(0.2, gt=0, le=1, description="Coarse neuron set threshold.")
    neuron_cap: int = Field(20, ge=1, le=1000, description="At most this many neurons per fact.")
    neuronlens_tau: float = Field(2.0, gt=0, description="NeuronLens range half-width in σ.")


class Thresholds(BaseModel):
    """Acceptance thresholds: a result is published only if it meets all of them."""

    model_config = ConfigDict(extra="forbid")

    min_reliability: float = Field(0.9, ge=0, le=1)
    min_generalization: float = Field(0.7, ge=0, le=1)
    min_locality: float = Field(0.9, ge=0, le=1)
    max_delta_ppl: float = Field(0.05, ge=0)


PublishMode = Literal["full", "delta"]
PUBLISH_MODES: tuple[PublishMode, ...] = ("full", "delta")


class ErasureRequest(BaseModel):
    """An erasure request: one or more facts, one model, one method."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("demo", min_length=1, max_length=200, description="Registered model id.")
    method: Literal["featureedit", "neurons", "neuronlens"] = "featureedit"
    facts: list[FactSpec] = Field(min_length=1, max_length=MAX_FACTS)
    params: MethodParams = Field(default_factory=MethodParams)
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

    def secrets(self) -> list[str]:
        """All targets of the request (for redaction and output scans)."""
        return [f.secret for f in self.facts]


def validation_summary(exc: ValidationError) -> str:
    """One line per error, ``field.path: message``, never echoing the input values."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)
