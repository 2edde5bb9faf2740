"""Which layers to train SAEs on: a locate pass over facts, before any SAE exists.

``featureedit sae train --layers locate[:N]`` trains SAEs only where the facts to erase are
written. FeatureEdit edits the MLP down-projection of the layer whose SAE features it locates, so
a layer matters for a fact when that layer's MLP *write* carries the fact. For every edit prompt
of a fact, one forward and backward pass gives, at the last token of the subject (where causal
tracing finds factual recall, ROME; FeatureEdit's ``positions="subject"``; the last prompt token
where the prompt does not name the subject), the first-order effect of each layer's MLP output on
log P(first target token): ``m_l . grad_{m_l} log P``, i.e. how much the log-probability would
fall if the write were removed (exact to first order; a test checks it against a finite
difference). Per fact the positive parts are normalised to shares that sum to 1 over the layers,
so every fact weighs the same; the layers with the largest mean share over the facts are chosen.

Why the subject's token and not the last one, and why never layer 0 (measured on SmolLM2-135M's
30 benchmark facts, docs/benchmarks.md "Which layers to train SAEs on"): at the last prompt token
the final layer's write dominates (share .32: it writes the answer's logits directly, for every
fact alike), and layer 0's MLP acts as part of the token embedding (share .04-.43 under every
criterion: it writes the subject token's identity, which all of a subject's facts share). At the
subject's token, with layer 0 left out, the largest shares fall on layers 6, 7, 3 and 4, where the
per-layer tuning had found that erasures work best (layer 6 of 4, 6, 8, 12, 16).

The facts are the model's benchmark facts (:func:`editing.bench.bench_facts`: a demo world's
private facts, a fine-tune's ``facts_file``, or the shipped genuine facts the model knows),
optionally limited to some relations. Nothing about a fact but its relation name is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from editing.errors import ConfigError
from editing.locate import _batch, _subject_columns
from editing.models import LoadedModel
from editing.request import FactSpec


def mlp_write_attribution(
    loaded: LoadedModel, prompts: Sequence[str], subject: str, target: str
) -> torch.Tensor:
    """``[n_prompts, n_layers]``: each layer's MLP write times the gradient of
    log P(first target token) with respect to it, at the last token of ``subject`` in each
    prompt (:func:`editing.locate.subject_positions`)."""
    adapter, model = loaded.adapter, loaded.model
    layers = list(range(adapter.n_layers))
    ids, mask, last, tgt = _batch(loaded, prompts, target, with_target=False)
    at = _subject_columns(loaded.tokenizer, prompts, [[subject]] * len(prompts), last)
    rows = torch.arange(len(prompts), device=ids.device)
    first = torch.tensor([t[0] for t in tgt], device=ids.device)
    with torch.enable_grad(), adapter.capture([("mlp_out", x) for x in layers], detach=False) as m:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        writes = [m[("mlp_out", x)] for x in layers]
        logp = logits[rows, last].float().log_softmax(-1)[rows, first].sum()
        grads = torch.autograd.grad(logp, writes)
    return torch.stack(
        [(w[rows, at].float() * g[rows, at].float()).sum(-1) for w, g in zip(writes, grads)],
        dim=1,
    ).detach()


def fact_layer_shares(
    loaded: LoadedModel, prompts: Sequence[str], subject: str, target: str, first_layer: int = 1
) -> torch.Tensor:
    """``[n_layers]``: the fact's positive MLP-write attribution per layer from ``first_layer``
    on (summed over its prompts), as shares summing to 1 (all zeros when no such layer's write
    supports the target)."""
    support = mlp_write_attribution(loaded, prompts, subject, target).sum(0).clamp_min(0)
    support[:first_layer] = 0
    total = support.sum()
    return support / total if total > 0 else support


@dataclass
class LayerChoice:
    """The layers a locate pass chose and the evidence (no fact's subject or target)."""

    layers: list[int]
    shares: list[float]  # mean share per layer over the facts with support, index = layer
    facts: int
    unsupported: int = 0  # facts on which no layer's MLP write supports the target
    relations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (printed by ``sae train --json`` under ``locate``)."""
        return {
            "layers": self.layers,
            "shares": [round(s, 4) for s in self.shares],
            "facts": self.facts,
            "unsupported": self.unsupported,
            "relations": self.relations,
        }


def locate_facts(
    loaded: LoadedModel, n_facts: int, relations: Sequence[str] = (), seed: int = 0
) -> list[dict[str, Any]]:
    """Up to ``n_facts`` of the model's benchmark facts, spread over ``relations`` (all if
    empty); an unknown relation name is a :class:`ConfigError` naming the known ones."""
    from editing.bench import bench_facts

    every = bench_facts(loaded, 10**9, seed)
    known = sorted({f["relation"] for f in every})
    unknown = sorted(set(relations) - set(known))
    if unknown:
        raise ConfigError(
            f"--locate-relations: {', '.join(unknown)} not among this model's facts; "
            f"choose from {', '.join(known)}."
        )
    picked = [f for f in every if not relations or f["relation"] in relations][:n_facts]
    if not picked:
        raise ConfigError("no fact to locate on: the model has no benchmark facts")
    return picked


def choose_layers(
    loaded: LoadedModel,
    facts: Sequence[dict[str, Any]],
    top: int,
    on_fact: Callable[[int], None] | None = None,
    first_layer: int = 1,
) -> LayerChoice:
    """The ``top`` layers with the largest mean MLP-write share over ``facts`` (request dicts),
    in increasing layer order, never one below ``first_layer`` (default 1: layer 0's MLP is part
    of the embedding, see the module docstring). A fact on which no MLP write supports the
    target (it is carried by attention and the embeddings) is counted in ``unsupported`` and
    left out of the mean."""
    if top < 1:
        raise ConfigError(f"--layers locate:{top}: choose at least one layer")
    shares = torch.zeros(loaded.adapter.n_layers)
    unsupported = 0
    for fact in facts:
        spec = FactSpec(**fact)
        prompts = spec.resolved_edit_prompts()
        share = fact_layer_shares(loaded, prompts, spec.subject, spec.secret, first_layer).cpu()
        unsupported += int(share.sum() == 0)
        shares += share
        if on_fact:
            on_fact(1)
    mean = shares / max(len(facts) - unsupported, 1)
    ranked = torch.argsort(mean, descending=True).tolist()
    best = sorted(([i for i in ranked if i >= first_layer] or ranked)[:top])  # 1-layer model
    return LayerChoice(
        layers=best,
        shares=mean.tolist(),
        facts=len(facts),
        unsupported=unsupported,
        relations=sorted({f["relation"] for f in facts}),
    )
