"""The attack suite: how an attacker would try to get an erased secret back (issue #13).

One module per attack behind one interface (:class:`~editing.attacks.base.Attack`), registered
by name in :mod:`editing.attacks.registry` (torch-free; implementations import lazily):
``sampled``, ``logit_lens``, ``rephrase``, ``exposure``, ``quantization``, ``relearning``.
:func:`editing.attacks.suite.run_attacks` runs them before and after an edit. Results hold
numbers only, never a secret or a name.
"""

from __future__ import annotations

from editing.attacks.base import Attack, AttackCase, AttackResult, ModelStates, Score
from editing.attacks.registry import (
    AttackSpec,
    attack_names,
    get_attack,
    parse_attacks,
    register_attack,
)

__all__ = [
    "Attack",
    "AttackCase",
    "AttackResult",
    "AttackSpec",
    "ModelStates",
    "Score",
    "attack_names",
    "get_attack",
    "parse_attacks",
    "register_attack",
]
