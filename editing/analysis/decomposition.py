"""Decomposition: SAE features vs PCA, ICA and random directions on the same activations.

All four dictionaries live on ``resid_post`` at one layer (last token of many prompts). Per fact,
the top-k units by attribution are ablated at the last prompt token and the drop of P(target) is
measured: ``ΔProb = (P_before - P_after) / P_before``, averaged over facts × prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from editing.analysis.common import (
    collect_last_token,
    corpus_prompts,
    delta_prob,
    figure,
    ica_dictionary,
    pca_dictionary,
    pick_facts,
    random_dictionary,
    sae_dictionary,
    site_acts_grads,
    target_probs,
    top_units,
    write_results,
)
from editing.models import LoadedModel

SITE = "resid_post"


def default_layer(loaded: LoadedModel, site: str = SITE) -> int:
    """The middle layer among those with an SAE at ``site``."""
    layers = loaded.sae_layers(site)
    return layers[len(layers) // 2]


def run(
    loaded: LoadedModel,
    out: Path,
    n_facts: int = 10,
    ks: tuple[int, ...] = (1, 5, 10),
    layer: int | None = None,
    n_people: int = 120,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the decomposition comparison; write ``decomposition/`` (plot + results.json)."""
    layer = default_layer(loaded) if layer is None else layer
    facts = pick_facts(loaded, n_facts, seed=seed)
    prompts = corpus_prompts(loaded, n_people, seed=seed)
    acts = collect_last_token(loaded, prompts, [(SITE, layer)])[(SITE, layer)]
    sae = loaded.sae(SITE, layer)
    dics = [
        sae_dictionary(sae),
        ica_dictionary(acts, seed=seed),
        pca_dictionary(acts),
        random_dictionary(acts, int(sae.cfg.d_sae), seed=seed),
    ]
    per: dict[str, dict[int, list[float]]] = {d.name: {k: [] for k in ks} for d in dics}
    for fact in facts:
        xs, gs = site_acts_grads(loaded, fact.prompts, fact.target, SITE, [layer])
        before = target_probs(loaded, fact.prompts, fact.target)
        for dic in dics:
            order = top_units(dic, xs[layer], gs[layer], max(ks))
            for k in ks:
                after = target_probs(
                    loaded, fact.prompts, fact.target, [(SITE, layer, dic.ablate(order[:k]))]
                )
                per[dic.name][k].append(delta_prob(before, after))
    table = {
        name: {f"k={k}": float(np.mean(v)) for k, v in by_k.items()} for name, by_k in per.items()
    }
    path = out / "decomposition" / "delta_prob.png"
    with figure(path) as axes:
        ax = axes[0, 0]
        width = 0.8 / len(dics)
        for i, dic in enumerate(dics):
            vals = [table[dic.name][f"k={k}"] for k in ks]
            ax.bar(np.arange(len(ks)) + i * width, vals, width, label=f"{dic.name} ({dic.size})")
        ax.set_xticks(np.arange(len(ks)) + width * (len(dics) - 1) / 2, [f"top-{k}" for k in ks])
        ax.set_ylabel("ΔProb (mean over facts × prompts)")
        ax.set_title(f"Ablating top-k units, {SITE} layer {layer}")
        ax.axhline(0, color="black", lw=0.5)
        ax.legend()
    result = {
        "analysis": "decomposition",
        "model": loaded.model_id,
        "site": SITE,
        "layer": layer,
        "n_facts": len(facts),
        "n_prompts": sum(len(f.prompts) for f in facts),
        "n_activations": int(acts.shape[0]),
        "components": {d.name: d.size for d in dics},
        "ks": list(ks),
        "delta_prob": table,
        "per_fact": {name: {f"k={k}": v for k, v in by_k.items()} for name, by_k in per.items()},
        "facts": [f.to_dict() for f in facts],
        "summary": {name: table[name] for name in table},
        "plots": [str(path.relative_to(out))],
    }
    write_results(out, "decomposition", result)
    return result
