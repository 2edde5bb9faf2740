"""Evaluation metrics of an erasure (METHOD.md "Metrics")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 64,
) -> float:
    """Token-level perplexity of ``model`` on ``texts`` (each text scored on its own)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    nll = 0.0
    count = 0
    for start in range(0, len(texts), batch_size):
        rows = [tokenizer(t)["input_ids"] for t in texts[start : start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        valid = mask[:, 1:].bool()
        nll -= float(tok_lp[valid].sum())
        count += int(valid.sum())
    return math.exp(nll / max(count, 1))
