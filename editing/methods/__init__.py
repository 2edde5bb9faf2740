"""Erasure methods: one module each, one interface, one registry.

A method erases one fact at a time from a loaded model: it locates units, then changes the
down-projection weights in place (inside the caller's :class:`editing.edits.WeightSession`, which
diffs and restores them) or, for inference-time methods, returns an intervention. Register a new
method with :func:`register_method`; registering a name twice is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from editing.errors import ConfigError
from editing.locate import Unit
from editing.models import LoadedModel
from editing.request import MethodParams


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


@dataclass
class FactOutcome:
    """What a method did for one fact."""

    units: list[Unit]
    timings: dict[str, float]
    evidence: dict[str, Any] = field(default_factory=dict)
    intervention: Callable[[], AbstractContextManager[None]] | None = None


class Method(Protocol):
    """The interface every erasure method implements."""

    name: ClassVar[str]
    produces_checkpoint: ClassVar[bool]

    def __init__(self, params: MethodParams) -> None: ...

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Locate and erase one fact (weights changed in place, or an intervention returned)."""
        ...


_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator registering a method under ``cls.name``."""
    if cls.name in _METHODS:
        raise ConfigError(f"Method {cls.name!r} is already registered.")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str, params: MethodParams) -> Method:
    """Instantiate the method ``name``; ConfigError listing the registered ones."""
    _load_builtin()
    if name not in _METHODS:
        raise ConfigError(f"Unknown method {name!r}; available methods are {sorted(_METHODS)}.")
    return _METHODS[name](params)


def available_methods() -> list[str]:
    """Names of the registered methods."""
    _load_builtin()
    return sorted(_METHODS)


def _load_builtin() -> None:
    from editing.methods import featureedit, neuronlens, neurons  # noqa: F401  (registration)
