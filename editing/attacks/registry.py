"""The attack registry: name -> description and (lazily imported) implementation.

Torch-free, like :mod:`editing.methods.registry`: the CLI lists the attacks without loading the
ML stack, and :func:`get_attack` imports an attack's module only when one is built. Adding an
attack is one module (a subclass of :class:`editing.attacks.base.Attack`) and one
:func:`register_attack` call at the bottom of this file.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from editing.errors import ConfigError

if TYPE_CHECKING:
    from editing.attacks.base import Attack

_IMPL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: where it is implemented and what it does."""

    name: str
    impl: str  # "package.module:Class"
    description: str


_ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name: str, impl: str, description: str) -> AttackSpec:
    """Register attack ``name`` implemented by ``impl`` ("module:Class"); ConfigError if taken."""
    if name in _ATTACKS:
        raise ConfigError(f"Attack {name!r} is already registered ({_ATTACKS[name].impl}).")
    if not _IMPL.fullmatch(impl):
        raise ConfigError(f"Attack {name!r}: impl must look like 'package.module:Class'.")
    spec = AttackSpec(name, impl, description)
    _ATTACKS[name] = spec
    return spec


def attack_names() -> list[str]:
    """Names of the registered attacks, in registration order (cheapest first)."""
    return list(_ATTACKS)


def parse_attacks(text: str | None) -> list[str]:
    """``"a,b"`` as registered attack names (None or empty: all); ConfigError if unknown."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or attack_names()
    unknown = [n for n in names if n not in _ATTACKS]
    if unknown:
        raise ConfigError(f"Unknown attack(s) {unknown}; available attacks are {attack_names()}.")
    return names


def get_attack(name: str, **budget: int | float) -> Attack:
    """Build attack ``name`` with ``budget`` overrides (imports its module, and torch)."""
    (spec,) = [_ATTACKS[n] for n in parse_attacks(name)]
    module, _, attr = spec.impl.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(**budget)


register_attack(
    "sampled",
    "editing.attacks.sampled:SampledLeak",
    "100 samples per edit and held-out prompt at temperature 1 (no top-k) and at top-p 0.9 "
    "(the unedited control stops at 20 hits).",
)
register_attack(
    "logit_lens",
    "editing.attacks.logit_lens:LogitLens",
    "White-box Head Projection and Probability Delta (Patil et al. 2024) at B = 20 and B = 1.",
)
register_attack(
    "rephrase",
    "editing.attacks.rephrase:Rephrase",
    "Black-box: paraphrases the request never named x samples, B = 20.",
)
register_attack(
    "exposure",
    "editing.attacks.exposure:Exposure",
    "Carlini's exposure of a digit secret (exact rank or skew-normal), next to a control.",
)
register_attack(
    "quantization",
    "editing.attacks.quantization:Quantization",
    "Greedy and sampled checks on bf16, fp16 and int8 copies of the edited model.",
)
register_attack(
    "relearning",
    "editing.attacks.relearning:Relearning",
    "Fine-tune a copy 50 steps on text without the secret; re-run the checks; recovery.",
)
