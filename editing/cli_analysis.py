"""The ``featureedit analyze`` command: the knowledge-microscope analyses (``editing.analysis``).

Registered by ``editing.cli`` with ``cli_analysis.register(subparsers, common)``; heavy imports
stay inside the command.
"""

from __future__ import annotations

import argparse
from typing import Any

from editing.cli_input import add_json_option

ANALYSIS_NAMES = (
    "decomposition",
    "features-vs-neurons",
    "monosemanticity",
    "ranges",
    "dictionary-size",
    "all",
)


def _rows(name: str, result: dict[str, Any]) -> list[list[Any]]:
    """Flatten an analysis summary into ``[analysis, row, column, value]`` table rows."""
    rows = []
    for row, cols in result.get("summary", {}).items():
        if isinstance(cols, dict):
            for col, v in cols.items():
                rows.append([name, row, col, v])
        else:
            rows.append([name, row, "", cols])
    return rows


def cmd_analyze(args: argparse.Namespace) -> int:
    """Run one analysis (or all); print the key numbers (or JSON) and where the files are."""
    import torch

    from editing.analysis import default_out, run_analysis
    from editing.cli import format_table, print_json
    from editing.models import load_model

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    loaded = load_model(
        args.model,
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
        home=getattr(args, "home", None),
    )
    from pathlib import Path

    out = Path(args.out) if args.out else default_out(loaded)
    settings: dict[str, dict[str, Any]] = {}
    if args.ig_steps is not None:
        for n in ("features-vs-neurons", "monosemanticity", "ranges"):
            settings.setdefault(n, {})["ig_steps"] = args.ig_steps
    if args.sae_steps is not None:
        settings.setdefault("dictionary-size", {})["steps"] = args.sae_steps
    results = run_analysis(args.name, loaded, out, n_facts=args.facts, settings=settings)
    if args.json:
        from editing.analysis.common import finite

        print_json(finite({"out": str(out), "index": str(out / "index.html"), "results": results}))
        return 0
    rows = [r for name, res in results.items() for r in _rows(name, res)]
    print(format_table(["analysis", "row", "column", "value"], rows))
    print(f"\nplots and results.json in {out}; open {out / 'index.html'}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``analyze`` command to the CLI."""
    p = subparsers.add_parser(
        "analyze",
        parents=[common],
        help="knowledge-microscope analyses (features vs neurons, PCA/ICA, ...) with plots",
        description="Run an analysis of where the demo world's private facts live and write PNG "
        "plots, results.json per analysis and index.html to --out (default "
        "$FEATUREEDIT_HOME/analysis/<model>/).",
    )
    p.add_argument("name", choices=ANALYSIS_NAMES, help="analysis to run ('all' runs every one)")
    p.add_argument(
        "--model", default="demo", help="demo model id: demo or demo-small (default demo)"
    )
    p.add_argument("--out", metavar="DIR", help="output directory")
    p.add_argument("--facts", type=int, metavar="N", help="number of facts (default per analysis)")
    p.add_argument(
        "--ig-steps", type=int, metavar="M", help="integrated-gradient steps (default 20)"
    )
    p.add_argument(
        "--sae-steps",
        type=int,
        metavar="S",
        help="dictionary-size SAE training steps (default 800)",
    )
    p.add_argument("--threads", type=int, metavar="T", help="torch CPU threads")
    add_json_option(p)
    p.set_defaults(func=cmd_analyze)
