"""Ranges (NeuronLens): per-concept activation ranges of located neurons and their overlap.

Neurons (and, for comparison, SAE features) are located for facts of every private relation. Each
unit's activation at the last prompt token is recorded on the edit prompts of many people, grouped
by concept (the relation); a Gaussian ``N(mu, sigma)`` is fitted per concept, and the overlap
coefficient ``OVL = ∫ min(N_a, N_b)`` is computed for every pair of concepts. NeuronLens's range
masking only works when the located concept's range ``mu ± 2 sigma`` excludes other concepts:
``leak_into_range`` is the fraction of other concepts' activations inside that range.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.analysis.common import (
    collect_last_token,
    figure,
    gaussian_overlap,
    pick_facts,
    sae_dictionary,
    site_acts_grads,
    write_results,
)
from editing.analysis.features_neurons import ranked_neurons, top_features
from editing.models import LoadedModel
from editing.relations import get_relation


def _unit_stats(vals: dict[str, np.ndarray], own: str, tau: float) -> dict[str, Any]:
    fits = {c: (float(v.mean()), float(v.std())) for c, v in vals.items()}
    pairs = {
        f"{a}|{b}": gaussian_overlap(*fits[a], *fits[b])
        for a, b in itertools.combinations(sorted(vals), 2)
    }
    own_pairs = [v for k, v in pairs.items() if own in k.split("|")]
    mu, sd = fits[own]
    others = np.concatenate([v for c, v in vals.items() if c != own])
    leak = float(np.mean((others >= mu - tau * sd) & (others <= mu + tau * sd)))
    return {
        "fits": {c: {"mu": m, "sigma": s} for c, (m, s) in fits.items()},
        "overlap": pairs,
        "mean_overlap": float(np.mean(list(pairs.values()))),
        "own_concept_overlap": float(np.mean(own_pairs)),
        "leak_into_range": leak,
    }


def run(
    loaded: LoadedModel,
    out: Path,
    n_facts: int = 10,
    units_per_fact: int = 2,
    n_people: int = 40,
    ig_steps: int = 20,
    tau: float = 2.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the analysis; write ``ranges/`` (plots + results.json)."""
    from editing.analysis.common import demo_world

    facts = pick_facts(loaded, n_facts, seed=seed)
    world = demo_world(loaded)
    rng = np.random.default_rng(seed)
    people = [
        world.people[i]
        for i in rng.choice(len(world.people), min(n_people, len(world.people)), replace=False)
    ]
    concepts = sorted({f.relation for f in world.private_facts()})
    prompts = {c: [q for p in people for q in get_relation(c).edit_prompts(p)] for c in concepts}
    n_layers = loaded.adapter.n_layers
    site = "resid_post"
    layers = loaded.sae_layers(site)
    dics = {lay: sae_dictionary(loaded.sae(site, lay)) for lay in layers}
    keys = [(site, lay) for lay in layers] + [("neurons", lay) for lay in range(n_layers)]
    flat = [q for c in concepts for q in prompts[c]]
    acts = collect_last_token(loaded, flat, keys)
    bounds = np.cumsum([0] + [len(prompts[c]) for c in concepts])
    located: list[dict[str, Any]] = []
    for fact in facts:
        order_n, _ = ranked_neurons(
            loaded, fact.prompts, fact.target, list(range(n_layers)), ig_steps
        )
        xs, gs = site_acts_grads(loaded, fact.prompts, fact.target, site, layers)
        order_f = top_features(dics, xs, gs, units_per_fact)
        for kind, order in (("neuron", order_n[:units_per_fact]), ("feature", order_f)):
            for layer, idx in order:
                with torch.inference_mode():
                    if kind == "neuron":
                        v = acts[("neurons", layer)][:, idx].numpy()
                    else:
                        v = dics[layer].encode(acts[(site, layer)])[:, idx].numpy()
                vals = {c: v[bounds[i] : bounds[i + 1]] for i, c in enumerate(concepts)}
                located.append(
                    {
                        "kind": kind,
                        "layer": layer,
                        "index": idx,
                        "fact": fact.to_dict(),
                        **_unit_stats(vals, fact.relation, tau),
                        "_vals": vals,
                    }
                )
    summary = {}
    for kind in ("neuron", "feature"):
        rows = [u for u in located if u["kind"] == kind]
        summary[kind] = {
            "n_units": len(rows),
            "mean_pairwise_overlap": float(np.mean([u["mean_overlap"] for u in rows])),
            "own_concept_overlap": float(np.mean([u["own_concept_overlap"] for u in rows])),
            "leak_into_range": float(np.mean([u["leak_into_range"] for u in rows])),
        }
    plots = []
    for kind in ("neuron", "feature"):
        show = [u for u in located if u["kind"] == kind][:4]
        path = out / "ranges" / f"{kind}_ranges.png"
        with figure(path, ncols=len(show), size=(3.6, 3.0)) as axes:
            for col, u in enumerate(show):
                ax = axes[0, col]
                allv = np.concatenate(list(u["_vals"].values()))
                lo, hi = (float(v) for v in np.percentile(allv, [0.5, 99.5]))
                pad = 0.1 * (hi - lo) + 1e-6
                grid = np.linspace(lo - pad, hi + pad, 300)
                for c in concepts:
                    vals = u["_vals"][c]
                    line = ax.hist(
                        vals, bins=25, range=(lo - pad, hi + pad), density=True, alpha=0.35, label=c
                    )
                    m, s = u["fits"][c]["mu"], max(u["fits"][c]["sigma"], 1e-6)
                    color = line[2][0].get_facecolor()
                    ax.plot(
                        grid,
                        np.exp(-0.5 * ((grid - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)),
                        color=color[:3],
                        lw=1.2,
                    )
                ax.set_title(
                    f"{kind} L{u['layer']}#{u['index']} ({u['fact']['relation']})\n"
                    f"mean OVL {u['mean_overlap']:.2f}",
                    fontsize=9,
                )
                ax.set_xlabel("activation")
            if show:
                axes[0, 0].legend(fontsize=7)
        plots.append(str(path.relative_to(out)))
    path = out / "ranges" / "overlap_summary.png"
    with figure(path) as axes:
        ax = axes[0, 0]
        names = ["mean_pairwise_overlap", "own_concept_overlap", "leak_into_range"]
        for i, kind in enumerate(("neuron", "feature")):
            ax.bar(np.arange(3) + 0.4 * i, [summary[kind][n] for n in names], 0.4, label=f"{kind}s")
        ax.set_xticks(
            np.arange(3) + 0.2, ["mean OVL", "OVL with own concept", f"leak into μ±{tau:g}σ"]
        )
        ax.set_ylim(0, 1)
        ax.legend()
    plots.append(str(path.relative_to(out)))
    result = {
        "analysis": "ranges",
        "model": loaded.model_id,
        "concepts": concepts,
        "n_people": len(people),
        "n_facts": len(facts),
        "tau": tau,
        "units": [{k: v for k, v in u.items() if k != "_vals"} for u in located],
        "summary": summary,
        "plots": plots,
    }
    write_results(out, "ranges", result)
    return result
