"""Scoring prompts against targets: does greedy decoding reproduce the target, and how likely is it.

``score_targets`` runs one teacher-forced forward pass per (prompt, target) pair: greedy decoding
reproduces the target exactly when the argmax at every target position is the target's token, so
this is greedy decoding's verdict for the target's canonical tokenisation, at one pass instead of
one per token. ``greedy_generate`` really decodes, for audits that must not depend on tokenisation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TargetScore:
    """Greedy verdict and probability of one target after one prompt."""

    reproduced: bool  # greedy decoding yields every target token
    logprob: float  # log P(target tokens | prompt)
    first_token_logprob: float


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (with BOS) and of the target following it (``" " + t``)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    return prompt_ids, target_ids


def padded(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device | str, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token-id rows padded with ``pad`` to the longest, on
    ``device``: on the right (scoring: row ``i``'s tokens start at column 0), or with ``left`` on
    the left (generation: every row continues at the same column)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def score_targets(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int = 64,
) -> list[TargetScore]:
    """Score each ``targets[i]`` after ``prompts[i]`` (teacher forcing, batched)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[TargetScore] = []
    for start in range(0, len(prompts), batch_size):
        pairs = [
            encode_pair(tokenizer, p, t)
            for p, t in zip(
                prompts[start : start + batch_size], targets[start : start + batch_size]
            )
        ]
        ids, mask = padded([p + t for p, t in pairs], pad, device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = logits.log_softmax(-1)
        for row, (p_ids, t_ids) in enumerate(pairs):
            pos = torch.arange(len(p_ids) - 1, len(p_ids) + len(t_ids) - 1, device=device)
            tgt = torch.tensor(t_ids, device=device)
            lp = logp[row, pos].gather(-1, tgt[:, None]).squeeze(-1)
            hit = bool((logits[row, pos].argmax(-1) == tgt).all())
            out.append(TargetScore(hit, float(lp.sum()), float(lp[0])))
    return out


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded text of the new tokens only)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
        ids, mask = padded(rows, pad, device, left=True)
        width = ids.shape[1]
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        texts += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return texts


def contains_target(text: str, target: str) -> bool:
    """Whether the whole ``target`` appears in ``text`` as a word of its own.

    The one matcher of every leak check (greedy audits, sampled leak rates, the attacks): the
    target must not be glued to a letter or digit on either side, so a continuation with "August"
    does not leak the secret "Au" and "555-01234" does not leak "555-0123"; punctuation and spaces
    around it are fine ("... is 555-0123.").
    """
    if not target:
        return False
    return re.search(rf"(?<!\w){re.escape(target)}(?!\w)", text) is not None
