"""The attack interface: what an attack sees (AttackCase, ModelStates), returns (AttackResult).

Torch-free at import time, like :mod:`editing.methods.base`. An attack measures one fact on one
state of the model (:meth:`Attack.measure` returns a :class:`Score`), or many facts at once
(:meth:`Attack.measure_many`, by default a loop over :meth:`Attack.measure`; attacks override it
to batch); :meth:`Attack.run_many` measures cases before the edit (the pristine model, the
attack's own control) and after it, applying the edit once for all of them. Attacks that
change a model (casts, fine-tuning) work on a copy; the edit itself is only ever applied inside
:meth:`ModelStates.after`, which reverts it in a ``finally``.

A result is numbers only: counts, rates, ranks, bits and budgets, keyed by short names. Its types
admit no string value, so neither the secret nor the subject's name can end up in it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

if TYPE_CHECKING:
    from editing.edits import Edit
    from editing.models import LoadedModel
    from editing.request import FactSpec

Number = StrictInt | StrictFloat | None
_KEY = r"^[a-z][a-z0-9_@.]{0,47}$"  # e.g. "leak_rate", "success_rate@20"


@dataclass
class AttackCase:
    """One fact as an attacker sees it: who, which relation, the secret, the request's prompts.

    ``edit_prompts`` and ``heldout_prompts`` are every prompt of the request (not only those the
    unedited model answered): an attacker tries them all.
    """

    subject: str
    relation: str
    secret: str
    edit_prompts: list[str]
    heldout_prompts: list[str] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        """Edit then held-out prompts."""
        return [*self.edit_prompts, *self.heldout_prompts]

    @classmethod
    def from_fact(cls, fact: FactSpec) -> AttackCase:
        """The case of a validated request fact (its prompts resolved from the relation)."""
        return cls(
            subject=fact.subject,
            relation=fact.relation,
            secret=fact.secret,
            edit_prompts=fact.resolved_edit_prompts(),
            heldout_prompts=fact.resolved_heldout_prompts(),
        )


class ModelStates:
    """A loaded base model and an edit of it: the model before the edit and after it.

    :meth:`before` yields the pristine model; :meth:`after` applies the edit and reverts it when
    the block exits, whatever happens inside (``edit=None``: the model as it is, e.g. an
    unedited model attacked as a control).
    """

    def __init__(self, loaded: LoadedModel, edit: Edit | None) -> None:
        self.loaded = loaded
        self.edit = edit

    @contextmanager
    def before(self) -> Iterator[LoadedModel]:
        """The model without the edit."""
        yield self.loaded

    @contextmanager
    def after(self) -> Iterator[LoadedModel]:
        """The model with the edit applied (reverted on exit, always)."""
        if self.edit is None:
            yield self.loaded
            return
        with self.edit.applied(self.loaded.adapter):
            yield self.loaded


class Score(BaseModel):
    """One attack's measurement on one model state: numbers and success flags, no text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: dict[str, Number] = Field(default_factory=dict)
    success: dict[str, StrictBool] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        """Keys are short identifiers (never free text)."""
        for key in (*self.values, *self.success):
            if not re.fullmatch(_KEY, key):
                raise ValueError(f"score key {key!r} must match {_KEY}")


class AttackResult(BaseModel):
    """An attack on one fact: its budget, the score before the edit and after it.

    ``success[k]`` is the attack's own verdict at budget ``k`` (see the attack's docstring): True
    means the attacker recovered the whole secret. JSON-friendly (:meth:`model_dump`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    budget: dict[str, Number]
    before: Score | None = None
    after: Score

    def model_post_init(self, __context: Any) -> None:
        """Budget keys are short identifiers too."""
        Score(values=self.budget)


class Attack(ABC):
    """An attack: a name, a budget (its keyword arguments) and a success definition.

    Subclasses set :attr:`name`, take their budget as keyword arguments with defaults (stored
    by :meth:`__init__` and reported by :attr:`budget`), state in their docstring when they
    succeed, and implement :meth:`measure`.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, int | float]] = {}
    batched: ClassVar[bool] = True  # False: run_many goes case by case through run

    def __init__(self, **budget: int | float) -> None:
        unknown = set(budget) - set(self.defaults)
        if unknown:
            from editing.errors import ConfigError

            raise ConfigError(
                f"attack {self.name!r} has no budget {sorted(unknown)}; "
                f"it takes {sorted(self.defaults)}"
            )
        self._budget = {**self.defaults, **budget}

    @property
    def budget(self) -> dict[str, int | float]:
        """The budget in use (defaults overridden by the constructor's arguments)."""
        return dict(self._budget)

    @abstractmethod
    def measure(self, loaded: LoadedModel, case: AttackCase) -> Score:
        """Attack ``case`` on ``loaded`` as it is now (must leave its weights unchanged)."""

    def measure_many(self, loaded: LoadedModel, cases: Sequence[AttackCase]) -> list[Score]:
        """:meth:`measure` of every case on ``loaded`` as it is now, in order (override to batch;
        a batched form may draw different random numbers, but must score the same way)."""
        return [self.measure(loaded, case) for case in cases]

    def measure_before_many(self, loaded: LoadedModel, cases: Sequence[AttackCase]) -> list[Score]:
        """The cases on the model before the edit (the attack's control): :meth:`measure_many`,
        unless the attack states a cheaper policy for its control (with the same success
        flags)."""
        return self.measure_many(loaded, cases)

    def run_many(
        self,
        states: ModelStates,
        cases: Sequence[AttackCase],
        before: Sequence[Score | None] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[AttackResult]:
        """Per case, the attack before the edit and after it: the cases without a ``before``
        score (measured earlier) in one :meth:`measure_many` on the pristine model, then all
        cases in one on the edited model (the edit applied once); case by case through
        :meth:`run` if :attr:`batched` is False. ``on_done(i)`` after case i."""
        known = list(before) if before is not None else [None] * len(cases)
        if len(known) != len(cases):
            raise ValueError("before must hold one score (or None) per case")
        if self.batched:
            out = self._run_batched(states, cases, known)
        else:
            out = [self.run(states, case, prior) for case, prior in zip(cases, known)]
        for i in range(len(out)):
            if on_done:
                on_done(i)
        return out

    def _run_batched(
        self, states: ModelStates, cases: Sequence[AttackCase], known: list[Score | None]
    ) -> list[AttackResult]:
        """:meth:`run_many`'s batched path (``known``: the before scores, None to measure)."""
        todo = [i for i, score in enumerate(known) if score is None]
        if todo:
            with states.before() as loaded:
                fresh = self.measure_before_many(loaded, [cases[i] for i in todo])
            for i, score in zip(todo, fresh, strict=True):
                known[i] = score
        with states.after() as loaded:
            after = self.measure_many(loaded, cases)
        return [
            AttackResult(attack=self.name, budget=self.budget, before=prior, after=score)
            for prior, score in zip(known, after, strict=True)
        ]

    def run(
        self, states: ModelStates, case: AttackCase, before: Score | None = None
    ) -> AttackResult:
        """The attack before the edit (or ``before``, measured earlier) and after it."""
        return self._run_batched(states, [case], [before])[0]
