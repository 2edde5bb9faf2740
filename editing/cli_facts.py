"""``featureedit facts probe``: which shipped world-knowledge facts a model knows
(:mod:`editing.realdata.probe`). Registered by ``editing.cli`` with
``cli_facts.register(subparsers, common)``; heavy imports stay inside the command.
"""

from __future__ import annotations

import argparse

from editing.cli_input import add_command_group, add_json_option

RULE_HELP = "majority: more than half of a fact's edit prompts answered (default); all: every one"


def cmd_facts_probe(args: argparse.Namespace) -> int:
    """Probe a model on the fact set; print known facts per relation (or JSON)."""
    from editing.cli import EXIT_OK, format_table, print_json
    from editing.models import load_model
    from editing.realdata.facts import load_facts
    from editing.realdata.probe import probe_model, weights_sha256

    fact_set = load_facts(args.facts_file)
    loaded = load_model(
        args.model,
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
        home=getattr(args, "home", None),
    )
    weights = weights_sha256(loaded.model, loaded.source_dir)
    result, cached = probe_model(
        loaded.model_id,
        loaded.model,
        loaded.tokenizer,
        fact_set,
        weights,
        home=getattr(args, "home", None),
        force=args.force,
        progress=not getattr(args, "quiet", False),
    )
    doc = result.to_dict(args.rule)
    if args.json:
        print_json(doc | {"cached": cached})
        return EXIT_OK
    rows = [
        (rel, r["facts"], r["known"], r["known_all"], r["heldout_majority"])
        for rel, r in doc["relations"].items()
    ]
    t = doc["total"]
    rows.append(("total", t["facts"], t["known"], t["known_all"], t["heldout_majority"]))
    print(
        format_table(
            ["relation", "facts", f"known ({args.rule})", "known (all)", "held-out (majority)"],
            rows,
        )
    )
    source = "cached" if cached else "probed now"
    print(
        f"\n{t['known']} of {t['facts']} facts known by {doc['model_id']!r} ({source}; weights "
        f"{weights[:12]}, facts {fact_set.sha256[:12]}). Known: greedy continuation starts with "
        f"the target at a word boundary on {args.rule} of the edit prompts."
    )
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``facts probe``."""
    sub = add_command_group(
        subparsers,
        "facts",
        help="the shipped world-knowledge fact set: which facts a model knows",
        description="Genuine world knowledge (capitals, authors, chemical symbols...) shipped "
        "with featureedit (editing/realdata/facts.json).",
    )
    probe = sub.add_parser(
        "probe",
        parents=[common],
        help="decode every fact's prompts greedily and count the facts the model knows",
        description="Greedy-decode each fact's edit and held-out prompts on the model and report "
        "per relation how many facts it answers. Results are cached under "
        "$FEATUREEDIT_HOME/probes/, keyed by the model weights' and the fact file's sha256.",
    )
    probe.add_argument("--model", required=True, help="registered model id (see `models`)")
    probe.add_argument("--rule", choices=("majority", "all"), default="majority", help=RULE_HELP)
    probe.add_argument("--facts-file", help="another fact file in the facts.json format")
    probe.add_argument("--force", action="store_true", help="probe again, ignoring the cache")
    add_json_option(probe)
    probe.set_defaults(func=cmd_facts_probe)
