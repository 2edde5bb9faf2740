"""``featureedit attack``: run the attack suite on a published checkpoint (issue #13).

The checkpoint names its base model (``manifest.json``); the base model is loaded from the
registry and the checkpoint's forward patch is bound to it, so every attack sees the model before
the edit and after it. The attacks need the secrets, which a checkpoint never holds: the facts
come from ``--file`` as for ``featureedit erase --file``. Output: numbers only (no secret, no name).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from editing.errors import ConfigError

BUDGET_HELP = (
    "attack budget ATTACK.KEY=VALUE (repeatable), e.g. sampled.samples=20, exposure.n_random=500; "
    "see each attack's docstring in editing/attacks/"
)


def parse_budgets(pairs: list[str] | None) -> dict[str, dict[str, int | float]]:
    """``["sampled.samples=20", ...]`` as ``{"sampled": {"samples": 20}}``."""
    from editing.cli_input import parse_pairs

    out: dict[str, dict[str, int | float]] = {}
    for key, value in parse_pairs(pairs, "--budget").items():
        attack, dot, name = key.partition(".")
        if not dot or not name or isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"--budget expects ATTACK.KEY=NUMBER, got {key}={value!r}")
        out.setdefault(attack, {})[name] = value
    return out


def checkpoint_dir(ref: str, home: Path) -> Path:
    """A checkpoint directory, or the id of one under ``home/checkpoints/``."""
    for path in (Path(ref), home / "checkpoints" / ref):
        if (path / "manifest.json").is_file():
            return path
    raise ConfigError(
        f"{ref!r} is neither a checkpoint directory nor a checkpoint id under "
        f"{home / 'checkpoints'} (no manifest.json)"
    )


def attack_report(
    per_fact: list[dict[str, Any]], relations: list[str], summary: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: per fact its relation and every attack's result, and the summary."""
    return {
        "facts": [
            {"relation": rel, "attacks": {n: r.model_dump() for n, r in results.items()}}
            for rel, results in zip(relations, per_fact, strict=True)
        ],
        "summary": summary,
    }


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Table rows: attack, success flag, share of facts before and after the edit."""
    rows = []
    for name, entry in summary.items():
        for flag, after in entry["after"]["success"].items():
            before = entry["before"]["success"].get(flag)
            rows.append([name, flag, before, after])
    return rows


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a checkpoint's facts before and after its edit; print the AttackSuccess table."""
    from tqdm.auto import tqdm

    from editing import settings
    from editing.attacks import AttackCase, parse_attacks
    from editing.attacks.suite import run_attacks, summarise
    from editing.checkpoints.manifest import read_manifest
    from editing.cli import format_table, print_json
    from editing.cli_input import read_fact_file
    from editing.models import load_model
    from editing.pipeline import load_base_edit
    from editing.request import FactSpec

    names = parse_attacks(args.attacks)
    budgets = parse_budgets(args.budget)
    facts = [FactSpec(**f) for f in read_fact_file(Path(args.file), f"--file {args.file}")[1]]
    directory = checkpoint_dir(args.checkpoint, settings.home(args.home))
    model_id = (read_manifest(directory).get("base_model") or {}).get("model_id")
    if not model_id:
        raise ConfigError(f"checkpoint {directory} does not name its base model")
    loaded = load_model(model_id)
    edit = load_base_edit(loaded, directory)
    cases = [AttackCase.from_fact(f) for f in facts]
    bar = tqdm(total=len(cases) * len(names), desc="attack", file=sys.stderr, disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    per_fact = run_attacks(loaded, edit, cases, names, budgets, progress)
    bar.close()
    summary = summarise(per_fact)
    doc = {
        "checkpoint": directory.name,
        "model": model_id,
        "attacks": names,
        **attack_report(per_fact, [f.relation for f in facts], summary),
    }
    if args.json:
        print_json(doc)
        return 0
    print(format_table(["attack", "success", "before", "after"], summary_rows(summary)))
    print("\n(success: share of facts on which the attack recovered the whole secret)")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``featureedit attack`` to the CLI."""
    from editing.attacks import attack_names
    from editing.cli_input import add_json_option

    attack = subparsers.add_parser(
        "attack",
        parents=[common],
        help="attack a published checkpoint: can its erased secrets be extracted?",
        description="Run the attack suite (sampling, logit lens, rephrasing, exposure, "
        "quantization, relearning) on a checkpoint's facts, before and after its edit, and print "
        "AttackSuccess per attack. The secrets come from --file (as for `erase --file`): a "
        f"checkpoint never holds them. Attacks: {', '.join(attack_names())}.",
    )
    attack.add_argument("checkpoint", help="checkpoint directory, or a checkpoint id")
    attack.add_argument("--file", required=True, help="JSON or JSONL of the erased facts")
    attack.add_argument("--attacks", help="comma-separated attack names (default: all)")
    attack.add_argument("--budget", action="append", metavar="ATTACK.KEY=VALUE", help=BUDGET_HELP)
    add_json_option(attack)
    attack.set_defaults(func=cmd_attack)
