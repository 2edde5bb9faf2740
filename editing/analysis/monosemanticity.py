"""Monosemanticity: do located features separate a fact's prompts from the rest better than neurons?

For facts of one relation (default ``phone``) the top SAE feature (``resid_post``, any layer, by
attribution) and the top knowledge neuron (integrated gradients) are located per fact. Batches of
prompts mix the fact's own prompts (edit + held-out paraphrases: *related*) with other people's
prompts of every private relation (*unrelated*) at shares 0, 25, 50, 75 and 100 %. The unit's
activation at the last token is recorded for every prompt of every batch, normalised by the unit's
mean activation on related prompts, and compared related vs unrelated with Cohen's d and the
Mann-Whitney U test.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.analysis.common import (
    cohens_d,
    collect_last_token,
    corpus_prompts,
    figure,
    mann_whitney_p,
    pick_facts,
    sae_dictionary,
    site_acts_grads,
    write_results,
)
from editing.analysis.features_neurons import ranked_neurons, top_features
from editing.models import LoadedModel
from editing.relations import get_relation

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def run(
    loaded: LoadedModel,
    out: Path,
    n_facts: int = 6,
    relation: str = "phone",
    batch_size: int = 20,
    n_batches: int = 5,
    n_people: int = 40,
    ig_steps: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the analysis; write ``monosemanticity/`` (plots + results.json)."""
    rng = random.Random(seed)
    facts = pick_facts(loaded, n_facts, relation=relation, seed=seed)
    n_layers = loaded.adapter.n_layers
    site = "resid_post"
    layers = loaded.sae_layers(site)
    dics = {lay: sae_dictionary(loaded.sae(site, lay)) for lay in layers}
    rel = get_relation(relation)
    keys = [(site, lay) for lay in layers] + [("neurons", lay) for lay in range(n_layers)]
    # unit -> (related activations, unrelated activations) per share, normalised
    samples: dict[str, dict[float, list[tuple[np.ndarray, np.ndarray]]]] = {
        kind: {p: [] for p in SHARES} for kind in ("feature", "neuron")
    }
    units: list[dict[str, Any]] = []
    for fact in facts:
        related = fact.prompts + rel.heldout_prompts(fact.subject)
        pool = [q for q in corpus_prompts(loaded, n_people, seed=seed) if fact.subject not in q]
        xs, gs = site_acts_grads(loaded, fact.prompts, fact.target, site, layers)
        f_layer, f_idx = top_features(dics, xs, gs, 1)[0]
        order_n, _ = ranked_neurons(
            loaded, fact.prompts, fact.target, list(range(n_layers)), ig_steps
        )
        n_layer, n_idx = order_n[0]
        batches = []
        for p in SHARES:
            for _ in range(n_batches):
                n_rel = round(p * batch_size)
                batch = [(q, True) for q in rng.choices(related, k=n_rel)]
                batch += [(q, False) for q in rng.sample(pool, batch_size - n_rel)]
                batches.append((p, batch))
        texts = sorted({q for _, b in batches for q, _ in b})
        acts = collect_last_token(loaded, texts, keys)
        with torch.inference_mode():
            feat = dics[f_layer].encode(acts[(site, f_layer)])[:, f_idx].numpy()
        neur = acts[("neurons", n_layer)][:, n_idx].numpy()
        pos = {q: i for i, q in enumerate(texts)}
        rel_rows = [pos[q] for q in related if q in pos]
        for kind, vals in (("feature", feat), ("neuron", neur)):
            scale = float(np.mean(vals[rel_rows])) if rel_rows else 1.0
            scale = scale if abs(scale) > 1e-9 else 1.0  # signed: related mean becomes +1
            for p, batch in batches:
                v = np.array([vals[pos[q]] for q, _ in batch]) / scale
                lab = np.array([is_rel for _, is_rel in batch])
                samples[kind][p].append((v[lab], v[~lab]))
        units.append(
            {
                "fact": fact.to_dict(),
                "feature": {"layer": f_layer, "index": f_idx},
                "neuron": {"layer": n_layer, "index": n_idx},
            }
        )
    stats: dict[str, Any] = {}
    for kind in ("feature", "neuron"):
        rel_all = np.concatenate([r for p in SHARES for r, _ in samples[kind][p]])
        unrel_all = np.concatenate([u for p in SHARES for _, u in samples[kind][p]])
        per_unit_d = []
        per_unit_p = []
        for j in range(len(facts)):
            r = np.concatenate(
                [samples[kind][p][j * n_batches + b][0] for p in SHARES for b in range(n_batches)]
            )
            u = np.concatenate(
                [samples[kind][p][j * n_batches + b][1] for p in SHARES for b in range(n_batches)]
            )
            per_unit_d.append(cohens_d(r, u))
            per_unit_p.append(mann_whitney_p(r, u))
        batch_means = {
            f"{int(p * 100)}%": float(
                np.mean([np.concatenate([r, u]).mean() for r, u in samples[kind][p]])
            )
            for p in SHARES
        }
        stats[kind] = {
            "cohens_d": cohens_d(rel_all, unrel_all),
            "mann_whitney_p": mann_whitney_p(rel_all, unrel_all),
            "per_unit_cohens_d_median": float(np.nanmedian(per_unit_d)),
            "per_unit_p_below_0.001": float(np.mean(np.array(per_unit_p) < 1e-3)),
            "unrelated_below_20pct_of_related": float(np.mean(unrel_all < 0.2)),
            "related_mean": float(rel_all.mean()),
            "unrelated_mean": float(unrel_all.mean()),
            "n_related": len(rel_all),
            "n_unrelated": len(unrel_all),
            "batch_mean_by_share": batch_means,
        }
    path = out / "monosemanticity" / "activation_distributions.png"
    with figure(path, ncols=len(SHARES), nrows=2, size=(3.2, 2.8)) as axes:
        for row, kind in enumerate(("feature", "neuron")):
            allv = np.concatenate(
                [np.concatenate([r, u]) for p in SHARES for r, u in samples[kind][p]]
            )
            lo, hi = np.percentile(allv, [0.5, 99.5])
            bins = np.linspace(min(lo, 0.0), max(hi, 1.5), 30)
            for col, p in enumerate(SHARES):
                ax = axes[row, col]
                r = np.concatenate([x for x, _ in samples[kind][p]])
                u = np.concatenate([x for _, x in samples[kind][p]])
                ax.hist(
                    [u, r],
                    bins=bins,
                    stacked=True,
                    color=["tab:gray", "tab:red"],
                    label=["unrelated", "related"],
                )
                ax.set_title(f"{kind}s, {int(p * 100)}% related", fontsize=9)
                if col == 0:
                    ax.set_ylabel("prompts")
                if row == 1:
                    ax.set_xlabel("activation / related mean")
        axes[0, 0].legend(fontsize=7)
    path2 = out / "monosemanticity" / "batch_mean_vs_share.png"
    with figure(path2) as axes:
        ax = axes[0, 0]
        for kind in ("feature", "neuron"):
            ax.plot(
                [p * 100 for p in SHARES],
                list(stats[kind]["batch_mean_by_share"].values()),
                marker="o",
                label=f"{kind}s (d={stats[kind]['cohens_d']:.2f})",
            )
        ax.set_xlabel("share of related prompts in the batch (%)")
        ax.set_ylabel("mean normalised activation")
        ax.legend()
    result = {
        "analysis": "monosemanticity",
        "model": loaded.model_id,
        "relation": relation,
        "n_facts": len(facts),
        "batch_size": batch_size,
        "n_batches_per_share": n_batches,
        "shares": list(SHARES),
        "stats": stats,
        "units": units,
        "summary": {
            kind: {
                k: stats[kind][k]
                for k in (
                    "cohens_d",
                    "mann_whitney_p",
                    "per_unit_cohens_d_median",
                    "unrelated_below_20pct_of_related",
                )
            }
            for kind in stats
        },
        "plots": [str(path.relative_to(out)), str(path2.relative_to(out))],
    }
    write_results(out, "monosemanticity", result)
    return result
