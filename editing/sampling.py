"""Sampling with one random stream per row: a row's samples do not depend on its batch (issue #16).

``model.generate(do_sample=True)`` draws every row's next token from one global stream
(``torch.multinomial``), so a prompt's samples change with whatever else is in its batch and with
the batch size, and the multinomial is a large share of the time on CPU (a fifth of a sampled
leak rate on demo-small). :class:`RowSampler` instead runs ``generate`` greedily over scores made
by inverse-CDF sampling: each row draws one uniform per step from its own generator, seeded by
:func:`row_seed` from the call's seed, the prompt and the sample's index, and takes the first
token whose cumulative probability exceeds it, which is distributed exactly as the multinomial
draw (not an approximation). A row's samples are thus a function of (model, prompt, sample index,
seed) only: the same alone or batched with any other rows, at any batch size (up to float
rounding of the logits). That is what lets the unedited model's sampled figures be cached per
fact (:mod:`editing.baseline`).

Temperature divides the logits and nucleus filtering (``top_p``) keeps, per row, the most likely
tokens whose preceding cumulative probability is below ``top_p`` (at least one), as
``transformers``' ``TopPLogitsWarper`` does, before the draw; probabilities and their cumulative
sums are float64.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

NUCLEUS_TOPK = 64  # tokens looked at before falling back to a full sort (rows whose top-64 < p)
BLOCK = 32  # uniforms drawn per row at a time (fixed: a row's stream never depends on its batch)


def row_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of sample ``index`` of ``prompt`` in a call seeded ``seed`` (63 bits)."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` ``[rows, vocab]`` with every token outside its row's nucleus set to -inf: the
    tokens, most likely first, whose preceding cumulative probability is below ``top_p`` (the
    most likely always kept). Rows whose top :data:`NUCLEUS_TOPK` tokens already hold ``top_p``
    are decided from those (a later token's preceding mass is at least theirs); the rest sort."""
    if top_p >= 1.0:
        return logits
    probs = logits.softmax(-1)
    k = min(NUCLEUS_TOPK, probs.shape[-1])
    top, idx = probs.topk(k, dim=-1)
    short = (top.sum(-1) < top_p).nonzero().flatten()
    keep_top = (top.cumsum(-1) - top) < top_p
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, idx, keep_top)
    if len(short):
        full, order = probs[short].sort(-1, descending=True)
        keep_full = (full.cumsum(-1) - full) < top_p
        keep[short] = torch.zeros_like(keep_full).scatter_(-1, order, keep_full)
    return logits.masked_fill(~keep, float("-inf"))


class RowSampler(LogitsProcessor):
    """A ``transformers`` logits processor that turns greedy ``generate`` into sampling at
    ``temperature`` and ``top_p``, each row with its own seeded stream (see the module).

    ``seeds`` holds one seed per row of the batch, in the batch's order. At generation step
    ``t`` row ``i`` takes the ``t``-th uniform ``u`` of its stream (drawn :data:`BLOCK` at a
    time, float64) and picks the first token whose cumulative probability (vocabulary order)
    exceeds ``u``: inverse-CDF sampling, exact. The returned scores are 0 at that token and -inf
    elsewhere, so greedy decoding's argmax takes it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature
        self.top_p = top_p
        self._gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self._uniforms = torch.empty(len(seeds), 0, dtype=torch.float64)
        self._step = 0

    def uniforms(self, step: int) -> torch.Tensor:
        """Every row's uniform of generation step ``step`` (``[rows]``, float64)."""
        while self._uniforms.shape[1] <= step:
            block = [torch.rand(BLOCK, generator=g, dtype=torch.float64) for g in self._gens]
            self._uniforms = torch.cat([self._uniforms, torch.stack(block)], dim=1)
        return self._uniforms[:, step]

    def pick(self, scores: torch.Tensor, step: int) -> torch.Tensor:
        """Token ids ``[rows]`` sampled from ``scores`` ``[rows, vocab]`` at step ``step``."""
        if scores.shape[0] != len(self._gens):
            raise ValueError(f"{scores.shape[0]} rows but {len(self._gens)} seeds")
        warped = nucleus(scores.float() / self.temperature, self.top_p)
        cdf = warped.double().softmax(-1).cumsum(-1)
        u = self.uniforms(step).to(cdf.device)[:, None] * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Scores whose argmax is this step's sample of the warped distribution of ``scores``."""
        tokens = self.pick(scores, self._step)
        self._step += 1
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, tokens[:, None], 0.0)
