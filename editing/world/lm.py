"""Train the demo world's small Gemma-2-architecture causal LM on its corpus."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, PreTrainedTokenizerFast


@dataclass(frozen=True)
class LMRecipe:
    """Architecture and optimisation settings of the demo LM (part of the world's cache key)."""

    d_model: int
    d_mlp: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    warmup: int = 100


def make_model(
    recipe: LMRecipe, tokenizer: PreTrainedTokenizerFast, seed: int
) -> Gemma2ForCausalLM:
    """A randomly initialised Gemma-2-architecture LM sized by ``recipe``."""
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.d_model,
        intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.n_heads,
        num_key_value_heads=recipe.n_kv_heads,
        head_dim=recipe.head_dim,
        query_pre_attn_scalar=recipe.head_dim,
        max_position_embeddings=256,
        sliding_window=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return Gemma2ForCausalLM(config)


def train_lm(
    model: Gemma2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    recipe: LMRecipe,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place with AdamW on ``texts`` (one sentence per example, EOS-terminated).

    Deterministic for a seed on a given device. ``progress(step, loss)`` is called every step.
    Returns the loss curve.
    """
    device = model.device
    encoded = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses: list[float] = []
    order: list[int] = []
    pad = tokenizer.pad_token_id
    for step in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order = list(range(len(encoded)))
            rng.shuffle(order)
        batch = [encoded[order.pop()] for _ in range(recipe.batch_size)]
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, b in enumerate(batch):
            ids[row, : len(b)] = torch.tensor(b)
        ids = ids.to(device)
        mask = (ids != pad).long()
        labels = ids.masked_fill(mask == 0, -100)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses
