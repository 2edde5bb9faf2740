"""The acceptance rule: which measured criteria an erasure must meet to be published (no torch).

One place for it: :func:`editing.erase.run_erasure` decides with :func:`decide`, and the
compliance report (``service/report_content.py``) lists each criterion's :func:`assess` row
(measured value, threshold, verdict). Metrics may be a mapping or a typed
:class:`editing.report.Metrics`; a rate counts by its ``value``.

Attack limits (:data:`ATTACK_CRITERIA`, issue #13) are optional thresholds: unset (None) they do
not apply. Set, they are checked against the attack suite's summary after the edit
(:func:`editing.attacks.suite.summarise`): :func:`editing.pipeline.erase_and_publish` decides
again with the attacks once they have run. A set limit whose attack did not run rejects (it could
not be checked); one whose figure the attack could not measure on these facts (e.g. exposure of a
secret with too few digits) does not apply, as generalization without held-out prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from editing.disclosure import coarse_figure

Rule = Literal[">=", "<="]

# metric (in a result's metrics), threshold key (in Thresholds), rule
CRITERIA: tuple[tuple[str, str, Rule], ...] = (
    ("reliability", "min_reliability", ">="),
    ("generalization", "min_generalization", ">="),
    ("locality", "min_locality", ">="),
    ("delta_ppl", "max_delta_ppl", "<="),
)
# criteria that may go unmeasured without rejecting (no held-out prompt the model knew: nothing
# to generalize to)
OPTIONAL = frozenset({"generalization"})

# threshold key (in Thresholds), attack, part of its summary after the edit, key: all "<="
# (a share of facts for success flags; for values the worst fact's, so that a limit bounds every
# fact of a request and one leaking fact is not averaged away by the others)
ATTACK_CRITERIA: tuple[tuple[str, str, str, str], ...] = (
    ("max_sampled_leak", "sampled", "worst", "leak_rate_t1"),
    ("max_logit_lens_success_at_20", "logit_lens", "success", "any@20"),
    ("max_logit_lens_success_at_1", "logit_lens", "success", "any@1"),
    ("max_rephrase_success_at_20", "rephrase", "success", "leaked"),
    ("max_exposure_over_control", "exposure", "worst", "exposure_minus_control"),
)
ATTACK_LIMITS = tuple(key for key, *_ in ATTACK_CRITERIA)

# The default attack plan of every publish decision — the worker's (FEATUREEDIT_WORKER_ATTACKS,
# ..._ATTACK_BUDGETS, ..._ATTACK_LIMITS) and `featureedit erase`'s — as settings text
# (:func:`editing.attack_gate.plan_from_text`). The limits are on since the flatten refinement is
# FeatureEdit's default. Measured on demo-small (30 facts, one erasure each, these attacks and
# budgets): the sampled leak after the edit is 0.2 % on average and above 1 % on one fact (an
# e-mail, 13 of 220 samples: rejected now, published before); no fact's secret is ranked first by
# any layer's lens. The lens at B = 20 (3 of 30 facts) is not a default limit.
DEFAULT_ATTACKS = "sampled,logit_lens"
DEFAULT_ATTACK_BUDGETS = "sampled.samples=20"
DEFAULT_ATTACK_LIMITS = "max_sampled_leak=0.01,max_logit_lens_success_at_1=0"

# Thresholds that accept whatever an erasure measures — the greedy criteria and the default
# attack limits at their loosest (a request's own limits override the defaults) — for runs that
# measure or exercise the machinery (benchmarks, drills, tests), not an erasure's strength. The
# attacks still run and are reported.
ACCEPT_ALL: dict[str, float] = {
    "min_reliability": 0.0,
    "min_generalization": 0.0,
    "min_locality": 0.0,
    "max_delta_ppl": 1e9,
    "max_sampled_leak": 1.0,
    "max_logit_lens_success_at_1": 1.0,
}
NOT_RUN = "not run"  # the verdict of a set attack limit whose attack did not run (rejects)


@dataclass(frozen=True)
class Check:
    """One criterion applied to one result: what was measured, the bar, the verdict."""

    name: str  # the metric
    key: str  # the threshold
    rule: Rule
    metric: Any  # as reported (a number or a rate)
    measured: float | None
    bar: float | None
    verdict: str  # see :func:`verdict`


def number(value: Any) -> float | None:
    """The numeric value of a metric (a number, or a rate's ``value``), or None."""
    if isinstance(value, Mapping):
        value = value.get("value")
    elif hasattr(value, "value"):  # a typed rate (editing.report.ReportedRate)
        value = value.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def verdict(value: float | None, bar: float | None, rule: Rule) -> str:
    """``"pass"``, ``"FAIL"``, ``"not measured"`` or ``"-"`` (no threshold)."""
    if value is None:
        return "not measured"
    if bar is None:
        return "-"
    return "pass" if (value >= bar if rule == ">=" else value <= bar) else "FAIL"


def metric(metrics: Any, name: str) -> Any:
    """The metric ``name`` as reported, from a mapping or a typed :class:`~editing.report.Metrics`
    (None if absent)."""
    if isinstance(metrics, Mapping):
        return metrics.get(name)
    return getattr(metrics, name, None)


def assess(metrics: Any, thresholds: Mapping[str, Any]) -> list[Check]:
    """Every criterion of :data:`CRITERIA` applied to ``metrics`` and ``thresholds``."""
    checks = []
    for name, key, rule in CRITERIA:
        reported = metric(metrics, name)
        value, bar = number(reported), number(thresholds.get(key))
        checks.append(Check(name, key, rule, reported, value, bar, verdict(value, bar, rule)))
    return checks


def attack_figure(attacks: Mapping[str, Any], attack: str, part: str, key: str) -> float | None:
    """The figure ``attacks[attack]["after"][part][key]`` of a summary (None if absent). A
    summary stored before summaries had ``worst`` gives its mean there (reports of one fact,
    where the two are equal, and older multi-fact ones, which were decided by the mean)."""
    after = (attacks.get(attack) or {}).get("after") or {}
    if part == "worst" and not after.get("worst"):
        part = "values"
    return number((after.get(part) or {}).get(key))


def assess_attacks(attacks: Mapping[str, Any], thresholds: Mapping[str, Any]) -> list[Check]:
    """Every attack limit that is set, applied to the summary ``attacks`` (attack -> its
    summary as JSON); the check's name is ``"<attack> <key>"``."""
    checks = []
    for key, attack, part, figure in ATTACK_CRITERIA:
        bar = number(thresholds.get(key))
        if bar is None:
            continue
        value = attack_figure(attacks, attack, part, figure)
        found = verdict(value, bar, "<=") if attack in attacks else NOT_RUN
        name = f"{attack} {'worst fact ' if part == 'worst' else ''}{figure}"
        checks.append(Check(name, key, "<=", value, value, bar, found))
    return checks


def decide(
    metrics: Any, thresholds: Mapping[str, Any], attacks: Mapping[str, Any] | None = None
) -> tuple[bool, list[str]]:
    """``(accepted, reasons)``: accepted when every criterion is measured and meets its bar, and
    (when ``attacks``, the suite's summary, is given) every attack limit that is set, where the
    attack could measure its figure."""
    reasons = []
    checks = assess(metrics, thresholds)
    if attacks is not None:
        checks += assess_attacks(attacks, thresholds)
    for c in checks:
        if c.verdict == NOT_RUN:
            reasons.append(f"{c.name} could not be measured (attack not run) for {c.key}")
        elif c.measured is None:
            if c.key not in ATTACK_LIMITS and c.name not in OPTIONAL:
                reasons.append(f"{c.name} could not be measured (no evaluation data)")
        elif c.verdict == "FAIL":
            shown = coarse_figure(c.name.split()[-1], c.measured)  # never exact on a secret
            figure = f"{c.measured:.3f}" if shown == c.measured else f"~{shown:g}"
            reasons.append(f"{c.name} {figure} {'<' if c.rule == '>=' else '>'} {c.bar}")
    return not reasons, reasons
