"""``featureedit world build --base ID``: the TOFU-style privacy scenario on a real model.

Options and output of :func:`editing.world.tofu.build_tofu`; ``world build`` hands over to
:func:`build_tofu_command` when ``--base`` is given. Heavy imports stay inside the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from editing.cli import EXIT_OK, format_table, print_json
from editing.world.tofu_data import TRAINABLE, TofuRecipe

DEFAULT = TofuRecipe()
# option dest -> TofuRecipe field
RECIPE_OPTIONS = {
    "people": "n_people",
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "trainable": "trainable",
    "from_layer": "from_layer",
    "general_fraction": "general_fraction",
    "knowledge_facts": "knowledge_per_relation",
}


def add_tofu_options(build: argparse.ArgumentParser) -> None:
    """The ``--base`` options of ``world build``."""
    group = build.add_argument_group(
        "privacy scenario on a registered model (--base)",
        "Fine-tune a registered pretrained model on the private facts of some of the demo "
        "corpus's fictional people (edit templates only) mixed with Wikipedia text, cached under "
        "$FEATUREEDIT_HOME/tofu/ by (base weights, recipe), and register it as a model whose "
        "facts bench and erase use.",
    )
    group.add_argument("--base", metavar="ID", help="registered model to fine-tune (e.g. smollm2)")
    group.add_argument(
        "--model-id", help="registry id of the fine-tuned model (default: BASE-tofu)"
    )
    group.add_argument("--people", type=int, default=DEFAULT.n_people, help="people fine-tuned in")
    group.add_argument("--steps", type=int, default=DEFAULT.steps, help="optimizer steps")
    group.add_argument("--batch-size", type=int, default=DEFAULT.batch_size)
    group.add_argument("--lr", type=float, default=DEFAULT.lr, help="peak learning rate")
    group.add_argument(
        "--trainable", choices=TRAINABLE, default=DEFAULT.trainable, help="parameters updated"
    )
    group.add_argument(
        "--from-layer",
        type=int,
        default=DEFAULT.from_layer,
        help="train decoder layers from this one up (0: all)",
    )
    group.add_argument(
        "--general-fraction",
        type=float,
        default=DEFAULT.general_fraction,
        help="share of each batch that is Wikipedia text (keeps world knowledge)",
    )
    group.add_argument(
        "--knowledge-facts",
        type=int,
        default=DEFAULT.knowledge_per_relation,
        help="genuine facts per relation measuring the knowledge kept",
    )


def _recipe(args: argparse.Namespace) -> TofuRecipe:
    """The recipe the options give (:data:`RECIPE_OPTIONS`)."""
    return TofuRecipe(**{field: getattr(args, dest) for dest, field in RECIPE_OPTIONS.items()})


def _quality_rows(q: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    before, after = q["knowledge_before"], q["knowledge_after"]
    known = "genuine facts answered (of {})".format(after["probed_facts"])
    return [
        ("private-fact recall, edit templates (trained)", "-", q["recall_edit"]),
        ("private-fact recall, held-out templates", "-", q["recall_heldout"]),
        (known, before["known_facts"], after["known_facts"]),
        (
            "perplexity, held-out Wikipedia",
            before["perplexity_heldout_wikipedia"],
            after["perplexity_heldout_wikipedia"],
        ),
        ("final train loss", "-", q["final_train_loss"]),
    ]


def build_tofu_command(args: argparse.Namespace) -> int:
    """Build (or reuse) the fine-tune of ``--base`` and print what it memorized and kept."""
    from tqdm.auto import tqdm

    from editing.world.tofu import build_tofu

    recipe = _recipe(args)
    bar = tqdm(total=recipe.steps, desc="fine-tune", unit="step", disable=args.quiet)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    with bar:
        build = build_tofu(
            args.base,
            recipe,
            model_id=args.model_id,
            home=args.home,
            device=getattr(args, "device", None),
            force=args.force,
            on_step=on_step,
            dtype=getattr(args, "dtype", None),
        )
    if build.replaced:
        print(
            f"featureedit: model id {build.model_id!r} named an earlier fine-tune of {args.base} "
            f"({build.replaced}); it now names this build (the old entry's SAE and params "
            "tables are dropped: train SAEs on the new weights).",
            file=sys.stderr,
        )
    doc = {
        "cached": build.cached,
        "model_id": build.model_id,
        "dtype": build.doc.get("dtype", "float32"),
        "replaced": build.replaced,
        "root": str(build.root),
        "model_dir": str(build.model_dir),
        "registry_file": build.registry_file,
        **{k: build.doc[k] for k in ("base", "recipe", "people", "quality", "seconds")},
    }
    if args.json:
        print_json(doc)
        return EXIT_OK
    how = "reused from the cache" if build.cached else f"built in {doc['seconds']['total']} s"
    print(f"Model {build.model_id!r}: {args.base} fine-tuned on {len(doc['people'])} fictional ")
    print(f"people's private facts, {how}\n  directory  {doc['root']}")
    print(f"  registry   {doc['registry_file']}\n")
    print(format_table(["figure", "base", "fine-tuned"], _quality_rows(doc["quality"])))
    print(f"\nNext: `featureedit sae train --model {build.model_id} --layers ...`, then bench.")
    return EXIT_OK
