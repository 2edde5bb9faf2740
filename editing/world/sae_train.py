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


def train_topk_sae(
    acts: torch.Tensor,
    recipe: SAERecipe,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> TrainedSAE:
    """Train a TopK SAE on ``acts`` ([n_tokens, d_in], float32) deterministically for ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n, d_in = acts.shape
    d_sae = recipe.expansion * d_in
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec = W_dec.to(acts.device).requires_grad_(True)
    W_enc = W_dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(d_sae, device=acts.device, requires_grad=True)
    b_dec = acts.median(dim=0).values.clone().requires_grad_(True)
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=recipe.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(d_sae, dtype=torch.long, device=acts.device)
    scale = (acts - acts.mean(0)).pow(2).sum(-1).mean()  # normalise losses to FVU units
    for step in range(recipe.steps):
        idx = torch.randint(0, n, (recipe.batch_size,), generator=gen).to(acts.device)
        x = acts[idx]
        pre = (x - b_dec) @ W_enc + b_enc
        vals, top = pre.topk(recipe.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top, vals.relu())
        recon = f @ W_dec + b_dec
        err = x - recon
        loss = err.pow(2).sum(-1).mean() / scale
        fired = torch.zeros(d_sae, dtype=torch.bool, device=acts.device)
        fired[top[vals > 0]] = True
        last_fired = torch.where(fired, torch.zeros_like(last_fired), last_fired + 1)
        dead = last_fired > recipe.dead_after
        if dead.any():  # auxiliary loss: dead latents learn to explain the residual error
            aux_pre = pre.masked_fill(~dead, float("-inf"))
            ak = min(recipe.aux_k, int(dead.sum()))
            avals, atop = aux_pre.topk(ak, dim=-1)
            fa = torch.zeros_like(pre).scatter(-1, atop, avals.relu())
            aux = (err.detach() - fa @ W_dec).pow(2).sum(-1).mean() / scale
            loss = loss + recipe.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep decoder rows unit-norm: remove the radial gradient
            W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
        lr_scale = min(1.0, 10 * (recipe.steps - step) / recipe.steps)  # linear decay, last 10%
        for g in opt.param_groups:
            g["lr"] = recipe.lr * lr_scale
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
        if progress is not None:
            progress(step)
    return TrainedSAE(
        W_enc=W_enc.detach(),
        b_enc=b_enc.detach(),
        W_dec=W_dec.detach(),
        b_dec=b_dec.detach(),
        k=recipe.k,
    )


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
