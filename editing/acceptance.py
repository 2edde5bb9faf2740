"""The acceptance rule: which measured criteria an erasure must meet to be published (no torch).

One place for it: :func:`editing.erase.run_erasure` decides with :func:`decide`, and the
compliance report (``service/report_content.py``) lists the same :data:`CRITERIA` with
:func:`verdict` next to each threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def number(value: Any) -> float | None:
    """The numeric value of a metric (a number, or a rate's ``"value"``), or None."""
    if isinstance(value, Mapping):
        value = value.get("value")
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


def decide(metrics: Mapping[str, Any], thresholds: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """``(accepted, reasons)``: accepted when every criterion is measured and meets its bar."""
    reasons = []
    for name, key, rule in CRITERIA:
        value, bar = number(metrics.get(name)), thresholds.get(key)
        if value is None:
            if name not in OPTIONAL:
                reasons.append(f"{name} could not be measured (no evaluation data)")
        elif verdict(value, bar, rule) == "FAIL":
            reasons.append(f"{name} {value:.3f} {'<' if rule == '>=' else '>'} {bar}")
    return not reasons, reasons
