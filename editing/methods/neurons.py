"""Neuron baseline (knowledge neurons / DEPN): integrated gradients, then zero whole columns."""

from __future__ import annotations

import time

import torch

from editing.locate import Unit, neuron_attributions, select_neurons
from editing.methods.base import FactCase, FactOutcome
from editing.methods.params import NeuronParams
from editing.models import LoadedModel


def locate_neurons(
    loaded: LoadedModel, case: FactCase, params: NeuronParams
) -> tuple[list[Unit], dict[int, torch.Tensor]]:
    """Refined knowledge neurons of ``case`` and the clean activations ``layer -> [n, d_mlp]``."""
    layers = params.layers if params.layers is not None else list(range(loaded.adapter.n_layers))
    attributions, acts = neuron_attributions(
        loaded, case.edit_prompts, case.secret, layers, params.ig_steps
    )
    units = select_neurons(attributions, params.ig_threshold, params.neuron_cap)
    units = [
        Unit(
            u.kind,
            u.site,
            u.layer,
            u.index,
            u.score,
            activation=float(acts[u.layer][:, u.index].mean()),
            prompt_count=u.prompt_count,
        )
        for u in units
    ]
    return units, acts


class NeuronBaseline:
    """Zero the down-projection column of every refined knowledge neuron (METHOD.md)."""

    def __init__(self, params: NeuronParams) -> None:
        self.params = params

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Locate neurons by integrated gradients and zero their columns."""
        t0 = time.perf_counter()
        units, _ = locate_neurons(loaded, case, self.params)
        t_locate = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            for u in units:
                loaded.adapter.down_proj_weight(u.layer)[:, u.index] = 0.0
        return FactOutcome(
            units=units,
            timings={"locate": t_locate, "edit": time.perf_counter() - t0},
            evidence={"neurons": len(units)},
        )
