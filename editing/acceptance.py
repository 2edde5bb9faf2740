"""The acceptance rule: which measured criteria an erasure must meet to be published (no torch).

One place for it: :func:`editing.erase.run_erasure` decides with :func:`decide`, and the
compliance report (``service/report_content.py``) lists each criterion's :func:`assess` row
(measured value, threshold, verdict). Metrics may be a mapping or a typed
:class:`editing.report.Metrics`; a rate counts by its ``value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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


def decide(metrics: Any, thresholds: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """``(accepted, reasons)``: accepted when every criterion is measured and meets its bar."""
    reasons = []
    for c in assess(metrics, thresholds):
        if c.measured is None:
            if c.name not in OPTIONAL:
                reasons.append(f"{c.name} could not be measured (no evaluation data)")
        elif c.verdict == "FAIL":
            reasons.append(f"{c.name} {c.measured:.3f} {'<' if c.rule == '>=' else '>'} {c.bar}")
    return not reasons, reasons
