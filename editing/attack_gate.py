"""Attacks inside an erasure: which run (an :class:`AttackPlan`), on the edit, before publishing.

:func:`attack_result` runs the plan's attacks on an erasure's edit (the edit applied only inside
:meth:`editing.attacks.base.ModelStates.after`, so the model is left unedited), summarises them
over facts into the report's typed ``attacks`` section and decides acceptance again with
:func:`editing.acceptance.decide`, the single rule: greedy criteria AND every attack limit that is
set. A request's limit wins; an unset one takes the plan's default (the operator's). Numbers
only: no secret or name reaches the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from editing.acceptance import ATTACK_CRITERIA, ATTACK_LIMITS, decide
from editing.errors import ConfigError
from editing.report import Acceptance, AttackSummary

if TYPE_CHECKING:
    from editing.attacks.suite import BeforeCache
    from editing.erase import ErasureResult
    from editing.models import LoadedModel
    from editing.request import ErasureRequest

AttackProgress = Callable[[int, int], None]


def _check_limit_keys(keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(ATTACK_LIMITS))
    if unknown:
        raise ConfigError(f"unknown attack limit(s) {unknown}; see {list(ATTACK_LIMITS)}")


@dataclass(frozen=True)
class AttackPlan:
    """Which attacks run on an erasure, their budgets, and the default attack limits."""

    names: Sequence[str] = ()
    budgets: Mapping[str, Mapping[str, int | float]] = field(default_factory=dict)
    limits: Mapping[str, float] = field(default_factory=dict)  # threshold key -> default bar

    def __post_init__(self) -> None:
        _check_limit_keys(self.limits)

    def thresholds(self, request_thresholds: Mapping[str, Any]) -> dict[str, Any]:
        """``request_thresholds`` with every unset (None) attack limit taken from :attr:`limits`."""
        out = dict(request_thresholds)
        for key, bar in self.limits.items():
            if out.get(key) is None:
                out[key] = bar
        return out


def _pairs(text: str) -> list[str]:
    return [pair.strip() for pair in text.split(",") if pair.strip()]


def plan_from_text(attacks: str, budgets: str = "", limits: str = "") -> AttackPlan:
    """A plan from settings text: ``"sampled,logit_lens"`` (empty: no attack),
    ``"sampled.samples=20,..."`` and ``"max_sampled_leak=0.01,..."``; ConfigError if invalid."""
    from editing.attacks import parse_attacks
    from editing.cli_attack import parse_budgets
    from editing.cli_input import parse_pairs
    from editing.request import Thresholds

    names = parse_attacks(attacks) if attacks.strip() else []
    bars = parse_pairs(_pairs(limits), "attack limit")
    _check_limit_keys(bars)
    try:  # the request's own validation: finite numbers in range
        checked = Thresholds.model_validate(bars).model_dump(include=set(bars))
    except ValidationError as exc:
        raise ConfigError(f"invalid attack limit: {exc.errors()[0]['msg']}") from None
    return AttackPlan(names, parse_budgets(_pairs(budgets)), checked)


def default_plan() -> AttackPlan:
    """The service's default plan (:data:`editing.acceptance.DEFAULT_ATTACKS`, its budgets and
    limits): what a worker runs unless its operator changes it, and what `featureedit erase` and
    `featureedit demo` decide with."""
    from editing.acceptance import DEFAULT_ATTACK_BUDGETS, DEFAULT_ATTACK_LIMITS, DEFAULT_ATTACKS

    return plan_from_text(DEFAULT_ATTACKS, DEFAULT_ATTACK_BUDGETS, DEFAULT_ATTACK_LIMITS)


def summaries(per_fact: Sequence[Mapping[str, Any]]) -> dict[str, AttackSummary]:
    """The typed report section of :func:`editing.attacks.suite.run_attacks`' results: per
    attack :func:`~editing.attacks.suite.summarise`'s figures, plus its control figures after
    the edit (values named ``control*``)."""
    from editing.attacks.suite import summarise

    out = {}
    for name, entry in summarise(per_fact).items():  # type: ignore[arg-type]
        after_values = entry["after"]["values"]
        control = {k: v for k, v in after_values.items() if k.startswith("control")}
        out[name] = AttackSummary(**entry, control=control)
    return out


def planned_attacks(
    plan: AttackPlan, request_thresholds: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The thresholds an erasure is decided with (the request's, unset attack limits from the
    plan) and the attacks to run: the plan's and those a set limit needs."""
    thresholds = plan.thresholds(request_thresholds)
    limited = [attack for key, attack, *_ in ATTACK_CRITERIA if thresholds.get(key) is not None]
    return thresholds, list(dict.fromkeys([*plan.names, *limited]))


def decide_attacked(
    result: ErasureResult,
    thresholds: Mapping[str, Any],
    per_fact: Sequence[Mapping[str, Any]],
) -> ErasureResult:
    """``result`` with its attacks summarised over facts (``per_fact``: every fact's attack
    results, in the request's order) and the acceptance decided again with them."""
    from editing.disclosure import exact_figures

    attacks = summaries(per_fact)
    with exact_figures():  # the decision uses the exact figures; documents state them coarsely
        as_json = {name: s.to_json() for name, s in attacks.items()}
    accepted, reasons = decide(result.metrics, dict(thresholds), as_json)
    return replace(
        result,
        status="succeeded" if accepted else "rejected",
        thresholds=dict(thresholds),
        acceptance=Acceptance(accepted=accepted, reasons=reasons),
        attacks=attacks,
    )


def attack_result(
    result: ErasureResult,
    request: ErasureRequest,
    loaded: LoadedModel,
    plan: AttackPlan,
    progress: AttackProgress | None = None,
    before_cache: BeforeCache | None = None,
) -> ErasureResult:
    """``result`` with the plan's attacks on its edit and the acceptance decided again.

    The attacks run are the plan's and those a set limit needs (:func:`planned_attacks`);
    ``progress(done, total)`` is called as they start and after each one. No edit (nothing to
    erase) or no attack and no limit: ``result`` unchanged (``progress`` not called).
    ``before_cache``: the unedited model's attack scores kept from earlier requests
    (:func:`editing.baseline.attack_before_cache`).
    """
    from editing.attacks import AttackCase
    from editing.attacks.suite import run_attacks

    thresholds, names = planned_attacks(plan, result.thresholds)
    if result.edit is None or result.status == "nothing_to_erase" or not names:
        return result
    cases = [AttackCase.from_fact(f) for f in request.facts]
    budgets = {name: dict(b) for name, b in plan.budgets.items()}
    if progress is not None:  # the stage starts (attacks take seconds)
        progress(0, len(cases) * len(names))
    per_fact = run_attacks(loaded, result.edit, cases, names, budgets, progress, before_cache)
    return decide_attacked(result, thresholds, per_fact)
