"""Features vs neurons: ΔProb of ablating the top-k SAE features vs the top-k knowledge neurons.

Features are ranked over every layer with an SAE by attribution ``f_i (W_dec[i] . grad log P)``
(mean over the fact's prompts; no specificity filter, as in the paper's table) and ablated at the
last prompt token by subtracting ``f_i W_dec[i]`` (the SAE's error term is kept). Neurons are
ranked by integrated gradients (``editing.locate.neuron_attributions``): first the DEPN-refined
set (``select_neurons``), then by mean attribution; they are zeroed at the last prompt token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.analysis.common import (
    Dictionary,
    delta_prob,
    figure,
    pick_facts,
    sae_dictionary,
    site_acts_grads,
    target_probs,
    write_results,
)
from editing.locate import neuron_attributions, select_neurons
from editing.models import LoadedModel

FEATURE_SITES = ("resid_post", "mlp_out")


def top_features(
    dics: dict[int, Dictionary], xs: dict[int, torch.Tensor], gs: dict[int, torch.Tensor], k: int
) -> list[tuple[int, int]]:
    """``(layer, index)`` of the ``k`` features of largest mean attribution over all layers."""
    scored = []
    for layer, dic in dics.items():
        s = dic.attribution(xs[layer], gs[layer]).mean(0)
        top = s.topk(min(k, dic.size))
        scored += [(float(v), layer, int(i)) for v, i in zip(top.values, top.indices, strict=True)]
    scored.sort(reverse=True)
    return [(layer, i) for _, layer, i in scored[:k]]


def feature_edits(site: str, dics: dict[int, Dictionary], units: list[tuple[int, int]]) -> list:
    """Last-token edits removing ``units`` (grouped per layer)."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in units:
        by_layer.setdefault(layer, []).append(i)
    return [(site, layer, dics[layer].ablate(idx)) for layer, idx in sorted(by_layer.items())]


def ranked_neurons(
    loaded: LoadedModel, prompts: list[str], target: str, layers: list[int], steps: int
) -> tuple[list[tuple[int, int]], int]:
    """Neurons best first (DEPN-refined set, then mean IG attribution) and the refined-set size."""
    attr, _ = neuron_attributions(loaded, prompts, target, layers, steps=steps)
    refined = [(u.layer, u.index) for u in select_neurons(attr, 0.2, 20)]
    d_mlp = loaded.adapter.d_mlp
    mean = torch.cat([attr[layer].mean(0) for layer in layers])
    rest = [(layers[j // d_mlp], j % d_mlp) for j in mean.topk(min(40, len(mean))).indices.tolist()]
    order = refined + [u for u in rest if u not in refined]
    return order, len(refined)


def neuron_edits(units: list[tuple[int, int]]) -> list:
    """Last-token edits zeroing ``units``."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in units:
        by_layer.setdefault(layer, []).append(i)
    edits = []
    for layer, idx in sorted(by_layer.items()):
        sel = torch.tensor(idx)

        def zero(x: torch.Tensor, sel: torch.Tensor = sel) -> torch.Tensor:
            x = x.clone()
            x[:, sel] = 0
            return x

        edits.append(("neurons", layer, zero))
    return edits


def run(
    loaded: LoadedModel,
    out: Path,
    n_facts: int = 10,
    ks: tuple[int, ...] = (1, 5, 10),
    ig_steps: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the comparison; write ``features-vs-neurons/`` (plot + results.json)."""
    facts = pick_facts(loaded, n_facts, seed=seed)
    all_layers = list(range(loaded.adapter.n_layers))
    sites = [s for s in FEATURE_SITES if s in loaded.entry.saes]
    dics = {
        s: {lay: sae_dictionary(loaded.sae(s, lay)) for lay in loaded.sae_layers(s)} for s in sites
    }
    rows = [f"features@{s}" for s in sites] + ["neurons"]
    per: dict[str, dict[int, list[float]]] = {r: {k: [] for k in ks} for r in rows}
    refined_sizes = []
    for fact in facts:
        before = target_probs(loaded, fact.prompts, fact.target)
        for s in sites:
            layers = sorted(dics[s])
            xs, gs = site_acts_grads(loaded, fact.prompts, fact.target, s, layers)
            order = top_features(dics[s], xs, gs, max(ks))
            for k in ks:
                after = target_probs(
                    loaded, fact.prompts, fact.target, feature_edits(s, dics[s], order[:k])
                )
                per[f"features@{s}"][k].append(delta_prob(before, after))
        order_n, n_refined = ranked_neurons(loaded, fact.prompts, fact.target, all_layers, ig_steps)
        refined_sizes.append(n_refined)
        for k in ks:
            after = target_probs(loaded, fact.prompts, fact.target, neuron_edits(order_n[:k]))
            per["neurons"][k].append(delta_prob(before, after))
    table = {r: {f"k={k}": float(np.mean(v)) for k, v in by_k.items()} for r, by_k in per.items()}
    path = out / "features-vs-neurons" / "delta_prob_vs_k.png"
    with figure(path) as axes:
        ax = axes[0, 0]
        for r in rows:
            ax.plot(ks, [table[r][f"k={k}"] for k in ks], marker="o", label=r)
        ax.set_xticks(list(ks))
        ax.set_xlabel("k (units ablated at the last prompt token)")
        ax.set_ylabel("ΔProb (mean over facts × prompts)")
        ax.set_ylim(min(0.0, *[min(t.values()) for t in table.values()]) - 0.02, 1.02)
        ax.set_title("Top-k SAE features vs top-k knowledge neurons")
        ax.legend()
    result = {
        "analysis": "features-vs-neurons",
        "model": loaded.model_id,
        "n_facts": len(facts),
        "n_prompts": sum(len(f.prompts) for f in facts),
        "ks": list(ks),
        "ig_steps": ig_steps,
        "delta_prob": table,
        "per_fact": {r: {f"k={k}": v for k, v in by_k.items()} for r, by_k in per.items()},
        "refined_neurons_mean": float(np.mean(refined_sizes)),
        "facts": [f.to_dict() for f in facts],
        "summary": table,
        "plots": [str(path.relative_to(out))],
    }
    write_results(out, "features-vs-neurons", result)
    return result
