"""Evaluation metrics of an erasure (METHOD.md "Metrics").

Each per-fact metric has a ``*_many`` form that takes every fact's ``(prompts, secret)`` at once
and scores them in shared padded batches (:mod:`editing.scoring`); the one-fact functions are
that form for one fact. Greedy and teacher-forced results do not depend on the batching (up to
float rounding); sampled ones (:func:`leak_rates`) draw each prompt's samples from streams of
their own (:mod:`editing.sampling`), so they do not depend on the batching either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from editing.sampling import RowSampler, row_seed
from editing.scoring import (
    by_length,
    contains_target,
    default_batch_size,
    encode_pairs,
    encode_texts,
    generate_texts,
    greedy_generate,
    padded,
    score_targets,
)

# (prompts, secret) of one fact, for the *_many functions
Group = tuple[Sequence[str], str]


@torch.inference_mode()
def passage_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int | None = None,
) -> list[tuple[float, int]]:
    """Per text: its summed negative log-likelihood and the number of tokens scored (each text
    scored on its own, in padded batches)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = encode_texts(tokenizer, texts)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for chunk in by_length(rows, batch_size or default_batch_size(model)):
        ids, mask = padded([rows[i] for i in chunk], pad, device)
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        valid = mask[:, 1:].bool()
        nll = -(tok_lp * valid).sum(1)
        for row, i in enumerate(chunk):
            out[i] = (float(nll[row]), int(valid[row].sum()))
    return out


def pooled_perplexity(parts: Sequence[tuple[float, int]]) -> float:
    """Token-level perplexity from per-text ``(nll, tokens)`` (:func:`passage_nll`)."""
    nll = sum(n for n, _ in parts)
    count = sum(c for _, c in parts)
    return math.exp(nll / max(count, 1))


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int | None = None,
) -> float:
    """Token-level perplexity of ``model`` on ``texts`` (each text scored on its own)."""
    return pooled_perplexity(passage_nll(model, tokenizer, texts, batch_size))


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


def _flat(groups: Sequence[Group]) -> tuple[list[str], list[str], list[int]]:
    """Every group's prompts, each with its group's secret, and the groups' sizes."""
    prompts = [q for g, _ in groups for q in g]
    secrets = [s for g, s in groups for _ in g]
    return prompts, secrets, [len(g) for g, _ in groups]


def _split(values: Sequence, sizes: Sequence[int]) -> list[list]:
    """``values`` cut back into consecutive groups of ``sizes``."""
    out, start = [], 0
    for n in sizes:
        out.append(list(values[start : start + n]))
        start += n
    return out


def _new_tokens(
    tokenizer: PreTrainedTokenizerBase, groups: Sequence[Group], extra: int
) -> list[int]:
    """Per prompt of ``groups``: tokens to generate, the secret's token count after the group's
    first prompt plus ``extra`` (the one-fact functions' rule, per group)."""
    firsts = [(g[0], s) for g, s in groups if g]
    pairs = encode_pairs(tokenizer, [p for p, _ in firsts], [s for _, s in firsts])
    lengths = iter(len(t) + extra for _, t in pairs)
    out: list[int] = []
    for g, _ in groups:
        if g:
            out += [next(lengths)] * len(g)
    return out


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
    return leaks_many(model, tokenizer, [(prompts, secret)])[0]


def leaks_many(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    batch_size: int | None = None,
) -> list[list[bool]]:
    """:func:`leaks` of every ``(prompts, secret)`` group, in shared batches."""
    prompts, secrets, sizes = _flat(groups)
    if not prompts:
        return [[] for _ in groups]
    tf = score_targets(model, tokenizer, prompts, secrets, batch_size)
    n_new = _new_tokens(tokenizer, groups, 2)
    texts = greedy_generate(model, tokenizer, prompts, n_new, batch_size)
    flat = [s.reproduced or contains_target(t, x) for s, t, x in zip(tf, texts, secrets)]
    return _split(flat, sizes)


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


def known_many(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    batch_size: int | None = None,
) -> list[list[bool]]:
    """:func:`known` of every ``(prompts, target)`` group, in shared batches."""
    prompts, targets, sizes = _flat(groups)
    if not prompts:
        return [[] for _ in groups]
    scores = score_targets(model, tokenizer, prompts, targets, batch_size)
    return _split([s.reproduced for s in scores], sizes)


def target_prob(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], secret: str
) -> list[float]:
    """P(secret | prompt) for each prompt (teacher forced)."""
    return target_probs_many(model, tokenizer, [(prompts, secret)])[0]


def target_probs_many(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    batch_size: int | None = None,
) -> list[list[float]]:
    """:func:`target_prob` of every ``(prompts, secret)`` group, in shared batches."""
    prompts, secrets, sizes = _flat(groups)
    if not prompts:
        return [[] for _ in groups]
    scores = score_targets(model, tokenizer, prompts, secrets, batch_size)
    return _split([math.exp(s.logprob) for s in scores], sizes)


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
    return exposures(model, tokenizer, [(prompt, secret)], n_candidates, seed)[0]


def _candidates(secret: str, n_candidates: int, seed: int) -> list[str]:
    """The secret with every digit replaced at random, ``n_candidates`` times (seeded)."""
    digits = [i for i, ch in enumerate(secret) if ch.isdigit()]
    gen = random.Random(seed)
    cands = []
    for _ in range(n_candidates):
        chars = list(secret)
        for i in digits:
            chars[i] = str(gen.randrange(10))
        cands.append("".join(chars))
    return cands


def exposures(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, str]],
    n_candidates: int = 200,
    seed: int = 0,
    batch_size: int | None = None,
) -> list[float | None]:
    """:func:`exposure` of every ``(prompt, secret)``: all candidate sets scored in shared
    batches (each secret's candidates drawn with ``seed``, as alone)."""
    wanted = [i for i, (_, s) in enumerate(items) if sum(ch.isdigit() for ch in s) >= 4]
    prompts: list[str] = []
    targets: list[str] = []
    for i in wanted:
        prompt, secret = items[i]
        prompts += [prompt] * (n_candidates + 1)
        targets += [secret, *_candidates(secret, n_candidates, seed)]
    scores = score_targets(model, tokenizer, prompts, targets, batch_size) if prompts else []
    out: list[float | None] = [None] * len(items)
    for k, i in enumerate(wanted):
        block = scores[k * (n_candidates + 1) : (k + 1) * (n_candidates + 1)]
        mine = block[0].logprob
        better = sum(s.logprob >= mine for s in block[1:])
        space = sum(ch.isdigit() for ch in items[i][1]) * math.log2(10)
        rank = 1 + (2**space) * better / n_candidates
        out[i] = space - math.log2(rank)
    return out


@torch.inference_mode()
def sample_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int | Sequence[int],
    samples: int,
    seed: int = 0,
    top_p: float = 1.0,
    batch_size: int | None = None,
    first: int = 0,
) -> list[list[str]]:
    """``samples`` continuations per prompt at temperature 1, no top-k, nucleus ``top_p``
    (samples ``first`` to ``first + samples - 1`` of each prompt's streams).

    Returns, per prompt, the decoded new text of its samples. ``max_new_tokens``: one number, or
    one per prompt. Sample ``k`` of a prompt comes from its own stream, seeded from ``seed``, the
    prompt and ``k`` (:class:`editing.sampling.RowSampler`: Gumbel-max, exact), so it does not
    depend on the other prompts or on the batching (``batch_size`` rows at a time, default
    :func:`editing.scoring.default_batch_size`); the global generator is not used.
    """
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else max_new_tokens
    rows = [p for p in prompts for _ in range(samples)]
    row_limits = [int(n) for n in limits for _ in range(samples)]
    seeds = [row_seed(seed, p, k) for p in prompts for k in range(first, first + samples)]

    def sampler(chunk: list[int]) -> RowSampler:
        return RowSampler([seeds[i] for i in chunk], temperature=1.0, top_p=top_p)

    texts = generate_texts(
        model, tokenizer, rows, row_limits, batch_size, row_processor=sampler, do_sample=False
    )
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
    return leak_rates(model, tokenizer, [(prompts, secret)], samples, seed, top_p)[0]


def leak_rates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[Group],
    samples: int = 5,
    seed: int = 0,
    top_p: float = 1.0,
    batch_size: int | None = None,
    first: int = 0,
) -> list[Rate]:
    """:func:`leak_rate` of every ``(prompts, secret)`` group, sampled in shared batches (each
    group's rate the same as alone: one stream per prompt and sample); ``first``: the index of
    each prompt's first sample (a later round of the same streams)."""
    prompts, secrets, sizes = _flat(groups)
    if not prompts:
        return [Rate(0, 0) for _ in groups]
    n_new = _new_tokens(tokenizer, groups, 4)
    per_prompt = sample_continuations(
        model, tokenizer, prompts, n_new, samples, seed, top_p, batch_size, first
    )
    hits = [sum(contains_target(t, x) for t in texts) for texts, x in zip(per_prompt, secrets)]
    return [Rate(sum(h), len(h) * samples) for h in _split(hits, sizes)]
