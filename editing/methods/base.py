"""The method interface: what a method sees (FactCase), returns (FactOutcome), implements (Method).

Torch-free at import time (the model and unit types are only named in annotations), so the
registry and the HTTP API can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from editing.locate import Unit
    from editing.methods.params import MethodParams
    from editing.models import LoadedModel


@dataclass
class FactCase:
    """One fact as a method sees it: prompts the unedited model answers, and control prompts."""

    index: int
    subject: str
    relation: str
    secret: str
    edit_prompts: list[str]
    heldout_prompts: list[str]
    control_prompts: list[str]
    # the subjects the control prompts name in place of ``subject``
    control_subjects: list[str] = field(default_factory=list)
    # every fact's control prompts of the request (its relations' prompts with the control
    # subjects, never a subject of the request), for a method's request-wide locality term
    request_controls: list[str] = field(default_factory=list)


@dataclass
class FactOutcome:
    """What a method did for one fact."""

    units: list[Unit]
    timings: dict[str, float]
    evidence: dict[str, Any] = field(default_factory=dict)
    intervention: Callable[[], AbstractContextManager[None]] | None = None


@dataclass
class RequestFinish:
    """What a method's request-wide step did after the request's (or chunk's) last fact:
    evidence to add to each fact's outcome (by :attr:`FactCase.index`) and its seconds."""

    evidence: dict[int, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


class Method(Protocol):
    """The interface every erasure method implements (built from its params by the registry).

    An instance serves one request (or one chunk of it): :meth:`erase_fact` for each fact in
    turn, then, when the method defines it, ``finish_request(loaded) -> RequestFinish``, a step
    over all the facts it erased (e.g. FeatureEdit's joint refinement, ``refine_scope=
    "request"``); :func:`finish_request` runs it.
    """

    def __init__(self, params: MethodParams) -> None: ...

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Locate and erase one fact (weights changed in place, or an intervention returned)."""
        ...


def finish_request(method: Any, loaded: LoadedModel, outcomes: dict[int, FactOutcome]) -> float:
    """Run ``method``'s optional ``finish_request`` hook once every fact of the request (or
    chunk) was erased; add the evidence it returns to ``outcomes`` (by fact index, in place);
    return its seconds (0 for a method without the hook)."""
    hook = getattr(method, "finish_request", None)
    if hook is None:
        return 0.0
    done: RequestFinish = hook(loaded)
    for index, evidence in done.evidence.items():
        if index in outcomes:
            outcomes[index].evidence.update(evidence)
    return done.seconds
