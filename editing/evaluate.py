"""Evaluation metrics of an erasure (METHOD.md "Metrics")."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from editing.scoring import contains_target, encode_pair, greedy_generate, padded, score_targets


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
        ids, mask = padded(rows, pad, device)
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        valid = mask[:, 1:].bool()
        nll -= float(tok_lp[valid].sum())
        count += int(valid.sum())
    return math.exp(nll / max(count, 1))


@dataclass(frozen=True)
class Rate:
    """A fraction with its count: ``value = hits / count`` (None when nothing could be counted)."""

    hits: int
    count: int

    @property
    def value(self) -> float | None:
        """The fraction, or None if ``count`` is 0."""
        return self.hits / self.count if self.count else None

    def to_dict(self) -> dict[str, float | int | None]:
        """``{"value", "hits", "count"}`` for reports."""
        v = self.value
        return {"value": None if v is None else round(v, 4), "hits": self.hits, "count": self.count}


def leaks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    secret: str,
) -> list[bool]:
    """Per prompt: does greedy decoding still produce the secret?

    Conservative: a prompt leaks if the teacher-forced greedy check says so *or* real greedy
    decoding (which may tokenise differently) starts with the secret.
    """
    if not prompts:
        return []
    tf = score_targets(model, tokenizer, prompts, [secret] * len(prompts))
    n_new = len(encode_pair(tokenizer, prompts[0], secret)[1]) + 2
    texts = greedy_generate(model, tokenizer, prompts, n_new)
    return [s.reproduced or contains_target(t, secret) for s, t in zip(tf, texts)]


def known(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
) -> list[bool]:
    """Per prompt: does the model answer with the target (greedy, teacher-forced verdict)?"""
    if not prompts:
        return []
    return [s.reproduced for s in score_targets(model, tokenizer, prompts, targets)]


def target_prob(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], secret: str
) -> list[float]:
    """P(secret | prompt) for each prompt (teacher forced)."""
    if not prompts:
        return []
    return [
        math.exp(s.logprob)
        for s in score_targets(model, tokenizer, prompts, [secret] * len(prompts))
    ]


def exposure(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    secret: str,
    n_candidates: int = 200,
    seed: int = 0,
) -> float | None:
    """DEPN exposure of a digit secret: ``log2 |space| - log2 rank``, rank estimated by sampling.

    Candidates replace every digit of the secret at random (same format, ``|space| = 10^digits``);
    ``rank = 1 + |space| * (share of candidates at least as likely as the secret)``. None for
    secrets with fewer than 4 digits. Resolution is limited by ``n_candidates``: when no candidate
    beats the secret the exposure is the maximum, ``log2 |space|``.
    """
    digits = [i for i, ch in enumerate(secret) if ch.isdigit()]
    if len(digits) < 4:
        return None
    gen = random.Random(seed)
    cands = []
    for _ in range(n_candidates):
        chars = list(secret)
        for i in digits:
            chars[i] = str(gen.randrange(10))
        cands.append("".join(chars))
    scores = score_targets(model, tokenizer, [prompt] * (n_candidates + 1), [secret, *cands])
    mine = scores[0].logprob
    better = sum(s.logprob >= mine for s in scores[1:])
    space = len(digits) * math.log2(10)
    rank = 1 + (2**space) * better / n_candidates
    return space - math.log2(rank)


@torch.inference_mode()
def sample_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    samples: int,
    seed: int = 0,
    top_p: float = 1.0,
    batch_size: int = 256,
) -> list[list[str]]:
    """``samples`` continuations per prompt at temperature 1, no top-k, nucleus ``top_p``.

    Returns, per prompt, the decoded new text of its samples. Seeded (the global generator is
    restored afterwards), batched ``batch_size`` rows at a time.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = [tokenizer(p)["input_ids"] for p in prompts for _ in range(samples)]
    texts: list[str] = []
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            ids, mask = padded(rows[start : start + batch_size], pad, device, left=True)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=top_p,
                pad_token_id=pad,
            )
            texts += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return [texts[i * samples : (i + 1) * samples] for i in range(len(prompts))]


def leak_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    secret: str,
    samples: int = 5,
    seed: int = 0,
    top_p: float = 1.0,
) -> Rate:
    """Share of sampled continuations (temperature 1, no top-k, nucleus ``top_p``; ``samples``
    per prompt) that contain the whole secret (:func:`editing.scoring.contains_target`)."""
    if not prompts:
        return Rate(0, 0)
    n_new = len(encode_pair(tokenizer, prompts[0], secret)[1]) + 4
    per_prompt = sample_continuations(model, tokenizer, prompts, n_new, samples, seed, top_p)
    texts = [t for group in per_prompt for t in group]
    return Rate(sum(contains_target(t, secret) for t in texts), len(texts))
