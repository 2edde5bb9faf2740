"""Dictionary size: located-feature statistics for SAEs of 1×, 2×, 4× and 8× ``d_model`` latents.

TopK SAEs (``editing.world.sae_train``) are trained on the same activations (``resid_post`` at one
layer, every token of the demo world's fact sentences) with a small step budget and cached under
``$FEATUREEDIT_HOME/analysis/<model>/saes/``. For each SAE and fact: the number of *selected*
features (active in ≥ 2 edit prompts, positive mean attribution, passing the specificity filter
``control < γ · target``), the ΔProb of ablating the top-1 / top-5 features by attribution, and the
*specificity* of the top-5 (mean of ``1 - control / target`` activation, clipped to [0, 1]).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.analysis.common import (
    Dictionary,
    delta_prob,
    demo_world,
    figure,
    pick_facts,
    sae_dictionary,
    site_acts_grads,
    target_probs,
    write_results,
)
from editing.analysis.decomposition import default_layer
from editing.models import LoadedModel
from editing.relations import get_relation
from editing.scoring import padded

SITE = "resid_post"


@torch.inference_mode()
def token_activations(
    loaded: LoadedModel, layer: int, n_people: int, seed: int = 0
) -> torch.Tensor:
    """``resid_post`` activations at ``layer`` of every non-BOS token of fact sentences + filler."""
    world = demo_world(loaded)
    rng = np.random.default_rng(seed)
    people = set(rng.choice(world.people, min(n_people, len(world.people)), replace=False).tolist())
    texts = [
        f"{q} {f.target}"
        for f in world.facts
        if f.subject in people and f.private
        for q in get_relation(f.relation).edit_prompts(f.subject)
    ] + list(world.ppl_texts)
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    chunks = []
    for s in range(0, len(texts), 128):
        rows = [tok(t)["input_ids"][:128] for t in texts[s : s + 128]]
        ids, mask = padded(rows, pad, loaded.adapter.device)
        with loaded.adapter.capture([(SITE, layer)]) as acts:
            loaded.model(input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        keep[:, 0] = False  # BOS activations are outliers (the world's SAEs skip them too)
        chunks.append(acts[(SITE, layer)][keep].float().cpu())
    return torch.cat(chunks)


def trained_sae(
    loaded: LoadedModel, acts: torch.Tensor, expansion: int, k: int, steps: int, key: dict[str, Any]
):
    """A TopK SAE with ``expansion × d_model`` latents, trained once and cached on disk."""
    from editing.world.sae_train import SAERecipe, TrainedSAE, train_topk_sae

    recipe = SAERecipe(expansion=expansion, k=k, steps=steps, batch_size=512)
    blob = json.dumps({**key, "expansion": expansion, "k": k, "steps": steps}, sort_keys=True)
    name = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = loaded.home / "analysis" / loaded.model_id / "saes" / f"x{expansion}-{name}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        return TrainedSAE(**{n: state[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")}, k=k)
    torch.manual_seed(int(key.get("seed", 0)))
    with torch.enable_grad():
        sae = train_topk_sae(acts, recipe, seed=int(key.get("seed", 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({n: getattr(sae, n) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}, path)
    return sae


def _fvu_l0(dic: Dictionary, acts: torch.Tensor, sae: Any) -> tuple[float, float]:
    with torch.inference_mode():
        f = dic.encode(acts)
        recon = f @ sae.W_dec.float() + sae.b_dec.float()
        fvu = float((recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum())
        return fvu, float((f > 0).float().sum(1).mean())


def run(
    loaded: LoadedModel,
    out: Path,
    n_facts: int = 10,
    expansions: tuple[int, ...] = (1, 2, 4, 8),
    steps: int = 800,
    layer: int | None = None,
    n_people: int = 160,
    gamma: float = 0.3,
    seed: int = 0,
) -> dict[str, Any]:
    """Train (or load) the SAEs, measure the statistics; write ``dictionary-size/``."""
    layer = default_layer(loaded) if layer is None else layer
    facts = pick_facts(loaded, n_facts, seed=seed)
    ref = loaded.sae(SITE, layer)
    k = int(getattr(ref.cfg, "k", 16))
    acts = token_activations(loaded, layer, n_people, seed)
    key = {
        "format": 2,
        "model": loaded.model_id,
        "layer": layer,
        "n_people": n_people,
        "seed": seed,
        "n_tokens": int(acts.shape[0]),
    }
    d_model = loaded.adapter.d_model
    saes: list[tuple[str, Any]] = [
        (f"{e}×", trained_sae(loaded, acts, e, k, steps, key)) for e in expansions
    ]
    saes.append((f"{int(ref.cfg.d_sae) // d_model}× (world SAE)", ref))
    rows: dict[str, dict[str, Any]] = {}
    evid = []
    for fact in facts:
        xs, gs = site_acts_grads(loaded, fact.prompts, fact.target, SITE, [layer])
        cx, _ = site_acts_grads(loaded, fact.controls, fact.target, SITE, [layer])
        before = target_probs(loaded, fact.prompts, fact.target)
        evid.append((fact, xs[layer], gs[layer], cx[layer], before))
    for name, sae in saes:
        dic = sae_dictionary(sae, name)
        fvu, l0 = _fvu_l0(dic, acts, sae)
        n_sel, d1, d5, spec = [], [], [], []
        for fact, x, g, cx, before in evid:
            f = dic.encode(x)
            score = dic.attribution(x, g).mean(0)
            target_act = f.mean(0)
            control_act = dic.encode(cx).mean(0)
            need = min(2, len(x))
            cand = ((f > 0).sum(0) >= need) & (score > 0)
            n_sel.append(int((cand & (control_act < gamma * target_act)).sum()))
            order = score.topk(5).indices
            ratio = (control_act[order] / target_act[order].clamp_min(1e-9)).clamp(0, 1)
            spec.append(float((1 - ratio).mean()))
            for kk, acc in ((1, d1), (5, d5)):
                after = target_probs(
                    loaded,
                    fact.prompts,
                    fact.target,
                    [(SITE, layer, dic.ablate(order[:kk].tolist()))],
                )
                acc.append(delta_prob(before, after))
        rows[name] = {
            "d_sae": dic.size,
            "fvu": fvu,
            "l0": l0,
            "selected_features": float(np.mean(n_sel)),
            "delta_prob_top1": float(np.mean(d1)),
            "delta_prob_top5": float(np.mean(d5)),
            "specificity_top5": float(np.mean(spec)),
        }
    path = out / "dictionary-size" / "dictionary_size.png"
    trained = [n for n, _ in saes[: len(expansions)]]
    with figure(path, ncols=3, size=(4.2, 3.4)) as axes:
        x = [rows[n]["d_sae"] for n in trained]
        panels = (
            ("delta_prob_top1", "delta_prob_top5", "ΔProb of top-1 / top-5 ablation"),
            ("selected_features", None, "selected features per fact"),
            ("specificity_top5", "fvu", "specificity (top-5) and FVU"),
        )
        for ax, (a, b, title) in zip(axes[0], panels, strict=True):
            ax.plot(x, [rows[n][a] for n in trained], marker="o", label=a)
            if b:
                ax.plot(x, [rows[n][b] for n in trained], marker="s", label=b)
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [n for n in trained])
            ax.set_xlabel("SAE latents (× d_model)")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
    result = {
        "analysis": "dictionary-size",
        "model": loaded.model_id,
        "site": SITE,
        "layer": layer,
        "k": k,
        "steps": steps,
        "n_tokens": int(acts.shape[0]),
        "gamma": gamma,
        "n_facts": len(facts),
        "saes": rows,
        "facts": [f.to_dict() for f in facts],
        "summary": {
            n: {
                kk: rows[n][kk]
                for kk in (
                    "delta_prob_top1",
                    "delta_prob_top5",
                    "selected_features",
                    "specificity_top5",
                    "fvu",
                )
            }
            for n in rows
        },
        "plots": [str(path.relative_to(out))],
    }
    write_results(out, "dictionary-size", result)
    return result
