"""``featureedit bench``: every method on N demo-world facts (:func:`editing.bench.run_bench`),
printed as a table, JSON or a Markdown section for ``docs/benchmarks.md``.

Registered by :func:`editing.cli.register_commands`; heavy imports stay inside the command.

Extensions: other packages add modes to ``featureedit bench`` through the entry-point group
``featureedit.bench``, without ``editing`` importing them. An entry point ``NAME`` names a
callable ``register(bench_parser) -> command`` that adds a ``--NAME`` flag (dest ``NAME``) and its
own options and returns ``command(args) -> int``, run instead of the engine benchmark when
``--NAME`` is given (``ops.cli:register_bench`` adds ``--service``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from editing.cli_input import add_attack_options, add_json_option

BENCH_EXTENSION_GROUP = "featureedit.bench"
_HEADLINE = ("reliability", "generalization", "locality", "delta_ppl", "delta_prob")
TABLE_METRICS = (*_HEADLINE, "exposure_after", "leak_rate_after", "units")  # the text table's
MARKDOWN_METRICS = (  # docs/benchmarks.md's: before and after
    *_HEADLINE,
    "leak_rate_before",
    "leak_rate_after",
    "exposure_before",
    "exposure_after",
    "units",
)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark every method on N facts; print a table (or JSON). Extensions: module docstring."""
    for name, command in getattr(args, "bench_extensions", {}).items():
        if getattr(args, name, False):
            return command(args)
    args.model = args.model or "demo"
    from tqdm.auto import tqdm

    from editing.bench import TIMED_STAGES, run_bench_seeds
    from editing.cli import format_table, print_json
    from editing.methods import method_names
    from editing.models import load_model

    args.methods = args.methods or ",".join(method_names())
    loaded = load_model(args.model)
    methods = tuple(args.methods.split(","))
    seeds = parse_seeds(args.seeds)
    bar = tqdm(
        total=args.facts * len(methods) * len(seeds),
        desc="bench",
        file=sys.stderr,
        disable=args.quiet,
        unit="erasure",
    )

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    from editing.attacks import parse_attacks
    from editing.cli_attack import parse_budgets

    attacks = [] if args.attacks is None else parse_attacks(args.attacks)
    result = run_bench_seeds(
        loaded,
        seeds,
        args.facts,
        methods=methods,
        params=method_params(args.param),
        progress=progress,
        attacks=attacks,
        attack_budgets=parse_budgets(args.budget),
        leak_samples=args.leak_samples,
    )
    bar.close()
    if args.json:
        print_json(result)
        return 0
    if "across_seeds" in result:
        print(seeds_text(result, markdown=args.markdown))
        return 0
    if args.markdown:
        print(
            bench_markdown(
                result,
                f"featureedit bench --model {args.model} --facts "
                f"{args.facts} --methods {args.methods} --leak-samples {args.leak_samples} "
                "--markdown",
            )
        )
        return 0
    rows = []
    metrics = TABLE_METRICS
    for m, s in result["summary"].items():
        row = [m]
        for name in metrics:
            v = s[name]
            row.append("-" if v["mean"] is None else f"{v['mean']:.3f}±{v['std']:.3f}")
        for stage in TIMED_STAGES:
            row.append(f"{s['seconds'][stage]['mean']:.3f}")
        row.append(f"{s['accepted']}/{result['facts']}")
        rows.append(row)
    headers = ["method", *metrics, "locate s", "edit s", "evaluate s", "accepted"]
    print(format_table(headers, rows))
    print()
    for k, v in result["ratios"].items():
        print(f"{k}: {v}")
    if attacks:
        from editing.cli_attack import summary_rows

        rows = [[m, *r] for m, s in result["summary"].items() for r in summary_rows(s["attacks"])]
        print("\nAttackSuccess (share of facts whose whole secret the attack recovered):")
        print(format_table(["method", "attack", "success", "before", "after"], rows))
    return 0


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]`` (ConfigError naming the flag otherwise)."""
    from editing.errors import ConfigError

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: expected non-negative integers such as 0,1,2")
    return seeds


def seeds_text(result: dict[str, Any], markdown: bool = False) -> str:
    """The across-seeds table (mean ± std [min–max] of the per-seed means), text or Markdown."""
    from editing.cli import format_table

    def cell(v: dict[str, Any]) -> str:
        if v["mean"] is None:
            return "-"
        return f"{v['mean']:.3f} ± {v['std']:.3f} [{v['min']:.3f}–{v['max']:.3f}]"

    across = result["across_seeds"]
    methods = list(across)
    names = [*MARKDOWN_METRICS, "accepted_share"]
    head = (
        f"{len(result['seeds'])} fact selections (seeds {result['seeds']}) of {result['facts']} "
        f"facts each, model `{result['model']}`: mean ± std [min–max] of the per-seed means "
        f"({result['wall_seconds']} s wall)."
    )
    rows = [[name, *(cell(across[m][name]) for m in methods)] for name in names]
    success = {
        (attack, key): None
        for m in methods
        for attack, kinds in across[m].get("attacks", {}).items()
        for key in kinds["success"]
    }
    for attack, key in success:
        values = [across[m].get("attacks", {}).get(attack, {}).get("success", {}) for m in methods]
        cells = [cell(v[key]) if key in v else "-" for v in values]
        rows.append([f"{attack} AttackSuccess {key} (after)", *cells])
    if not markdown:
        return head + "\n\n" + format_table(["metric", *methods], rows)
    lines = [head, "", "| metric | " + " | ".join(methods) + " |"]
    lines += ["|---" * (len(methods) + 1) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bench_markdown(result: dict[str, Any], command: str) -> str:
    """A Markdown section with the benchmark's tables (for docs/benchmarks.md)."""
    from editing.bench import TIMED_STAGES
    from editing.erase import PAPER_FIGURES

    lines = [
        f"Command: `{command}` ({result['facts']} facts, model `{result['model']}`, "
        f"{result['wall_seconds']} s wall).",
        "",
    ]
    metrics = MARKDOWN_METRICS
    methods = list(result["summary"])
    lines.append("| metric | " + " | ".join(methods) + " | paper FeatureEdit | paper neurons |")
    lines.append("|---" * (len(methods) + 3) + "|")
    for name in metrics:
        cells = []
        for m in methods:
            v = result["summary"][m][name]
            cells.append("–" if v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}")
        paper = [PAPER_FIGURES[k].get(name) for k in ("featureedit", "neurons")]
        cells += ["–" if p is None else f"~{p}" for p in paper]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for stage in TIMED_STAGES:
        cells = [f"{result['summary'][m]['seconds'][stage]['mean']:.3f}" for m in methods]
        lines.append(f"| seconds {stage} (per fact) | " + " | ".join(cells) + " | | |")
    cells = [f"{result['summary'][m]['accepted']}/{result['facts']}" for m in methods]
    lines.append("| accepted (greedy criteria, no attack limit) | " + " | ".join(cells) + " | | |")
    lines += ["", "Ratios measured in the same run:", ""]
    lines += [f"- `{k}`: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``bench`` (with the extensions' flags)."""
    bench = subparsers.add_parser(
        "bench",
        parents=[common],
        help="benchmark every method on N demo-world facts",
        description="One erasure per fact (model restored in between) for each method; prints "
        "mean ± std of every metric, per-stage seconds and FeatureEdit/neuron ratios.",
    )
    bench.add_argument("--model", help="model id (default demo; an extension may differ)")
    bench.add_argument("--facts", type=int, default=30)
    bench.add_argument(
        "--seeds",
        default="0",
        help="seeds of the fact selection, e.g. 0,1,2: one run per seed and the figures' mean ± "
        "spread across them (default 0: one run)",
    )
    bench.add_argument("--methods", help="comma-separated (default: every registered method)")
    add_json_option(bench)
    bench.add_argument("--markdown", action="store_true", help="print a Markdown section")
    add_attack_options(
        bench, "also attack every edit (featureedit attack's suite; default all attacks)"
    )
    bench.add_argument(
        "--param",
        action="append",
        metavar="METHOD.KEY=VALUE",
        help="a method's parameter, e.g. featureedit.refine=none (repeatable; JSON values)",
    )
    bench.add_argument(
        "--leak-samples",
        type=int,
        default=5,
        help="sampled continuations per prompt behind leak_rate (temperature 1; default 5)",
    )
    bench.set_defaults(func=cmd_bench, bench_extensions=_bench_extensions(bench))


def method_params(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["featureedit.refine=none", ...]`` as ``{"featureedit": {"refine": "none"}}``;
    ConfigError when a key names no method."""
    from editing.cli_input import parse_pairs
    from editing.errors import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_pairs(pairs).items():
        method, sep, name = key.partition(".")
        if not sep or not method or not name:
            raise ConfigError(f"--param expects METHOD.KEY=VALUE, got key {key!r}")
        out.setdefault(method, {})[name] = value
    return out


def _bench_extensions(bench: argparse.ArgumentParser) -> dict[str, Any]:
    """Load the ``featureedit.bench`` entry points (a broken one only warns); name -> command."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=BENCH_EXTENSION_GROUP), key=lambda e: e.name):
        try:
            found[ep.name] = ep.load()(bench)
        except Exception as exc:  # a broken extension must not break the engine benchmark
            print(
                f"featureedit: warning: bench extension {ep.name!r} ({ep.value}) not loaded: "
                f"{exc.__class__.__name__}: {exc}",
                file=sys.stderr,
            )
    return found
