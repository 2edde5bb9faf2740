"""Train TopK sparse autoencoders on a model's activations and save them in sae-lens's format.

A TopK SAE keeps the ``k`` largest pre-activations (ReLU'd): ``L0 <= k`` by construction. Training
is plain Adam on the reconstruction MSE with unit-norm decoder rows and an auxiliary loss that
revives dead latents (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"). The result is
written with ``sae_lens.TopKSAE.save_model`` so ``SAE.load_from_disk`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class SAERecipe:
    """SAE training settings (part of the world's cache key)."""

    expansion: int = 4
    k: int = 16
    steps: int = 2000
    batch_size: int = 1024
    lr: float = 2e-3
    aux_k: int = 64
    aux_coef: float = 1 / 32
    dead_after: int = 200  # steps without firing before a latent counts as dead


@dataclass
class TrainedSAE:
    """Weights of a trained TopK SAE in sae-lens's orientation."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_dec: torch.Tensor  # [d_in]
    k: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """TopK encoding, identical to sae-lens's ``TopKSAE.encode``."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``f @ W_dec + b_dec``."""
        return f @ self.W_dec + self.b_dec


def fvu_and_l0(sae: TrainedSAE, acts: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
    """Fraction of variance unexplained and mean L0 of ``sae`` on ``acts`` ([n, d_in])."""
    sse = 0.0
    l0 = 0.0
    with torch.no_grad():
        for i in range(0, len(acts), chunk):
            x = acts[i : i + chunk]
            f = sae.encode(x)
            sse += (sae.decode(f) - x).pow(2).sum().item()
            l0 += (f > 0).sum().item()
    total = (acts - acts.mean(0)).pow(2).sum().item()
    return sse / total, l0 / len(acts)


class TopKTrainer:
    """Step-by-step TopK SAE training on ``acts`` ([n_tokens, d_in], float32), checkpointable.

    ``state_dict()`` / ``load_state_dict()`` capture everything a run depends on (weights, Adam
    state, dead-latent counters, the sampling generator and the step), so a run stopped after a
    checkpoint and resumed gives the same SAE as an uninterrupted one. ``d_sae`` defaults to
    ``recipe.expansion * d_in``.
    """

    def __init__(
        self, acts: torch.Tensor, recipe: SAERecipe, seed: int, d_sae: int | None = None
    ) -> None:
        self.acts = acts
        self.recipe = recipe
        self.gen = torch.Generator().manual_seed(seed)
        d_in = acts.shape[1]
        d_sae = d_sae or recipe.expansion * d_in
        W_dec = torch.randn(d_sae, d_in, generator=self.gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = W_dec.to(acts.device).requires_grad_(True)
        self.W_enc = self.W_dec.detach().T.clone().requires_grad_(True)
        self.b_enc = torch.zeros(d_sae, device=acts.device, requires_grad=True)
        self.b_dec = acts.median(dim=0).values.clone().requires_grad_(True)
        self.opt = torch.optim.Adam(
            [self.W_enc, self.b_enc, self.W_dec, self.b_dec], lr=recipe.lr, betas=(0.9, 0.999)
        )
        self.last_fired = torch.zeros(d_sae, dtype=torch.long, device=acts.device)
        self.scale = (acts - acts.mean(0)).pow(2).sum(-1).mean()  # losses in FVU units
        self.step = 0

    @property
    def done(self) -> bool:
        """Whether all ``recipe.steps`` steps have run."""
        return self.step >= self.recipe.steps

    def train_step(self) -> float:
        """One Adam step on a random batch; returns the reconstruction loss (FVU units)."""
        recipe, acts = self.recipe, self.acts
        W_enc, b_enc, W_dec, b_dec = self.W_enc, self.b_enc, self.W_dec, self.b_dec
        d_sae = W_dec.shape[0]
        idx = torch.randint(0, len(acts), (recipe.batch_size,), generator=self.gen)
        x = acts[idx.to(acts.device)]
        pre = (x - b_dec) @ W_enc + b_enc
        vals, top = pre.topk(recipe.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top, vals.relu())
        err = x - (f @ W_dec + b_dec)
        loss = err.pow(2).sum(-1).mean() / self.scale
        recon = float(loss.detach())
        fired = torch.zeros(d_sae, dtype=torch.bool, device=acts.device)
        fired[top[vals > 0]] = True
        self.last_fired = torch.where(fired, torch.zeros_like(self.last_fired), self.last_fired + 1)
        dead = self.last_fired > recipe.dead_after
        if dead.any():  # auxiliary loss: dead latents learn to explain the residual error
            aux_pre = pre.masked_fill(~dead, float("-inf"))
            ak = min(recipe.aux_k, int(dead.sum()))
            avals, atop = aux_pre.topk(ak, dim=-1)
            fa = torch.zeros_like(pre).scatter(-1, atop, avals.relu())
            aux = (err.detach() - fa @ W_dec).pow(2).sum(-1).mean() / self.scale
            loss = loss + recipe.aux_coef * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows unit-norm: remove the radial gradient
            W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
        lr_scale = min(1.0, 10 * (recipe.steps - self.step) / recipe.steps)  # decay, last 10%
        for g in self.opt.param_groups:
            g["lr"] = recipe.lr * lr_scale
        self.opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.step += 1
        return recon

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors on the CPU; ``torch.save``-able)."""
        return {
            "step": self.step,
            "params": [p.detach().cpu() for p in (self.W_enc, self.b_enc, self.W_dec, self.b_dec)],
            "opt": self.opt.state_dict(),
            "last_fired": self.last_fired.cpu(),
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a trainer with the same acts, recipe and seed."""
        with torch.no_grad():
            for p, saved in zip(
                (self.W_enc, self.b_enc, self.W_dec, self.b_dec), state["params"], strict=True
            ):
                p.copy_(saved)
        self.opt.load_state_dict(state["opt"])
        self.last_fired = state["last_fired"].to(self.acts.device)
        self.gen.set_state(state["gen"])
        self.step = int(state["step"])

    def result(self) -> TrainedSAE:
        """The SAE as trained so far."""
        return TrainedSAE(
            W_enc=self.W_enc.detach(),
            b_enc=self.b_enc.detach(),
            W_dec=self.W_dec.detach(),
            b_dec=self.b_dec.detach(),
            k=self.recipe.k,
        )


def train_topk_sae(
    acts: torch.Tensor,
    recipe: SAERecipe,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> TrainedSAE:
    """Train a TopK SAE on ``acts`` ([n_tokens, d_in], float32) deterministically for ``seed``."""
    trainer = TopKTrainer(acts, recipe, seed)
    while not trainer.done:
        step = trainer.step
        trainer.train_step()
        if progress is not None:
            progress(step)
    return trainer.result()


def save_sae_lens(sae: TrainedSAE, directory: Path, hook_name: str, model_name: str) -> None:
    """Write ``sae`` in sae-lens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``)."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_in, d_sae = sae.W_enc.shape
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=sae.k,
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=True,
        metadata=SAEMetadata(hook_name=hook_name, model_name=model_name),
    )
    out = TopKSAE(cfg)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc.cpu())
        out.b_enc.copy_(sae.b_enc.cpu())
        out.W_dec.copy_(sae.W_dec.cpu())
        out.b_dec.copy_(sae.b_dec.cpu())
    directory.mkdir(parents=True, exist_ok=True)
    out.save_model(directory)
