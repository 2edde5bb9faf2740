"""Compare criteria for choosing SAE layers on a registered model's benchmark facts.

Prints, per criterion, the 8 layers with the largest mean share (per fact, the positive parts of
the criterion normalised over the layers): first-order MLP-write attribution ``m . grad log P``
at the last prompt token (``last``), summed over every position (``all``), at the subject's last
token (``subject``: what ``sae train --layers locate`` uses, from layer 1 on), and the exact drop
of log P(first target token) when a layer's MLP write is zeroed at the last token
(``ablate_last``) or everywhere (``ablate_all``). Used for docs/benchmarks.md, "Which layers to
train SAEs on".

    FEATUREEDIT_HOME=... python scripts/layer_criteria.py smollm2 [N_FACTS]
"""

from __future__ import annotations

import sys

import torch

from editing.layer_choice import locate_facts
from editing.locate import _batch, _subject_columns
from editing.models import load_model
from editing.request import FactSpec

CRITERIA = ("last", "all", "subject", "ablate_last", "ablate_all")


def fact_criteria(loaded, spec: FactSpec) -> dict[str, torch.Tensor]:
    """Per criterion, the fact's ``[n_layers]`` values summed over its edit prompts."""
    model, adapter = loaded.model, loaded.adapter
    n_layers = adapter.n_layers
    prompts = spec.resolved_edit_prompts()
    ids, mask, last, tgt = _batch(loaded, prompts, spec.secret, with_target=False)
    rows = torch.arange(len(prompts))
    first = torch.tensor([t[0] for t in tgt])
    subj = _subject_columns(loaded.tokenizer, prompts, [[spec.subject]] * len(prompts), last)
    sites = [("mlp_out", x) for x in range(n_layers)]
    with torch.enable_grad(), adapter.capture(sites, detach=False) as m:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        writes = [m[s] for s in sites]
        base = logits[rows, last].float().log_softmax(-1)[rows, first]
        grads = torch.autograd.grad(base.sum(), writes)
    base = base.detach()
    pairs = list(zip(writes, grads))
    out = {
        "last": torch.stack([(w[rows, last] * g[rows, last]).sum() for w, g in pairs]),
        "all": torch.stack([((w * g).sum(-1) * mask).sum() for w, g in pairs]),
        "subject": torch.stack([(w[rows, subj] * g[rows, subj]).sum() for w, g in pairs]),
    }
    for kind in ("ablate_last", "ablate_all"):
        drops = []
        for layer in range(n_layers):

            def zero(x: torch.Tensor, kind: str = kind) -> torch.Tensor:
                x = x.clone()
                if kind == "ablate_last":
                    x[rows, last] = 0
                else:
                    x[:] = 0
                return x

            with torch.no_grad(), adapter.patch("mlp_out", layer, zero):
                lp = model(input_ids=ids, attention_mask=mask).logits[rows, last]
            drops.append((base - lp.float().log_softmax(-1)[rows, first]).sum())
        out[kind] = torch.stack(drops)
    return {k: v.detach().float() for k, v in out.items()}


def main() -> None:
    """Print the top layers per criterion."""
    loaded = load_model(sys.argv[1])
    facts = locate_facts(loaded, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
    acc = {k: torch.zeros(loaded.adapter.n_layers) for k in CRITERIA}
    for fact in facts:
        for k, v in fact_criteria(loaded, FactSpec(**fact)).items():
            v = v.clamp_min(0)
            if v.sum() > 0:
                acc[k] += v / v.sum()
    for k, v in acc.items():
        v = v / len(facts)
        top = torch.argsort(v, descending=True)[:8].tolist()
        print(f"{k:12s}", " ".join(f"{i}:{v[i]:.3f}" for i in top))


if __name__ == "__main__":
    main()
