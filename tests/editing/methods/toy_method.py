"""A toy erasure method in one module: its params class and its implementation.

``test_method_registry.py`` registers it with one :func:`editing.methods.register_method` call and
runs it through :func:`editing.erase.run_erasure`: that is all adding a method takes.
"""

from __future__ import annotations

import time

import torch
from pydantic import Field

from editing.locate import Unit
from editing.methods import FactCase, FactOutcome, MethodParams
from editing.models import LoadedModel


class ToyParams(MethodParams):
    """Which down-projection column to zero (in the last of ``layers``, default the last layer)."""

    neuron: int = Field(0, ge=0, description="The neuron whose column is zeroed.")


class ToyMethod:
    """Zero one neuron's down-projection column, whatever the fact (tests the plumbing only)."""

    def __init__(self, params: ToyParams) -> None:
        self.params = params

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Zero the column; report it as the one located unit."""
        t0 = time.perf_counter()
        layers = self.params.layers or [loaded.adapter.n_layers - 1]
        layer, index = layers[-1], self.params.neuron
        with torch.no_grad():
            loaded.adapter.down_proj_weight(layer)[:, index] = 0.0
        unit = Unit("neuron", "neurons", layer, index, score=1.0, activation=0.0)
        return FactOutcome(
            units=[unit],
            timings={"locate": 0.0, "edit": time.perf_counter() - t0},
            evidence={"toy": True},
        )
