"""Erase, then publish if accepted: the one path the command line and the worker share.

:func:`erase_and_publish` runs :func:`editing.erase.run_erasure` (which decides acceptance with
:mod:`editing.acceptance`) and, when the result is accepted and the method edits weights,
publishes the checkpoint (:func:`editing.checkpoints.publish_checkpoint`: a forward patch, never
pre-edit values) and hands its revert data to ``keep_revert`` — the caller's private record —
before returning, so no checkpoint exists whose rollback data was not kept. The returned
:class:`Erasure`'s :meth:`~Erasure.report` is the typed :class:`~editing.report.ErasureReport`.
With ``attacks`` (an :class:`~editing.attack_gate.AttackPlan`) the suite attacks the edit after
evaluation and before the publish decision (:func:`editing.attack_gate.attack_result`): its
summary is the report's ``attacks`` section and its limits join the acceptance rule.
The model is left unedited whatever happens. :func:`load_base_edit` turns a parent checkpoint
(sequential erasures) into the edit ``run_erasure`` starts from. Callers add only what is theirs:
the command line prints, the worker checks tenant ownership, records progress and registers the
checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from editing.attack_gate import AttackPlan, attack_result
from editing.baseline import BaselineCache, attack_before_cache, default_baseline_cache
from editing.edits import Edit
from editing.erase import ErasureResult, Progress, run_erasure
from editing.errors import CancelledError, ConfigError
from editing.methods import Method
from editing.models import LoadedModel
from editing.registry import EvalSize
from editing.report import ErasureReport
from editing.request import ErasureRequest, PublishMode

KeepRevert = Callable[[Edit, str], Any]


class BaseCheckpointMismatch(ConfigError):
    """The base checkpoint of a sequential erasure was made from another model."""


@dataclass
class Erasure:
    """An erasure's result and, if it was published, its checkpoint directory."""

    result: ErasureResult
    checkpoint: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # "publish", when published
    # what was published (lineage, hashes, sizes), read back from its manifest when published:
    # the caller may move the directory afterwards (e.g. upload it to another store)
    summary: dict[str, Any] | None = None

    @property
    def published(self) -> bool:
        """Whether a checkpoint was published."""
        return self.checkpoint is not None

    def report(self, **service_fields: Any) -> ErasureReport:
        """The typed report: the result's (:meth:`ErasureResult.report`), the published
        checkpoint's id and :attr:`summary` (None when nothing was published) and the caller's
        ``service_fields``."""
        checkpoint_id = None if self.checkpoint is None else self.checkpoint.name
        published = {"checkpoint": self.summary, "checkpoint_id": checkpoint_id}
        return self.result.report(**(published | service_fields))


def load_base_edit(loaded: LoadedModel, checkpoint_dir: str | Path) -> Edit:
    """The full edit of a parent checkpoint on ``loaded``'s pristine base model.

    The published patch holds new values only; the base model in memory supplies the old ones.
    ConfigError if the checkpoint was made from another model (or is of the old format).
    """
    from editing.checkpoints import bind_patch, load_patch
    from editing.checkpoints.manifest import base_model_problem

    problem = base_model_problem(checkpoint_dir, loaded.model_id)
    if problem:
        raise BaseCheckpointMismatch(problem)
    return bind_patch(loaded.adapter, load_patch(checkpoint_dir))


def keep_revert_locally(home: str | Path) -> KeepRevert:
    """``keep_revert`` for the command line: the revert data sealed under ``home/private/``."""
    from editing.checkpoints.revert import local_revert_path, write_revert_file

    def keep(edit: Edit, checkpoint_id: str) -> Path:
        return write_revert_file(edit, local_revert_path(home, checkpoint_id), checkpoint_id)

    return keep


def _attacked(
    result: ErasureResult,
    request: ErasureRequest,
    loaded: LoadedModel,
    plan: AttackPlan,
    progress: Progress | None,
    cache: BaselineCache | None = None,
) -> tuple[ErasureResult, float]:
    """``result`` attacked and decided again (:func:`attack_result`), and the seconds it took;
    the unedited model's attack scores kept in ``cache`` (:func:`attack_before_cache`)."""
    t0 = time.perf_counter()

    def stage(done: int, total: int) -> None:
        if progress is not None:
            progress("attacks", done / total)

    before = attack_before_cache(loaded, cache) if result.edit is not None else None
    result = attack_result(result, request, loaded, plan, stage, before)
    return result, round(time.perf_counter() - t0, 4)


def erase_and_publish(
    request: ErasureRequest,
    loaded: LoadedModel,
    *,
    checkpoint_root: str | Path,
    keep_revert: KeepRevert,
    base_edit: Edit | None = None,
    publish: bool = True,
    publish_mode: PublishMode = "full",
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    eval_size: EvalSize | None = None,
    edit_metadata: Mapping[str, Any] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    attacks: AttackPlan | None = None,
    baseline_cache: BaselineCache | None = None,
    editor: Method | None = None,
) -> Erasure:
    """Erase ``request``'s facts; if accepted (and ``publish``), publish under ``checkpoint_root``.

    ``request.publish`` overrides ``publish_mode``. ``edit_metadata`` goes into the patch's
    metadata (e.g. the erasure id, which makes the content-addressed id unique per erasure) and
    ``manifest_extra`` into the manifest. ``keep_revert(edit, checkpoint_id)`` receives the
    revert data once the checkpoint exists. ``attacks``: the attacks to run on the edit and the
    default attack limits; a limit the request sets runs its attack even without them (progress
    stage ``"attacks"``; timing ``"attacks"``). ``editor`` replaces the method's locate + edit
    step (:func:`editing.erase.run_erasure`; a chunked request's merge). Cancellation is
    checked once more before publishing (CancelledError: nothing published).
    ``baseline_cache`` (default: the model's home's, unless ``FEATUREEDIT_BASELINE_CACHE=0``,
    :func:`editing.baseline.default_baseline_cache`) keeps the unedited model's evaluation.
    """
    cache = baseline_cache or default_baseline_cache(loaded)
    result = run_erasure(
        request,
        loaded,
        progress=progress,
        should_cancel=should_cancel,
        base_edit=base_edit,
        eval_size=eval_size,
        baseline_cache=cache,
        editor=editor,
    )
    timings: dict[str, float] = {}
    result, seconds = _attacked(result, request, loaded, attacks or AttackPlan(), progress, cache)
    if result.attacks is not None:
        timings["attacks"] = seconds
    return publish_result(
        Erasure(result, timings=timings),
        request,
        loaded,
        checkpoint_root=checkpoint_root,
        keep_revert=keep_revert,
        publish=publish,
        publish_mode=publish_mode,
        progress=progress,
        should_cancel=should_cancel,
        edit_metadata=edit_metadata,
        manifest_extra=manifest_extra,
    )


def publish_result(
    erasure: Erasure,
    request: ErasureRequest,
    loaded: LoadedModel,
    *,
    checkpoint_root: str | Path,
    keep_revert: KeepRevert,
    publish: bool = True,
    publish_mode: PublishMode = "full",
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    edit_metadata: Mapping[str, Any] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> Erasure:
    """Publish ``erasure``'s edit if its result is accepted and edits weights (and ``publish``);
    the erasure, with its checkpoint, summary and publish time when published. The arguments
    are :func:`erase_and_publish`'s (which ends with it; a chunked request's finishing step
    too). Cancellation is checked once more before publishing (CancelledError: nothing
    published)."""
    from editing.checkpoints import publish_checkpoint
    from editing.checkpoints.manifest import checkpoint_summary

    result = erasure.result
    if not (publish and result.status == "succeeded" and result.produces_checkpoint):
        return erasure
    if result.edit is None:
        return erasure
    if should_cancel is not None and should_cancel():
        raise CancelledError("Erasure cancelled before publishing; nothing was published.")
    if progress is not None:
        progress("publish", 0.0)
    t0 = time.perf_counter()
    edit = replace(result.edit, metadata={**result.edit.metadata, **(edit_metadata or {})})
    path = publish_checkpoint(
        loaded,
        edit,
        checkpoint_root,
        result.checkpoint_manifest(request.base_checkpoint, **dict(manifest_extra or {})),
        secrets=request.secrets(),
        mode=request.publish or publish_mode,
    )
    keep_revert(edit, path.name)
    erasure.checkpoint = path
    erasure.summary = checkpoint_summary(path)
    erasure.timings["publish"] = round(time.perf_counter() - t0, 4)
    if progress is not None:
        progress("publish", 1.0)
    return erasure
