"""Quantization: does the erased secret come back in a lower-precision copy of the edited model?

Zhang et al. (ICLR 2025) found unlearned knowledge returning after 4-bit quantization. The model
is copied and cast to bfloat16 and float16, and quantized to int8 (dynamic, weights of every
``nn.Linear``, ``torch.ao.quantization.quantize_dynamic``). 4-bit is not attempted: no
weight-only int4 CPU backend is installed offline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from editing.attacks.base import Attack, AttackCase, Score
from editing.attacks.checks import leak_checks
from editing.models import LoadedModel


def _cast(dtype: torch.dtype) -> Callable[[nn.Module], nn.Module]:
    return lambda m: m.to(dtype)


def _int8(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model.float(), {nn.Linear}, dtype=torch.qint8)


CONVERSIONS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "bf16": _cast(torch.bfloat16),
    "fp16": _cast(torch.float16),
    "int8": _int8,
}


class Quantization(Attack):
    """Greedy and sampled leak checks (:func:`editing.attacks.checks.leak_checks`) on each
    converted copy of the model: ``bf16``, ``fp16``, ``int8``.

    Budget: ``samples`` per prompt for the sampled check (default 20). Success per conversion and
    check (``int8_sampled``...), and ``any``: the copy leaks the whole secret. The model itself is
    never changed (each conversion works on a deep copy, dropped afterwards).
    """

    name = "quantization"
    defaults: ClassVar[dict[str, int | float]] = {"samples": 20, "seed": 0}

    def measure(self, loaded: LoadedModel, case: AttackCase) -> Score:
        """Leak checks on every converted copy."""
        values: dict[str, int | float | None] = {}
        success: dict[str, bool] = {}
        for name, convert in CONVERSIONS.items():
            converted = convert(copy.deepcopy(loaded.model)).eval()
            checks = leak_checks(
                converted,
                loaded.tokenizer,
                case,
                int(self.budget["samples"]),
                int(self.budget["seed"]),
            )
            del converted
            for key in ("greedy_leak", "sampled_leak"):
                values[f"{name}_{key}"] = checks.values[key]
            for key, hit in checks.success.items():
                success[f"{name}_{key}"] = hit
        success["any"] = any(success.values())
        return Score(values=values, success=success)
