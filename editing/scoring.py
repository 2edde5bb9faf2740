"""Scoring prompts against targets: does greedy decoding reproduce the target, and how likely is it.

``score_targets`` runs one teacher-forced forward pass per (prompt, target) pair: greedy decoding
reproduces the target exactly when the argmax at every target position is the target's token, so
this is greedy decoding's verdict for the target's canonical tokenisation, at one pass instead of
one per token. ``greedy_generate`` really decodes, for audits that must not depend on tokenisation.

Every pass works on padded batches of rows (any mix of facts and prompts) sorted by length, so a
batch holds rows of similar length; :func:`default_batch_size` is the rows per batch: the operator's
``FEATUREEDIT_BATCH_SIZE`` or a default from the model's vocabulary and device (issue #16).
Scoring pads on the right (a row's tokens start at column 0: positions and causal attention are
the unpadded row's), generation on the left with the attention mask (``generate`` derives the
position ids from it), so a row's scores do not depend on what it is batched with, up to float
rounding.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from editing import settings

# Default batch: the float32 logits of a batch (rows x ROW_TOKENS x vocabulary, twice: logits and
# log-softmax) within BATCH_BYTES, between MIN_BATCH and the device's MAX_BATCH rows. On CPU more
# rows stop paying off: on demo-small (1 thread) 200 Locality rows scored in 0.35 s at 64 rows
# per batch, 0.38 s at 128 and 0.50 s at 256; 250 sampled rows took 1.57 / 1.20 / 1.25 s.
BATCH_BYTES = {"cpu": 1 << 30, "cuda": 4 << 30}
ROW_TOKENS = 32
MIN_BATCH = 8
MAX_BATCH = {"cpu": 128, "cuda": 512}


@dataclass(frozen=True)
class TargetScore:
    """Greedy verdict and probability of one target after one prompt."""

    reproduced: bool  # greedy decoding yields every target token
    logprob: float  # log P(target tokens | prompt)
    first_token_logprob: float


def default_batch_size(model: PreTrainedModel) -> int:
    """Rows per scoring batch: ``FEATUREEDIT_BATCH_SIZE`` if the operator set it, else what keeps
    a batch's logits within :data:`BATCH_BYTES` for the model's device (vocabulary-sized rows of
    :data:`ROW_TOKENS` tokens), clamped to ``[MIN_BATCH, MAX_BATCH[device]]``."""
    chosen = settings.batch_size()
    if chosen is not None:
        return chosen
    device = next(model.parameters()).device
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    vocab = int(getattr(config or model.config, "vocab_size", 0) or 0)
    kind = device.type if device.type in BATCH_BYTES else "cpu"
    rows = BATCH_BYTES[kind] // (2 * 4 * ROW_TOKENS * max(vocab, 1))
    return int(min(MAX_BATCH[kind], max(MIN_BATCH, rows)))


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], special: bool = True
) -> list[list[int]]:
    """Token ids of each text (one tokenizer call for the distinct texts)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return []
    ids = tokenizer(distinct, add_special_tokens=special)["input_ids"]
    by_text = dict(zip(distinct, ids))
    return [list(by_text[t]) for t in texts]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], targets: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` of every ``(prompts[i], targets[i])``, tokenising each distinct
    prompt and target once."""
    p_ids = encode_texts(tokenizer, prompts)
    t_ids = encode_texts(tokenizer, [" " + t for t in targets], special=False)
    return list(zip(p_ids, t_ids))


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (with BOS) and of the target following it (``" " + t``)."""
    return encode_pairs(tokenizer, [prompt], [target])[0]


def logits_at(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Logits ``[rows, k, vocabulary]`` at ``positions`` (``[rows, k]`` column indices) of a
    padded batch: the language-model head runs at those positions only when the model's forward
    takes ``logits_to_keep`` (every current Hugging Face causal LM; the head and any final
    soft-capping apply after the slice), else on every position, then gathered."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=positions).logits
    logits = model(input_ids=ids, attention_mask=mask).logits
    return torch.take_along_dim(logits, positions[..., None], dim=1)


def by_length(
    rows: Sequence[Sequence[int]], size: int, first: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices of ``rows`` in batches of at most ``size``, longest rows first (less padding);
    with ``first`` (one number per row, e.g. tokens to generate), largest ``first`` before that,
    so rows that need as many steps share a batch."""
    order = sorted(range(len(rows)), key=lambda i: (-(first[i] if first else 0), -len(rows[i])))
    return [order[i : i + size] for i in range(0, len(order), max(size, 1))]


def padded(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device | str, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token-id rows padded with ``pad`` to the longest, on
    ``device``: on the right (scoring: row ``i``'s tokens start at column 0), or with ``left`` on
    the left (generation: every row continues at the same column)."""
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        fill = width - len(r)
        ids.append([pad] * fill + list(r) if left else list(r) + [pad] * fill)
        mask.append([0] * fill + [1] * len(r) if left else [1] * len(r) + [0] * fill)
    as_tensor = {"dtype": torch.long, "device": device}
    return torch.tensor(ids, **as_tensor), torch.tensor(mask, **as_tensor)


@torch.inference_mode()
def score_targets(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int | None = None,
) -> list[TargetScore]:
    """Score each ``targets[i]`` after ``prompts[i]`` (teacher forcing), in padded batches of
    ``batch_size`` rows (default :func:`default_batch_size`) across all the pairs given."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    pairs = encode_pairs(tokenizer, prompts, targets)
    rows = [p + t for p, t in pairs]
    out: list[TargetScore | None] = [None] * len(rows)
    for chunk in by_length(rows, batch_size or default_batch_size(model)):
        ids, mask = padded([rows[i] for i in chunk], pad, device)
        # teacher forcing reads the positions that predict target tokens: row i's j-th is
        # len(prompt) - 1 + j (repeated past its target's end, to a rectangle)
        width = max(len(pairs[i][1]) for i in chunk)
        starts = torch.tensor([len(pairs[i][0]) - 1 for i in chunk])
        stops = torch.tensor([len(pairs[i][0]) + len(pairs[i][1]) - 2 for i in chunk])
        cols = torch.minimum(starts[:, None] + torch.arange(width), stops[:, None]).to(device)
        logits = logits_at(model, ids, mask, cols).float()
        logp = logits.log_softmax(-1)
        tgt = torch.tensor(
            [pairs[i][1] + [0] * (width - len(pairs[i][1])) for i in chunk], device=device
        )
        valid = (
            torch.arange(width, device=device)[None, :]
            < torch.tensor([len(pairs[i][1]) for i in chunk], device=device)[:, None]
        )
        lp = torch.where(valid, logp.gather(-1, tgt[..., None]).squeeze(-1), 0.0)
        hits = ((logits.argmax(-1) == tgt) | ~valid).all(-1)
        for i, hit, total, first in zip(
            chunk, hits.tolist(), lp.sum(-1).tolist(), lp[:, 0].tolist()
        ):
            out[i] = TargetScore(bool(hit), float(total), float(first))
    return [s for s in out if s is not None]


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int | Sequence[int],
    batch_size: int | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded text of the new tokens only), in batches of
    ``batch_size`` rows (default :func:`default_batch_size`). ``max_new_tokens`` is one number
    or one per prompt (a batch decodes to its longest; each row keeps its own number of tokens,
    which greedy decoding makes the same as decoding it alone)."""
    return generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size, do_sample=False)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int | Sequence[int],
    batch_size: int | None = None,
    row_processor: Callable[[list[int]], LogitsProcessor] | None = None,
    **generate_kwargs: object,
) -> list[str]:
    """``model.generate`` continuations of ``prompts`` (left-padded batches of ``batch_size`` rows,
    most new tokens then longest first: a batch generates as many steps as its largest limit),
    each cut to its own ``max_new_tokens`` and decoded; ``generate_kwargs`` go
    to ``generate`` (sampling settings). ``row_processor(rows)`` (optional) makes a logits
    processor for a batch of those prompt indices, in the batch's order
    (:class:`editing.sampling.RowSampler`)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    limits = (
        [max_new_tokens] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(n) for n in max_new_tokens]
    )
    rows = encode_texts(tokenizer, prompts)
    texts: list[str] = [""] * len(rows)
    for chunk in by_length(rows, batch_size or default_batch_size(model), limits):
        ids, mask = padded([rows[i] for i in chunk], pad, device, left=True)
        width = ids.shape[1]
        extra = dict(generate_kwargs)
        if row_processor is not None:
            extra["logits_processor"] = LogitsProcessorList([row_processor(chunk)])
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(limits[i] for i in chunk),
            pad_token_id=pad,
            **extra,
        )
        new = [gen[row, width : width + limits[i]] for row, i in enumerate(chunk)]
        for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
            texts[i] = text
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
