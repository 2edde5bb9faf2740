"""Shared pieces of the knowledge-microscope analyses: fact sets, dictionaries, ΔProb, plots, HTML.

A *dictionary* is any set of directions over one site's activation space with an encoder: an SAE
(``f = encode(x)``, direction ``W_dec[i]``), PCA or ICA (``a = U (x - mu)``, direction ``M[:, i]``)
or random unit directions. Every analysis ranks a dictionary's units by attribution
``a_i * (m_i . grad log P(target))`` at the last prompt token and ablates the top ones there.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.locate import _batch, _target_logprob
from editing.models import LoadedModel
from editing.relations import get_relation
from editing.scoring import padded
from editing.world.corpus import round_robin
from editing.world.demo_facts import demo_world_of


@dataclass(frozen=True)
class AnalysisFact:
    """A fact with the prompts the analyses use (edit prompts; control prompts of other people)."""

    subject: str
    relation: str
    target: str
    prompts: list[str]
    controls: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (targets are demo-world fictions, safe to report)."""
        return {"subject": self.subject, "relation": self.relation, "target": self.target}


def demo_world(loaded: LoadedModel):
    """The demo world of ``loaded`` (never rebuilt here); ConfigError for non-demo models."""
    return demo_world_of(loaded.entry, loaded.home, purpose="the analysis", build=False)


def pick_facts(
    loaded: LoadedModel, n: int, relation: str | None = None, seed: int = 0
) -> list[AnalysisFact]:
    """``n`` private facts of the demo world, round-robin over relations (or of one ``relation``).

    Control prompts are the same relation's edit templates with three other people.
    """
    world = demo_world(loaded)
    facts = [f for f in world.private_facts() if relation is None or f.relation == relation]
    rng = random.Random(seed)
    picked = round_robin(facts, n, rng)
    out = []
    for f in picked:
        rel = get_relation(f.relation)
        others = [p for p in world.people if p != f.subject]
        controls = [q for p in rng.sample(others, 3) for q in rel.edit_prompts(p)]
        out.append(
            AnalysisFact(f.subject, f.relation, f.target, rel.edit_prompts(f.subject), controls)
        )
    return out


# --------------------------------------------------------------------------- model passes


def site_acts_grads(
    loaded: LoadedModel, prompts: Sequence[str], target: str, site: str, layers: Sequence[int]
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Activation ``x`` and gradient of log P(target) (teacher forced) at the last prompt token.

    Returns ``(x, g)``, each ``layer -> [n_prompts, dim]`` (float32).
    """
    adapter, model = loaded.adapter, loaded.model
    ids, mask, last, tgt = _batch(loaded, prompts, target, with_target=True)
    rows = torch.arange(len(prompts))
    keys = [(site, layer) for layer in layers]
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with adapter.capture(keys, detach=False) as acts:
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits
            for k in keys:
                acts[k].retain_grad()
            total, _ = _target_logprob(logits, last, tgt)
            total.backward()
    xs = {layer: acts[(site, layer)][rows, last].detach().float() for layer in layers}
    gs = {layer: acts[(site, layer)].grad[rows, last].float() for layer in layers}
    return xs, gs


Edit = Callable[[torch.Tensor], torch.Tensor]  # [n, dim] at the last token -> same


@torch.inference_mode()
def target_probs(
    loaded: LoadedModel,
    prompts: Sequence[str],
    target: str,
    edits: Sequence[tuple[str, int, Edit]] = (),
) -> np.ndarray:
    """P(target | prompt) per prompt (teacher forced), with ``edits`` applied at the last token."""
    ids, mask, last, tgt = _batch(loaded, prompts, target, with_target=True)
    rows = torch.arange(len(prompts))

    def wrap(fn: Edit) -> Callable[[torch.Tensor], torch.Tensor]:
        def patch(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[rows, last] = fn(x[rows, last].float()).to(x.dtype)
            return x

        return patch

    with ExitStack() as stack:
        for site, layer, fn in edits:
            stack.enter_context(loaded.adapter.patch(site, layer, wrap(fn)))
        logits = loaded.model(input_ids=ids, attention_mask=mask).logits
    _, per_row = _target_logprob(logits, last, tgt)
    return per_row.exp().cpu().numpy()


def delta_prob(before: np.ndarray, after: np.ndarray) -> float:
    """Mean over prompts of ``(P_before - P_after) / P_before``."""
    return float(np.mean((before - after) / np.maximum(before, 1e-12)))


@torch.inference_mode()
def collect_last_token(
    loaded: LoadedModel, prompts: Sequence[str], keys: Sequence[tuple[str, int]], batch: int = 128
) -> dict[tuple[str, int], torch.Tensor]:
    """Activations at the last token of each prompt for each ``(site, layer)``: ``[n, dim]``."""
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in keys}
    for s in range(0, len(prompts), batch):
        rows = [tok(p)["input_ids"] for p in prompts[s : s + batch]]
        ids, mask = padded(rows, pad, loaded.adapter.device)
        last = torch.tensor([len(r) - 1 for r in rows])
        with loaded.adapter.capture(keys) as acts:
            loaded.model(input_ids=ids, attention_mask=mask)
        for k in keys:
            out[k].append(acts[k][torch.arange(len(rows)), last].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def corpus_prompts(loaded: LoadedModel, n_people: int, seed: int = 0) -> list[str]:
    """Edit prompts of every private relation for ``n_people`` people of the demo world."""
    world = demo_world(loaded)
    rng = random.Random(seed)
    people = rng.sample(world.people, min(n_people, len(world.people)))
    rels = sorted({f.relation for f in world.private_facts()})
    return [q for p in people for r in rels for q in get_relation(r).edit_prompts(p)]


# --------------------------------------------------------------------------- dictionaries


class Dictionary:
    """Units over a site: ``encode(x) -> a [n, m]`` and directions ``dirs [m, d]``.

    Ablating units ``idx`` subtracts their contributions ``sum_i a_i dirs[i]`` (for an SAE this is
    decoding while keeping the error term), unless ``project`` is set, when the component of
    ``x - mean`` in the span of the directions is removed (random directions).
    """

    def __init__(
        self,
        name: str,
        dirs: torch.Tensor,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        project: bool = False,
        mean: torch.Tensor | None = None,
    ) -> None:
        self.name = name
        self.dirs = dirs.float()
        self.encoder = encoder
        self.project = project
        self.mean = mean

    @property
    def size(self) -> int:
        """Number of units."""
        return int(self.dirs.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Unit activations ``[n, m]``."""
        return self.encoder(x.float()).float()

    def attribution(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``a_i * (dirs[i] . g)`` per prompt: ``[n, m]``."""
        return self.encode(x) * (g.float() @ self.dirs.T)

    def ablate(self, idx: Sequence[int]) -> Edit:
        """The last-token edit removing units ``idx``."""
        sel = torch.as_tensor(list(idx), dtype=torch.long)
        if self.project:
            q, _ = torch.linalg.qr(self.dirs[sel].T)  # [d, k] orthonormal
            mu = self.mean if self.mean is not None else torch.zeros(self.dirs.shape[1])

            def proj(x: torch.Tensor) -> torch.Tensor:
                return x - ((x - mu) @ q) @ q.T

            return proj

        def sub(x: torch.Tensor) -> torch.Tensor:
            return x - self.encode(x)[:, sel] @ self.dirs[sel]

        return sub


def sae_dictionary(sae: Any, name: str = "SAE") -> Dictionary:
    """A sae-lens SAE (or a :class:`~editing.world.sae_train.TrainedSAE`) as a Dictionary."""
    return Dictionary(name, sae.W_dec.detach(), lambda x: sae.encode(x.to(sae.W_dec.dtype)))


def pca_dictionary(acts: torch.Tensor) -> Dictionary:
    """PCA of ``acts`` (all ``d`` components): ``a = V^T (x - mu)``, directions ``V``."""
    x = acts.double().numpy()
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    v = torch.from_numpy(vt).float()
    m = torch.from_numpy(mu).float()
    return Dictionary("PCA", v, lambda z: (z - m) @ v.T, mean=m)


def fastica(
    x: np.ndarray, iters: int = 200, tol: float = 1e-5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric FastICA (logcosh) in numpy. Returns ``(unmixing U [m, d], mixing M [d, m], mu)``.

    ``s = U (x - mu)`` are the independent components and ``x - mu = M s``.
    """
    mu = x.mean(0)
    xc = x - mu
    cov = xc.T @ xc / len(xc)
    evals, evecs = np.linalg.eigh(cov)
    keep = evals > 1e-8 * evals.max()
    evals, evecs = evals[keep], evecs[:, keep]
    k_white = evecs / np.sqrt(evals)  # [d, m]
    z = xc @ k_white  # whitened [n, m]
    m = z.shape[1]
    rng = np.random.default_rng(seed)
    w = np.linalg.qr(rng.standard_normal((m, m)))[0]

    def sym_decorrelate(w: np.ndarray) -> np.ndarray:
        s, u = np.linalg.eigh(w @ w.T)
        return u @ np.diag(1.0 / np.sqrt(np.clip(s, 1e-12, None))) @ u.T @ w

    for _ in range(iters):
        wz = z @ w.T  # [n, m]
        gwz = np.tanh(wz)
        g_prime = 1.0 - gwz**2
        w_new = (gwz.T @ z) / len(z) - g_prime.mean(0)[:, None] * w
        w_new = sym_decorrelate(w_new)
        done = np.max(np.abs(np.abs(np.einsum("ij,ij->i", w_new, w)) - 1.0)) < tol
        w = w_new
        if done:
            break
    unmix = w @ k_white.T  # [m, d]
    mix = np.linalg.pinv(unmix)  # [d, m]
    return unmix, mix, mu


def ica_dictionary(acts: torch.Tensor, seed: int = 0) -> Dictionary:
    """FastICA of ``acts``: ``a = U (x - mu)``, directions the mixing columns ``M[:, i]``."""
    unmix, mix, mu = fastica(acts.double().numpy(), seed=seed)
    u = torch.from_numpy(unmix).float()
    m = torch.from_numpy(mu).float()
    return Dictionary(
        "ICA", torch.from_numpy(mix.T.copy()).float(), lambda z: (z - m) @ u.T, mean=m
    )


def random_dictionary(acts: torch.Tensor, n: int, seed: int = 0) -> Dictionary:
    """``n`` random unit directions; ablation removes the projection of ``x - mu`` on their span."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(n, acts.shape[1], generator=gen)
    d = d / d.norm(dim=1, keepdim=True)
    mu = acts.float().mean(0)
    return Dictionary("random", d, lambda z: (z - mu) @ d.T, project=True, mean=mu)


def top_units(dic: Dictionary, x: torch.Tensor, g: torch.Tensor, k: int) -> list[int]:
    """The ``k`` units with the largest mean attribution over the prompts."""
    score = dic.attribution(x, g).mean(0)
    return score.topk(min(k, dic.size)).indices.tolist()


# --------------------------------------------------------------------------- stats


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d of ``a`` vs ``b`` (pooled standard deviation)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return float("nan")
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (1.0 when undefined)."""
    from scipy.stats import mannwhitneyu

    if len(a) == 0 or len(b) == 0 or (np.ptp(np.concatenate([a, b])) == 0):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def gaussian_overlap(mu1: float, s1: float, mu2: float, s2: float) -> float:
    """Overlap coefficient ``∫ min(N1, N2)`` of two Gaussians (numerical, on a fine grid)."""
    s1, s2 = max(s1, 1e-6), max(s2, 1e-6)
    lo = min(mu1 - 6 * s1, mu2 - 6 * s2)
    hi = max(mu1 + 6 * s1, mu2 + 6 * s2)
    t = np.linspace(lo, hi, 4001)

    def pdf(m: float, s: float) -> np.ndarray:
        return np.exp(-0.5 * ((t - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    return float(np.trapezoid(np.minimum(pdf(mu1, s1), pdf(mu2, s2)), t))


def finite(obj: Any) -> Any:
    """``obj`` with floats rounded to 6 digits and NaN/inf replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- output


@contextmanager
def figure(
    path: Path, ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6, 4)
) -> Iterator[Any]:
    """A matplotlib (Agg) figure saved to ``path`` as PNG on exit; yields the axes array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False
    )
    try:
        yield axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def write_results(out: Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``out/<name>/results.json`` and return its path."""
    path = out / name / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(result), indent=2, ensure_ascii=False) + "\n")
    return path


def write_index(out: Path, model_id: str) -> Path:
    """``out/index.html``: every analysis's plots and key numbers found under ``out``."""
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>featureedit knowledge microscope: {html.escape(model_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "pre{background:#f4f4f4;padding:8px;overflow:auto}</style></head><body>",
        f"<h1>Knowledge microscope: model {html.escape(model_id)}</h1>",
    ]
    for res in sorted(out.glob("*/results.json")):
        doc = json.loads(res.read_text())
        parts.append(f"<h2>{html.escape(res.parent.name)}</h2>")
        key = doc.get("summary", {})
        parts.append(f"<pre>{html.escape(json.dumps(key, indent=2))}</pre>")
        for png in sorted(res.parent.glob("*.png")):
            rel = f"{res.parent.name}/{png.name}"
            parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(rel)}'></p>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts))
    return path
