"""FeatureEdit's flattening refinement (issue #13): after the feature projection, train the
down-projection columns the projection touched so that the secret is not recoverable.

The projection removes the located features' writes; what it leaves is a secret that greedy
decoding no longer produces but that sampling and the logit lens (Patil, Hase, Bansal, ICLR 2024)
can still find. The refinement changes only the down-projection columns the projection already
changed (so the edit stays within the located features' columns of the MLP down-projections) and
minimises, on the edit prompts teacher-forced on the secret's prefix:

- **leak**: ``relu(log P(whole secret) - log leak_bound)`` per edit prompt, the exact probability
  that one sample at temperature 1 begins with the secret (the stopping rule's quantity);
- **lens rank** (REVS-style rank editing, arXiv 2406.09325, applied to every layer's logit lens):
  for every token of the secret and every layer output read through the final norm and the
  unembedding, ``relu(z_secret - z_(rank) + margin)``: the secret token's logit must fall below
  the ``rank``-th largest other logit, so that neither Head Projection (top-k of a layer) nor
  Probability Delta (a large fall between layers shows as a bottom-k change) finds it;
- **flatten** (optional, Patil et al.'s max-entropy defence): ``log V - H(p)`` of those lens
  distributions, weighted by ``entropy``;
- **locality**: ``KL(p_before || p_after)`` of the next-token distributions at every position of
  the control prompts (the edit prompts with other subjects) teacher-forced on the secret and,
  optionally, on the model's own greedy continuation of each (what it says about that other
  subject: the answers Locality checks), weighted by ``locality``, against the model as it was
  before this fact's edit; with several references (FeatureEdit's ``refine_controls="request"``:
  every fact's control prompts of the request on the answers the model gave when the request
  began, :func:`answers_reference`) their KLs are added;
- **exposure** (optional, weighted by ``exposure``; secrets with at least 3 digits): per edit
  prompt, ``relu(log P(secret) - q)`` where ``q`` is the ``exposure_quantile`` quantile of the
  log-probabilities of ``exposure_candidates`` random strings of the secret's format (drawn by
  the exposure attack's generator with the refinement's own seed, never the secret), scored once
  under the model as it was before this fact's edit: the secret's rank among its format space
  should be typical, as a never-seen control's is (Carlini et al.'s exposure). The target is
  fixed, so the term cannot be met by lowering the whole format space; ``exposure_anchor`` ×
  the mean squared change of the candidates' log-probabilities (against the same pre-edit
  scores) keeps the format space where it was while the secret goes down into it.
- **digit rank** (optional, weighted by ``digit_rank``): at every position of the edit prompts
  whose secret token is a single digit, ``relu(log p(secret digit) - median_d log p(d))`` over the
  ten digit tokens at that position: the secret's digit must not be above the median digit there.
  A ranking among the digits of the same position, so lowering every digit (other people's
  numbers) does not meet it; the positions where the secret's digit is not above the median
  (where the model does not know it) are left alone. Converges only once it is zero.

:func:`flatten_rows` takes the edit prompts of several facts, each with its own secret
(FeatureEdit's joint refinement, ``refine_scope="request"``): the leak and lens terms are read
per row, so it converges only once every fact's prompts meet them; the exposure and stranger
terms are defined on one secret and refuse several.

Adam on float32 copies of the trainable columns; no randomness (deterministic for given
weights). Devices and dtypes follow the model's. Stops as soon as every hinge term is zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call

from editing.attacks.exposure import candidates, format_space
from editing.attacks.logit_lens import stream_lens
from editing.models import LoadedModel
from editing.scoring import encode_pair, greedy_generate, padded


@dataclass(frozen=True)
class FlattenConfig:
    """The refinement's knobs (FeatureEditParams ``refine_*``)."""

    steps: int = 40
    lr: float = 2e-3
    rank: int = 20
    tokens: int = 1
    margin: float = 1.0
    locality: float = 1.0
    entropy: float = 0.0
    extra_columns: int = 0
    delta_weight: float = 100.0
    leak_bound: float = 0.01
    exposure: float = 0.0
    exposure_candidates: int = 32
    exposure_quantile: float = 0.5
    exposure_anchor: float = 1.0
    exposure_seed: int = 13
    exposure_min_digits: int = 3
    stranger: float = 0.0
    stranger_subjects: int = 4
    stranger_margin: float = 0.0
    digit_rank: float = 0.0


# Names no demo world draws (its name lists share no first or last name with these) and no real
# model is likely to know as a person: the stranger term's subjects.
STRANGERS = (
    "Quillon Varrow",
    "Edda Thistlemarch",
    "Orrin Pellavast",
    "Maelis Corrowyn",
    "Tavish Oldquarry",
    "Sorrel Vintmoor",
    "Ansel Brackwater",
    "Ysolde Fenmarrow",
)


@dataclass(frozen=True)
class FlattenResult:
    """What the refinement did: steps run, columns trained, the hinge losses at the end."""

    steps: int
    columns: int
    leak_loss: float
    rank_loss: float
    converged: bool
    exposure_loss: float = 0.0
    stranger_loss: float = 0.0
    digit_loss: float = 0.0


def snapshot(loaded: LoadedModel, layers: list[int]) -> dict[int, torch.Tensor]:
    """Canonical ``[d_model, d_mlp]`` copies of the down-projections of ``layers``."""
    return {layer: loaded.adapter.down_proj_weight(layer).detach().clone() for layer in layers}


def _targets(
    pairs: list[tuple[list[int], list[int]]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat index tensors ``(row, position, token)`` of every secret token of every row."""
    rows, pos, tok = [], [], []
    for r, (p_ids, t_ids) in enumerate(pairs):
        for j, t in enumerate(t_ids):
            rows.append(r)
            pos.append(len(p_ids) - 1 + j)
            tok.append(t)
    return tuple(torch.tensor(x, dtype=torch.long, device=device) for x in (rows, pos, tok))


class _Forward:
    """Forward passes of the model with trainable down-projection columns swapped in."""

    def __init__(
        self,
        loaded: LoadedModel,
        cols: dict[int, torch.Tensor],
        start: dict[int, torch.Tensor] | None = None,
    ) -> None:
        """Trainable ``cols`` (per layer) on top of the model's down-projections, or on top of
        ``start`` (canonical weights per layer, e.g. a :func:`snapshot`) where it has a layer."""
        adapter = loaded.adapter
        self.loaded = loaded
        self.cols = {layer: c for layer, c in cols.items() if c.numel()}
        self.deltas: dict[int, torch.Tensor] = {}
        self.current: dict[int, torch.Tensor] = dict(start or {})
        for layer, c in self.cols.items():
            now = self.current.get(layer, adapter.down_proj_weight(layer).detach())
            self.current[layer] = now.clone()
            self.deltas[layer] = torch.zeros(
                now.shape[0],
                c.numel(),
                device=now.device,
                dtype=torch.float32,
                requires_grad=True,
            )

    @property
    def columns(self) -> int:
        """Trainable columns over all layers."""
        return sum(int(c.numel()) for c in self.cols.values())

    def weights(self) -> dict[str, torch.Tensor]:
        """Parameter name -> the down-projection weight with the deltas added (differentiable)."""
        adapter = self.loaded.adapter
        out: dict[str, torch.Tensor] = {}
        for layer, w in self.current.items():
            new = w
            if layer in self.cols:
                cols = self.cols[layer]
                new_cols = (w[:, cols].float() + self.deltas[layer]).to(w.dtype)
                new = w.index_copy(1, cols, new_cols)
            out[adapter.down_proj_param_name(layer)] = adapter.from_canonical(
                adapter.model_type, new
            )
        return out

    def lens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logit-lens logits ``[layers + 1, batch, seq, vocab]`` with the current deltas: the
        embedding stream, then every layer output (the last is the model's own output)."""
        adapter = self.loaded.adapter
        sites = [("resid_post", layer) for layer in range(adapter.n_layers)]
        with adapter.capture(sites, detach=False) as store:
            out = functional_call(
                self.loaded.model,
                self.weights(),
                (),
                {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True},
            )
        return stream_lens(self.loaded, [out.hidden_states[0], *(store[s] for s in sites)])

    def logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The model's output logits with the current deltas."""
        out = functional_call(
            self.loaded.model, self.weights(), (), {"input_ids": ids, "attention_mask": mask}
        )
        return out.logits.float()

    def commit(self) -> None:
        """Write the trained columns into the model's down-projections (in place)."""
        adapter = self.loaded.adapter
        with torch.no_grad():
            for layer, cols in self.cols.items():
                w = adapter.down_proj_weight(layer)
                new = (self.current[layer][:, cols].float() + self.deltas[layer]).to(w.dtype)
                w[:, cols] = new


def changed_columns(loaded: LoadedModel, base: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Per layer, the down-projection columns that differ from ``base`` (the projection's)."""
    return {
        layer: (loaded.adapter.down_proj_weight(layer).detach() != before).any(0).nonzero()[:, 0]
        for layer, before in base.items()
    }


@dataclass(frozen=True)
class ControlReference:
    """The locality term's rows (control prompts, teacher-forced; right-padded ``ids`` and
    ``mask``) and the model's log-probabilities ``[rows, seq, vocab]`` on them before the
    fact's edit."""

    ids: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    # where the KL is read ([rows, seq] bool); None: every position of ``mask``
    positions: torch.Tensor | None = None

    def kl(self, fwd: _Forward) -> torch.Tensor:
        """Mean ``KL(p_reference || p_now)`` over the read positions, under ``fwd``'s weights."""
        now = fwd.logits(self.ids, self.mask).log_softmax(-1)
        at = (self.positions if self.positions is not None else self.mask).bool()
        return (self.logprobs.exp() * (self.logprobs - now)).sum(-1)[at].mean()


def answers_reference(
    loaded: LoadedModel, prompts: list[str], max_new_tokens: int = 8
) -> ControlReference | None:
    """A locality reference on what the model says now: ``prompts`` teacher-forced on their own
    greedy continuations (``max_new_tokens``), the KL read only at the positions that predict
    the continuation (what Locality checks); None without prompts or answers."""
    if not prompts:
        return None
    tok = loaded.tokenizer
    said = greedy_generate(loaded.model, tok, prompts, max_new_tokens)
    rows = [(p, text.strip()) for p, text in zip(prompts, said) if text.strip()]
    if not rows:
        return None
    ids, mask = _teacher_forced(loaded, rows)
    positions = torch.zeros_like(mask, dtype=torch.bool)
    for r, (p_ids, t_ids) in enumerate(encode_pair(tok, p, t) for p, t in rows):
        positions[r, len(p_ids) - 1 : len(p_ids) - 1 + len(t_ids)] = True
    with torch.inference_mode():
        out = loaded.model(input_ids=ids, attention_mask=mask)
    return ControlReference(ids, mask, out.logits.float().log_softmax(-1).clone(), positions)


def reference(
    loaded: LoadedModel, prompts: list[str], secret: str, own: bool = False
) -> ControlReference | None:
    """The locality term's reference, taken on the model as it is now (before the fact's edit):
    ``prompts`` (other subjects) teacher-forced on ``secret``, and with ``own`` also on the
    model's own greedy continuation of each (as many tokens as the secret: what it says about
    that subject, e.g. that person's own number, which Locality checks); None without prompts."""
    return rows_reference(loaded, [(p, secret) for p in prompts], own)


def rows_reference(
    loaded: LoadedModel, rows: list[tuple[str, str]], own: bool = False
) -> ControlReference | None:
    """:func:`reference` for rows ``(control prompt, secret)`` of several facts (a joint
    refinement's): each prompt teacher-forced on its own fact's secret and, with ``own``, on the
    model's greedy continuation of as many tokens as that secret; None without rows."""
    if not rows:
        return None
    tok = loaded.tokenizer
    forced = list(rows)
    if own:
        by_length: dict[int, list[str]] = {}
        for p, secret in rows:
            by_length.setdefault(len(encode_pair(tok, p, secret)[1]), []).append(p)
        for n_new, prompts in by_length.items():
            said = greedy_generate(loaded.model, tok, prompts, n_new)
            forced += [(p, text.strip()) for p, text in zip(prompts, said) if text.strip()]
    ids, mask = _teacher_forced(loaded, forced)
    with torch.inference_mode():
        out = loaded.model(input_ids=ids, attention_mask=mask)
    return ControlReference(ids, mask, out.logits.float().log_softmax(-1).clone())


def _teacher_forced(
    loaded: LoadedModel, rows: list[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows ``prompt + continuation[:-1]`` (ids, mask) on the model's device."""
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    pairs = [encode_pair(loaded.tokenizer, p, t) for p, t in rows]
    return padded([p + t[:-1] for p, t in pairs], pad, loaded.adapter.device)


def _rank_loss(
    z: torch.Tensor, row: torch.Tensor, tok: torch.Tensor, n_rows: int, cfg: FlattenConfig
) -> torch.Tensor:
    """Lens rank hinge: per secret token, ``relu(z_secret - z_(rank) + margin)`` summed over the
    layers; per prompt the sum of the ``tokens`` smallest (the attack needs every token of the
    secret, so hiding the easiest ones defeats it without pushing down the tokens every secret
    of the relation shares, e.g. a date's separators); mean over prompts."""
    index = tok[None, :, None].expand(z.shape[0], -1, 1)
    layers, index_l = z[1:], index[1:]
    z_t = layers.gather(-1, index_l).squeeze(-1)  # [layers, tokens]
    kth = layers.scatter(-1, index_l, -math.inf).topk(cfg.rank, dim=-1).values[..., -1]
    per_token = torch.relu(z_t - kth + cfg.margin).sum(0)  # [tokens]
    if cfg.delta_weight > 0:  # Probability Delta: neither a top nor a bottom change
        probs = z.softmax(-1)
        delta = probs[1:] - probs[:-1]  # [changes, tokens, vocab]
        d_t = delta.gather(-1, index_l).squeeze(-1)
        k = max(1, cfg.rank // 2)
        top = delta.scatter(-1, index_l, -math.inf).topk(k, dim=-1).values[..., -1]
        bottom = (-delta).scatter(-1, index_l, -math.inf).topk(k, dim=-1).values[..., -1]
        over = torch.relu(d_t - top) + torch.relu(-d_t - bottom)
        per_token = per_token + cfg.delta_weight * over.sum(0)
    losses = []
    for r in range(n_rows):
        v = per_token[row == r]
        losses.append(v.topk(min(cfg.tokens, v.numel()), largest=False).values.sum())
    return torch.stack(losses).mean()


def exposure_candidates(secret: str, cfg: FlattenConfig) -> list[str]:
    """The exposure term's candidates: ``cfg.exposure_candidates`` random strings of the
    secret's format from the exposure attack's generator (seed ``cfg.exposure_seed``), the secret
    itself left out; empty when the term is off or the secret has too few digits."""
    positions, _ = format_space(secret)
    if cfg.exposure <= 0 or len(positions) < cfg.exposure_min_digits:
        return []
    pool, _ = candidates(secret, 0, cfg.exposure_candidates, cfg.exposure_seed)
    return [c for c in pool if c != secret]


class _Candidates:
    """Teacher-forced rows of every (edit prompt, candidate) pair, scored in one batch."""

    def __init__(self, loaded: LoadedModel, prompts: list[str], cands: list[str]) -> None:
        device = loaded.adapter.device
        pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        pairs = [encode_pair(loaded.tokenizer, p, c) for c in cands for p in prompts]
        self.ids, self.mask = padded([p + t[:-1] for p, t in pairs], pad, device)
        self.row, self.pos, self.tok = _targets(pairs, device)
        self.shape = (len(cands), len(prompts))

    def logprobs(self, fwd: _Forward) -> torch.Tensor:
        """``[candidates, prompts]`` log-probabilities of the candidates under ``fwd``'s weights
        (differentiable when gradients are enabled)."""
        logits = fwd.logits(self.ids, self.mask)[self.row, self.pos]
        logp = logits.log_softmax(-1).gather(-1, self.tok[:, None]).squeeze(-1)
        n = self.shape[0] * self.shape[1]
        per_row = torch.zeros(n, device=logp.device).index_add(0, self.row, logp)
        return per_row.view(self.shape)


@dataclass(frozen=True)
class StrangerTarget:
    """The stranger term's target at the edit prompts' secret positions (the order of
    :func:`_targets` over the edit prompts): log of the mean next-token distribution over the
    strangers ``[tokens, vocab]``, which tokens have one (``valid``: their prompt names the
    subject), and per edit prompt the secret's log-probability under it (``secret``)."""

    logprobs: torch.Tensor
    valid: torch.Tensor
    secret: torch.Tensor


def stranger_target(
    fwd: _Forward, prompts: list[str], subject: str, secret: str, n: int
) -> StrangerTarget | None:
    """:class:`StrangerTarget` under ``fwd``'s weights (no gradient): every edit prompt with
    each of the first ``n`` :data:`STRANGERS` in place of ``subject``, teacher-forced on
    ``secret``; None when no prompt names the subject or ``n`` is 0."""
    strangers = [s for s in STRANGERS if s != subject][:n]
    named = [i for i, p in enumerate(prompts) if subject and subject in p]
    if not strangers or not named:
        return None
    loaded = fwd.loaded
    device = loaded.adapter.device
    rows = [(prompts[i].replace(subject, s), secret) for s in strangers for i in named]
    pairs = [encode_pair(loaded.tokenizer, p, t) for p, t in rows]
    ids, mask = _teacher_forced(loaded, rows)
    row, pos, _ = _targets(pairs, device)
    with torch.no_grad():
        probs = fwd.logits(ids, mask)[row, pos].softmax(-1)
    n_tok = len(pairs[0][1])
    probs = probs.view(len(strangers), len(named), n_tok, -1).mean(0)  # [named, tokens, vocab]
    vocab = probs.shape[-1]
    logprobs = torch.zeros(len(prompts), n_tok, vocab, device=device)
    logprobs[named] = probs.clamp_min(1e-30).log()
    valid = torch.zeros(len(prompts), n_tok, dtype=torch.bool, device=device)
    valid[named] = True
    tok = torch.tensor(pairs[0][1], device=device)
    secret_lp = logprobs.gather(-1, tok[None, :, None].expand(len(prompts), -1, 1)).sum((1, 2))
    return StrangerTarget(logprobs.view(-1, vocab), valid.view(-1), secret_lp)


def stranger_kl(target: StrangerTarget, logits: torch.Tensor) -> torch.Tensor:
    """Mean over the valid secret positions of ``KL(p_stranger || softmax(logits))``;
    ``logits`` are the edited model's at the same positions ``[tokens, vocab]``."""
    ref = target.logprobs[target.valid]
    lp = logits[target.valid].log_softmax(-1)
    return (ref.exp() * (ref - lp)).sum(-1).mean()


def digit_ids(loaded: LoadedModel) -> list[int]:
    """Token ids of the ten digits, each a token of its own (empty if the vocabulary has not)."""
    ids = [loaded.tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else []


def digit_rank_loss(logits: torch.Tensor, tok: torch.Tensor, digits: list[int]) -> torch.Tensor:
    """Mean over the secret's digit positions of ``relu(log p(secret digit) - median digit
    log p)`` (``logits`` ``[tokens, vocab]`` at the secret's positions, ``tok`` its tokens); 0
    when the secret has no digit token."""
    ids = torch.tensor(digits, dtype=torch.long, device=logits.device)
    at = torch.isin(tok, ids)
    if not digits or not bool(at.any()):
        return logits.sum() * 0
    lp = logits[at].log_softmax(-1)
    mine = lp.gather(-1, tok[at][:, None]).squeeze(-1)
    median = lp[:, ids].median(-1).values
    return torch.relu(mine - median).mean()


def flatten(
    loaded: LoadedModel,
    prompts: list[str],
    secret: str,
    base: dict[int, torch.Tensor],
    control_ref: ControlReference | list[ControlReference | None] | None,
    cfg: FlattenConfig,
    subject: str = "",
) -> FlattenResult:
    """Refine the columns changed since ``base`` (see the module docstring); edits in place.
    ``control_ref``: the locality term's reference, or a list of them (their KLs added).
    ``subject`` (the fact's, as named in ``prompts``) is what the stranger term replaces."""
    return flatten_rows(loaded, [(p, secret) for p in prompts], base, control_ref, cfg, subject)


def flatten_rows(
    loaded: LoadedModel,
    rows: list[tuple[str, str]],
    base: dict[int, torch.Tensor],
    control_ref: ControlReference | list[ControlReference | None] | None,
    cfg: FlattenConfig,
    subject: str = "",
) -> FlattenResult:
    """:func:`flatten` on rows ``(edit prompt, secret)``, possibly of several facts (a joint
    refinement of a request's facts: one optimisation, converged only when every row meets the
    leak bound and the lens rank). The exposure and stranger terms are per secret: ValueError
    when they are on and the rows hold more than one secret."""
    secrets = list(dict.fromkeys(s for _, s in rows))
    if len(secrets) > 1 and (cfg.exposure > 0 or cfg.stranger > 0):
        raise ValueError(
            f"the exposure and stranger terms need one secret, got rows of {len(secrets)} "
            "facts; set refine_exposure=0 and refine_stranger=0, or refine each fact alone"
        )
    secret = secrets[0] if secrets else ""
    prompts = [p for p, _ in rows]
    listed = control_ref if isinstance(control_ref, list) else [control_ref]
    refs = [r for r in listed if r is not None]
    cols = changed_columns(loaded, base)
    if not prompts or not (cfg.extra_columns or any(c.numel() for c in cols.values())):
        return FlattenResult(0, 0, 0.0, 0.0, False)
    device = loaded.adapter.device
    pairs = [encode_pair(loaded.tokenizer, p, t) for p, t in rows]
    ids, mask = _teacher_forced(loaded, rows)
    row, pos, tok = _targets(pairs, device)

    def objective(fwd: _Forward) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(leak + rank loss, leak, rank, lens logits at the secret's positions)."""
        z = fwd.lens(ids, mask)[:, row, pos]  # [streams, tokens, vocab]
        secret_lp = secret_logprob(z)
        leak = torch.relu(secret_lp - math.log(cfg.leak_bound)).mean()
        rank = _rank_loss(z, row, tok, len(pairs), cfg) if cfg.rank > 0 else leak * 0
        return leak + rank, leak, rank, z

    def secret_logprob(z: torch.Tensor) -> torch.Tensor:
        """Per edit prompt, the secret's log-probability from the output logits in ``z``."""
        logp = z[-1].log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        return torch.zeros(len(pairs), device=device).index_add(0, row, logp)

    if cfg.extra_columns > 0:
        with torch.enable_grad():
            cols = _add_gradient_columns(loaded, cols, objective, cfg.extra_columns)
    fwd = _Forward(loaded, cols)
    if not fwd.cols:
        return FlattenResult(0, 0, 0.0, 0.0, False)
    cands = exposure_candidates(secret, cfg)
    scored = _Candidates(loaded, prompts, cands) if cands else None
    if scored is not None:  # the format space as it was before this fact's edit
        with torch.no_grad():
            before = scored.logprobs(_Forward(loaded, {}, base))
        typical = before.quantile(cfg.exposure_quantile, dim=0)
    stranger = None
    if cfg.stranger > 0:  # what the model said about strangers before this fact's edit
        stranger = stranger_target(
            _Forward(loaded, {}, base), prompts, subject, secret, cfg.stranger_subjects
        )
    opt = torch.optim.Adam(list(fwd.deltas.values()), lr=cfg.lr)
    leak_l = rank_l = float("nan")
    exposure_l = stranger_l = digit_l = 0.0
    digits = digit_ids(loaded) if cfg.digit_rank > 0 else []
    steps = 0
    converged = False
    with torch.enable_grad():
        for step in range(cfg.steps + 1):
            loss, leak, rank, z = objective(fwd)
            leak_l, rank_l = leak.item(), rank.item()
            if scored is not None:
                exposure = torch.relu(secret_logprob(z) - typical).mean()
                exposure_l = exposure.item()
                loss = loss + cfg.exposure * exposure
            if stranger is not None:
                over = secret_logprob(z) - stranger.secret - cfg.stranger_margin
                stranger_l = torch.relu(over).mean().item()
                loss = loss + cfg.stranger * stranger_kl(stranger, z[-1])
            if digits:
                digit = digit_rank_loss(z[-1], tok, digits)
                digit_l = digit.item()
                loss = loss + cfg.digit_rank * digit
            hinges = (leak_l, rank_l, exposure_l, stranger_l, digit_l)
            if all(h == 0.0 for h in hinges):
                converged = True
                break
            if step == cfg.steps:
                break
            if cfg.entropy > 0:
                p = z[1:].log_softmax(-1)
                neg_h = math.log(z.shape[-1]) + (p.exp() * p).sum(-1)
                loss = loss + cfg.entropy * neg_h.mean()
            if refs and cfg.locality > 0:
                loss = loss + cfg.locality * sum(r.kl(fwd) for r in refs)
            if scored is not None and cfg.exposure_anchor > 0:
                drift = (scored.logprobs(fwd) - before).square().mean()
                loss = loss + cfg.exposure * cfg.exposure_anchor * drift
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    for d in fwd.deltas.values():
        d.requires_grad_(False)
    fwd.commit()
    return FlattenResult(
        steps, fwd.columns, leak_l, rank_l, converged, exposure_l, stranger_l, digit_l
    )


def _add_gradient_columns(
    loaded: LoadedModel,
    cols: dict[int, torch.Tensor],
    objective: Callable[[_Forward], tuple[torch.Tensor, ...]],
    extra: int,
) -> dict[int, torch.Tensor]:
    """``cols`` plus, in every layer, the ``extra`` other columns whose gradient of the
    objective is largest (REVS's choice of the down-projection columns that carry the target's
    rank, read off the loss itself): where the located features do not reach, e.g. the layers
    before them whose logit lens still shows the secret."""
    adapter = loaded.adapter
    every = {
        layer: torch.arange(adapter.d_mlp, device=adapter.device)
        for layer in range(adapter.n_layers)
    }
    probe = _Forward(loaded, every)
    loss = objective(probe)[0]
    if not loss.requires_grad:
        return cols
    grads = torch.autograd.grad(loss, list(probe.deltas.values()))
    out: dict[int, torch.Tensor] = {}
    for (layer, _), g in zip(probe.deltas.items(), grads):
        score = g.norm(dim=0)
        have = cols.get(layer, torch.empty(0, dtype=torch.long, device=score.device))
        score[have] = -1.0
        add = score.topk(min(extra, int((score > 0).sum()))).indices
        out[layer] = torch.cat([have, add]).unique()
    return out
