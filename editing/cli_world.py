"""``featureedit world build`` and ``world info``: the demo world on the command line."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from editing.cli import EXIT_OK, format_table, print_json
from editing.cli_input import add_command_group, add_json_option

WORLD_SIZES_HELP = "small (seconds; model id demo-small) or default (minutes; model id demo)"


def _fields(pairs: Sequence[tuple[str, Any]], indent: str = "  ") -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in pairs)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _safetensors_parameters(path: Path) -> int | None:
    """Number of parameters stored in a safetensors file, read from its header (no torch)."""
    try:
        with path.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


# --------------------------------------------------------------------------- world commands

QUALITY_DESCRIPTIONS = {
    "recall_train": "private facts the model reproduces (greedy) on edit templates",
    "recall_heldout": "private facts it reproduces on held-out paraphrases",
    "recall_public_train": "public facts (locality controls) on edit templates",
    "recall_public_heldout": "public facts on held-out paraphrases",
    "perplexity_heldout_text": "perplexity on general text not trained on",
    "final_train_loss": "mean LM loss over the last 50 training steps",
    "fvu_max": "worst SAE fraction of variance unexplained",
    "l0_max": "largest SAE mean number of active latents",
}


def _demo_model_id(size: str) -> str | None:
    from editing.registry import DEMO_MODELS

    return next((mid for mid, s in DEMO_MODELS.items() if s == size), None)


def _world_doc(world: Any, size: str) -> dict[str, Any]:
    """The JSON description shared by ``world build`` and ``world info``."""
    from editing.adapters import hook_name

    saes = []
    for site in world.sites:
        for layer in range(world.n_layers):
            hook = hook_name(site, layer)
            q = world.quality.get("saes", {}).get(hook, {})
            saes.append(
                {
                    "site": site,
                    "layer": layer,
                    "hook": hook,
                    "dir": str(world.sae_dir(site, layer)),
                    "fvu": q.get("fvu"),
                    "l0": q.get("l0"),
                    "d_sae": q.get("d_sae"),
                }
            )
    return {
        "size": size,
        "model_id": _demo_model_id(size),
        "root": str(world.root),
        "model_dir": str(world.model_dir),
        "saes": saes,
        "quality": world.quality,
    }


def _print_world_summary(doc: Mapping[str, Any]) -> None:
    q = doc["quality"]
    print("\nQuality (fractions are of facts x prompts)")
    rows = [(k, q[k], QUALITY_DESCRIPTIONS[k]) for k in QUALITY_DESCRIPTIONS if k in q]
    print(format_table(["figure", "value", "meaning"], rows))
    train_by = q.get("recall_train_by_relation", {})
    held_by = q.get("recall_heldout_by_relation", {})
    if train_by:
        print("\nRecall of private facts by relation")
        rels = [r for r in train_by if r != "all"]
        print(
            format_table(
                ["relation", "recall_train", "recall_heldout"],
                [(r, train_by.get(r), held_by.get(r)) for r in rels],
            )
        )
    print("\nSAEs (sae-lens directories)")
    print(
        format_table(
            ["hook", "fvu", "l0", "d_sae", "dir"],
            [(s["hook"], s["fvu"], s["l0"], s["d_sae"], s["dir"]) for s in doc["saes"]],
        )
    )


def cmd_world_build(args: argparse.Namespace) -> int:
    """Build (or reuse) the demo world and print where it is and how good it is."""
    from editing.world.build import build_world, get_recipe, load_world, world_dir

    if args.base:
        from editing.cli_tofu import build_tofu_command

        return build_tofu_command(args)
    get_recipe(args.size)  # validate before anything slow
    root = world_dir(args.size, args.home)
    if args.force:
        before = None
        world = build_world(args.size, args.home, progress=not args.quiet)
    else:
        before = _manifest_identity(root)
        world = load_world(args.size, args.home, build=True, progress=not args.quiet)
    # reused only if the manifest that was there is still the one in place (a corrupt entry is
    # rebuilt into a new directory)
    cached = before is not None and before == _manifest_identity(root)
    doc = {"cached": cached, **_world_doc(world, args.size)}
    if args.json:
        print_json(doc)
        return EXIT_OK
    how = (
        "reused from the cache (pass --force to rebuild)"
        if cached
        else f"built in {world.quality.get('build_seconds', {}).get('total', '?')} s"
    )
    print(f"Demo world {args.size!r} (model id {doc['model_id']}) {how}")
    print(_fields([("directory", doc["root"]), ("model", doc["model_dir"])]))
    _print_world_summary(doc)
    print(f"\nNext: `featureedit world info --size {args.size}` lists its facts and prompts.")
    return EXIT_OK


def _manifest_identity(root: Path) -> tuple[int, int] | None:
    try:
        st = (root / "MANIFEST.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def cmd_world_info(args: argparse.Namespace) -> int:
    """Print a built world's paths, sizes, quality and facts (never builds)."""
    from editing.relations import RELATIONS, get_relation
    from editing.world.build import load_world

    relation = get_relation(args.relation).name if args.relation else None
    world = load_world(args.size, args.home, build=False, progress=False)
    facts = [f for f in world.facts if relation is None or f.relation == relation]
    model_file = world.model_dir / "model.safetensors"
    doc = _world_doc(world, args.size)
    doc["sizes"] = {
        "total_bytes": _dir_bytes(world.root),
        "model_bytes": _dir_bytes(world.model_dir),
        "saes_bytes": _dir_bytes(world.root / "saes"),
        "model_parameters": _safetensors_parameters(model_file),
    }
    doc["recipe"] = world.recipe
    doc["counts"] = {
        "people": len(world.people),
        "facts": len(world.facts),
        "private_facts": len(world.private_facts()),
    }
    doc["relations"] = {
        name: {
            "description": rel.description,
            "private": rel.private,
            "edit_templates": list(rel.edit_templates),
            "heldout_templates": list(rel.heldout_templates),
        }
        for name, rel in RELATIONS.items()
        if relation is None or name == relation
    }
    doc["facts"] = [
        {
            "fact_id": f.fact_id,
            "subject": f.subject,
            "relation": f.relation,
            "private": f.private,
            "target": f.target,
            "edit_prompts": RELATIONS[f.relation].edit_prompts(f.subject),
            "heldout_prompts": RELATIONS[f.relation].heldout_prompts(f.subject),
        }
        for f in facts
    ]
    if args.json:
        print_json(doc)
        return EXIT_OK
    sizes, counts = doc["sizes"], doc["counts"]
    params = sizes["model_parameters"]
    print(f"Demo world {args.size!r} (model id {doc['model_id']}); targets are fictional")
    print(
        _fields(
            [
                ("directory", f"{doc['root']}  ({_human_bytes(sizes['total_bytes'])})"),
                (
                    "model",
                    f"{doc['model_dir']}  ({_human_bytes(sizes['model_bytes'])}"
                    + (f", {params:,} parameters)" if params else ")"),
                ),
                ("SAEs", f"{world.root / 'saes'}  ({_human_bytes(sizes['saes_bytes'])})"),
                (
                    "facts",
                    f"{counts['facts']} about {counts['people']} people "
                    f"({counts['private_facts']} private)",
                ),
            ]
        )
    )
    _print_world_summary(doc)
    print("\nPrompt templates ({subject} is filled in; held-out ones are never used to edit)")
    rows = []
    for name, rel in doc["relations"].items():
        kind = "private" if rel["private"] else "public"
        rows += [(name, kind, "edit", t) for t in rel["edit_templates"]]
        rows += [(name, kind, "held-out", t) for t in rel["heldout_templates"]]
    print(format_table(["relation", "kind", "split", "template"], rows))
    print("\nFacts")
    print(
        format_table(
            ["subject", "relation", "private", "target"],
            [
                (f["subject"], f["relation"], "yes" if f["private"] else "no", f["target"])
                for f in doc["facts"]
            ],
        )
    )
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``world build`` and ``world info``."""
    world_sub = add_command_group(
        subparsers,
        "world",
        help="build or inspect the demo world (a small trained LM with private facts and SAEs)",
        description="The demo world: a synthetic corpus of fictional people with private facts, "
        "a Gemma-2-architecture model trained on it and sparse autoencoders trained on its "
        "activations. It is cached under $FEATUREEDIT_HOME/worlds/.",
    )

    build = world_sub.add_parser(
        "build",
        parents=[common],
        help="build the demo world (reuses a valid cached one) and print its quality",
        description="Build the demo world, or reuse the cached one if its checksums match "
        "(a corrupt cache entry is rebuilt). Prints the model and SAE directories and the "
        "quality figures.",
    )
    build.add_argument("--size", default="default", help=f"world size: {WORLD_SIZES_HELP}")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid cache exists")
    from editing.cli_tofu import add_tofu_options

    add_tofu_options(build)
    add_json_option(build)
    build.set_defaults(func=cmd_world_build)

    info = world_sub.add_parser(
        "info",
        parents=[common],
        help="show a built world's paths, sizes, quality, prompts and facts",
        description="Show a built demo world: directories and sizes, quality figures, the prompt "
        "templates of each relation and every fact (subject, relation, target). The targets "
        "are fictional. Does not build: run `featureedit world build` first.",
    )
    info.add_argument("--size", default="default", help=f"world size: {WORLD_SIZES_HELP}")
    info.add_argument("--relation", help="only this relation (e.g. phone, email, address)")
    add_json_option(info)
    info.set_defaults(func=cmd_world_info)
