"""Locate where a fact lives: SAE features (the knowledge microscope) and MLP neurons (IG).

Feature evidence (METHOD.md "Locating features"): at the last prompt token of every edit prompt
(or at the last token of the subject's occurrence in it, ROME's "subject position"), each layer's
SAE encodes the site activation; a feature is scored by its activation and by its
attribution ``f_i * (W_dec[i] . grad log P(target))``. Control prompts (the same templates with
other subjects) give the specificity filter. Neuron evidence (METHOD.md "Neuron baseline"):
integrated gradients of ``P(first target token)`` with respect to each neuron at the last token.
All passes are batched over prompts; one forward/backward serves every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from editing.models import LoadedModel
from editing.scoring import default_batch_size, encode_pairs, logits_at, padded


@dataclass(frozen=True)
class Unit:
    """A located unit: an SAE feature or an MLP neuron, with its evidence."""

    kind: str  # "feature" or "neuron"
    site: str  # "resid_post" / "mlp_out" for features, "neurons" for neurons
    layer: int
    index: int
    score: float  # attribution (or activation) used to rank it
    activation: float  # mean activation on the edit prompts
    control_activation: float | None = None  # mean activation on control prompts
    prompt_count: int = 0  # edit prompts where it was active / selected

    def to_dict(self) -> dict:
        """JSON-friendly form for reports."""
        return {
            "kind": self.kind,
            "site": self.site,
            "layer": self.layer,
            "index": self.index,
            "score": round(self.score, 6),
            "activation": round(self.activation, 6),
            "control_activation": None
            if self.control_activation is None
            else round(self.control_activation, 6),
            "prompt_count": self.prompt_count,
        }


@dataclass
class FeatureEvidence:
    """Per-layer feature statistics over the edit prompts (and control prompts)."""

    site: str
    layers: list[int]
    acts: dict[int, torch.Tensor]  # layer -> [n_prompts, d_sae] activations at the last token
    attrib: dict[int, torch.Tensor]  # layer -> [n_prompts, d_sae] attribution
    write_attrib: dict[int, torch.Tensor] = field(default_factory=dict)  # of the MLP's write
    control_mean: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d_sae]
    neuron_mean: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d_mlp]


def _batch(loaded: LoadedModel, prompts: Sequence[str], target: str, with_target: bool):
    """Right-padded ids of prompt (+ target) rows, each prompt's last index and target ids."""
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows, last, tgt = [], [], []
    for p_ids, t_ids in encode_pairs(tok, prompts, [target] * len(prompts)):
        t_used = t_ids if with_target else t_ids[:1]
        rows.append(p_ids + t_used)
        last.append(len(p_ids) - 1)
        tgt.append(t_used)
    dev = loaded.adapter.device
    ids, mask = padded(rows, pad, dev)
    return ids, mask, torch.tensor(last, device=dev), tgt


def _target_logprob(logits: torch.Tensor, last: torch.Tensor, targets: list[list[int]]):
    """Sum over rows of log P(target tokens) (teacher forced) and per-row values."""
    logp = logits.float().log_softmax(-1)
    per_row = []
    for row, t_ids in enumerate(targets):
        pos = torch.arange(len(t_ids), device=logits.device) + last[row]
        tgt = torch.tensor(t_ids, device=logits.device)
        per_row.append(logp[row, pos].gather(-1, tgt[:, None]).sum())
    stacked = torch.stack(per_row)
    return stacked.sum(), stacked


def _subject_end(prompt: str, subjects: Sequence[str]) -> int | None:
    """Character offset just past the subject in ``prompt``: the longest of ``subjects`` found
    in it (so "Alex Morgan" wins over "Alex"), at its last occurrence; None if none is."""
    found = [(len(s), prompt.rfind(s) + len(s)) for s in subjects if s and s in prompt]
    return max(found)[1] if found else None


def _covering_token(offsets: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the last token whose character span holds ``char`` (special tokens, whose span
    is empty, never do); None if no token does."""
    hits = [i for i, (start, end) in enumerate(offsets) if start < end and start <= char < end]
    return hits[-1] if hits else None


def subject_positions(
    tokenizer: Any, prompts: Sequence[str], subjects: Sequence[Sequence[str]]
) -> list[int | None]:
    """Per prompt, the index of the last token of its subject in the prompt's token ids as
    :func:`editing.scoring.encode_texts` gives them (special tokens such as BOS included).

    ``subjects[i]`` are the candidate subjects of ``prompts[i]`` (:func:`_subject_end` picks
    one). The token is the one whose character span holds the subject's last character, read
    from the offsets of a fast tokenizer; a slow tokenizer counts the tokens of the prompt's
    prefix up to the subject's end after the leading special tokens. None where the prompt
    does not contain a subject (the caller falls back to the last prompt token).
    """
    ends = [_subject_end(p, s) for p, s in zip(prompts, subjects, strict=True)]
    if not prompts:
        return []
    fast = bool(getattr(tokenizer, "is_fast", False))
    encoded = tokenizer(list(prompts), add_special_tokens=True, return_offsets_mapping=fast)
    special = set(getattr(tokenizer, "all_special_ids", ()))
    out: list[int | None] = []
    for i, (prompt, end) in enumerate(zip(prompts, ends)):
        if end is None:
            out.append(None)
            continue
        index = _covering_token(encoded["offset_mapping"][i], end - 1) if fast else None
        if index is None:
            ids = encoded["input_ids"][i]
            lead = next((j for j, t in enumerate(ids) if t not in special), len(ids))
            prefix = tokenizer(prompt[:end], add_special_tokens=False)["input_ids"]
            index = min(lead + len(prefix) - 1, len(ids) - 1)
        out.append(index)
    return out


def _subject_columns(
    tokenizer: Any, prompts: Sequence[str], subjects: Sequence[Sequence[str]], last: torch.Tensor
) -> torch.Tensor:
    """Column of each prompt's subject token in a :func:`_batch` (right-padded rows, so a
    token's index in its row is its column): :func:`subject_positions`, the last prompt token
    where the prompt has no subject, or where the subject's last token is the row's first token
    (a one-token subject opening a prompt of a model without BOS): that position is the
    model's attention sink, whose activations the SAEs never saw (``sae train`` drops them)."""
    found = subject_positions(tokenizer, prompts, subjects)
    cols = [int(last[i]) if not s else min(s, int(last[i])) for i, s in enumerate(found)]
    return torch.tensor(cols, dtype=last.dtype, device=last.device)


def _read_positions(
    last: torch.Tensor,
    targets: list[list[int]],
    every_token: bool,
    at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, owner)`` of the positions to read: each prompt's last token (or its column
    ``at``, e.g. the subject's last token), or with ``every_token`` every position that predicts
    a target token (teacher forced: the last prompt token and each target token but the final
    one). ``owner`` is the prompt of each position."""
    dev = last.device
    if not every_token:
        rows = torch.arange(len(targets), device=dev)
        return rows, last if at is None else at, rows
    owner = torch.tensor([r for r, t in enumerate(targets) for _ in t], device=dev)
    offset = torch.tensor([j for t in targets for j in range(len(t))], device=dev)
    return owner, last[owner] + offset, owner


def _per_prompt(values: torch.Tensor, owner: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    """Combine per-position rows of ``values`` into one row per prompt (``sum`` or ``amax``)."""
    out = torch.zeros((n, values.shape[1]), dtype=values.dtype, device=values.device)
    index = owner[:, None].expand_as(values)
    return out.scatter_reduce(0, index, values, reduce=reduce, include_self=False)


def feature_evidence(
    loaded: LoadedModel,
    prompts: Sequence[str],
    target: str,
    site: str,
    layers: Sequence[int],
    control_prompts: Sequence[str] = (),
    objective: str = "first_token",
    every_token: bool = False,
    subject: str | None = None,
    control_subjects: Sequence[str] = (),
) -> FeatureEvidence:
    """SAE activations and attributions at the last token of ``prompts`` for every layer.

    ``objective`` is ``first_token`` (METHOD.md: log P of the first target token) or ``target``
    (log P of the whole target sequence). Neuron mean activations (for ``project-cols``) and
    control-prompt mean activations (for the specificity filter) are recorded as well.

    With ``every_token`` (and the ``target`` objective) the features are read at every position
    that predicts a token of the target, teacher forced, not only at the last prompt token: a
    prompt's attribution is the sum over its positions (the first-order effect of removing the
    feature at all of them), its activation the largest; neuron means are over all positions.
    Control prompts are then teacher-forced with the same target and read at the same positions,
    so the specificity filter drops features that fire on the target whoever the subject is.

    With ``subject`` every quantity (activations, attributions: the gradient of the objective at
    that position, neuron means, the MLP's write) is read at the last token of the subject in
    each prompt instead, where causal tracing finds factual recall (ROME), and each control
    prompt is read at the last token of the one of ``control_subjects`` it names; a prompt
    without its subject, or whose subject token would be its first token (the attention sink
    of a model without BOS), is read at its last token (:func:`_subject_columns`).
    """
    if subject is not None and every_token:
        raise ValueError("features are read at the subject or at the target positions, not both")
    adapter, model = loaded.adapter, loaded.model
    layers = [adapter.validate_layer(layer) for layer in layers]
    with_target = objective == "target"
    ids, mask, last, tgt = _batch(loaded, prompts, target, with_target=with_target)
    keys = [(site, layer) for layer in layers] + [("neurons", layer) for layer in layers]
    keys += [("mlp_out", layer) for layer in layers]
    at = None
    if subject is not None:
        at = _subject_columns(loaded.tokenizer, prompts, [[subject]] * len(prompts), last)
    rows, cols, owner = _read_positions(last, tgt, every_token, at)
    n = len(prompts)
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with adapter.capture(keys, detach=False) as acts:
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits
            for layer in layers:
                acts[(site, layer)].retain_grad()
            total, _ = _target_logprob(logits, last, tgt)
            total.backward()
    ev = FeatureEvidence(site=site, layers=list(layers), acts={}, attrib={})
    with torch.inference_mode():
        for layer in layers:
            sae = loaded.sae(site, layer)
            x = acts[(site, layer)][rows, cols].detach()
            g = acts[(site, layer)].grad[rows, cols].float()
            f = sae.encode(x.to(sae.W_dec.dtype)).float()
            ev.acts[layer] = _per_prompt(f, owner, n, "amax")
            attrib = f * (g.to(sae.W_dec.dtype) @ sae.W_dec.T).float()
            ev.attrib[layer] = _per_prompt(attrib, owner, n, "sum")
            ev.neuron_mean[layer] = acts[("neurons", layer)][rows, cols].detach().float().mean(0)
            # first-order effect on the objective of removing the MLP's write along each feature
            d_hat = sae.W_dec.float() / sae.W_dec.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
            m = acts[("mlp_out", layer)][rows, cols].detach().float()
            ev.write_attrib[layer] = _per_prompt((m @ d_hat.T) * (g @ d_hat.T), owner, n, "sum")
        if control_prompts:
            c_ids, c_mask, c_last, c_tgt = _batch(
                loaded, control_prompts, target, with_target=with_target and every_token
            )
            c_at = None
            if subject is not None:
                named = [list(control_subjects)] * len(control_prompts)
                c_at = _subject_columns(loaded.tokenizer, control_prompts, named, c_last)
            c_rows, c_cols, c_owner = _read_positions(c_last, c_tgt, every_token, c_at)
            with adapter.capture([(site, layer) for layer in layers]) as c_acts:
                model(input_ids=c_ids, attention_mask=c_mask)
            for layer in layers:
                sae = loaded.sae(site, layer)
                x = c_acts[(site, layer)][c_rows, c_cols]
                f = sae.encode(x.to(sae.W_dec.dtype)).float()
                ev.control_mean[layer] = _per_prompt(f, c_owner, len(control_prompts), "amax").mean(
                    0
                )
    return ev


def rank_features(
    ev: FeatureEvidence, selector: str, tau1: float, gamma: float, min_prompts: int
) -> list[Unit]:
    """Candidate features, best first, after the prompt-count rule and the specificity filter.

    ``activation`` (METHOD.md steps 3-5): per prompt keep ``f > tau1 * max f`` (max over all layers
    and features), keep those selected in at least half of the prompts. ``attribution``: features
    active in at least ``min_prompts`` prompts (or all, if fewer), ranked by mean attribution.
    """
    n = next(iter(ev.acts.values())).shape[0]
    units: list[Unit] = []
    if selector == "activation":
        peak = torch.stack([ev.acts[layer].max(-1).values for layer in ev.layers]).max(0).values
        need = (n + 1) // 2
    else:
        need = min(min_prompts, n)
    for layer in ev.layers:
        f = ev.acts[layer]
        mean_act = f.mean(0)
        if selector == "activation":
            chosen = f > tau1 * peak[:, None]
            counts = chosen.sum(0)
            score = mean_act
        else:
            counts = (f > 0).sum(0)
            score = (ev.attrib if selector == "attribution" else ev.write_attrib)[layer].mean(0)
        ok = counts >= need
        if selector != "activation":
            ok &= score > 0
        control = ev.control_mean.get(layer)
        if control is not None:
            ok &= control < gamma * mean_act
        for i in ok.nonzero().squeeze(1).tolist():
            units.append(
                Unit(
                    kind="feature",
                    site=ev.site,
                    layer=layer,
                    index=i,
                    score=float(score[i]),
                    activation=float(mean_act[i]),
                    control_activation=None if control is None else float(control[i]),
                    prompt_count=int(counts[i]),
                )
            )
    units.sort(key=lambda u: u.score, reverse=True)
    return units


def neuron_attributions(
    loaded: LoadedModel,
    prompts: Sequence[str],
    target: str,
    layers: Sequence[int],
    steps: int = 20,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Integrated gradients of P(first target token) w.r.t. each neuron at the last prompt token.

    Baseline 0, ``steps`` points ``alpha = k/steps``; attribution ``a * mean_alpha dP/da``.
    Returns ``(attributions, activations)``, each ``layer -> [n_prompts, d_mlp]``. Per layer,
    batched forward/backward passes cover every prompt and every alpha, in chunks of
    :func:`editing.scoring.default_batch_size` rows (the logits only at the last prompt token).
    """
    adapter, model = loaded.adapter, loaded.model
    ids, mask, last, tgt = _batch(loaded, prompts, target, with_target=False)
    n = len(prompts)
    rows = torch.arange(n, device=ids.device)
    with torch.no_grad(), adapter.capture([("neurons", layer) for layer in layers]) as acts:
        model(input_ids=ids, attention_mask=mask)
    clean = {layer: acts[("neurons", layer)][rows, last].clone() for layer in layers}
    alphas = torch.arange(1, steps + 1, device=ids.device, dtype=torch.float32) / steps
    big_ids = ids.repeat_interleave(steps, 0)
    big_mask = mask.repeat_interleave(steps, 0)
    big_last = last.repeat_interleave(steps, 0)
    first = torch.tensor([t[0] for t in tgt], device=ids.device).repeat_interleave(steps, 0)
    size = default_batch_size(model)
    attributions: dict[int, torch.Tensor] = {}
    for layer in layers:
        a = clean[layer].float()  # [n, d_mlp]
        scaled_all = alphas.repeat(n)[:, None] * a.repeat_interleave(steps, 0)
        grads = []
        for start in range(0, n * steps, size):  # rows are independent: exact in chunks
            part = slice(start, start + size)
            scaled = scaled_all[part].detach().requires_grad_(True)
            rows = torch.arange(scaled.shape[0], device=ids.device)

            def put(x: torch.Tensor, scaled=scaled, rows=rows, at=big_last[part]) -> torch.Tensor:
                x = x.clone()
                x[rows, at] = scaled.to(x.dtype)
                return x

            with torch.enable_grad(), adapter.patch("neurons", layer, put):
                logits = logits_at(model, big_ids[part], big_mask[part], big_last[part, None])
                probs = logits[:, 0].float().softmax(-1)[rows, first[part]]
                (grad,) = torch.autograd.grad(probs.sum(), scaled)
            grads.append(grad)
        mean_grad = torch.cat(grads).view(n, steps, -1).mean(1)
        attributions[layer] = a * mean_grad
    return attributions, {layer: clean[layer].float() for layer in layers}


def select_neurons(attributions: dict[int, torch.Tensor], threshold: float, cap: int) -> list[Unit]:
    """Coarse set per prompt (attribution > threshold x max), refined by frequency >= 50%, capped.

    Most frequent first, ties broken by mean attribution.
    """
    layers = sorted(attributions)
    stacked = torch.cat([attributions[layer] for layer in layers], dim=1)  # [n, L*d_mlp]
    n, _ = stacked.shape
    d_mlp = attributions[layers[0]].shape[1]
    peak = stacked.max(1, keepdim=True).values.clamp_min(1e-12)
    coarse = stacked > threshold * peak
    counts = coarse.sum(0)
    mean_attr = stacked.mean(0)
    keep = (counts >= (n + 1) // 2).nonzero().squeeze(1).tolist()
    keep.sort(key=lambda j: (int(counts[j]), float(mean_attr[j])), reverse=True)
    return [
        Unit(
            kind="neuron",
            site="neurons",
            layer=layers[j // d_mlp],
            index=j % d_mlp,
            score=float(mean_attr[j]),
            activation=0.0,
            prompt_count=int(counts[j]),
        )
        for j in keep[:cap]
    ]
