"""``featureedit drill [--json] [--only NAME ...]`` (entry point ``featureedit.commands``)."""

from __future__ import annotations

import argparse
import sys

from ops.cli import add_stack_command, source_home


def _table(results: list) -> str:
    lines = [f"{'drill':<20} {'pass':<5} {'s':>6}  observed"]
    for r in results:
        lines.append(
            f"{r.name:<20} {'yes' if r.passed else 'NO':<5} {r.seconds:>6.0f}  {r.observed}"
        )
        lines.append(f"{'':<34}promise: {r.promise}")
    return "\n".join(lines)


def cmd_drill(args: argparse.Namespace) -> int:
    """Start a private stack, run the drills, print the results; 1 if any drill failed."""
    from editing.cli import print_json
    from ops.drills import DRILLS, GROUPS, DrillContext, run_drills

    names = [n for name in args.only or list(DRILLS) for n in GROUPS.get(name, (name,))]
    unknown = sorted(set(names) - set(DRILLS))
    if unknown:
        print(
            f"featureedit: error: unknown drill(s) {unknown}; drills are {list(DRILLS)} "
            f"(groups: {sorted(GROUPS)})",
            file=sys.stderr,
        )
        return 2
    source = source_home(args)
    ctx = DrillContext(source_home=source, fuzz_examples=args.examples, keep=args.keep)
    print(
        f"featureedit: starting a private stack (small demo world from {source})", file=sys.stderr
    )

    def progress(result) -> None:
        mark = "pass" if result.passed else "FAIL"
        print(f"featureedit: drill {result.name}: {mark} ({result.seconds:.0f} s)", file=sys.stderr)

    try:
        ctx.start()
        results = run_drills(ctx, names, on_result=progress)
    finally:
        ctx.close()
        if args.keep and ctx.root is not None:
            print(f"featureedit: stack directory kept: {ctx.root}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json([r.to_dict() for r in results])
    else:
        print(_table(results))
    return 0 if all(r.passed for r in results) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``drill`` to the ``featureedit`` CLI."""
    p = add_stack_command(
        subparsers,
        "drill",
        func=cmd_drill,
        help="run failure drills against a private local stack",
        description="Start a private stack on loopback (its own redis-server, a temporary home "
        "and store, the API and a worker, on the small demo world) and run failure drills: "
        "worker-kill, redis-restart, disk-full, corrupt-checkpoint, hostile-requests, "
        "hostile-limits, schemathesis. Each states its promise and what was observed. Exit "
        "code 1 if any drill fails. See docs/drills.md.",
        json_help="print one JSON list of results",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these drills (or groups: 'hostile' = every hostile-input drill)",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=20,
        metavar="N",
        help="schemathesis cases per operation (default 20)",
    )
    p.add_argument("--keep", action="store_true", help="keep the stack directory (logs) after")
