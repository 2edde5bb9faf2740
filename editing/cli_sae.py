"""``featureedit sae train``: train TopK SAEs on a registered model (:mod:`editing.sae_training`).

Registered by ``editing.cli`` with ``cli_sae.register(subparsers, common)``; torch and the model
are imported inside the command only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from editing.cli_input import add_json_option

DEFAULTS = {
    "width": 4608,
    "k": 64,
    "tokens": 100_000,
    "eval_tokens": 20_000,
    "steps": 3000,
    "batch_size": 1024,
    "seed": 0,
}  # = editing.sae_training.SAETrainRecipe's (torch-free here; a test checks they agree)
LOCATE_TOP = 2  # --layers locate: how many layers


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``"all"`` or comma-separated layer numbers (ranges ``a-b`` allowed) -> sorted layers."""
    from editing.errors import ConfigError

    if text.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(
            f"--layers {text!r}: expected 'all' or comma-separated layers such as 10,12,15-17."
        ) from None
    bad = sorted(x for x in layers if not 0 <= x < n_layers)
    if bad or not layers:
        raise ConfigError(f"--layers {text!r}: the model has layers 0..{n_layers - 1}.")
    return sorted(layers)


def _locate_top(text: str) -> int | None:
    """``N`` of ``--layers locate[:N]`` (default :data:`LOCATE_TOP`), or None for an explicit
    layer list."""
    from editing.errors import ConfigError

    head, _, n = text.strip().partition(":")
    if head != "locate":
        return None
    try:
        top = int(n) if n else LOCATE_TOP
    except ValueError:
        msg = f"--layers {text!r}: expected locate or locate:N, e.g. locate:2"
        raise ConfigError(msg) from None
    if top < 1:
        raise ConfigError(f"--layers {text!r}: choose at least one layer (locate:1 or more)")
    return top


def _locate_layers(loaded: Any, args: argparse.Namespace, quiet: bool) -> Any:
    """Run the locate pass of ``--layers locate[:N]`` (progress bar, the choice on stderr)."""
    from tqdm import tqdm

    from editing.errors import ConfigError
    from editing.layer_choice import choose_layers, locate_facts

    if args.locate_facts < 1:
        raise ConfigError(f"--locate-facts {args.locate_facts}: read at least one fact")
    relations = [r.strip() for r in (args.locate_relations or "").split(",") if r.strip()]
    facts = locate_facts(loaded, args.locate_facts, relations)
    with tqdm(
        total=len(facts), desc="locate layers", unit="fact", disable=quiet, file=sys.stderr
    ) as bar:
        choice = choose_layers(loaded, facts, _locate_top(args.layers) or LOCATE_TOP, bar.update)
    if not quiet:
        top = sorted(range(len(choice.shares)), key=lambda i: -choice.shares[i])[:5]
        shares = ", ".join(f"{i}: {choice.shares[i]:.2f}" for i in top)
        print(
            f"locate: layers {choice.layers} carry most of the MLP writes for {choice.facts} facts "
            f"({', '.join(choice.relations)}; {choice.unsupported} with no MLP support); "
            f"largest mean shares {shares}",
            file=sys.stderr,
        )
    return choice


def _table(doc: dict[str, Any]) -> str:
    from editing.cli import format_table

    rows = [
        (
            r["layer"],
            r["fvu"],
            r["l0"],
            r["d_sae"],
            r["train_tokens"],
            r["eval_tokens"],
            "cached" if r["cached"] else f"{r['seconds']} s",
        )
        for r in doc["layers"]
    ]
    headers = ["layer", "FVU (held-out)", "L0", "d_sae", "train tokens", "eval tokens", "time"]
    return format_table(headers, rows)


def cmd_sae_train(args: argparse.Namespace) -> int:
    """Train (or reuse cached) SAEs, register them for the model, report FVU and L0."""
    from tqdm import tqdm

    from editing import sae_training as st
    from editing.cli import EXIT_OK, print_json
    from editing.errors import ConfigError
    from editing.models import load_model
    from editing.realdata.probe import weights_sha256
    from editing.registry import register_saes, registry_file_of

    if args.dry_run and not _locate_top(args.layers):
        raise ConfigError("--dry-run shows what --layers locate[:N] chooses; give it locate")
    if not args.no_register and not args.dry_run:
        registry_file_of(args.model, getattr(args, "home", None))  # fail before training
    loaded = load_model(args.model, home=getattr(args, "home", None))
    quiet = bool(getattr(args, "quiet", False))
    choice = _locate_layers(loaded, args, quiet) if _locate_top(args.layers) else None
    layers = choice.layers if choice else parse_layers(args.layers, loaded.adapter.n_layers)
    if args.dry_run and choice:
        if args.json:
            print_json({"model_id": loaded.model_id, "site": args.site, "locate": choice.to_dict()})
        else:
            print(f"Would train SAEs of {loaded.model_id!r} at {args.site} on layers {layers}.")
        return EXIT_OK
    train, held, text_sha = st.split_text(args.text)
    recipe = st.SAETrainRecipe(**{k: getattr(args, k) for k in DEFAULTS}, text_sha256=text_sha)
    acts_bar = tqdm(
        total=recipe.tokens, desc="activations", unit="tok", disable=quiet, file=sys.stderr
    )
    steps_bar = tqdm(
        total=recipe.steps * len(layers),
        desc=f"train SAEs ({args.site}, {len(layers)} layers)",
        unit="step",
        disable=quiet,
        file=sys.stderr,
        mininterval=1.0,
    )

    def on_step(n: int, loss: float) -> None:
        steps_bar.update(n)
        if loss == loss:  # not NaN (a resumed checkpoint reports NaN)
            steps_bar.set_postfix(fvu_train=f"{loss:.3f}", refresh=False)

    with acts_bar, steps_bar:
        summary = st.train_saes(
            loaded,
            args.site,
            layers,
            recipe,
            train,
            held,
            weights_sha256(loaded.model, loaded.source_dir),
            checkpoint_every=args.checkpoint_every,
            on_activations=acts_bar.update,
            on_step=on_step,
        )
    if not args.no_register:
        from pathlib import Path

        directory = Path(summary.directory)
        summary.registered_layers = st.cached_layers(directory)
        summary.registry_file = str(
            register_saes(
                loaded.model_id,
                args.site,
                str(st.layer_dir(directory, 0)).removesuffix("0") + "{layer}",
                summary.registered_layers,
                loaded.home,
            )
        )
    doc = summary.to_dict()
    if choice:
        doc["locate"] = choice.to_dict()
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(f"SAEs of {doc['model_id']!r} at {doc['site']} in {doc['directory']}:")
    print(_table(doc))
    if summary.registry_file:
        print(
            f"\nRegistered layers {summary.registered_layers} at {args.site} in "
            f"{summary.registry_file}; erase/bench with featureedit use them."
        )
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``sae`` with its sub-command ``train``."""
    sae = subparsers.add_parser("sae", parents=[common], help="train SAEs on a registered model")
    sub = sae.add_subparsers(dest="sae_command", metavar="{train}")
    sae.set_defaults(func=lambda _a: sae.print_help() or 2)
    train = sub.add_parser(
        "train",
        parents=[common],
        help="train TopK SAEs on a model's activations and register them",
        description="Stream activations of MODEL at SITE from a text corpus (default: the shipped "
        "Wikipedia and book text; special tokens and attention-sink positions are dropped), train "
        "one TopK SAE per layer (checkpointed: an interrupted run resumes), report FVU and L0 on "
        "held-out text, write sae-lens directories under $FEATUREEDIT_HOME/saes/ (cached by "
        "weights, site, layer and recipe) and register them so erase and bench find them.",
        epilog="Example: `featureedit sae train --model smollm2 --site resid_post --layers 9,12`.",
    )
    train.add_argument("--model", required=True, help="registered model id")
    train.add_argument("--site", choices=("resid_post", "mlp_out"), default="resid_post")
    train.add_argument(
        "--layers",
        required=True,
        help="'all', e.g. 9,12,15-17, or locate[:N]: the N (default 2) layers whose MLP writes "
        "carry the model's benchmark facts most (a gradient pass per fact, no SAE needed)",
    )
    train.add_argument(
        "--locate-facts",
        type=int,
        default=30,
        metavar="N",
        help="--layers locate: how many benchmark facts the locate pass reads (default 30)",
    )
    train.add_argument(
        "--locate-relations",
        metavar="R1,R2",
        help="--layers locate: only facts of these relations (default: every relation)",
    )
    train.add_argument("--width", type=int, default=DEFAULTS["width"], help="SAE latents")
    train.add_argument("--k", type=int, default=DEFAULTS["k"], help="TopK: active latents")
    train.add_argument(
        "--tokens", type=int, default=DEFAULTS["tokens"], help="training tokens per layer"
    )
    train.add_argument(
        "--eval-tokens", type=int, default=DEFAULTS["eval_tokens"], help="held-out tokens"
    )
    train.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="Adam steps")
    train.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    train.add_argument(
        "--text",
        metavar="FILE",
        help="one passage per line (every 10th held out); default: the shipped Wikipedia and "
        "book text",
    )
    train.add_argument("--checkpoint-every", type=int, default=200, metavar="STEPS")
    train.add_argument("--no-register", action="store_true", help="do not touch the registry")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="with --layers locate: print the chosen layers and the evidence, train nothing",
    )
    add_json_option(train)
    train.set_defaults(func=cmd_sae_train)
