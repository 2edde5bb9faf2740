"""Run attacks on the facts of an erasure and summarise them over facts.

:func:`run_attacks` attacks every case before and after the edit, attack by attack, each
attack's cases batched (:meth:`Attack.run_many`: one pass on the pristine model, one with the
edit applied once; the model is left as it was given: the edit is applied only inside
:meth:`ModelStates.after`). :func:`summarise` averages
each attack's numbers over facts and turns its success flags into AttackSuccess rates (share of
facts on which the attack recovered the whole secret). Neither carries a secret or a name.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from editing.attacks.base import AttackCase, AttackResult, ModelStates, Score
from editing.attacks.registry import get_attack

if TYPE_CHECKING:
    from editing.edits import Edit
    from editing.models import LoadedModel

BeforeKey = tuple[str, ...]


class BeforeCache(Protocol):
    """The unedited model's score per :func:`before_key`: a dict (in memory) or a persistent
    store (:class:`editing.baseline.AttackBefore`, whose ``update`` writes once per attack)."""

    def get(self, key: BeforeKey, /) -> Score | None:
        """The score kept for ``key``, or None."""

    def update(self, scores: Mapping[BeforeKey, Score], /) -> None:
        """Keep ``scores``."""


def before_key(name: str, budget: dict[str, int | float], case: AttackCase) -> BeforeKey:
    """What an attack's score on the unedited model is a function of (with the model): the
    attack, its budget (seeds included), and the case's subject, relation, secret and prompts."""
    budget_text = json.dumps(budget, sort_keys=True)
    return (name, budget_text, case.subject, case.relation, case.secret, *case.prompts)


def run_attacks(
    loaded: LoadedModel,
    edit: Edit | None,
    cases: Sequence[AttackCase],
    attacks: Sequence[str],
    budgets: dict[str, dict[str, int | float]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_cache: BeforeCache | None = None,
) -> list[dict[str, AttackResult]]:
    """Per case, attack name -> result, before and after ``edit`` (None: the model as it is).

    ``before_cache`` (optional, filled here) reuses the unedited model's scores across calls
    (keyed by :func:`before_key`), e.g. across the methods of a benchmark, or across requests
    on one model (:func:`editing.baseline.attack_before_cache`). It must belong to the model as
    :meth:`ModelStates.before` yields it.
    """
    built = {name: get_attack(name, **(budgets or {}).get(name, {})) for name in attacks}
    states = ModelStates(loaded, edit)
    out: list[dict[str, AttackResult]] = [{} for _ in cases]
    total, done = len(cases) * len(built), 0

    def tick(_: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    for name, attack in built.items():
        keys = [before_key(name, attack.budget, case) for case in cases]
        cached = [None if before_cache is None else before_cache.get(k) for k in keys]
        results = attack.run_many(states, cases, before=cached, on_done=tick)
        new: dict[BeforeKey, Score] = {}
        for slot, key, prior, result in zip(out, keys, cached, results, strict=True):
            slot[name] = result
            if prior is None and result.before is not None:
                new[key] = result.before
        if before_cache is not None and new:
            before_cache.update(new)
    return out


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return round(statistics.fmean(nums), 4) if nums else None


def _max(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return round(max(nums), 4) if nums else None


def summarise(per_fact: Sequence[dict[str, AttackResult]]) -> dict[str, Any]:
    """Per attack: its budget, and before/after the mean of every value (``values``), its largest
    value on any one fact (``worst``: the figure a per-fact limit bounds) and the share of facts
    on which each success flag held (``success``)."""
    summary: dict[str, Any] = {}
    names = list(dict.fromkeys(n for results in per_fact for n in results))
    for name in names:
        results = [r[name] for r in per_fact if name in r]
        entry: dict[str, Any] = {"budget": results[0].budget, "facts": len(results)}
        for state in ("before", "after"):
            scores = [s for s in (getattr(r, state) for r in results) if s is not None]
            value_keys = list(dict.fromkeys(k for s in scores for k in s.values))
            success_keys = list(dict.fromkeys(k for s in scores for k in s.success))
            entry[state] = {
                "values": {k: _mean([s.values.get(k) for s in scores]) for k in value_keys},
                "worst": {k: _max([s.values.get(k) for s in scores]) for k in value_keys},
                "success": {
                    k: _mean([float(s.success[k]) for s in scores if k in s.success])
                    for k in success_keys
                },
            }
        summary[name] = entry
    return summary
