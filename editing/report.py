"""The erasure report as types: what :func:`editing.erase.run_erasure` measured, and what the
worker adds (ids, lineage, hashes, code version, timings). No torch.

:class:`ErasureReport` is the JSON the worker stores and ``GET /v1/erasures/{id}/report`` returns,
field for field and in the same order; the CLI prints it and ``service/report_content.py`` renders
it. Stored reports are read back with :func:`load_report` (validated once, then attribute access).

Compatibility, both ways:

- every field has a default, so an older stored report (fields missing) still loads and renders;
- :meth:`ReportModel.to_json` writes only the fields that were set (``exclude_unset``), so a report
  keeps its shape: a rate without ``hits`` stays without, a "nothing to erase" result's metrics
  hold only their ``note``;
- unknown keys are kept (``extra="allow"``): a report written by newer code loads here and is
  written back whole.

Adding a section (e.g. the results of an attack suite) is one typed, optional field on
:class:`ErasureReport` (default None, so older reports load) and one section in
``service/report_content.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from editing.disclosure import coarsen


class ReportModel(BaseModel):
    """Base of the report's parts: lenient on input, writes back only what was set."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The JSON document (only the fields that were set, plus any unknown ones kept), with
        the figures measured on a secret stated coarsely (:mod:`editing.disclosure`)."""
        return coarsen(self.model_dump(mode="json", exclude_unset=True))

    def present(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of the fields that were set, in declaration order, then extras."""
        for name in type(self).model_fields:
            if name in self.model_fields_set:
                yield name, getattr(self, name)
        yield from (self.model_extra or {}).items()


class ReportedRate(ReportModel):
    """A measured share: ``value`` (None: nothing to count), with the counts behind it.

    ``hits`` is there for a single measurement, ``facts`` for a mean over facts (the number of
    facts that had prompts to count). A bare number (older reports) loads as its ``value``.
    """

    value: float | None = None
    hits: int | None = None
    count: int | None = None
    facts: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"value": data}
        return data


class LocalityRate(ReportedRate):
    """Locality: the share of known control facts still known, by kind, and the set's size."""

    by_kind: dict[str, ReportedRate] = Field(default_factory=dict)
    set_size: int | None = None


class Metrics(ReportModel):
    """The erasure's metrics (means over the erased facts; see METHOD.md "Evaluation").

    A result with nothing to erase has only ``note``.
    """

    reliability: ReportedRate | None = None
    generalization: ReportedRate | None = None
    locality: LocalityRate | None = None
    delta_ppl: float | None = None
    ppl_before: float | None = None
    ppl_after: float | None = None
    delta_prob: float | None = None
    exposure_before: float | None = None
    exposure_after: float | None = None
    leak_rate_before: float | None = None
    leak_rate_after: float | None = None
    facts_erased: int | None = None
    facts_nothing_to_erase: int | None = None
    units: int | None = None
    entries_changed: int | None = None
    note: str | None = None


class Acceptance(ReportModel):
    """The acceptance decision (:func:`editing.acceptance.decide`); None: not recorded."""

    accepted: bool | None = None
    reasons: list[str] = Field(default_factory=list)


class AttackState(ReportModel):
    """An attack's figures on one state of the model, over facts: the mean of every value, its
    largest on any one fact (``worst``) and, per success flag, the share of facts on which the
    attacker recovered the whole secret."""

    values: dict[str, float | None] = Field(default_factory=dict)
    worst: dict[str, float | None] = Field(default_factory=dict)
    success: dict[str, float | None] = Field(default_factory=dict)


class AttackSummary(ReportModel):
    """One attack of the suite (:func:`editing.attacks.suite.summarise`): its budget, the figures
    before the edit (the pristine model) and after it, and its control where it has one (e.g.
    exposure's never-seen control secret). Numbers only: never a secret or a name."""

    budget: dict[str, int | float | None] = Field(default_factory=dict)
    facts: int | None = None
    before: AttackState | None = None
    after: AttackState | None = None
    control: dict[str, float | None] = Field(default_factory=dict)


class UnitReport(ReportModel):
    """A located unit (:class:`editing.locate.Unit`): an SAE feature or an MLP neuron."""

    kind: str | None = None
    site: str | None = None
    layer: int | None = None
    index: int | None = None
    score: float | None = None
    activation: float | None = None
    control_activation: float | None = None
    prompt_count: int | None = None


class FactPrompts(ReportModel):
    """How many prompts a fact had, and how many of them the unedited model knew."""

    edit: int | None = None
    edit_known: int | None = None
    heldout: int | None = None
    heldout_known: int | None = None
    control: int | None = None


class FactSnapshot(ReportModel):
    """A fact measured once (before or after the edit)."""

    prob: float | None = None
    exposure: float | None = None
    leak_rate: ReportedRate | None = None


class FactMetrics(ReportModel):
    """A fact's metrics: before and after, and its own reliability and generalization."""

    before: FactSnapshot | None = None
    after: FactSnapshot | None = None
    reliability: ReportedRate | None = None
    generalization: ReportedRate | None = None
    delta_prob: float | None = None


class FactReport(ReportModel):
    """Per-fact evidence and metrics (no secret, no subject name: only keyed fingerprints).

    ``evidence`` is the method's own (see its module in :mod:`editing.methods`).
    """

    index: int | None = None
    subject_fingerprint: str | None = None
    relation: str | None = None
    fingerprint: str | None = None
    prompts: FactPrompts = Field(default_factory=FactPrompts)
    units: list[UnitReport] = Field(default_factory=list)
    metrics: FactMetrics = Field(default_factory=FactMetrics)
    evidence: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    status: str = "erased"  # or "nothing_to_erase"


class LayerFootprint(ReportModel):
    """One changed down-projection (:meth:`editing.edits.Edit.footprint`)."""

    layer: int | None = None
    param: str | None = None
    axis: str | None = None
    indices: list[int] = Field(default_factory=list)
    entries_changed: int | None = None
    base_sha256: str | None = None
    new_sha256: str | None = None


class EditFootprint(ReportModel):
    """The weight edit's size and where it is (never its values)."""

    entries_changed: int | None = None
    delta_bytes: int | None = None
    layers: list[LayerFootprint] = Field(default_factory=list)


class BaseModelRef(ReportModel):
    """The base model a checkpoint was made from."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: str | None = None
    model_type: str | None = None
    down_proj_sha256: str | None = None


class CheckpointFile(ReportModel):
    """A file of a published checkpoint."""

    name: str | None = None
    size: int | None = None
    sha256: str | None = None


class CheckpointSummary(ReportModel):
    """A published checkpoint (:func:`editing.checkpoints.manifest.checkpoint_summary`)."""

    checkpoint_id: str | None = None
    created_at: str | None = None
    publish: str | None = None
    format_version: int | None = None
    base_model: BaseModelRef | None = None
    parent_checkpoint_id: str | None = None
    edited_down_proj_sha256: str | None = None
    files: list[CheckpointFile] = Field(default_factory=list)
    total_bytes: int | None = None
    delta_bytes_on_disk: int | None = None


class CodeVersion(ReportModel):
    """The code that made the report (:func:`editing.checkpoints.manifest.code_version`)."""

    package: str | None = None
    version: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None


class ModelCacheUse(ReportModel):
    """Whether the worker had the model loaded already, and how long loading took."""

    cached: bool | None = None
    load_seconds: float | None = None


class ErasureReport(ReportModel):
    """The report of one erasure: first what the library measured, then the worker's fields.

    The library part comes from :meth:`editing.erase.ErasureResult.report`; the worker adds
    ``erasure_id`` to ``model_cache`` and replaces ``timings`` with its own (model load, publish
    and total included). Field order is the stored JSON's.
    """

    model_config = ConfigDict(protected_namespaces=())

    # -- the erasure (editing.erase)
    status: str | None = None  # "succeeded" | "rejected" | "nothing_to_erase"
    model_id: str | None = None
    method: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, float | None] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    acceptance: Acceptance | None = None
    attacks: dict[str, AttackSummary] | None = None  # attack name -> summary (issue #13)
    timings: dict[str, float] = Field(default_factory=dict)
    facts: list[FactReport] = Field(default_factory=list)
    edit: EditFootprint | None = None
    produces_checkpoint: bool | None = None
    base_weights_sha256: str | None = None
    # -- the service's (workers.report)
    erasure_id: str | None = None
    code_version: CodeVersion | None = None
    checkpoint: CheckpointSummary | None = None
    model: str | None = None
    request: dict[str, Any] | None = None
    fact_fingerprints: list[str] | None = None
    checkpoint_id: str | None = None
    parent_checkpoint_id: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    attempts: int | None = None
    worker: str | None = None
    model_cache: ModelCacheUse | None = None

    @property
    def accepted(self) -> bool | None:
        """The recorded decision (None when none was recorded)."""
        return None if self.acceptance is None else self.acceptance.accepted

    @property
    def base_model_id(self) -> str | None:
        """The model the erasure ran on (older reports have only ``model``)."""
        return self.model_id or self.model

    @property
    def published_checkpoint_id(self) -> str | None:
        """The published checkpoint's id, from the report or its checkpoint summary."""
        if self.checkpoint_id:
            return self.checkpoint_id
        return None if self.checkpoint is None else self.checkpoint.checkpoint_id


def load_report(doc: Mapping[str, Any]) -> ErasureReport:
    """A stored report (any age: missing fields take their defaults), validated once."""
    return ErasureReport.model_validate(dict(doc))
