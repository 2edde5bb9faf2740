"""SAE recipe sweeps on a registered model: collect activations once, train recipes on them.

``featureedit sae train`` collects activations for every recipe it trains (cached by recipe), so
trying widths, batch sizes or step counts re-runs the model each time. This script separates the
two halves for recipe search:

    # resid_post and mlp_out at layers 8, 12, 16, one forward pass per batch
    python scripts/sae_sweep.py collect --model smollm2 --layers 8,12,16 \
        --tokens 150000 --eval-tokens 20000 --out /tmp/acts
    # one recipe at one site and layer; held-out FVU, L0 and dead latents every --every steps,
    # the SAE (sae-lens format, with quality.json) rewritten at each evaluation
    python scripts/sae_sweep.py train --acts /tmp/acts --site resid_post --layer 12 \
        --width 2304 --k 64 --batch-size 512 --steps 3000 --out /tmp/sae-l12

Positions are masked as ``sae train`` masks them (special tokens, attention sinks), jointly over
every site and layer collected. The text is the shipped training text
(:func:`editing.realdata.text.training_text`) unless ``--text`` names a file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from editing import sae_training as st
from editing.world.sae_train import SAERecipe, TopKTrainer, fvu_and_l0, save_sae_lens

SITES = ("resid_post", "mlp_out")


def collect(args: argparse.Namespace) -> None:
    """Save ``{(site, layer): [n, d]}`` for the train and held-out text under ``--out``."""
    from editing.models import load_model

    loaded = load_model(args.model, home=args.home)
    layers = [int(x) for x in args.layers.split(",")]
    train, held, _ = st.split_text(args.text)
    recipe = st.SAETrainRecipe()
    tok, adapter = loaded.tokenizer, loaded.adapter
    special = sorted(set(tok.all_special_ids))
    keys = [(s, layer) for s in SITES for layer in layers]
    stop_at = adapter.layer(max(layers))

    def stop(*_: object) -> None:
        raise st._StopForward

    def run(passages: list[str], max_tokens: int, tag: str) -> dict[tuple[str, int], torch.Tensor]:
        chunks: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in keys}
        kept, t0 = 0, time.time()
        windows = st.token_windows(tok, passages, recipe.context)
        while kept < max_tokens:
            batch = [w for _, w in zip(range(16), windows, strict=False)]
            if not batch:
                break
            width = max(len(w) for w in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id or 0, dtype=torch.long)
            att = torch.zeros_like(ids)
            for i, w in enumerate(batch):
                ids[i, : len(w)] = torch.tensor(w)
                att[i, : len(w)] = 1
            with torch.no_grad(), adapter.capture(keys) as acts:
                handle = stop_at.register_forward_hook(stop)
                try:
                    loaded.model(
                        input_ids=ids.to(adapter.device), attention_mask=att.to(adapter.device)
                    )
                except st._StopForward:
                    pass
                finally:
                    handle.remove()
            masks = [
                st.text_mask(
                    ids, att, special, acts[k].float().cpu().norm(dim=-1), recipe.sink_factor
                )
                for k in keys
            ]
            keep = torch.stack(masks).all(0)
            n = min(int(keep.sum()), max_tokens - kept)
            for k in keys:
                chunks[k].append(acts[k].float().cpu()[keep][:n].clone())
            kept += n
            print(tag, kept, f"{kept / (time.time() - t0):.0f} tok/s", flush=True)
        return {k: torch.cat(v) for k, v in chunks.items()}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(run(train, args.tokens, "train"), out / "train.pt")
    torch.save(run(held, args.eval_tokens, "held"), out / "heldout.pt")


def train(args: argparse.Namespace) -> None:
    """Train one recipe; print and save its figures at every evaluation."""
    key = (args.site, args.layer)
    tr = torch.load(Path(args.acts) / "train.pt")[key]
    he = torch.load(Path(args.acts) / "heldout.pt")[key]
    print(args.site, args.layer, "train", tuple(tr.shape), "held", tuple(he.shape), flush=True)
    recipe = SAERecipe(k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    trainer = TopKTrainer(tr, recipe, args.layer, d_sae=args.width)
    out, t0 = Path(args.out), time.time()
    probe = tr[: min(len(tr), 20_000)]
    while not trainer.done:
        loss = trainer.train_step()
        if trainer.step % args.every and not trainer.done:
            continue
        sae = trainer.result()
        fvu, l0 = fvu_and_l0(sae, he)
        with torch.no_grad():
            vals, idx = ((probe - sae.b_dec) @ sae.W_enc + sae.b_enc).topk(args.k, dim=-1)
            fired = torch.zeros(args.width, dtype=torch.bool)
            fired[idx[vals > 0]] = True
        doc = {
            "step": trainer.step,
            "fvu_train_batch": round(loss, 4),
            "fvu_heldout": round(fvu, 4),
            "l0": round(l0, 2),
            "dead_of_20k": int((~fired).sum()),
            "seconds": round(time.time() - t0),
        }
        print(json.dumps(doc), flush=True)
        save_sae_lens(sae, out, f"blocks.{args.layer}.hook_{args.site}", args.model)
        recipe_doc = {"width": args.width, "train_tokens": len(tr), "eval_tokens": len(he)}
        settings = {k: v for k, v in vars(args).items() if k != "func"}
        quality = {**doc, **settings, **recipe_doc}
        (out / "quality.json").write_text(json.dumps(quality, indent=1))


def main() -> None:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--model", required=True)
    c.add_argument("--home", default=None)
    c.add_argument("--layers", required=True)
    c.add_argument("--tokens", type=int, default=150_000)
    c.add_argument("--eval-tokens", type=int, default=20_000)
    c.add_argument("--text", default=None)
    c.add_argument("--out", required=True)
    c.set_defaults(func=collect)
    t = sub.add_parser("train")
    t.add_argument("--acts", required=True)
    t.add_argument("--model", default="smollm2")
    t.add_argument("--site", choices=SITES, default="resid_post")
    t.add_argument("--layer", type=int, required=True)
    t.add_argument("--width", type=int, default=2304)
    t.add_argument("--k", type=int, default=64)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--every", type=int, default=250)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", required=True)
    t.set_defaults(func=train)
    args = parser.parse_args()
    torch.set_num_threads(getattr(args, "threads", 2))
    args.func(args)


if __name__ == "__main__":
    main()
