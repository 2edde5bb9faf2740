"""NeuronLens range masking: an inference-time intervention (metrics only, never a checkpoint).

Neurons are located as for the neuron baseline; each one's activation mean and std over the fact's
prompts define a range ``mu +- tau * sigma``; at inference the neuron is set to 0 only while its
activation lies in that range, so its other "concepts" (other ranges) pass untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from editing.methods.base import FactCase, FactOutcome
from editing.methods.neurons import locate_neurons
from editing.methods.params import NeuronLensParams
from editing.models import LoadedModel


class NeuronLens:
    """Range-based neuron masking (Haider et al. 2025)."""

    def __init__(self, params: NeuronLensParams) -> None:
        self.params = params

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        """Locate neurons and return the range-masking intervention."""
        t0 = time.perf_counter()
        units, acts = locate_neurons(loaded, case, self.params)
        t_locate = time.perf_counter() - t0
        tau = self.params.neuronlens_tau
        ranges: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for layer in sorted({u.layer for u in units}):
            idx = torch.tensor(
                [u.index for u in units if u.layer == layer], device=loaded.adapter.device
            )
            a = acts[layer][:, idx]
            mu = a.mean(0)
            sigma = a.std(0, unbiased=False) if a.shape[0] > 1 else torch.zeros_like(mu)
            sigma = sigma.clamp_min(1e-3 * mu.abs().clamp_min(1e-6))
            ranges[layer] = (idx, mu - tau * sigma, mu + tau * sigma)
        adapter = loaded.adapter

        @contextmanager
        def intervention() -> Iterator[None]:
            with ExitStack() as stack:
                for layer, (idx, lo, hi) in ranges.items():

                    def mask(x: torch.Tensor, idx=idx, lo=lo, hi=hi) -> torch.Tensor:
                        sel = x[..., idx]
                        inside = (sel >= lo.to(x.dtype)) & (sel <= hi.to(x.dtype))
                        x = x.clone()
                        x[..., idx] = torch.where(inside, torch.zeros_like(sel), sel)
                        return x

                    stack.enter_context(adapter.patch("neurons", layer, mask))
                yield

        return FactOutcome(
            units=units,
            timings={"locate": t_locate, "edit": 0.0},
            evidence={
                "ranges": [
                    {
                        "layer": layer,
                        "neurons": idx.tolist(),
                        "low": lo.tolist(),
                        "high": hi.tolist(),
                    }
                    for layer, (idx, lo, hi) in ranges.items()
                ]
            },
            intervention=intervention,
        )
