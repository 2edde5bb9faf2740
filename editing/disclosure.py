"""How precisely a published document may state figures measured on a secret.

A report, a record's metrics and a checkpoint's manifest go to tenants and, with the checkpoint,
to anyone who downloads it. A figure measured *on the secret under the edited weights* — its
probability after the edit, its exposure (its rank in the format space), the worst logit-lens
rank, a refinement loss — is a function of the secret that anyone holding the checkpoint can
recompute for every guess: stated exactly, it singles the secret out of an enumerable space (a
birth date has ~22 k candidates) and undoes the erasure without any attack on the model.

So every JSON document leaving the engine (:meth:`editing.report.ReportModel.to_json`) states
those figures coarsely, by key, wherever they sit in the document:

- probabilities (``prob``, ``edit_prompts_max_target_prob``) and refinement losses
  (``refine_*_loss``, not capped at 1): the upper bound of their decade (``0.0123`` → ``0.1``);
- exposure in bits (``exposure*``, ``control_exposure``): whole bits;
- ``delta_prob`` (relative drop of the secret's probability): two decimals;
- ranks (``worst_rank``): the power of two at or above;
- counts that depend on where the secret occurs (``train_texts``): not stated.

Acceptance decisions use the exact in-memory figures (or :func:`exact_figures` around their
JSON); the operator's benchmarks read the in-memory objects. Coarsening is idempotent: a
document read back and written again keeps its figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_EXACT: ContextVar[bool] = ContextVar("featureedit_exact_figures", default=False)
_DROP = object()


@contextmanager
def exact_figures() -> Iterator[None]:
    """Within this block ``to_json`` states every figure exactly (for decisions made in-process
    from JSON, never for a document that is stored or returned)."""
    token = _EXACT.set(True)
    try:
        yield
    finally:
        _EXACT.reset(token)


def coarse_magnitude(x: float) -> float:
    """The upper bound of a non-negative ``x``'s decade (0 stays): 0.0123 → 0.1, 3.2 → 10."""
    if x <= 0.0:
        return 0.0
    return float(10.0 ** math.ceil(math.log10(x) - 1e-9))


def coarse_probability(p: float) -> float:
    """:func:`coarse_magnitude` of a probability, at most 1: 0.0123 → 0.1, 0.99 → 1."""
    return min(coarse_magnitude(p), 1.0)


def coarse_bits(bits: float) -> float:
    """Exposure (or a difference of exposures) in whole bits."""
    return float(round(bits))


def coarse_share(x: float) -> float:
    """A relative change to two decimals."""
    return round(x, 2)


def coarse_rank(rank: float) -> float:
    """The power of two at or above ``rank`` (ranks start at 1)."""
    return float(2 ** math.ceil(math.log2(max(rank, 1.0)) - 1e-9))


_RULES: dict[str, Callable[[float], Any]] = {
    "prob": coarse_probability,
    "edit_prompts_max_target_prob": coarse_probability,
    "refine_rank_loss": coarse_magnitude,
    "refine_exposure_loss": coarse_magnitude,
    "refine_stranger_loss": coarse_magnitude,
    "refine_digit_loss": coarse_magnitude,
    "exposure": coarse_bits,
    "exposure_before": coarse_bits,
    "exposure_after": coarse_bits,
    "control_exposure": coarse_bits,
    "exposure_minus_control": coarse_bits,
    "delta_prob": coarse_share,
    "worst_rank": coarse_rank,
    "train_texts": lambda _: _DROP,
}


def coarse_figure(key: str, value: float) -> float:
    """``value`` as a document may state the figure ``key`` (unchanged for a key without a rule,
    e.g. a leak rate; always coarse, also inside :func:`exact_figures`: for text such as an
    acceptance reason)."""
    rule = _RULES.get(key)
    if rule is None or not math.isfinite(value):
        return value
    shown = rule(value)
    return value if shown is _DROP else shown


def coarsen(doc: Any) -> Any:
    """``doc`` (JSON: dicts, lists, numbers) with the figures above coarsened, by key, at any
    depth; unchanged inside :func:`exact_figures`."""
    if _EXACT.get():
        return doc
    return _walk(doc)


def _walk(node: Any) -> Any:
    if isinstance(node, list):
        return [_walk(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        rule = _RULES.get(key)
        if rule is not None and isinstance(value, int | float) and not isinstance(value, bool):
            value = rule(float(value)) if math.isfinite(value) else value
            if value is _DROP:
                continue
        else:
            value = _walk(value)
        out[key] = value
    return out
