"""Parameters of the built-in methods: one pydantic model per method, validated on creation.

Torch-free: the HTTP API validates requests with these classes. Every class forbids unknown
fields; :class:`MethodParams` holds what every method shares (``layers``), :class:`SaeParams`
adds the SAE ``site`` that methods registered with ``needs_sae=True`` must take. Defaults are the
benchmark-tuned values (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MethodParams(BaseModel):
    """Parameters every method takes; subclass it for a new method's own parameters."""

    model_config = ConfigDict(extra="forbid")

    layers: list[int] | None = Field(default=None, description="Layers to search; default all.")

    def chunk_merge(self) -> Literal["sum", "agreeing_mean"]:
        """How a chunked erasure merges an entry several chunks changed
        (:func:`editing.chunks.merge_patches`): ``"sum"`` unless a method's edits set values
        or are optimised from the same weights."""
        return "sum"


class SaeParams(MethodParams):
    """Parameters of a method that locates SAE features: where the SAEs read."""

    site: Literal["resid_post", "mlp_out"] = "resid_post"


class FeatureEditParams(SaeParams):
    """FeatureEdit's parameters (METHOD.md); defaults are the benchmark-tuned values.

    Tuned on the demo world with ``scripts/tune_featureedit.py`` (see docs/benchmarks.md): versus
    METHOD.md's starting values, the attribution objective is the whole target's log-probability
    (not only its first token), the specificity filter is gamma = 0.6 (not 0.3) and the greedy cap
    is 32 features (not 12); each change raised Reliability without costing Locality. On the
    rebuilt world, re-locating on the edited model when the candidates run out
    (``relocate_rounds``) lifted Reliability 0.958 -> 0.975 and Generalization 0.867 -> 0.933 at
    Locality 1.0 (15 facts); 1 and 3 rounds measured the same, 3 leaves room on harder facts.
    Issue #13: stopping only when every edit prompt's teacher-forced P(whole secret) is at most
    ``leak_bound`` = 0.01 cut the sampled leak 10.5 % -> 1.1 % at Reliability, Generalization
    and Locality 1.0 (default world, 10 facts, 2,080 samples). Multi-fact requests (issue #16,
    ``scripts/multiloc.py``, small world, mixed relations): refining the request's facts at once
    (``refine_scope="request"``) at locality weight 300 (``refine_request_locality``) kept
    Locality .79 at 12 facts where one refinement per fact kept .13 (4 facts: .90 vs .55), R and
    G 1.0, worst sampled leak .0045, lens @1 0; one fact is refined exactly as alone; opt-in, as
    24 facts in one refinement leaked .023 in the sampled attack (over the default limit).
    """

    variant: Literal["project-cols", "project", "rows"] = "project-cols"
    selector: Literal["attribution", "write", "activation"] = "attribution"
    objective: Literal["first_token", "target"] = Field(
        "target",
        description="Attribution objective: log P of the first target token, or of the target.",
    )
    positions: Literal["last", "target", "subject"] = Field(
        "last",
        description=(
            "Where features are read: the last prompt token, every position that predicts a "
            "target token (teacher forced; with objective `target`), or the last token of the "
            "subject in each prompt (control prompts: of their control subject; a prompt "
            "without the subject, or whose subject token is its first token on a model "
            "without BOS, the attention sink: its last token)."
        ),
    )
    tau1: float = Field(0.2, gt=0, le=1, description="Activation selector threshold (× max).")
    tau2: float = Field(0.5, gt=0, le=1, description="`rows` variant: |d_j| threshold (× max).")
    gamma: float = Field(0.6, ge=0, description="Specificity filter: control/target ratio.")
    rho: float = Field(0.8, gt=0, le=1, description="`project-cols`: share of the write kept.")
    strength: float = Field(
        1.0,
        gt=0,
        le=4,
        description="`project*` variants: multiple of the feature's write removed (1 = exactly).",
    )
    max_features: int = Field(32, ge=1, le=256, description="Greedy cap on features per fact.")
    relocate_rounds: int = Field(
        3,
        ge=0,
        le=8,
        description="Greedy selectors: locate again on the edited model when candidates run out.",
    )
    min_prompts: int = Field(2, ge=1, description="A feature must be active in this many prompts.")
    locate_on: Literal["current", "request"] = Field(
        "current",
        description=(
            "Weights features are located on: `current` (the model as the request's earlier "
            "facts left it) or `request` (the down-projections as they were when the request's "
            "first fact began; one copy of them is kept for the request). Edits and the stopping "
            "rule always use the current weights."
        ),
    )
    leak_bound: float = Field(
        0.01,
        gt=0,
        le=1,
        description=(
            "Greedy selectors: keep adding features until, on every edit prompt, the whole "
            "secret's teacher-forced probability (its exact sampling probability at temperature "
            "1) is at most this; 1.0 stops as soon as greedy decoding no longer reproduces it."
        ),
    )

    refine: Literal["none", "flatten"] = Field(
        "flatten",
        description=(
            "After the projection: `flatten` (the default) trains the down-projection columns "
            "the projection changed until the secret's sampling probability is at most "
            "`leak_bound` and no layer's logit lens ranks a secret token in its top "
            "`refine_rank` (editing/methods/flatten.py); `none`: the projection alone."
        ),
    )
    refine_steps: int = Field(100, ge=1, le=500, description="`flatten`: at most this many steps.")
    refine_lr: float = Field(5e-3, gt=0, le=1, description="`flatten`: Adam learning rate.")
    refine_rank: int = Field(
        20,
        ge=0,
        le=1000,
        description="`flatten`: secret tokens must fall below this lens rank (0: no lens term).",
    )
    refine_tokens: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "`flatten`: per prompt, this many secret tokens (the easiest to hide) must leave "
            "the lens's top `refine_rank`; the lens attack needs every token."
        ),
    )
    refine_extra_columns: int = Field(
        32,
        ge=0,
        le=4096,
        description=(
            "`flatten`: also train, in every layer, this many more down-projection columns, "
            "those with the largest gradient of the objective (REVS-style column choice)."
        ),
    )
    refine_locality: float = Field(
        1.0, ge=0, description="`flatten`: weight of the KL to the unedited model on controls."
    )
    refine_locality_own: bool = Field(
        False,
        description=(
            "`flatten`: the locality term also reads the control prompts teacher-forced on the "
            "unedited model's own greedy continuation (other subjects' answers), not only on "
            "the secret."
        ),
    )
    refine_controls: Literal["fact", "request"] = Field(
        "fact",
        description=(
            "`flatten`: `request` adds to the locality term every fact's control prompts of the "
            "request (all its relations, the control subjects), teacher-forced on what the "
            "model said for them when the request began, read on those answers: later facts "
            "then keep the answers earlier facts' edits must not move either."
        ),
    )
    refine_scope: Literal["fact", "request"] = Field(
        "fact",
        description=(
            "`flatten`: `fact` refines each fact right after its projection (against the model "
            "as the request's earlier facts left it); `request` projects every fact first, then "
            "runs ONE refinement over all the facts' edit prompts and secrets (a chunk's facts "
            "when chunked), on the columns changed since the request began (+ "
            "`refine_extra_columns`), its locality term on every fact's control prompts "
            "against the model as it was when the request began; it converges only once every "
            "fact meets `leak_bound` and the lens rank. Not with `refine_exposure` or "
            "`refine_stranger` (terms of one secret). Opt-in: better Locality up to 12 facts, "
            "but at 24 a sampled leak over the default limit (docs/benchmarks.md)."
        ),
    )
    refine_request_locality: float | None = Field(
        300.0,
        ge=0,
        description=(
            "`refine_scope=request`: weight of the locality term when the joint refinement "
            "covers two or more facts (None: `refine_locality`); one fact is refined as alone."
        ),
    )
    refine_request_leak_bound: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "`refine_scope=request`: the joint refinement of two or more facts trains every "
            "edit prompt's P(secret) down to this (None: `leak_bound`); a joint run stops "
            "when the last fact crosses its bound, with no later fact's edit to push the "
            "others further down as in the fact scope."
        ),
    )
    refine_entropy: float = Field(
        0.0, ge=0, description="`flatten`: weight of the lens distributions' max-entropy term."
    )
    refine_exposure: float = Field(
        0.0,
        ge=0,
        description=(
            "`flatten`: weight of the exposure hinge (0: off): per edit prompt the secret's "
            "log-probability must not exceed the `refine_exposure_quantile` quantile of "
            "`refine_exposure_candidates` random strings of its format, scored once before the "
            "fact's edit (secrets with at least 3 digits); the refinement converges only once "
            "it is zero."
        ),
    )
    refine_exposure_candidates: int = Field(
        32, ge=2, le=1024, description="`flatten`: random same-format candidates (exposure term)."
    )
    refine_exposure_quantile: float = Field(
        0.5,
        ge=0,
        le=1,
        description="`flatten`: the candidates' quantile the secret must not exceed (exposure).",
    )
    refine_exposure_anchor: float = Field(
        1.0,
        ge=0,
        description=(
            "`flatten`: with the exposure term, weight (× `refine_exposure`) of the mean squared "
            "change of the candidates' log-probabilities from before the fact's edit: the "
            "format space stays where it was while the secret goes down into it."
        ),
    )

    refine_stranger: float = Field(
        0.0,
        ge=0,
        description=(
            "`flatten`: weight of the stranger term (0: off): at every secret position of the "
            "edit prompts, the KL from the next-token distribution the model gave, before the "
            "fact's edit, for subjects it never saw on the same prompts to the edited one; the "
            "refinement converges only once the secret is no more likely than under it."
        ),
    )
    refine_stranger_subjects: int = Field(
        4, ge=1, le=8, description="`flatten`: never-seen subjects averaged (stranger term)."
    )
    refine_stranger_margin: float = Field(
        0.0,
        ge=0,
        description=(
            "`flatten`: nats by which the secret may exceed its log-probability under the "
            "strangers' distribution before the stranger term counts it as not converged."
        ),
    )

    refine_digit_rank: float = Field(
        0.0,
        ge=0,
        description=(
            "`flatten`: weight of the digit-rank hinge (0: off): at every digit of the secret "
            "on the edit prompts (teacher-forced), its log-probability must not exceed the "
            "median of the ten digits' there; the refinement converges only once it is zero."
        ),
    )

    def joint_refinement(self) -> bool:
        """Whether the request's facts are refined together (``refine_scope="request"``)."""
        return self.refine_scope == "request"

    @model_validator(mode="after")
    def _joint_terms(self) -> FeatureEditParams:
        """``refine_scope="request"`` refines several secrets at once: the exposure and stranger
        terms, defined on one secret, cannot join it."""
        one_secret = self.refine_exposure > 0 or self.refine_stranger > 0
        if self.refine_scope == "request" and one_secret:
            raise ValueError(
                "refine_scope='request' refines all the request's facts at once; "
                f"refine_exposure={self.refine_exposure} and refine_stranger="
                f"{self.refine_stranger} are terms of one secret: set them to 0 or use "
                "refine_scope='fact'"
            )
        return self

    def chunk_merge(self) -> Literal["sum", "agreeing_mean"]:
        """``"agreeing_mean"`` when the flatten refinement runs: every chunk's refinement is
        optimised from the same weights, and summing counts their shared part once per chunk
        (`scripts/chunk_merge_compare.py` on the small world, 4 e-mail facts in 2 chunks: ΔPPL
        0.084 summed, 0.041
        by agreeing mean, 0.048 unchunked; Locality 0.92 / 0.955 / 0.94; sampled leak
        0.009 / 0.005 / 0.009); and for ``variant="rows"``, which zeroes rows (two chunks zeroing
        one row must zero it once). The projection alone adds parts: ``"sum"``."""
        if self.variant == "rows" or self.refine == "flatten":
            return "agreeing_mean"
        return "sum"


class NeuronParams(MethodParams):
    """The neuron baseline's parameters: integrated gradients, then a capped neuron set."""

    ig_steps: int = Field(20, ge=2, le=200, description="Integrated-gradient steps.")
    ig_threshold: float = Field(0.2, gt=0, le=1, description="Coarse neuron set threshold.")
    neuron_cap: int = Field(20, ge=1, le=1000, description="At most this many neurons per fact.")

    def chunk_merge(self) -> Literal["sum", "agreeing_mean"]:
        """``"agreeing_mean"``: the baseline zeroes columns, and two chunks zeroing one neuron
        must zero it once (a sum would flip its sign)."""
        return "agreeing_mean"


class NeuronLensParams(NeuronParams):
    """NeuronLens's parameters: neurons located as for the baseline, then masked by range."""

    neuronlens_tau: float = Field(2.0, gt=0, description="Range half-width in σ.")
